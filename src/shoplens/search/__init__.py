"""Vector search over a catalog's embeddings: the layer under the index stage and the service.

* :class:`VectorIndex` - the interface; backends FAISS (``exact``, ``hnsw``, ``ivf``,
  ``ivfpq``) and Milvus (Lite file or server), built from :class:`IndexConfig`;
* :class:`CatalogIndex` - products instead of photos, category filter, persistence with the
  model that embedded it;
* :func:`recall_against_exact` - what an approximate index loses, measured;
* :func:`search_with_prior` - ranking by similarity and the category head's posterior.
"""

from shoplens.search.catalog_index import CatalogIndex, IndexModelMismatch, ProductHit
from shoplens.search.category_prior import category_log_prior, search_with_prior
from shoplens.search.config import FAISS_KINDS, KINDS, IndexConfig
from shoplens.search.factory import build_index, create_index, load_index
from shoplens.search.index import VectorIndex
from shoplens.search.recall import agreement, recall_against_exact

__all__ = [
    "FAISS_KINDS",
    "KINDS",
    "CatalogIndex",
    "IndexConfig",
    "IndexModelMismatch",
    "ProductHit",
    "VectorIndex",
    "agreement",
    "build_index",
    "category_log_prior",
    "create_index",
    "load_index",
    "recall_against_exact",
    "search_with_prior",
]
