"""What a registered model records about how a photo must be prepared, as plain JSON.

Training decides these numbers (the catalog cache side, the weights' normalisation, the
localizer's input size and threshold); the model carries them, so serving never re-creates
preprocessing from its own config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EmbedderSpec:
    image_size: int  # the embedder's input side
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Photos are letterboxed to the catalog cache's side first, exactly like catalog files in
    # preprocess, then resized to image_size by the model: a catalog photo uploaded as a query
    # embeds exactly as its indexed copy.
    letterbox_size: int
    embedding_dim: int
    num_classes: int = 0  # 0: no category head


@dataclass(frozen=True)
class LocalizerSpec:
    input_size: int  # photos are letterboxed to this square for the product mask
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float = 0.5  # mask probability counted as product
    min_area: float = 0.002  # components smaller than this share of the frame are noise
    # A product whose box's longer side is under this share of the photo's is localized again
    # in a crop around it, where it fills the localizer's input (0: never).
    refine_below: float = 0.5
    # Refine every product found, not only the searched one(s): sharper boxes for the others
    # (the page draws them to click), one more localizer pass per product.
    refine_every: bool = False
    # A photo whose longer side is at least this many times the input size and in which the
    # first pass found nothing usable is localized again in overlapping tiles
    # (shoplens.query.second_look; 0: never) ...
    tile_above: float = 0.0
    # ... each tile magnified this many times (its side: input_size / tile_zoom photo pixels).
    tile_zoom: float = 1.5
    # ... and also where the one product it found is under this share of the photo's longer
    # side: a tile's more confident product replaces it (0: only where nothing was found).
    tile_small_below: float = 0.0
    # Every look also runs the photo's mirror image and averages the two probability maps
    # (flip test-time augmentation): a product the network half-sees in one orientation is
    # found in the other. Both go through the network as one batch.
    average_mirror: bool = False

    def __post_init__(self) -> None:
        if self.tile_zoom <= 0:
            raise ValueError(f"tile_zoom must be positive, got {self.tile_zoom}")


@dataclass(frozen=True)
class UpscaleSpec:
    """Super-resolution of small crops (:mod:`shoplens.query.upscale`)."""

    scale: int  # the network's factor
    # A crop whose longer side is under this many pixels is super-resolved once before
    # letterboxing; larger crops never are.
    below: int


@dataclass(frozen=True)
class QuerySpec:
    embedder: EmbedderSpec
    localizer: LocalizerSpec | None = None
    localize: bool = True  # off: every photo is embedded whole (also without a localizer)
    crop_margin: float = 0.1  # added to each side of a product box, as a share of its side
    mask_background: bool = True  # paint what the mask calls background in the backdrop colour
    backdrop: tuple[int, int, int] = (0, 0, 0)  # the catalog's typical backdrop colour
    # The main product's box spans at least this share of the photo's side: embed the whole
    # photo too, and whichever finds the closer match answers (a catalog-like shot, which the
    # crop-and-mask would change). 0: never.
    whole_frame_above: float = 0.0
    # Upload validation (shoplens.data.images.ImageLimits): the same rules as catalog files.
    limits: dict[str, int] = field(default_factory=dict)
    upscale: UpscaleSpec | None = None  # None: the model carries no super-resolver
    super_resolve: bool = True  # off: small crops are only letterboxed (also without one)
    # Search ranks by cosine + this x log p(category | photo) from the embedder's head
    # (shoplens.search.category_prior; 0: cosine only). The head's logits have this model's
    # scale, so the weight chosen for it travels with it.
    category_prior: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QuerySpec:
        def stats(d: dict[str, Any]) -> dict[str, Any]:
            return {**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])}

        loc, up = values.get("localizer"), values.get("upscale")
        return cls(
            embedder=EmbedderSpec(**stats(values["embedder"])),
            localizer=LocalizerSpec(**stats(loc)) if loc else None,
            localize=bool(values.get("localize", True)),
            crop_margin=float(values.get("crop_margin", 0.1)),
            mask_background=bool(values.get("mask_background", True)),
            backdrop=tuple(int(v) for v in values.get("backdrop", (0, 0, 0))),
            whole_frame_above=float(values.get("whole_frame_above", 0.0)),
            limits=dict(values.get("limits", {})),
            upscale=UpscaleSpec(int(up["scale"]), int(up["below"])) if up else None,
            super_resolve=bool(values.get("super_resolve", True)),
            category_prior=float(values.get("category_prior", 0.0)),
        )

    def with_options(self, **changes: Any) -> QuerySpec:
        """A copy with some switches changed (``localize=False`` for the whole-frame path)."""
        values = {**self.to_dict(), **changes}
        return QuerySpec.from_dict(values)
