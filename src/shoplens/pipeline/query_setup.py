"""The query pipeline's spec from the config and the trained networks: what evaluate measures
and register ships are built by the same two functions."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, read_framing
from shoplens.models import Embedder
from shoplens.models.localizer import Localizer
from shoplens.models.super_resolution import SuperResolver
from shoplens.query import EmbedderSpec, LocalizerSpec, QueryPipeline, QuerySpec, UpscaleSpec

log = logging.getLogger(__name__)


def embedder_spec(embedder: Embedder, image_size: int, catalog_dir: str | Path) -> EmbedderSpec:
    """The catalog cache's side (what photos are letterboxed to first) comes from the cache
    itself, so the query side can never disagree with the pixels the index embedded."""
    cache_side = int(open_cache(Path(catalog_dir) / CACHE_FILE).shape[1])
    spec = embedder.preprocessing
    return EmbedderSpec(
        image_size=int(image_size),
        mean=tuple(float(v) for v in spec.mean),
        std=tuple(float(v) for v in spec.std),
        letterbox_size=cache_side,
        embedding_dim=int(embedder.embedding_dim),
        num_classes=int(embedder.num_classes),
    )


def query_spec(
    cfg: DictConfig,
    embedder: EmbedderSpec,
    localizer: LocalizerSpec | None = None,
    upscale: UpscaleSpec | None = None,
) -> QuerySpec:
    framing = read_framing(cfg.paths.catalog_dir)
    margin = cfg.query.crop_margin
    return QuerySpec(
        embedder=embedder,
        localizer=localizer,
        localize=bool(cfg.query.localize),
        # null: frame the product as the catalog's shots do (measured: on Fashion-MNIST, whose
        # products fill their shots, a 10% margin cost 0.10 of category@1 on ground-truth crops)
        crop_margin=framing.crop_margin if margin is None else float(margin),
        mask_background=bool(cfg.query.mask_background),
        whole_frame_above=float(cfg.query.whole_frame_above),
        backdrop=framing.backdrop,
        limits={
            "min_size": int(cfg.preprocess.min_size),
            "max_pixels": int(cfg.search.max_pixels),
            "max_file_bytes": int(cfg.search.max_upload_bytes),
        },
        upscale=upscale,
        super_resolve=bool(cfg.query.super_resolve),
        category_prior=float(cfg.query.category_prior) if embedder.num_classes else 0.0,
    )


def embedder_forward(embedder: Embedder):
    """An Embedder as the pipeline's callable: normalised images -> (embedding, logits)."""
    embedder.eval()

    def forward(images: torch.Tensor):
        embedding, logits = embedder.forward_with_logits(images)
        return (embedding,) if logits is None else (embedding, logits)

    return forward


def baseline_pipeline(cfg: DictConfig, baseline: Embedder, spec: EmbedderSpec) -> QueryPipeline:
    """The untuned backbone's pooled features through the same pipeline (no localizer)."""
    width = int(
        getattr(baseline.backbone, "head_hidden_size", None) or baseline.backbone.num_features
    )
    pooled = EmbedderSpec(**{**spec.__dict__, "embedding_dim": width, "num_classes": 0})
    baseline.eval()
    return QueryPipeline(query_spec(cfg, pooled), lambda x: (baseline.pooled_features(x),))


def localizer_spec(localizer: Localizer, cfg: DictConfig) -> LocalizerSpec:
    spec = localizer.preprocessing
    return LocalizerSpec(
        input_size=int(localizer.input_size),
        mean=tuple(float(v) for v in spec.mean),
        std=tuple(float(v) for v in spec.std),
        threshold=float(cfg.localizer.threshold),
        min_area=float(cfg.localizer.min_area),
        refine_below=float(cfg.localizer.refine_below),
        refine_every=bool(cfg.localizer.refine_every),
        tile_above=float(cfg.localizer.tile_above),
        tile_zoom=float(cfg.localizer.tile_zoom),
        tile_small_below=float(cfg.localizer.tile_small_below),
        average_mirror=bool(cfg.localizer.average_mirror),
    )


def load_localizer(checkpoint: str | Path) -> Localizer | None:
    """The trained localizer, or None when there is no checkpoint (search the whole frame)."""
    from shoplens.training.localizer_module import LocalizerModule

    if not Path(checkpoint).is_file():
        return None
    module = LocalizerModule.load_from_checkpoint(checkpoint, map_location="cpu", pretrained=False)
    return module.localizer.eval()


def upscale_spec(resolver: SuperResolver, cfg: DictConfig, letterbox_size: int) -> UpscaleSpec:
    """``query.upscale_below`` pixels, or by default the side below which even the network's
    output is smaller than the catalog square (a crop that big loses nothing to letterboxing)."""
    below = cfg.query.upscale_below
    return UpscaleSpec(
        int(resolver.scale), int(below) if below is not None else letterbox_size // resolver.scale
    )


def load_super_resolver(cfg: DictConfig) -> SuperResolver | None:
    """The trained super-resolver the query pipeline carries, when its checkpoint exists and
    its test numbers pass the registry's bar (beats bicubic by ``super_resolution.min_gain_db``);
    None: small crops can only be letterboxed. ``query.super_resolve`` switches it on in the
    pipeline's spec; carried while off, evaluate measures what turning it on would do."""
    from shoplens.registry.super_resolution import too_weak
    from shoplens.tracking.runs import read_train_run
    from shoplens.training.super_resolution import SuperResolutionModule

    checkpoint = Path(cfg.super_resolution.checkpoint)
    if not checkpoint.is_file():
        log.warning("no super-resolver at %s: small crops are only letterboxed", checkpoint)
        return None
    if reason := too_weak(read_train_run(checkpoint), float(cfg.super_resolution.min_gain_db)):
        log.warning("the super-resolver at %s is left out: %s", checkpoint, reason)
        return None
    module = SuperResolutionModule.load_from_checkpoint(checkpoint, map_location="cpu")
    return module.network.eval()


def torch_pipeline(
    cfg: DictConfig,
    embedder: Embedder,
    localizer: Localizer | None,
    super_resolver: SuperResolver | None = None,
) -> QueryPipeline:
    """The query pipeline over the trained torch networks (what register then exports)."""
    espec = embedder_spec(embedder, int(cfg.data.image_size), cfg.paths.catalog_dir)
    lspec = localizer_spec(localizer, cfg) if localizer is not None else None
    uspec = (
        upscale_spec(super_resolver, cfg, espec.letterbox_size)
        if super_resolver is not None
        else None
    )
    return QueryPipeline(
        query_spec(cfg, espec, lspec, uspec),
        embedder_forward(embedder),
        localizer.eval() if localizer is not None else None,
        super_resolver.eval() if super_resolver is not None else None,
    )
