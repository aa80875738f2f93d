"""Photo in, products out: the one code path behind ``shoplens search`` and the HTTP service.

A shopper's upload goes through exactly the validation the preprocess stage applies to catalog
files (``load_rgb`` with :class:`ImageLimits`) and the same letterbox to the catalog cache's
size, so a catalog photo uploaded as a query embeds exactly as its indexed copy. Additions and
removals are written back to the index directory at once (under one lock, so two writers never
interleave their files), which is what lets a restarted service see them.
"""

from __future__ import annotations

import io
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from PIL import Image

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CACHE_INDEX, CATEGORY, PATH, PRODUCT_ID
from shoplens.data.images import ImageLimits, letterbox, load_rgb
from shoplens.search import CatalogIndex, ProductHit
from shoplens.search.catalog_index import META_FILE
from shoplens.serving.model import LoadedModel, load_champion
from shoplens.tracking import configure_mlflow

IMAGE_MAP, UPLOADS = "images.parquet", "uploads"


class UnknownProduct(LookupError):
    """No photo of this product is indexed."""


class UnknownCategory(ValueError):
    """A category neither the model nor the index knows."""


class Searcher:
    def __init__(self, cfg: DictConfig, model: LoadedModel | None = None):
        self.dir = Path(cfg.search.dir)
        if not (self.dir / META_FILE).is_file():
            raise FileNotFoundError(f"no index in {self.dir}: run `shoplens index` first")
        if model is None:
            configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
            model = load_champion(str(cfg.registry.model_name))
        self.model = model
        # Raises IndexModelMismatch: vectors of another model are not comparable to ours.
        self.index = CatalogIndex.load(self.dir, model.name, model.version)
        self.limits = ImageLimits(
            min_size=int(cfg.preprocess.min_size),
            max_pixels=int(cfg.search.max_pixels),
            max_file_bytes=int(cfg.search.max_upload_bytes),
        )
        self.search_cfg = cfg.search
        # Uploads are letterboxed to the side the catalog cache has (what the index embedded),
        # and the model resizes both alike: a catalog photo uploaded as a file then embeds
        # exactly as its indexed copy. Letterboxing straight to the model's input size took
        # another resampling path, scored a product's own photo ~0.998, and let look-alikes
        # at 0.999 outrank it (hit@1 0.86 in benchmarks/search_http.py).
        self.photo_size = int(cfg.preprocess.cache_size)
        self.categories = sorted(set(model.categories) | set(self.index.categories))
        images = pd.read_parquet(self.dir / IMAGE_MAP)
        self._cache_rows = dict(zip(images["id"], images[CACHE_INDEX], strict=True))
        cache = Path(cfg.paths.catalog_dir) / CACHE_FILE
        self._cache = open_cache(cache) if cache.is_file() else None
        self._write = threading.Lock()

    # -- queries ---------------------------------------------------------------------------
    def photo(self, data: bytes) -> np.ndarray:
        """Validate and letterbox an upload as preprocess does; raises InvalidImageError."""
        return letterbox(load_rgb(data, self.limits), self.photo_size).copy()  # writable

    def check_category(self, category: str | None) -> None:
        if category is not None and category not in self.categories:
            raise UnknownCategory(
                f"unknown category {category!r}; known: {', '.join(self.categories)}"
            )

    def search_pixels(self, pixels: np.ndarray, k: int, category: str | None = None):
        self.check_category(category)
        if category is None and self.search_cfg.narrow_by_category and self.model.has_logits:
            query, logits = self.model.embed_with_logits(pixels[None])
            return self._narrowed(query, logits[0], k)
        return self.index.search(self.model.embed(pixels[None]), k, category)[0]

    def _narrowed(self, query: np.ndarray, logits: np.ndarray, k: int) -> list[ProductHit]:
        """Search only the classifier's top categories: fewer vectors per query, and no
        look-alikes from a category the photo clearly is not."""
        top = np.argsort(-logits)[: int(self.search_cfg.narrow_top_categories)]
        hits = [h for c in top for h in self.index.search(query, k, self.model.categories[c])[0]]
        return sorted(hits, key=lambda h: -h.score)[:k]

    def search(self, data: bytes, k: int, category: str | None = None) -> list[ProductHit]:
        return self.search_pixels(self.photo(data), k, category)

    def similar(self, product_id: str, k: int, category: str | None = None) -> list[ProductHit]:
        """Products that look like ``product_id``'s first photo (itself left out)."""
        photos = self.index.photos(product_id)
        if not photos:
            raise UnknownProduct(f"no product {product_id!r} in the index")
        pixels = self.image_pixels(photos[0][0])
        hits = self.search_pixels(pixels, k + 1, category)
        return [h for h in hits if h.product_id != product_id][:k]

    # -- images ----------------------------------------------------------------------------
    def image_pixels(self, image_id: int) -> np.ndarray:
        if image_id in self._cache_rows and self._cache is not None:
            return np.asarray(self._cache[self._cache_rows[image_id]])
        path = self.index.image_path(image_id)
        if path is None or not path.startswith(f"{UPLOADS}/"):
            raise UnknownProduct(f"no image {image_id} in the index")
        return np.asarray(Image.open(self.dir / path).convert("RGB"))

    def image_png(self, image_id: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.image_pixels(image_id)).save(buffer, format="PNG")
        return buffer.getvalue()

    # -- changes, persisted ------------------------------------------------------------------
    def add_product(self, product_id: str, category: str, data: bytes) -> list[int]:
        self.check_category(category)
        pixels = self.photo(data)
        vector = self.model.embed(pixels[None])
        rel = f"{UPLOADS}/{uuid.uuid4().hex}.png"
        (self.dir / UPLOADS).mkdir(exist_ok=True)
        Image.fromarray(pixels).save(self.dir / rel)
        row = pd.DataFrame({PATH: [rel], PRODUCT_ID: [product_id], CATEGORY: [category]})
        with self._write:
            ids = self.index.add_products(row, vector).tolist()
            self.index.save(self.dir)
        return ids

    def remove_product(self, product_id: str) -> int:
        with self._write:
            photos = self.index.photos(product_id)
            removed = self.index.remove_product(product_id)
            if not removed:
                raise UnknownProduct(f"no product {product_id!r} in the index")
            for _, path in photos:
                if path.startswith(f"{UPLOADS}/"):
                    (self.dir / path).unlink(missing_ok=True)
            self.index.save(self.dir)
        return removed

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model_name": self.model.name,
            "model_version": self.model.version,
            "index_kind": self.index.meta["index_kind"],
            "index_size": len(self.index),
            "products": self.index.n_products,
            "categories": self.categories,
        }
