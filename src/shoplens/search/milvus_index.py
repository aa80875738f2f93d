"""Milvus backend through pymilvus' ``MilvusClient``: one code path, two deployments.

* ``milvus_uri="<path>.db"`` runs Milvus Lite inside this process (pymilvus starts its gRPC
  server on a free local port; the data lives in that path, which is a directory) - tests and
  a single machine;
* ``milvus_uri="http://host:19530"`` talks to a Milvus standalone/cluster for catalogs that
  outgrow one machine. The token, if any, comes from ``$MILVUS_TOKEN`` and is never saved.

The collection has two fields, ``id`` (INT64 primary key, the caller's id) and ``vector``, and
is created with ``consistency_level="Strong"`` so that a search issued after ``add``/``remove``
returns sees that write (the "removed product is gone" guarantee). Vectors are L2-normalised
here like every backend; the metric (COSINE by default, or IP) then gives the same scores as
FAISS. Writes are ``upsert``/``delete`` by primary key; the server serialises them against
concurrent searches, so this class needs no lock of its own.

Persistence is Milvus' own: ``save`` flushes and writes only connection facts to
``index.json``; ``load`` reconnects to the same collection (a Lite path is stored absolute).
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from shoplens.search.config import IndexConfig
from shoplens.search.index import (
    VectorIndex,
    as_ids,
    as_vectors,
    empty_result,
    read_index_json,
    write_index_json,
)

MAX_TOPK = 16_384  # Milvus rejects a search limit above this
_BATCH = 5_000  # rows per upsert request (keeps gRPC messages well under their 64 MB cap)


def _client(uri: str):
    from pymilvus import MilvusClient  # optional dependency: imported when Milvus is used

    return MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))


class MilvusIndex(VectorIndex):
    backend = "milvus"
    max_k = MAX_TOPK

    def __init__(self, config: IndexConfig, dim: int):
        uri = config.milvus_uri
        if uri.endswith(".db"):  # Milvus Lite: absolute, so load() finds it from any cwd
            uri = str(Path(uri).resolve())
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.config = replace(config, kind="milvus", milvus_uri=uri)
        self.kind, self.dim, self.collection = "milvus", int(dim), config.milvus_collection
        self._client = _client(uri)
        if not self._client.has_collection(self.collection):
            self._create()
        self._client.load_collection(self.collection)  # a reopened collection starts released

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self.config
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._client.prepare_index_params()
        params = {"M": c.hnsw_m, "efConstruction": c.ef_construction}
        index_params.add_index(
            field_name="vector",
            index_type=c.milvus_index,
            metric_type=c.milvus_metric,
            params=params if c.milvus_index == "HNSW" else {},
        )
        self._client.create_collection(
            self.collection, schema=schema, index_params=index_params, consistency_level="Strong"
        )

    def add(self, ids, vectors) -> None:
        ids, x = as_ids(ids), as_vectors(vectors, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        for start in range(0, len(ids), _BATCH):
            rows = [
                {"id": int(i), "vector": v}
                for i, v in zip(
                    ids[start : start + _BATCH], x[start : start + _BATCH].tolist(), strict=True
                )
            ]
            self._client.upsert(self.collection, rows)

    def remove(self, ids) -> int:
        ids = as_ids(ids)
        if not len(ids):
            return 0
        present = self._client.get(self.collection, ids=ids.tolist(), output_fields=["id"])
        if present:
            self._client.delete(self.collection, ids=[int(row["id"]) for row in present])
        return len(present)

    def search(self, queries, k, allowed_ids=None):
        q, k = as_vectors(queries, self.dim), int(k)
        if k > MAX_TOPK:
            raise ValueError(f"Milvus returns at most {MAX_TOPK} results per query, asked {k}")
        scores, ids = empty_result(len(q), max(k, 0))
        filter_expr = ""
        if allowed_ids is not None:  # Milvus Lite has no filter templating: a literal list
            allowed = np.unique(np.asarray(allowed_ids, np.int64)).tolist()
            if not allowed:
                return scores, ids
            filter_expr = f"id in {allowed}"
        if k <= 0 or not len(q):
            return scores, ids
        hits = self._client.search(
            self.collection,
            data=q.tolist(),
            limit=k,
            filter=filter_expr,
            output_fields=["id"],
            search_params={"params": {"ef": max(self.config.ef_search, k)}},
        )
        for row, row_hits in enumerate(hits):
            for col, hit in enumerate(row_hits):
                ids[row, col], scores[row, col] = hit["id"], hit["distance"]
        return scores, ids

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def save(self, directory) -> None:
        self._client.flush(self.collection)
        info = {"kind": self.kind, "dim": self.dim, "config": asdict(self.config)}
        write_index_json(Path(directory), backend=self.backend, **info)

    @classmethod
    def load(cls, directory) -> MilvusIndex:
        info = read_index_json(directory)
        return cls(IndexConfig(**info["config"]), info["dim"])

    def close(self) -> None:
        """Close the connection; for Milvus Lite also stop its in-process server."""
        self._client.close()
        if self.config.milvus_uri.endswith(".db"):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.config.milvus_uri)

    def drop(self) -> None:
        """Delete the collection and its data on the server (irreversible)."""
        self._client.drop_collection(self.collection)
