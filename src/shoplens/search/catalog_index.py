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
from collections import Counter, defaultdict
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
        self._lock = RWLock()
        t = table if table is not None else pd.DataFrame({c: [] for c in COLUMNS})
        t = t.sort_values("id", kind="stable")  # ids only grow: searchsorted finds positions
        self._rebuild(t["id"].to_numpy(np.int64), *(t[c].to_numpy(object) for c in COLUMNS[1:]))

    # What searches read. Kept up to date write by write (appends, counters), not recomputed
    # from the whole table: that made one POST /products cost ~350 ms at a million photos.
    def _rebuild(self, ids, pid, cat, path) -> None:
        self._columns = [
            np.asarray(ids, np.int64),
            *(np.asarray(c, object) for c in (pid, cat, path)),
        ]
        self._size = len(ids)
        self._views()
        self._allowed: dict[str, np.ndarray] = {}  # category -> its ids, filled on demand
        self._photos_of: dict[str, list[int]] = defaultdict(list)  # product -> its image ids
        self._product_photos_in: Counter[tuple[str, str]] = Counter()  # (category, product)
        self._products_in: Counter[str] = Counter()  # category -> products with photos in it
        self._count(ids, pid, cat, +1)

    def _views(self) -> None:
        """The live rows of the column buffers (which keep spare room at their end)."""
        self._ids, self._pid, self._cat, self._path = (c[: self._size] for c in self._columns)

    def _append(self, *values: np.ndarray) -> None:
        """Amortised O(rows added): np.concatenate would copy every column on every write."""
        need = self._size + len(values[0])
        if need > len(self._columns[0]):
            room = max(need, 2 * len(self._columns[0]), 1024)
            grown = [np.empty(room, c.dtype) for c in self._columns]
            for new, old in zip(grown, self._columns, strict=True):
                new[: self._size] = old[: self._size]
            self._columns = grown
        for column, more in zip(self._columns, values, strict=True):
            column[self._size : need] = more
        self._size = need
        self._views()

    def _count(self, ids, pid, cat, sign: int) -> None:
        for image_id, product, category in zip(
            ids.tolist(), pid.tolist(), cat.tolist(), strict=True
        ):
            if sign > 0:
                self._photos_of[product].append(image_id)
            key = (category, product)
            before = self._product_photos_in[key]
            self._product_photos_in[key] = before + sign
            if before == 0 or before + sign == 0:
                self._products_in[category] += sign
            if before + sign == 0:
                del self._product_photos_in[key]
                if not self._products_in[category]:
                    del self._products_in[category]
            self._allowed.pop(category, None)

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Position of each image id in the arrays, -1 where it is not indexed."""
        ids = np.asarray(ids, np.int64)
        if not len(self._ids):
            return np.full(len(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return np.where(self._ids[pos] == ids, pos, -1)

    @property
    def _table(self) -> pd.DataFrame:
        columns = (self._ids, self._pid, self._cat, self._path)
        return pd.DataFrame(dict(zip(COLUMNS, columns, strict=True)))

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

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def n_products(self) -> int:
        return len(self._photos_of)

    @property
    def categories(self) -> list[str]:
        """Categories with at least one indexed product."""
        return sorted(self._products_in)

    def photos(self, product_id: str) -> list[tuple[int, str]]:
        """``(image id, path)`` of every indexed photo of ``product_id``, in index order."""
        with self._lock.read():
            ids = self._photos_of.get(str(product_id), [])
            return [(i, str(self._path[p])) for i, p in zip(ids, self._positions(ids), strict=True)]

    def image_path(self, image_id: int) -> str | None:
        """The path recorded for one indexed photo, or None if it is not in the index."""
        with self._lock.read():
            position = self._positions([int(image_id)])[0]
            return None if position < 0 else str(self._path[position])

    def add_products(self, rows: pd.DataFrame, vectors: np.ndarray) -> np.ndarray:
        """Index one photo per row (columns product_id, category, path); return their ids."""
        rows = validate_catalog(rows)
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} rows for {len(vectors)} vectors")
        new = [rows[c].astype(str).to_numpy(object) for c in COLUMNS[1:]]
        with self._lock.write():
            start = int(self.meta["next_id"])
            ids = np.arange(start, start + len(rows), dtype=np.int64)
            self.index.add(ids, vectors)
            self._append(ids, *new)
            self._count(ids, new[0], new[1], +1)
            self.meta["next_id"] = start + len(rows)
        return ids

    def remove_product(self, product_id: str) -> int:
        """Remove every photo of ``product_id``; return how many were indexed."""
        with self._lock.write():
            ids = np.asarray(self._photos_of.pop(str(product_id), []), np.int64)
            if len(ids):
                self.index.remove(ids)
                gone = self._positions(ids)
                self._count(ids, self._pid[gone], self._cat[gone], -1)
                keep = np.ones(len(self._ids), bool)
                keep[gone] = False
                self._columns = [
                    view[keep] for view in (self._ids, self._pid, self._cat, self._path)
                ]
                self._size = int(keep.sum())
                self._views()
        return len(ids)

    def search(self, query_vectors, k: int = 10, category: str | None = None):
        """The ``k`` best distinct products per query, best first (fewer if fewer exist)."""
        q = np.atleast_2d(np.asarray(query_vectors, np.float32))
        with self._lock.read():
            allowed, n_images, n_products = None, len(self._ids), self.n_products
            if category is not None:
                allowed = self._category_ids(str(category))
                n_images, n_products = len(allowed), self._products_in.get(str(category), 0)
            want = min(k, n_products)
            cap = min(n_images, self.index.max_k)
            results: list[list[ProductHit]] = [[] for _ in q]
            per_product = math.ceil(len(self._ids) / max(self.n_products, 1))
            pending, fetch = np.arange(len(q)), min(cap, k * (per_product + 1))
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
            allowed = self._ids[self._cat == category]
            self._allowed[category] = allowed
        return allowed

    def _collapse(self, scores: np.ndarray, ids: np.ndarray, k: int) -> list[ProductHit]:
        pos = self._positions(ids)
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
            meta = {**self.meta, "images": len(self), "products": self.n_products}
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
