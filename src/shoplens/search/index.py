"""The one interface every vector-index backend implements, and what they share.

The search service, the index stage and :class:`~shoplens.search.catalog_index.CatalogIndex`
only talk to :class:`VectorIndex`, so a catalog can move from an in-process FAISS index to a
Milvus cluster by configuration, without code changes above this layer.

Conventions every backend keeps, so that results are comparable across backends:

* ids are caller-chosen ``int64`` (never ``-1``, which means "no result");
* vectors are L2-normalised on the way in (added *and* queried), so the inner-product score is
  the cosine similarity whatever the caller passed;
* ``add`` is an upsert: adding an id that is already present replaces its vector;
* ``search`` returns ``(scores, ids)`` of shape ``(Q, k)``, best first; slots without a result
  hold id ``-1`` and score ``-inf``.

Thread-safety: searches may run concurrently with ``add``/``remove``. In-process backends guard
their state with :class:`RWLock` (many concurrent searches, one writer at a time, writers
preferred so a steady stream of searches cannot starve an update); a search sees the index
either before or after a write, never half of it.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

INDEX_FILE = "index.json"  # written by every backend's save(); names the backend to load with


class RWLock:
    """Readers-writer lock with writer preference (the stdlib has none)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class VectorIndex(ABC):
    """A mutable nearest-neighbour index over L2-normalised vectors (cosine similarity)."""

    backend: ClassVar[str]
    kind: str
    dim: int
    max_k: int = 2**62  # the largest k one search may ask for (Milvus caps it at 16,384)

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace ``vectors`` (N, dim) under ``ids`` (N,)."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (absent ones are ignored); return how many were present."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query; ``allowed_ids`` restricts the candidates.

        The restriction is applied *inside* the backend's search (a FAISS ``IDSelector``, a
        Milvus filter expression), so ``k`` results come back whenever ``k`` allowed vectors
        exist, instead of post-filtering a top-k that may hold none of them.
        """

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def save(self, directory: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> VectorIndex: ...

    def close(self) -> None:  # noqa: B027 (optional hook, deliberately not abstract)
        """Release connections or servers the backend holds (nothing for in-process FAISS)."""


def as_ids(ids: Any) -> np.ndarray:
    """Validated int64 ids: 1-D, unique, never -1 (the "missing" marker)."""
    out = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.int64)
    if (out == -1).any():
        raise ValueError("id -1 is reserved for 'no result'")
    if len(np.unique(out)) != len(out):
        raise ValueError("ids must be unique within one call")
    return out


def as_vectors(vectors: Any, dim: int) -> np.ndarray:
    """A float32 C-contiguous (N, dim) copy, L2-normalised row by row."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (N, {dim}), got {tuple(x.shape)}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.isfinite(x).all() or (norms == 0).any():
        raise ValueError("vectors must be finite and non-zero (they are L2-normalised)")
    x /= norms
    return x


def empty_result(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_queries, k), -np.inf, np.float32), np.full((n_queries, k), -1, np.int64)


def write_index_json(directory: Path, **fields: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / INDEX_FILE).write_text(json.dumps(fields, indent=2), encoding="utf-8")


def read_index_json(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no vector index at {directory} (missing {INDEX_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))
