"""Product search over a vector index: photos in, distinct products out.

A catalog product has several photos, each its own vector under an int id; shoppers want
products. :class:`CatalogIndex` keeps the id table (id -> product_id, category, path) beside a
:class:`~shoplens.search.index.VectorIndex`, collapses a product's photos into one result (its
best-scoring photo), and over-fetches, doubling until ``k`` distinct products came back or the
index has nothing more to give. A category filter is passed down as the allowed ids, so the
backend filters inside its search (FAISS ``IDSelector``, Milvus filter expression).

On disk (one directory): ``vectors/`` (the backend's files), ``ids.parquet`` and ``meta.json``
(model name and version, preprocessing, embedding dim, index kind, creation time). An index
only makes sense with the model that embedded it, so ``check_model`` refuses a mismatch.

Ids are never reused after a removal, so a stale result can never name a different product.
One readers-writer lock covers the table and the index together: a search never sees an id
whose row is already gone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoplens.data.catalog import CATEGORY, PATH, PRODUCT_ID, validate_catalog
from shoplens.search.config import IndexConfig
from shoplens.search.factory import create_index, load_index
from shoplens.search.index import RWLock, VectorIndex

META_FILE, TABLE_FILE, VECTORS_DIR = "meta.json", "ids.parquet", "vectors"
COLUMNS = ("id", PRODUCT_ID, CATEGORY, PATH)


class IndexModelMismatch(RuntimeError):
    """The index was embedded by another model (or version) than the one loaded to query it."""


@dataclass(frozen=True)
class ProductHit:
    product_id: str
    category: str
    score: float  # cosine similarity of the product's best-matching photo
    path: str  # that photo
    image_id: int  # its id in the index


class CatalogIndex:
    def __init__(self, index: VectorIndex, meta: dict[str, Any], table: pd.DataFrame | None = None):
        self.index, self.meta = index, dict(meta)
        self.meta.setdefault("next_id", 0)
        empty = pd.DataFrame({c: pd.Series(dtype="int64" if c == "id" else str) for c in COLUMNS})
        self._table = empty if table is None else table[list(COLUMNS)].reset_index(drop=True)
        self._lock = RWLock()
        self._refresh()

    @classmethod
    def create(
        cls,
        config: IndexConfig,
        dim: int,
        model_name: str,
        model_version: str,
        preprocessing: dict[str, Any] | None = None,
    ) -> CatalogIndex:
        meta = {
            "model_name": model_name,
            "model_version": str(model_version),
            "preprocessing": preprocessing or {},
            "embedding_dim": int(dim),
            "index_kind": config.kind,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return cls(create_index(config, dim), meta)

    def _refresh(self) -> None:
        """Arrays that searches read, rebuilt after each write (under the write lock)."""
        t = self._table
        self._ids = pd.Index(t["id"].to_numpy(np.int64))
        self._pid, self._cat, self._path = (t[c].to_numpy(object) for c in COLUMNS[1:])
        self._allowed: dict[str, np.ndarray] = {}  # category -> its ids, filled on demand
        self._n_products = int(t[PRODUCT_ID].nunique())
        self._products_in = t.groupby(CATEGORY)[PRODUCT_ID].nunique().to_dict()
        self._photos_per_product = math.ceil(len(t) / max(self._n_products, 1))

    def __len__(self) -> int:
        return len(self._table)

    @property
    def n_products(self) -> int:
        return self._n_products

    @property
    def categories(self) -> list[str]:
        """Categories with at least one indexed product."""
        return sorted(self._products_in)

    def photos(self, product_id: str) -> list[tuple[int, str]]:
        """``(image id, path)`` of every indexed photo of ``product_id``, in index order."""
        with self._lock.read():
            t = self._table[self._table[PRODUCT_ID] == str(product_id)]
            return list(zip(t["id"].tolist(), t[PATH].tolist(), strict=True))

    def image_path(self, image_id: int) -> str | None:
        """The path recorded for one indexed photo, or None if it is not in the index."""
        with self._lock.read():
            position = self._ids.get_indexer([int(image_id)])[0]
            return None if position < 0 else str(self._path[position])

    def add_products(self, rows: pd.DataFrame, vectors: np.ndarray) -> np.ndarray:
        """Index one photo per row (columns product_id, category, path); return their ids."""
        rows = validate_catalog(rows)
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} rows for {len(vectors)} vectors")
        with self._lock.write():
            start = int(self.meta["next_id"])
            ids = np.arange(start, start + len(rows), dtype=np.int64)
            self.index.add(ids, vectors)
            new = rows[list(COLUMNS[1:])].assign(id=ids)[list(COLUMNS)]
            parts = [t for t in (self._table, new) if len(t)]
            self._table = pd.concat(parts, ignore_index=True)
            self.meta["next_id"] = start + len(rows)
            self._refresh()
        return ids

    def remove_product(self, product_id: str) -> int:
        """Remove every photo of ``product_id``; return how many were indexed."""
        with self._lock.write():
            gone = self._table[PRODUCT_ID] == str(product_id)
            if gone.any():
                self.index.remove(self._table.loc[gone, "id"].to_numpy(np.int64))
                self._table = self._table[~gone].reset_index(drop=True)
                self._refresh()
        return int(gone.sum())

    def search(self, query_vectors, k: int = 10, category: str | None = None):
        """The ``k`` best distinct products per query, best first (fewer if fewer exist)."""
        q = np.atleast_2d(np.asarray(query_vectors, np.float32))
        with self._lock.read():
            allowed, n_images, n_products = None, len(self._ids), self._n_products
            if category is not None:
                allowed = self._category_ids(str(category))
                n_images, n_products = len(allowed), self._products_in.get(str(category), 0)
            want = min(k, n_products)
            cap = min(n_images, self.index.max_k)
            results: list[list[ProductHit]] = [[] for _ in q]
            pending, fetch = np.arange(len(q)), min(cap, k * (self._photos_per_product + 1))
            while len(pending) and want:
                scores, ids = self.index.search(q[pending], fetch, allowed_ids=allowed)
                for row, s, i in zip(pending, scores, ids, strict=True):
                    results[row] = self._collapse(s, i, k)
                pending = np.array([r for r in pending if len(results[r]) < want], np.int64)
                if fetch >= cap:
                    break
                fetch = min(cap, fetch * 2)
        return results

    def _category_ids(self, category: str) -> np.ndarray:
        allowed = self._allowed.get(category)
        if allowed is None:  # benign race: concurrent readers compute the same array
            allowed = self._ids.to_numpy()[self._cat == category]
            self._allowed[category] = allowed
        return allowed

    def _collapse(self, scores: np.ndarray, ids: np.ndarray, k: int) -> list[ProductHit]:
        pos = self._ids.get_indexer(ids)
        keep = (ids >= 0) & (pos >= 0)
        scores, ids, pos = scores[keep], ids[keep], pos[keep]
        _, first = np.unique(self._pid[pos], return_index=True)  # results come best first
        first = np.sort(first)[:k]
        return [
            ProductHit(self._pid[p], self._cat[p], float(s), self._path[p], int(i))
            for p, s, i in zip(pos[first], scores[first], ids[first], strict=True)
        ]

    def check_model(self, model_name: str, version: str) -> None:
        built = (self.meta["model_name"], str(self.meta["model_version"]))
        if built != (model_name, str(version)):
            raise IndexModelMismatch(
                f"this index was built with model '{built[0]}' version {built[1]}, but the "
                f"loaded model is '{model_name}' version {version}; embeddings of different "
                "models are not comparable: rebuild the index or load the model that built it"
            )

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        with self._lock.read():
            self.index.save(directory / VECTORS_DIR)
            self._table.to_parquet(directory / TABLE_FILE, index=False)
            meta = {**self.meta, "images": len(self._table), "products": self.n_products}
            (directory / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(
        cls, directory: str | Path, model_name: str | None = None, model_version: str | None = None
    ) -> CatalogIndex:
        """Load; with ``model_name``/``model_version`` also :meth:`check_model`."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        table = pd.read_parquet(directory / TABLE_FILE)
        catalog = cls(load_index(directory / VECTORS_DIR), meta, table)
        if model_name is not None or model_version is not None:
            version = meta["model_version"] if model_version is None else model_version
            catalog.check_model(model_name or meta["model_name"], version)
        return catalog
