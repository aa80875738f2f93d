"""Clustered synthetic embeddings shaped like a catalog, for the index tests and benchmark.

Uniform random vectors are the wrong test bed for nearest-neighbour indexes: in 256-d every
pair is almost equally far, there is no structure for IVF lists or an HNSW graph to exploit,
and "the" nearest neighbour is noise. A fine-tuned embedding of a catalog looks instead like
categories -> products -> photos: a product's photos sit close together, products of one
category share a region. So: category centres on the unit sphere, products spread around their
category, a few noisy views per product, all L2-normalised; a shopper's query is one more
noisy view of an indexed product (not an indexed vector itself).

With the defaults (spread 1.0, view noise 1.0, dim 256) a product's views have cosine ~0.5
to each other and ~0.25 to other products' photos in the category; a query's exact top-1 is a
view of its own product (at 100k photos): structure an index can exploit, with near ties
between a product's views that an approximate index must still order right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticCatalog:
    vectors: np.ndarray  # (N, dim) float32, L2-normalised: the indexed photos
    product: np.ndarray  # (N,) int64: product of each photo
    category: np.ndarray  # (n_products,) int64: category of each product
    centres: np.ndarray  # (n_products, dim): noise-free product directions
    view_noise: float

    def queries(self, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``n`` shopper photos: fresh noisy views of random products, and those products."""
        rng = np.random.default_rng(seed)
        products = rng.integers(0, len(self.centres), n)
        return _views(self.centres[products], self.view_noise, rng), products


def _views(centres: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    dim = centres.shape[1]
    x = centres + noise * rng.standard_normal(centres.shape, dtype=np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)


def clustered_catalog(
    n: int,
    dim: int = 256,
    views: int = 4,
    categories: int | None = None,
    product_spread: float = 1.0,
    view_noise: float = 1.0,
    seed: int = 0,
) -> SyntheticCatalog:
    """``n`` photos of ``n // views`` products (each at least one photo, ``views`` on average)
    in ``categories`` categories (default: one per 1,000 photos, at least 10)."""
    rng = np.random.default_rng(seed)
    n_products = max(1, n // views)
    n_categories = categories or max(10, n // 1000)
    cat_centres = rng.standard_normal((n_categories, dim), dtype=np.float32)
    cat_centres /= np.linalg.norm(cat_centres, axis=1, keepdims=True)
    category = rng.integers(0, n_categories, n_products)
    centres = _views(cat_centres[category], product_spread, rng)
    product = np.concatenate([np.arange(n_products), rng.integers(0, n_products, n - n_products)])
    product = np.sort(product[:n])
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries at 1M x 256
        stop = min(n, start + 100_000)
        vectors[start:stop] = _views(centres[product[start:stop]], view_noise, rng)
    return SyntheticCatalog(vectors, product.astype(np.int64), category, centres, view_noise)
