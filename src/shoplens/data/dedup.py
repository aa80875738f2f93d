"""Find copies of the same photo, so that no copy ends up on the other side of a split.

A shop's catalog often holds the same shot twice: re-uploaded, re-encoded, resized, under
two product ids. If one copy lands in train and the other in test, retrieval scores measure
memory, not search. We link images that share a product id, identical bytes (sha256), or a
near-identical look (perceptual hash), and put each connected component in one group.

Perceptual hashes alone over-link: on Fashion-MNIST, different products with the same
silhouette hash within 4 bits, and chaining through such pairs merged 11,000 of 70,000
images into one "group". So each hash match is verified on a small grayscale thumbnail
(correlation >= ``MIN_THUMBNAIL_CORRELATION``), which re-encoding, resizing and tone changes
keep near 1.0 and distinct products do not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from shoplens.data.catalog import CONTENT_HASH, PHASH, PRODUCT_ID

PHASH_BITS = 64  # imagehash.phash with its default hash_size=8
THUMBNAIL_SIDE = 16
MIN_THUMBNAIL_CORRELATION = 0.99


def content_hash(data: bytes) -> str:
    """sha256 of the file bytes, hex: equal only for byte-identical files."""
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(img: Image.Image) -> str:
    """64-bit DCT hash as 16 hex digits; similar images differ in few bits."""
    return str(imagehash.phash(img))


def thumbnail(img: Image.Image) -> np.ndarray:
    """Tiny grayscale version used to verify perceptual-hash matches, uint8 (16, 16)."""
    small = img.convert("L").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def exact_duplicate_pairs(content_hashes: Sequence[str]) -> np.ndarray:
    """``(M, 2)`` row pairs with equal hashes: each copy linked to the first of its kind."""
    codes = pd.Series(content_hashes, dtype=str).factorize()[0]
    return _pairs_to_first(codes)


def near_duplicate_pairs(
    phashes: Sequence[str],
    max_distance: int,
    thumbnails: np.ndarray | None = None,
    min_correlation: float = MIN_THUMBNAIL_CORRELATION,
) -> np.ndarray:
    """``(M, 2)`` row pairs ``i < j`` whose hashes differ in at most ``max_distance`` bits.

    faiss's exhaustive binary search does all N^2 Hamming distances in C (70,000 hashes in
    about 3 s on two cores). With ``thumbnails`` (one per row) a pair must also pass the
    thumbnail correlation check described in the module docstring.
    """
    if len(phashes) < 2 or max_distance < 0:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.stack([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in phashes])
    index = faiss.IndexBinaryFlat(PHASH_BITS)
    index.add(codes)
    # faiss returns distances strictly below the radius.
    limits, _, neighbours = index.range_search(codes, max_distance + 1)
    queries = np.repeat(np.arange(len(phashes)), np.diff(limits).astype(np.int64))
    keep = queries < neighbours
    pairs = np.stack([queries[keep], neighbours[keep].astype(np.int64)], axis=1)
    if thumbnails is not None and len(pairs):
        pairs = pairs[thumbnail_correlation(thumbnails, pairs) >= min_correlation]
    return pairs


def thumbnail_correlation(thumbnails: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pearson correlation of the two thumbnails of each pair (immune to brightness/contrast).

    A flat thumbnail has no structure to compare and correlates 0 with anything.
    """
    flat = thumbnails.reshape(len(thumbnails), -1).astype(np.float32)
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    flat /= np.where(norms > 0, norms, np.inf)
    return np.einsum("ij,ij->i", flat[pairs[:, 0]], flat[pairs[:, 1]])


@dataclass(frozen=True)
class Duplicates:
    """Copy links between catalog rows (positional indices)."""

    exact_pairs: np.ndarray
    near_pairs: np.ndarray  # may include byte-identical pairs too
    exact_duplicates: int  # rows whose bytes equal an earlier row's
    near_duplicates: int  # rows with a near copy whose bytes differ


def find_duplicates(
    df: pd.DataFrame, max_distance: int, thumbnails: np.ndarray | None = None
) -> Duplicates:
    """Exact and near copies among the rows of ``df`` (needs content_hash and phash)."""
    exact = exact_duplicate_pairs(df[CONTENT_HASH].tolist())
    near = near_duplicate_pairs(df[PHASH].tolist(), max_distance, thumbnails)
    hashes = df[CONTENT_HASH].to_numpy()
    differing = near[hashes[near[:, 0]] != hashes[near[:, 1]]]
    return Duplicates(
        exact_pairs=exact,
        near_pairs=near,
        exact_duplicates=len(df) - df[CONTENT_HASH].nunique(),
        near_duplicates=len(np.unique(differing)),
    )


def assign_groups(
    df: pd.DataFrame, duplicates: Duplicates | None = None, near_duplicate_distance: int = 4
) -> pd.Series:
    """Group id per row: connected components of same product ∪ exact copy ∪ near copy.

    Pass ``duplicates`` from :func:`find_duplicates` to reuse (and verify) its links;
    otherwise they are computed from the hashes alone.
    """
    if duplicates is None:
        duplicates = find_duplicates(df, near_duplicate_distance)
    same_product = _pairs_to_first(pd.Series(df[PRODUCT_ID]).factorize()[0])
    edges = np.concatenate([same_product, duplicates.exact_pairs, duplicates.near_pairs])
    n = len(df)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return pd.Series(labels.astype(np.int64), index=df.index, name="group_id")


def _pairs_to_first(codes: np.ndarray) -> np.ndarray:
    """Link each row to the first row with the same code (a star per code: connected)."""
    codes = np.asarray(codes)
    first_row = pd.Series(np.arange(len(codes))).groupby(codes).transform("min").to_numpy()
    rows = np.arange(len(codes))
    linked = first_row != rows
    return np.stack([first_row[linked], rows[linked]], axis=1).astype(np.int64)
