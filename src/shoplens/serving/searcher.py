"""Photo in, products out: the one code path behind ``shoplens search`` and the HTTP service.

A shopper's upload goes through the registered model's query pipeline (validate -> localize ->
crop -> embed, :mod:`shoplens.query`), the code evaluate measured, then the catalog index.
Products a shop adds are catalog shots: validated and letterboxed whole, as preprocess treats
catalog files. Additions and removals go through :class:`~shoplens.catalog_store.DurableCatalog`:
journalled before the answer, outside the index stage's DVC output (``search.state_dir``), so
they survive a crash and a rebuilt index.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from PIL import Image

from shoplens.catalog_store import DurableCatalog
from shoplens.catalog_store.query_log import QUERY_LOG_FILE, QueryLog, QueryRecord
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CACHE_INDEX
from shoplens.query.pipeline import WHOLE_FRAME
from shoplens.registry.champion import LoadedModel, load_champion
from shoplens.search import ProductHit, category_log_prior, search_with_prior
from shoplens.tracking import configure_mlflow

IMAGE_MAP, UPLOADS = "images.parquet", "uploads"


class UnknownProduct(LookupError):
    """No photo of this product is indexed."""


class UnknownCategory(ValueError):
    """A category neither the model nor the index knows."""


@dataclass
class RegionHits:
    box: tuple[int, int, int, int] | None  # None: the whole photo
    score: float | None
    hits: list[ProductHit]
    upscaled: bool = False  # the region was super-resolved before embedding (small crop)


@dataclass
class PhotoAnswer:
    """What one photo got: the searched region first, then every product found."""

    width: int
    height: int
    localized: bool
    note: str
    searched: RegionHits
    products: list[RegionHits]
    # False: the best score is under the index's "no confident match" threshold (the shop
    # probably does not sell what was photographed). None: the index has no threshold.
    match: bool | None = None
    match_threshold: float | None = None
    embedding: np.ndarray | None = None  # the vector the main region was searched with
    # The closest catalog photo's cosine similarity (what `match` compares): with the
    # category prior the first result need not be the closest.
    closest: float | None = None


class Searcher:
    def __init__(self, cfg: DictConfig, model: LoadedModel | None = None):
        self.dir, self.state_dir = Path(cfg.search.dir), Path(cfg.search.state_dir)
        if model is None:
            configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
            runtime = str(cfg.query.runtime)
            model = load_champion(str(cfg.registry.model_name), runtime=runtime)
        self.model = model
        # The registered pipeline decides everything about a photo; the service only narrows
        # its upload limits and may switch localization off (query.localize).
        spec = model.pipeline.spec.with_options(
            localize=bool(cfg.query.localize) and model.pipeline.spec.localize,
            super_resolve=bool(cfg.query.super_resolve) and model.pipeline.spec.super_resolve,
            limits={
                "min_size": int(cfg.preprocess.min_size),
                "max_pixels": int(cfg.search.max_pixels),
                "max_file_bytes": int(cfg.search.max_upload_bytes),
            },
        )
        self.pipeline = model.pipeline.with_spec(spec)
        self.limits = self.pipeline.limits
        self.search_cfg = cfg.search
        # Raises IndexModelMismatch: vectors of another model are not comparable to ours.
        self.catalog = DurableCatalog(
            self.dir, self.state_dir, model.name, model.version, self._embed_stored_photos,
            snapshot_every=int(cfg.search.snapshot_every),
        )  # fmt: skip
        self.index = self.catalog.index
        log_cfg = cfg.search.query_log
        self.query_log = (
            QueryLog(
                self.state_dir / QUERY_LOG_FILE, float(log_cfg.keep_days), log_cfg.store_photos
            )
            if log_cfg.enabled
            else None
        )
        self.categories = sorted(set(model.categories) | set(self.index.categories))
        images = pd.read_parquet(self.dir / IMAGE_MAP)
        self._cache_rows = dict(zip(images["id"], images[CACHE_INDEX], strict=True))
        cache = Path(cfg.paths.catalog_dir) / CACHE_FILE
        self._cache = open_cache(cache) if cache.is_file() else None

    # -- queries ---------------------------------------------------------------------------
    def check_category(self, category: str | None) -> None:
        if category is not None and category not in self.categories:
            raise UnknownCategory(
                f"unknown category {category!r}; known: {', '.join(self.categories)}"
            )

    def _hits(
        self, embedding: np.ndarray, logits, k: int, category: str | None
    ) -> tuple[list[ProductHit], float | None]:
        """The ``k`` best products, and the best cosine similarity the search saw (what the
        no-match threshold and the whole-photo-vs-crop choice compare; ``None``: no hit).

        An explicit ``category`` filters; else ``search.narrow_by_category`` narrows to the
        head's top categories; else the spec's ``category_prior`` tilts the ranking towards
        the head's category (:mod:`shoplens.search.category_prior`).
        """
        if category is None and logits is not None:
            if self.search_cfg.narrow_by_category:
                hits = self._narrowed(embedding[None], logits, k)
                return hits, hits[0].score if hits else None
            if (weight := self.pipeline.spec.category_prior) > 0:
                prior = category_log_prior(logits, self.model.categories)
                return search_with_prior(self.index, embedding, k, prior, weight)
        hits = self.index.search(embedding[None], k, category)[0]
        return hits, hits[0].score if hits else None

    def _narrowed(self, query: np.ndarray, logits: np.ndarray, k: int) -> list[ProductHit]:
        """Search only the classifier's top categories: fewer vectors per query, and no
        look-alikes from a category the photo clearly is not."""
        top = np.argsort(-logits)[: int(self.search_cfg.narrow_top_categories)]
        hits = [h for c in top for h in self.index.search(query, k, self.model.categories[c])[0]]
        return sorted(hits, key=lambda h: -h.score)[:k]

    def answer(
        self, data: bytes, k: int, category: str | None = None, all_products: bool = False
    ) -> PhotoAnswer:
        """validate -> localize -> crop -> embed (the registered pipeline), then search."""
        self.check_category(category)
        result = self.pipeline.query(data, all_products=all_products)
        regions, closest = [], []
        for row, index in enumerate(result.searched):
            logits = None if result.logits is None else result.logits[row]
            hits, best = self._hits(result.embeddings[row], logits, k, category)
            closest.append(best)
            found = result.detections[index] if index != WHOLE_FRAME else None
            box = tuple(found.box) if found else None
            regions.append(
                RegionHits(box, found.score if found else None, hits, result.upscaled[row])
            )
        searched = dict(zip(result.searched, regions, strict=True))
        products = [
            searched.get(i, RegionHits(tuple(d.box), d.score, []))
            for i, d in enumerate(result.detections)
        ]
        main, localized, note = regions[0], result.localized, result.note
        embedding, best = result.embeddings[0], closest[0]
        if result.whole_embedding is not None:  # the product spans most of the photo
            whole, whole_best = self._hits(result.whole_embedding, result.whole_logits, k, category)
            if whole and (not main.hits or whole_best > best):
                main, localized = RegionHits(None, None, whole, result.whole_upscaled), False
                best = whole_best
                embedding = result.whole_embedding
                note = (
                    "the whole photo matched closer than the product's crop (a catalog-like shot)"
                )
        threshold = self.match_threshold
        match = None if threshold is None else bool(main.hits and best >= threshold)
        return PhotoAnswer(
            result.width, result.height, localized, note, main, products, match, threshold,
            embedding, best,
        )  # fmt: skip

    def log_query(self, answer: PhotoAnswer, photo: bytes) -> None:
        """Record a shopper's search when ``search.query_log.enabled`` (for drift monitoring)."""
        if self.query_log is None or answer.embedding is None:
            return
        top = answer.searched.hits[0] if answer.searched.hits else None
        self.query_log.record(
            QueryRecord(
                answer.embedding, f"{self.model.name}:{self.model.version}",
                top.category if top else None, answer.closest,
                answer.localized, answer.match,
            ),
            photo,
        )  # fmt: skip

    @property
    def match_threshold(self) -> float | None:
        """Chosen by the index stage on this index (shoplens.evaluation.no_match)."""
        value = self.index.meta.get("match_threshold")
        return None if value is None else float(value)

    def search(self, data: bytes, k: int, category: str | None = None) -> list[ProductHit]:
        return self.answer(data, k, category).searched.hits

    def similar(self, product_id: str, k: int, category: str | None = None) -> list[ProductHit]:
        """Products that look like ``product_id``'s first photo (itself left out)."""
        self.check_category(category)
        photos = self.index.photos(product_id)
        if not photos:
            raise UnknownProduct(f"no product {product_id!r} in the index")
        embedded = self.pipeline.embed_squares(self.image_pixels(photos[0][0])[None])
        logits = None if embedded.logits is None else embedded.logits[0]
        hits, _ = self._hits(embedded.embeddings[0], logits, k + 1, category)
        return [h for h in hits if h.product_id != product_id][:k]

    # -- images ----------------------------------------------------------------------------
    def image_pixels(self, image_id: int) -> np.ndarray:
        if image_id in self._cache_rows and self._cache is not None:
            return np.asarray(self._cache[self._cache_rows[image_id]])
        path = self.index.image_path(image_id)
        if path is None or not path.startswith(f"{UPLOADS}/"):
            raise UnknownProduct(f"no image {image_id} in the index")
        return np.asarray(Image.open(self.state_dir / path).convert("RGB"))

    def image_png(self, image_id: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.image_pixels(image_id)).save(buffer, format="PNG")
        return buffer.getvalue()

    # -- changes, persisted ------------------------------------------------------------------
    def catalog_square(self, data: bytes) -> np.ndarray:
        """A shop's product shot, validated and letterboxed whole as preprocess does."""
        return self.pipeline.crop(self.pipeline.validate(data)).copy()  # writable

    def add_product(self, product_id: str, category: str, data: bytes) -> list[int]:
        """A catalog shot (one product on a plain backdrop), embedded as the index embeds.
        The photo is on disk (fsynced) before the journal row that names it."""
        self.check_category(category)
        pixels = self.catalog_square(data)
        vector = self.pipeline.embed_squares(pixels[None]).embeddings[0]
        rel = f"{UPLOADS}/{uuid.uuid4().hex}.png"
        (self.state_dir / UPLOADS).mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / rel, "wb") as file:
            Image.fromarray(pixels).save(file, format="PNG")
            file.flush()
            os.fsync(file.fileno())
        return self.catalog.add(product_id, category, rel, vector)

    def remove_product(self, product_id: str) -> int:
        photos = self.catalog.remove(product_id)
        if not photos:
            raise UnknownProduct(f"no product {product_id!r} in the index")
        for _, path in photos:
            if path.startswith(f"{UPLOADS}/"):
                (self.state_dir / path).unlink(missing_ok=True)
        return len(photos)

    def _embed_stored_photos(self, paths: list[str]) -> np.ndarray:
        """Re-embed added products after a model change (their stored catalog squares)."""
        squares = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
        return self.pipeline.embed_squares(squares).embeddings

    def close(self) -> None:
        self.catalog.close()
        if self.query_log is not None:
            self.query_log.close()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model_name": self.model.name,
            "model_version": self.model.version,
            "localizer": self.pipeline.can_localize,
            "index_kind": self.index.meta["index_kind"],
            "index_size": len(self.index),
            "match_threshold": self.match_threshold,
            "products": self.index.n_products,
            "categories": self.categories,
        }
