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
from shoplens.query.crop import MIN_CROP_SIDE, crop_product, side
from shoplens.query.localize import Detection, Letterbox, detections_from_mask
from shoplens.query.second_look import look_in_tiles, refine
from shoplens.query.spec import QuerySpec
from shoplens.query.upscale import Upscaler

# normalised (N, 3, S, S) -> (embedding,) or (embedding, logits)
EmbedderForward = Callable[[torch.Tensor], Sequence[torch.Tensor]]
# normalised (N, 3, L, L) -> product-mask logits (N, 1, h, w)
LocalizerForward = Callable[[torch.Tensor], torch.Tensor]
# RGB in [0, 1] (N, 3, h, w) -> (N, 3, scale*h, scale*w)
SuperResolverForward = Callable[[torch.Tensor], torch.Tensor]
CHUNK = 256  # images per forward pass: bounds memory for large batches

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
    # The whole photo embedded too, when the main product spans most of it (spec
    # whole_frame_above): search both, the closer match answers.
    whole_embedding: np.ndarray | None = None
    whole_logits: np.ndarray | None = None
    # Per row: the crop was super-resolved before letterboxing (it was smaller than the
    # spec's upscale.below); whole_upscaled: the same for the whole photo's extra row.
    upscaled: list[bool] = field(default_factory=list)
    whole_upscaled: bool = False
    # Regions of the photo the localizer looked at again (query/second_look.py): (box in
    # photo pixels, product probability over that region letterboxed), later looks on top.
    closer_looks: list[tuple[tuple[int, int, int, int], np.ndarray]] = field(
        default_factory=list, repr=False
    )

    @property
    def localized(self) -> bool:
        return bool(self.searched) and self.searched[0] != WHOLE_FRAME


@dataclass
class _Plan:
    """One photo's regions to embed: ``(image,)`` for a whole photo, else ``(image, detection,
    labels, prob)`` with the detection in that image's pixels (a crop after refinement)."""

    detections: list[Detection]
    searched: list[int]
    note: str
    regions: list[tuple]
    also_whole: bool = False  # embed the whole photo as well (a catalog-like shot)
    missed: bool = False  # localized, and nothing usable found: worth a look in tiles
    looks: list[tuple] = field(default_factory=list)  # QueryResult.closer_looks


def with_mirrors(batch: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(2N, C, H, W)``: each image followed by its mirror image, the
    layout a localizer graph fixed at two images runs (and is calibrated on)."""
    return torch.stack([batch, batch.flip(-1)], dim=1).flatten(0, 1)


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
        super_resolver: SuperResolverForward | None = None,
    ):
        if spec.localizer is not None and localizer is None:
            raise ValueError("the spec names a localizer but none was given")
        if spec.upscale is not None and super_resolver is None:
            raise ValueError("the spec names a super-resolver but none was given")
        self.spec, self.embedder, self.localizer = spec, embedder, localizer
        self.super_resolver = super_resolver
        up = spec.upscale
        self.upscaler = (
            Upscaler(super_resolver, up.scale, up.below)
            if up is not None and spec.super_resolve and super_resolver is not None
            else None
        )
        self.limits = ImageLimits(**spec.limits) if spec.limits else ImageLimits()

    def with_spec(self, spec: QuerySpec) -> QueryPipeline:
        """The same networks under another spec (switches or upload limits changed)."""
        return QueryPipeline(spec, self.embedder, self.localizer, self.super_resolver)

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
        # With the mirror, each photo and its mirror image are neighbours in one batch (a
        # graph whose batch is fixed at 2 runs them as a pair): half the photos per chunk.
        chunk = CHUNK // 2 if loc.average_mirror else CHUNK
        probs = []
        with torch.inference_mode():
            for start in range(0, len(squares), chunk):
                batch = _normalise(
                    squares[start : start + chunk], loc.input_size, loc.mean, loc.std
                )
                if loc.average_mirror:
                    batch = with_mirrors(batch)
                logits = self.localizer(batch)
                if logits.shape[-1] != loc.input_size:
                    logits = F.interpolate(logits, size=(loc.input_size,) * 2, mode="bilinear")
                prob = torch.sigmoid(logits[:, 0].float())
                if loc.average_mirror:  # the mirror's map flipped back onto the photo
                    prob = (prob[0::2] + prob[1::2].flip(-1)) / 2
                probs.append(prob.numpy())
        return list(np.concatenate(probs))

    def crop(
        self,
        image: Image.Image,
        detection: Detection | None = None,
        labels: np.ndarray | None = None,
        prob: np.ndarray | None = None,
    ) -> np.ndarray:
        """What to embed for ``detection`` (None: the whole photo), as a letterboxed square."""
        return self.crop_and_flag(image, detection, labels, prob)[0]

    def crop_and_flag(
        self,
        image: Image.Image,
        detection: Detection | None = None,
        labels: np.ndarray | None = None,
        prob: np.ndarray | None = None,
    ) -> tuple[np.ndarray, bool]:
        """:meth:`crop`, and whether the region was super-resolved on the way."""
        spec, upscaled = self.spec, []

        def upscale(region: Image.Image) -> Image.Image:
            out = self.upscaler(region)
            upscaled.append(out is not region)
            return out

        square = crop_product(
            image, spec.embedder.letterbox_size, detection, labels, prob,
            margin=spec.crop_margin, mask_background=spec.mask_background,
            backdrop=spec.backdrop, upscale=upscale if self.upscaler else None,
        )  # fmt: skip
        return square, any(upscaled)

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
        refine(self.spec.localizer, self.product_masks, images, plans)
        tiled = look_in_tiles(self.spec.localizer, self.product_masks, images, plans)
        # A product found in the tiles gets the closer look one found at first got.
        refine(
            self.spec.localizer, self.product_masks,
            [images[i] for i in tiled], [plans[i] for i in tiled],
        )  # fmt: skip
        cropped = [self.crop_and_flag(*where) for plan in plans for where in plan.regions]
        n_regions = len(cropped)
        cropped += [
            self.crop_and_flag(im)
            for im, plan in zip(images, plans, strict=True)
            if plan.also_whole
        ]
        crops, flags = [c for c, _ in cropped], [f for _, f in cropped]
        embedded = self.embed_squares(np.stack(crops))
        results, row, whole_row = [], 0, n_regions
        threshold = self.spec.localizer.threshold if self.spec.localizer else 0.5
        for image, prob, plan in zip(images, probs, plans, strict=True):
            rows = slice(row, row + len(plan.regions))
            row += len(plan.regions)
            whole, whole_logits, whole_upscaled = None, None, False
            if plan.also_whole:
                whole = embedded.embeddings[whole_row]
                whole_logits = None if embedded.logits is None else embedded.logits[whole_row]
                whole_upscaled = flags[whole_row]
                whole_row += 1
            results.append(
                QueryResult(
                    image.width,
                    image.height,
                    plan.detections,
                    embedded.embeddings[rows],
                    None if embedded.logits is None else embedded.logits[rows],
                    plan.searched,
                    plan.note,
                    crops[rows],
                    prob,
                    threshold,
                    whole,
                    whole_logits,
                    flags[rows],
                    whole_upscaled,
                    plan.looks,
                )
            )
        return results

    def _plan(self, image, prob, localize: bool, all_products: bool) -> _Plan:
        """Which regions of one photo to embed (the whole photo, or products found)."""
        if not localize:
            return _Plan([], [WHOLE_FRAME], "localization is off", [(image,)])
        loc = self.spec.localizer
        assert loc is not None
        frame = Letterbox(image.width, image.height, loc.input_size)
        detections, labels = detections_from_mask(prob, frame, loc.threshold, loc.min_area)
        usable = [i for i, d in enumerate(detections) if side(d.box, min) >= MIN_CROP_SIDE]
        if not usable:
            note = "no product found" if not detections else "every product found is too small"
            return _Plan(detections, [WHOLE_FRAME], note, [(image,)], missed=True)
        chosen = usable if all_products else usable[:1]
        regions = [(image, detections[i], labels, prob) for i in chosen]
        x0, y0, x1, y1 = detections[chosen[0]].box
        span = max((x1 - x0) / image.width, (y1 - y0) / image.height)
        above = self.spec.whole_frame_above
        return _Plan(detections, chosen, "", regions, also_whole=bool(above) and span >= above)
