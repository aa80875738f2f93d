"""Build an empty index of a configured kind, or load whichever backend saved a directory."""

from __future__ import annotations

from pathlib import Path

from shoplens.search.config import IndexConfig
from shoplens.search.index import VectorIndex, read_index_json


def create_index(config: IndexConfig, dim: int) -> VectorIndex:
    """An empty index of ``config.kind`` (IVF kinds train on their first ``add``)."""
    if config.kind == "auto":
        raise ValueError("kind 'auto' depends on the catalog size: build for_size(n) first")
    if config.kind == "milvus":
        from shoplens.search.milvus_index import MilvusIndex

        return MilvusIndex(config, dim)
    from shoplens.search.faiss_index import FaissIndex

    return FaissIndex(config, dim)


def build_index(kind: str, dim: int, **params) -> VectorIndex:
    """``build_index("hnsw", 256, ef_search=64)``; unknown parameters raise ``TypeError``."""
    return create_index(IndexConfig(kind=kind, **params), dim)


def load_index(directory: str | Path) -> VectorIndex:
    """Load whatever backend saved itself in ``directory`` (its ``index.json`` says which)."""
    backend = read_index_json(directory)["backend"]
    if backend == "faiss":
        from shoplens.search.faiss_index import FaissIndex

        return FaissIndex.load(directory)
    if backend == "milvus":
        from shoplens.search.milvus_index import MilvusIndex

        return MilvusIndex.load(directory)
    raise ValueError(f"{directory}: unknown index backend {backend!r}")
