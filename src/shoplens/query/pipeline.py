"""validate -> localize -> crop (with margin, background optionally masked) -> letterbox ->
normalise -> embed: the one query pipeline.

The networks come in as plain callables on normalised float tensors (a ``torch.export``
program in a registered model, a Lightning module's network in evaluate), so the steps around
them are the same code wherever a photo is searched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from shoplens.data.images import ImageLimits, letterbox, load_rgb
from shoplens.query.localize import Detection, Letterbox, detections_from_mask
from shoplens.query.spec import QuerySpec

# normalised (N, 3, S, S) -> (embedding,) or (embedding, logits)
EmbedderForward = Callable[[torch.Tensor], Sequence[torch.Tensor]]
# normalised (N, 3, L, L) -> product-mask logits (N, 1, h, w)
LocalizerForward = Callable[[torch.Tensor], torch.Tensor]
CHUNK = 256  # images per forward pass: bounds memory for large batches
MIN_CROP_SIDE = 4  # a box thinner than this in photo pixels cannot be embedded usefully

WHOLE_FRAME = -1  # QueryResult.searched value: the whole photo, not a detection


@dataclass
class Embedded:
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    logits: np.ndarray | None  # (N, C) float32, None without a category head


@dataclass
class QueryResult:
    """What the pipeline did with one photo and the vectors to search with."""

    width: int
    height: int
    detections: list[Detection]  # every product found, largest first
    # One row per searched region: the main product first (or the whole frame).
    embeddings: np.ndarray
    logits: np.ndarray | None
    searched: list[int]  # per row: index into detections, or WHOLE_FRAME
    note: str = ""  # why the whole frame was searched, when it was
    crops: list[np.ndarray] = field(default_factory=list, repr=False)  # what was embedded
    # The localizer's product probability over the letterboxed square (None: not localized).
    product_mask: np.ndarray | None = field(default=None, repr=False)
    threshold: float = 0.5

    @property
    def localized(self) -> bool:
        return bool(self.searched) and self.searched[0] != WHOLE_FRAME


def _normalise(images: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW: antialiased bilinear resize of the uint8 image,
    then /255, then (x - mean) / std (the evaluation transform training validated with)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float().div(255) - m) / s


class QueryPipeline:
    def __init__(
        self,
        spec: QuerySpec,
        embedder: EmbedderForward,
        localizer: LocalizerForward | None = None,
    ):
        if spec.localizer is not None and localizer is None:
            raise ValueError("the spec names a localizer but none was given")
        self.spec, self.embedder, self.localizer = spec, embedder, localizer
        self.limits = ImageLimits(**spec.limits) if spec.limits else ImageLimits()

    @property
    def can_localize(self) -> bool:
        return self.spec.localize and self.localizer is not None

    # -- steps ---------------------------------------------------------------------------
    def validate(self, data: bytes) -> Image.Image:
        """Decode an upload exactly as preprocess decodes catalog files (InvalidImageError)."""
        return load_rgb(data, self.limits)

    def embed_squares(self, squares: np.ndarray) -> Embedded:
        """Embed letterboxed uint8 squares ``(N, S, S, 3)``: catalog shots from the cache."""
        images = np.asarray(squares)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        e = self.spec.embedder
        embeddings, logits = [np.zeros((0, e.embedding_dim), np.float32)], []
        with torch.inference_mode():
            for start in range(0, len(images), CHUNK):
                batch = _normalise(images[start : start + CHUNK], e.image_size, e.mean, e.std)
                outputs = self.embedder(batch)
                embeddings.append(outputs[0].float().numpy())
                if len(outputs) > 1 and outputs[1] is not None:
                    logits.append(outputs[1].float().numpy())
        has_logits = bool(logits) or (e.num_classes > 0 and not len(images))
        return Embedded(
            np.concatenate(embeddings).astype(np.float32, copy=False),
            np.concatenate(logits or [np.zeros((0, e.num_classes), np.float32)])
            if has_logits
            else None,
        )

    def product_masks(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Product probability per pixel of each photo letterboxed to the localizer's side."""
        loc = self.spec.localizer
        assert loc is not None and self.localizer is not None
        squares = np.stack([letterbox(im, loc.input_size) for im in images])
        probs = []
        with torch.inference_mode():
            for start in range(0, len(squares), CHUNK):
                batch = _normalise(
                    squares[start : start + CHUNK], loc.input_size, loc.mean, loc.std
                )
                logits = self.localizer(batch)
                if logits.shape[-1] != loc.input_size:
                    logits = F.interpolate(logits, size=(loc.input_size,) * 2, mode="bilinear")
                probs.append(torch.sigmoid(logits[:, 0]).float().numpy())
        return list(np.concatenate(probs))

    def crop(
        self,
        image: Image.Image,
        detection: Detection | None = None,
        labels: np.ndarray | None = None,
        prob: np.ndarray | None = None,
    ) -> np.ndarray:
        """The region to embed as a letterboxed uint8 square: the whole photo, or the
        detection's box plus margin with (``mask_background``) everything outside this
        product's mask painted in the catalog's backdrop colour."""
        size = self.spec.embedder.letterbox_size
        if detection is None:
            return letterbox(image, size)
        x0, y0, x1, y1 = detection.box
        mx, my = self.spec.crop_margin * (x1 - x0), self.spec.crop_margin * (y1 - y0)
        cx0, cy0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
        cx1, cy1 = min(image.width, int(np.ceil(x1 + mx))), min(image.height, int(np.ceil(y1 + my)))
        region = image.crop((cx0, cy0, cx1, cy1))
        if self.spec.mask_background and labels is not None and prob is not None:
            region = self._mask(region, (cx0, cy0, cx1, cy1), image.size, detection, labels, prob)
        # letterbox pads with the region's border colour: the backdrop once it is masked.
        return letterbox(region, size)

    def _mask(self, region, box, photo_size, detection, labels, prob) -> Image.Image:
        """Alpha = this component's probability (grown by a pixel so soft edges stay),
        resampled from the localizer's square onto the crop; background -> backdrop."""
        frame = Letterbox(photo_size[0], photo_size[1], prob.shape[0])
        mine = labels == detection.label
        grown = mine | np.pad(mine, 1)[2:, 1:-1] | np.pad(mine, 1)[:-2, 1:-1]
        grown |= np.pad(mine, 1)[1:-1, 2:] | np.pad(mine, 1)[1:-1, :-2]
        alpha_sq = np.where(grown, prob, 0.0).astype(np.float32)
        ix0, iy0, _, _ = frame.inner
        s = frame.scale
        cx0, cy0, cx1, cy1 = box
        src = (ix0 + cx0 * s, iy0 + cy0 * s, ix0 + cx1 * s, iy0 + cy1 * s)
        alpha = Image.fromarray(alpha_sq, mode="F").resize(
            region.size, Image.Resampling.BILINEAR, box=src
        )
        a = np.clip(np.asarray(alpha), 0.0, 1.0)[..., None]
        backdrop = np.asarray(self.spec.backdrop, dtype=np.float32)
        pixels = np.asarray(region, dtype=np.float32) * a + backdrop * (1 - a)
        return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))

    # -- the whole pipeline --------------------------------------------------------------
    def query(
        self, photo: bytes | Image.Image, all_products: bool = False, localize: bool | None = None
    ) -> QueryResult:
        """One photo (upload bytes are validated first) -> what to search with."""
        return self.query_batch([photo], all_products, localize)[0]

    def query_batch(
        self,
        photos: Sequence[bytes | Image.Image],
        all_products: bool = False,
        localize: bool | None = None,
    ) -> list[QueryResult]:
        """Many photos at once (batched forward passes); each as :meth:`query` would."""
        images = [p if isinstance(p, Image.Image) else self.validate(bytes(p)) for p in photos]
        localize = self.can_localize if localize is None else localize and self.can_localize
        probs = self.product_masks(images) if localize and images else [None] * len(images)
        plans = [
            self._plan(im, prob, localize, all_products)
            for im, prob in zip(images, probs, strict=True)
        ]
        crops = [c for plan in plans for c in plan[3]]
        embedded = self.embed_squares(np.stack(crops)) if crops else None
        results, row = [], 0
        threshold = self.spec.localizer.threshold if self.spec.localizer else 0.5
        for image, prob, (detections, searched, note, plan_crops) in zip(
            images, probs, plans, strict=True
        ):
            rows = slice(row, row + len(plan_crops))
            row += len(plan_crops)
            assert embedded is not None
            results.append(
                QueryResult(
                    image.width,
                    image.height,
                    detections,
                    embedded.embeddings[rows],
                    None if embedded.logits is None else embedded.logits[rows],
                    searched,
                    note,
                    plan_crops,
                    prob,
                    threshold,
                )
            )
        return results

    def _plan(self, image, prob, localize: bool, all_products: bool):
        """Which regions of one photo to embed: (detections, searched, note, crops)."""
        if not localize:
            return [], [WHOLE_FRAME], "localization is off", [self.crop(image)]
        loc = self.spec.localizer
        assert loc is not None
        frame = Letterbox(image.width, image.height, loc.input_size)
        detections, labels = detections_from_mask(prob, frame, loc.threshold, loc.min_area)
        usable = [
            i
            for i, d in enumerate(detections)
            if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= MIN_CROP_SIDE
        ]
        if not usable:
            note = "no product found" if not detections else "every product found is too small"
            return detections, [WHOLE_FRAME], note, [self.crop(image)]
        chosen = usable if all_products else usable[:1]
        crops = [self.crop(image, detections[i], labels, prob) for i in chosen]
        return detections, chosen, "", crops
