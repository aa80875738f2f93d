"""In-process FAISS backends: exact, HNSW, IVF-Flat and IVF-PQ with exact re-ranking.

Every kind stores vectors under internal *slots* (int64 labels we assign in insertion order)
and keeps ``slot -> caller id`` in a numpy array. One mapping for all four kinds lets removal
and filtering work the same way whatever FAISS supports underneath (checked on faiss 1.15):

* ``exact`` (``IndexIDMap2(IndexFlatIP)``) and ``ivf`` (``IndexIVFFlat``, ids native) remove
  vectors physically with ``remove_ids``;
* ``hnsw`` (``IndexHNSWFlat``) and ``ivfpq`` (``IndexRefineFlat(IndexIVFPQ)``) raise "remove_ids
  not implemented", and ``IndexRefineFlat`` cannot take ids either, so their slots are positions
  and a removed slot becomes a tombstone: searches skip it through an ``IDSelectorBitmap``, and
  past ``max_tombstone_fraction`` the index is rebuilt from its own stored vectors (IVF
  centroids and PQ codebooks are kept, only the HNSW graph is rebuilt).

Category filters use the same bitmap selector, evaluated inside FAISS' search (with the
exhaustive fallback of :mod:`faiss_kinds`), so a filtered search returns k results whenever
k allowed vectors exist.

IVF kinds train their centroids (and PQ codebooks) on the first ``add`` and never retrain:
vectors added later are assigned to the existing lists. When most of the catalog is new, or
the model changed, build a new index instead of growing this one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from shoplens.search.config import FAISS_KINDS, IndexConfig
from shoplens.search.faiss_kinds import (
    TOMBSTONE_KINDS,
    new_faiss_index,
    run_search,
)
from shoplens.search.index import (
    RWLock,
    VectorIndex,
    as_ids,
    as_vectors,
    empty_result,
    read_index_json,
    write_index_json,
)


class FaissIndex(VectorIndex):
    backend = "faiss"

    def __init__(self, config: IndexConfig, dim: int):
        if config.kind not in FAISS_KINDS:
            raise ValueError(f"FaissIndex builds {FAISS_KINDS}, not {config.kind!r}")
        self.config, self.kind, self.dim = config, config.kind, int(dim)
        self._lock = RWLock()
        self._slot_ids = np.empty(0, np.int64)  # caller id of each slot, -1 once removed
        self._index = (
            None if self.kind in ("ivf", "ivfpq") else new_faiss_index(config, self.dim, 0)
        )
        self._refresh()

    def add(self, ids, vectors) -> None:
        ids, x = as_ids(ids), as_vectors(vectors, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if not len(ids):
            return
        with self._lock.write():
            if self._index is None:  # IVF kinds: train on the vectors given at build time
                index = new_faiss_index(self.config, self.dim, len(x))
                index.train(x)
                self._index = index
            present = self._slots_of(ids)
            self._drop(present[present >= 0])  # upsert: the new vector replaces the old one
            slots = np.arange(len(self._slot_ids), len(self._slot_ids) + len(ids), dtype=np.int64)
            if self.kind in TOMBSTONE_KINDS:
                self._index.add(x)  # labels are positions, which equal the new slots
            else:
                self._index.add_with_ids(x, slots)
            keys, key_slots = self._lookup
            appended = not (present >= 0).any() and not (len(keys) and ids.min() <= keys[-1])
            self._slot_ids = np.concatenate([self._slot_ids, ids])
            if appended and self._alive is None and bool(np.all(np.diff(ids) > 0)):
                # New ids above every id held (how CatalogIndex assigns them): the sorted lookup
                # grows at its end; sorting the whole index again cost ~8 ms a write at 1M.
                self._lookup = (np.concatenate([keys, ids]), np.concatenate([key_slots, slots]))
                self._n_live += len(ids)
            else:
                self._refresh()

    def remove(self, ids) -> int:
        ids = as_ids(ids)
        with self._lock.write():
            slots = self._slots_of(ids)
            slots = slots[slots >= 0]
            self._drop(slots)
            dead = len(self._slot_ids) - self._n_live + len(slots)
            if self.kind in TOMBSTONE_KINDS and dead > self.config.max_tombstone_fraction * len(
                self._slot_ids
            ):
                self._compact()
            self._refresh()
        return len(slots)

    def search(self, queries, k, allowed_ids=None):
        q, k = as_vectors(queries, self.dim), int(k)
        with self._lock.read():
            if self._index is None or not self._n_live or k <= 0:
                return empty_result(len(q), max(k, 0))
            if allowed_ids is None:
                selector, slots, n_allowed = self._alive, None, self._n_live
            else:
                slots = self._slots_of(np.asarray(allowed_ids, np.int64).reshape(-1))
                slots = np.unique(slots[slots >= 0])
                selector, n_allowed = self._bitmap(slots), len(slots)
                if not n_allowed:
                    return empty_result(len(q), k)
            scores, labels = run_search(self.config, self._index, q, k, selector, slots, n_allowed)
            ids = np.where(labels >= 0, self._slot_ids[np.maximum(labels, 0)], -1)
        return np.where(ids >= 0, scores, -np.inf).astype(np.float32), ids

    def _bitmap(self, slots: np.ndarray) -> faiss.IDSelector:
        mask = np.zeros(len(self._slot_ids), bool)
        mask[slots] = True
        return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))

    def _slots_of(self, ids: np.ndarray) -> np.ndarray:
        """Slot of each caller id, -1 where absent (binary search in a cached sorted copy)."""
        keys, slots = self._lookup
        if not len(keys):
            return np.full(len(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        return np.where(keys[pos] == ids, slots[pos], -1)

    def _drop(self, slots: np.ndarray) -> None:
        if len(slots) and self.kind not in TOMBSTONE_KINDS:
            self._index.remove_ids(slots)
        self._slot_ids[slots] = -1

    def _compact(self) -> None:
        """Rebuild a tombstoned index from its live vectors (called under the write lock)."""
        live = np.flatnonzero(self._slot_ids >= 0)
        vectors = self._index.reconstruct_batch(live) if len(live) else None
        self._index.reset()  # keeps IVF centroids and PQ codebooks; empties the HNSW graph
        if vectors is not None:
            self._index.add(vectors)
        self._slot_ids = self._slot_ids[live]

    def _refresh(self) -> None:
        """Recompute what searches read after every write (under the write lock)."""
        live = np.flatnonzero(self._slot_ids >= 0)
        order = np.argsort(self._slot_ids[live], kind="stable")
        self._lookup = (self._slot_ids[live][order], live[order])
        self._n_live = len(live)
        self._alive = None
        if self.kind in TOMBSTONE_KINDS and self._n_live < len(self._slot_ids):
            self._alive = self._bitmap(live)

    def __len__(self) -> int:
        return self._n_live

    @property
    def tombstones(self) -> int:
        """Removed vectors still stored (hnsw / ivfpq only), until the next compaction."""
        return 0 if self._index is None else self._index.ntotal - self._n_live

    def nbytes(self) -> int:
        """Serialized size of the FAISS index (what it takes on disk and, roughly, in RAM)."""
        with self._lock.read():
            return 0 if self._index is None else int(faiss.serialize_index(self._index).size)

    def save(self, directory) -> None:
        directory = Path(directory)
        with self._lock.read():
            info = {"kind": self.kind, "dim": self.dim, "count": self._n_live}
            write_index_json(directory, backend=self.backend, config=asdict(self.config), **info)
            np.save(directory / "slot_ids.npy", self._slot_ids)
            if self._index is not None:
                faiss.write_index(self._index, str(directory / "index.faiss"))

    @classmethod
    def load(cls, directory) -> FaissIndex:
        directory, info = Path(directory), read_index_json(directory)
        self = cls(IndexConfig(**info["config"]), info["dim"])
        self._slot_ids = np.load(directory / "slot_ids.npy")
        if (directory / "index.faiss").is_file():
            self._index = faiss.read_index(str(directory / "index.faiss"))
        self._refresh()
        return self
