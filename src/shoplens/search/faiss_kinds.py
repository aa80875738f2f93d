"""How each FAISS kind is constructed and searched; :mod:`faiss_index` holds the bookkeeping.

Also the fallback for filtered searches that come back short. FAISS applies an ``IDSelector``
during the search, but a restrictive one still leaves holes: HNSW stops walking the graph once
its beam is exhausted (on 3,000 vectors with 10 allowed, k=5 returned 2 for some queries) and
IVF only sees the allowed vectors in its ``nprobe`` lists. Rows with fewer than
``min(k, allowed)`` results are searched again exhaustively: every list for IVF kinds, an exact
scan of the allowed vectors for HNSW (or a much wider beam when too many are allowed). Allowed
sets of at most ``SMALL_FILTER`` vectors skip the index and are scanned exactly from the start:
that is cheaper than a filtered walk and HNSW's filtered top-k was not even right on them.
"""

from __future__ import annotations

import faiss
import numpy as np

from shoplens.search.config import IndexConfig
from shoplens.search.index import empty_result

TOMBSTONE_KINDS = frozenset({"hnsw", "ivfpq"})  # FAISS has no remove_ids for these
EXACT_FALLBACK_MAX = 100_000  # HNSW: scan at most this many allowed vectors exactly
SMALL_FILTER = 2048  # scan allowed sets this small exactly (IVF-Flat cannot reconstruct)


def new_faiss_index(config: IndexConfig, dim: int, n_train: int) -> faiss.Index:
    """An empty index of ``config.kind``; IVF kinds size nlist for ``n_train`` vectors."""
    c, ip = config, faiss.METRIC_INNER_PRODUCT
    if c.kind == "exact":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if c.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, c.hnsw_m, ip)
        index.hnsw.efConstruction, index.hnsw.efSearch = c.ef_construction, c.ef_search
        return index
    nlist = c.auto_nlist(n_train)
    minimum = max(nlist, 2**c.pq_nbits if c.kind == "ivfpq" else 0)
    if n_train < minimum:
        raise ValueError(f"{c.kind} needs >= {minimum} vectors to train, got {n_train}")
    if c.kind == "ivf":
        index = ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, ip)
    else:
        if dim % c.pq_m:
            raise ValueError(f"pq_m={c.pq_m} must divide the embedding dim {dim}")
        ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, c.pq_m, c.pq_nbits, ip)
        index = faiss.IndexRefineFlat(ivf)
        index.k_factor = c.refine_k
    ivf.cp.max_points_per_centroid = c.train_per_list
    ivf.nprobe = c.nprobe
    return index


def search_params(config: IndexConfig, sel, k: int, index=None, widen: bool = False):
    """Per-call parameters (never set on the shared index: searches run concurrently).

    ``widen``: the exhaustive retry of a short filtered search (all IVF lists, 8x HNSW beam).
    """
    c = config
    if c.kind == "exact":
        return faiss.SearchParameters(sel=sel) if sel is not None else None
    if c.kind == "hnsw":
        return faiss.SearchParametersHNSW(
            efSearch=max(c.ef_search, k) * (8 if widen else 1), sel=sel
        )
    nprobe = faiss.extract_index_ivf(index).nlist if widen else c.nprobe
    ivf = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
    if c.kind == "ivf":
        return ivf
    return faiss.IndexRefineSearchParameters(k_factor=c.refine_k, base_index_params=ivf)


def faiss_search(index, q: np.ndarray, k: int, params):
    """``index.search`` with search parameters. pytorch-metric-learning imports
    ``faiss.contrib.torch_utils``, which replaces ``Index.search`` with a torch-aware version
    that drops ``params=``; faiss keeps the original as ``search_numpy``."""
    search = getattr(index, "search_numpy", None) or index.search
    return search(q, k, params=params)


def run_search(config, index, q, k, sel, allowed_slots, n_allowed):
    """Top-k labels (slots) of ``q``, restricted by ``sel``; see the module docstring."""
    small = allowed_slots is not None and n_allowed <= SMALL_FILTER
    if small and config.kind != "ivf":
        return exact_scan(index, q, k, allowed_slots)
    scores, labels = faiss_search(index, q, k, search_params(config, sel, k, index))
    fill_short_rows(config, index, q, k, scores, labels, sel, allowed_slots, n_allowed)
    return scores, labels


def fill_short_rows(config, index, q, k, scores, labels, sel, allowed_slots, n_allowed):
    """Re-search, in place, the rows that found fewer than ``min(k, n_allowed)`` results."""
    short = (labels >= 0).sum(axis=1) < min(k, n_allowed)
    if not short.any():
        return
    rows = np.flatnonzero(short)
    if config.kind == "hnsw" and allowed_slots is not None and n_allowed <= EXACT_FALLBACK_MAX:
        s, lab = exact_scan(index, q[rows], k, allowed_slots)
    else:
        s, lab = faiss_search(index, q[rows], k, search_params(config, sel, k, index, widen=True))
    scores[rows], labels[rows] = s, lab


def exact_scan(index, q: np.ndarray, k: int, slots: np.ndarray):
    """Exact top-k of ``q`` among the stored vectors at ``slots`` (labels are slots)."""
    scores = q @ index.reconstruct_batch(slots).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out_s, out_l = empty_result(len(q), k)
    out_s[:, : top.shape[1]] = np.take_along_axis(scores, top, axis=1)
    out_l[:, : top.shape[1]] = slots[top]
    return out_s, out_l
