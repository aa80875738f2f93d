"""Typed schema of the composed configuration: types and checks, never values.

Hydra composes ``conf/`` (or DVC composes it into ``params.yaml``); the result is merged onto
these dataclasses so that a misspelt key or a wrong type fails *before* any work starts, with
OmegaConf's message naming the key. Every value lives once, in ``conf/``: a field here is
``MISSING`` (a key the YAML forgot is an error, not a silent default). We merge after
composition rather than registering the schema in Hydra's ConfigStore because DVC composes
``conf/`` in its own process, where our ConfigStore entries do not exist.

Settings a library layer owns (augmentation, copy-paste scenes, cut-outs, the background pool,
the photo benchmark, the vector index) are that layer's dataclasses, used here as types;
tests/test_config.py checks their defaults equal what ``conf/`` composes.

Nodes that build objects (optimizer, scheduler, trainer, callbacks, logger, the metric loss,
the miner) are ``_target_`` nodes typed ``Any``: ``hydra.utils.instantiate`` builds them, and
their constructors reject unknown arguments - tests/test_config.py instantiates every option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from shoplens.data.augment import AugmentationConfig
from shoplens.data.backgrounds import PoolSettings
from shoplens.data.copy_paste import SceneSettings
from shoplens.data.cutout import CutoutSettings
from shoplens.evaluation.shopper_photos import BenchmarkSettings
from shoplens.evaluation.small_photos import SmallPhotoSettings
from shoplens.search.config import IndexConfig


@dataclass
class PathsConfig:
    catalog_dir: str = MISSING  # preprocess outputs: manifest, decoded cache, masks
    reports_dir: str = MISSING  # DVC metrics and plots
    artifacts_dir: str = MISSING  # checkpoints, indexes
    backgrounds_dir: str = MISSING  # real photographs, split train / eval
    shopper_photos_dir: str = MISSING  # the photo benchmark (evaluation only)
    state_dir: str = MISSING  # what services write at run time (never a DVC output)


@dataclass
class DataConfig:
    """Where the catalog comes from, and how training reads it."""

    source: str = MISSING  # fashion_mnist | folder | manifest
    root: str | None = MISSING  # the IDX files' folder, the image root or the manifest's base
    manifest: str | None = MISSING  # manifest source: CSV/Parquet with path, product_id, category
    backgrounds: str | None = MISSING  # folder of real photographs (null: the packaged pool)
    train_only_backgrounds: str | None = MISSING  # `opencv`, a folder, or null: training only
    per_class: int | None = MISSING  # fashion_mnist: images per category (null: all 7,000)
    image_size: int = MISSING  # side the embedder sees in training and evaluation
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    num_workers: int = MISSING


@dataclass
class SplitConfig:
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    query_fraction: float = MISSING  # share of val/test products used as queries, rest gallery


@dataclass
class PreprocessConfig:
    min_size: int = MISSING  # shorter side in pixels; smaller images are quarantined
    max_pixels: int = MISSING  # decompression-bomb guard (width * height)
    max_file_bytes: int = MISSING
    cache_size: int = MISSING  # side of the decoded uint8 cache (letterboxed squares)
    near_duplicate_distance: int = MISSING  # perceptual-hash Hamming distance counted as a copy
    preview_per_category: int = MISSING
    split: SplitConfig = MISSING
    cutout: CutoutSettings = MISSING
    backgrounds: PoolSettings = MISSING


@dataclass
class BackboneConfig:
    name: str = MISSING  # any timm model name
    pretrained: bool = MISSING  # fail loudly if no weights can be loaded
    checkpoint_path: str | None = MISSING  # explicit weights file, tried first
    drop_path_rate: float = MISSING


@dataclass
class ModelConfig:
    embedding_dim: int = MISSING
    dropout: float = MISSING
    classifier: bool = MISSING  # category head (classification losses, search narrowing)
    channels_last: bool = MISSING  # faster convolutions on CPU
    head_lr_multiplier: float = MISSING  # heads learn this much faster than the backbone


@dataclass
class FreezeConfig:
    strategy: str = MISSING  # linear_probe | partial | full | gradual
    trainable_stages: int = MISSING  # partial: the last N backbone stages train
    unfreeze_every: int = MISSING  # gradual: epochs between unfreezing the next stage
    layer_decay: float | None = MISSING  # layer-wise LR decay per stage going down


@dataclass
class LossConfig:
    name: str = MISSING
    metric: Any = MISSING  # a pytorch-metric-learning loss (`_target_` node) or null
    miner: Any = MISSING  # a pytorch-metric-learning miner or null
    metric_weight: float = MISSING
    classification_weight: float = MISSING  # cross-entropy on the category head; 0: off
    label_smoothing: float = MISSING
    loss_lr: float | None = MISSING  # LR of the loss's own parameters (proxies)
    samples_per_class: int | None = MISSING  # M-per-class sampler for pair losses
    instance: Any = MISSING  # a pytorch-metric-learning loss over product instances, or null
    instance_weight: float = MISSING


@dataclass
class TrackingConfig:
    uri: str | None = MISSING  # null: $MLFLOW_TRACKING_URI, else <repository>/mlflow.db
    experiment: str = MISSING
    run_name: str | None = MISSING
    sample_batches: int = MISSING  # training batches logged as an image grid
    log_checkpoint: bool = MISSING
    logger: Any = MISSING  # `_target_` node: Lightning's MLFlowLogger


@dataclass
class EvaluateConfig:
    """The test-split evaluation: fine-tuned model against the untuned backbone."""

    checkpoint: str = MISSING
    ks: list[int] = MISSING  # Recall@K of clean queries
    gallery_queries: int = MISSING  # rows in the retrieval-gallery figure
    photos: BenchmarkSettings = MISSING  # the shopper-photo benchmark
    # Share of in-catalog shopper photos the "no confident match" threshold keeps as matches.
    no_match_recall: float = MISSING
    small_photos: SmallPhotoSettings = MISSING  # the small-photo benchmark (photos 0: none)


@dataclass
class RegistryConfig:
    model_name: str = MISSING  # the query pipeline: embedder + localizer + spec
    localizer_name: str = MISSING
    super_resolver_name: str = MISSING
    margin: float = MISSING  # gain over the champion needed to take its place (gate.py)
    tolerance: float = MISSING  # loss allowed on the other number meanwhile


@dataclass
class AuthConfig:
    """Who may change the catalog (serving/auth.py)."""

    token_env: str = MISSING  # environment variable holding the write token
    token_file: str | None = MISSING  # or a secret file (first line), e.g. a Docker secret
    open_writes: bool = MISSING  # no token: allowed only when serving on localhost
    protect_reads: bool = MISSING  # searches need the token too


@dataclass
class EmbedEngineConfig:
    engine: str = MISSING  # local | ray (Ray Data: the `ray` extra)
    ray_address: str | None = MISSING  # null: a local Ray in this process; else a cluster
    workers: int = MISSING  # Ray actors embedding at once (each loads the model once)


@dataclass
class QueryLogConfig:
    enabled: bool = MISSING  # record each /search (embedding, category, score; no photo)
    keep_days: float = MISSING  # older rows are deleted
    store_photos: bool = MISSING  # also keep the uploaded photo bytes (off: privacy first)


@dataclass
class SearchConfig:
    """The index stage, ``shoplens search`` and the HTTP service (``shoplens serve``)."""

    dir: str = MISSING  # CatalogIndex + image map: the index stage's output, read-only here
    state_dir: str = MISSING  # the service's journal, snapshots and uploads (catalog_store)
    snapshot_every: int = MISSING  # journalled changes between index snapshots
    writes: bool = MISSING  # POST/DELETE /products enabled
    auth: AuthConfig = MISSING
    cors_origins: list[str] = MISSING  # browser origins allowed to call the API
    query_log: QueryLogConfig = MISSING  # what shoppers search, for drift monitoring
    index: IndexConfig = MISSING  # the index layer's own dataclass
    batch_size: int = MISSING  # catalog images per embedding call in the index stage
    embed: EmbedEngineConfig = MISSING  # what embeds the catalog in the index stage
    recall_queries: int = MISSING  # held-out embeddings measuring an approximate index
    recall_k: int = MISSING
    k_default: int = MISSING
    k_max: int = MISSING
    max_upload_bytes: int = MISSING
    max_pixels: int = MISSING
    narrow_by_category: bool = MISSING  # search only the classifier's top categories
    narrow_top_categories: int = MISSING
    host: str = MISSING
    port: int = MISSING


@dataclass
class LocalizerConfig:
    """The product localizer (models/localizer.py) and its training on copy-paste scenes."""

    decoder: str = MISSING  # fpn | unet (segmentation-models-pytorch)
    decoder_channels: int = MISSING
    input_size: int = MISSING
    channels_last: bool = MISSING
    frozen_stages: int = MISSING  # encoder stages nearest the input kept as pretrained
    epochs: int = MISSING
    steps_per_epoch: int = MISSING
    batch_size: int = MISSING
    val_scenes: int = MISSING
    threshold: float = MISSING
    min_area: float = MISSING
    refine_below: float = MISSING  # second look at products smaller than this share
    refine_every: bool = MISSING  # ... at every product found, not only the searched
    tile_above: float = MISSING  # nothing found in a photo this many inputs wide: tiles
    tile_zoom: float = MISSING  # ... each magnifying the photo this many times
    tile_small_below: float = MISSING  # ... or only a product under this share of the side
    average_mirror: bool = MISSING  # every look also at the mirror image, maps averaged
    checkpoint: str = MISSING
    optimizer: Any = MISSING  # `_target_` nodes, as the embedder's
    scheduler: Any = MISSING
    callbacks: Any = MISSING
    scenes: SceneSettings = MISSING


@dataclass
class DegradationConfig:
    """shoplens.training.super_resolution.Degradation."""

    blur: float = MISSING
    noise: float = MISSING
    jpeg: list[int] = MISSING


@dataclass
class SuperResolutionConfig:
    """The super-resolver of small crops and its training (training/super_resolution.py)."""

    scale: int = MISSING  # 2 | 3 | 4
    features: int = MISSING
    hidden: int = MISSING
    hr_size: int | None = MISSING  # null: the catalog's native photo side
    epochs: int = MISSING
    train_photos: int = MISSING
    val_photos: int = MISSING
    test_photos: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    degradation: DegradationConfig = MISSING
    min_gain_db: float = MISSING  # PSNR over bicubic needed to serve
    margin_db: float = MISSING  # PSNR over the champion needed to replace it
    checkpoint: str = MISSING
    callbacks: Any = MISSING  # `_target_` nodes: one ModelCheckpoint on val/psnr


@dataclass
class QueryConfig:
    """The query pipeline (shoplens.query): recorded in the registered model's spec."""

    localize: bool = MISSING  # the one switch: false searches every photo whole
    crop_margin: float | None = MISSING  # null: as the catalog's shots frame their product
    mask_background: bool = MISSING
    whole_frame_above: float = MISSING  # main box spans this share of the side: try whole too
    super_resolve: bool = MISSING  # small crops through the super-resolver first
    upscale_below: int | None = MISSING  # crop side (px) under which; null: cache side / scale
    category_prior: float = MISSING  # rank by cosine + this x log p(category); 0: cosine only
    runtime: str = MISSING  # onnx | torch: what runs the networks (not in the spec: same outputs)
    onnx_tolerance: float = MISSING  # largest output difference ONNX vs torch on real images
    localizer_int8: bool = MISSING  # serve the localizer quantized (ONNX runtime only)
    int8_min_mask_iou: float = MISSING  # ... where its masks agree this well with float's


@dataclass
class DriftConfig:
    """shoplens.monitoring.DriftSettings."""

    method: str = MISSING  # Evidently's embedding drift method: ratio | mmd | model | distance
    embedding_threshold: float = MISSING  # ratio: share of dims; mmd: MMD²; model: ROC AUC
    component_alpha: float = MISSING  # ratio: a dimension drifted below this p-value
    pca_components: int | None = MISSING
    alpha: float = MISSING  # category mix, top score, no-match share: p-value threshold


@dataclass
class DispatchConfig:
    enabled: bool = MISSING  # drift flagged: send a repository_dispatch to GitHub
    github_repository: str | None = MISSING  # owner/name (null: $GITHUB_REPOSITORY)
    event_type: str = MISSING  # what .github/workflows/retrain.yml listens for
    api_url: str = MISSING


@dataclass
class MonitorConfig:
    """``shoplens monitor``: drift of the query log (shoplens.monitoring)."""

    window_hours: float = MISSING  # the current window: the last this many hours
    min_queries: int = MISSING  # fewer searches: no verdict
    references: list[str] = MISSING  # benchmark | previous
    drift: DriftConfig = MISSING
    dispatch: DispatchConfig = MISSING


@dataclass
class ShoplensConfig:
    seed: int = MISSING
    paths: PathsConfig = MISSING
    data: DataConfig = MISSING
    preprocess: PreprocessConfig = MISSING
    backbone: BackboneConfig = MISSING
    model: ModelConfig = MISSING
    freeze: FreezeConfig = MISSING
    loss: LossConfig = MISSING
    optimizer: Any = MISSING  # `_target_` node, _partial_: built over the parameter groups
    scheduler: Any = MISSING  # `_target_` node, _partial_: (optimizer, steps, epochs) -> dict
    augmentation: AugmentationConfig = MISSING
    trainer: Any = MISSING  # `_target_: lightning.Trainer`
    callbacks: Any = MISSING  # name -> `_target_` node (null drops it)
    tracking: TrackingConfig = MISSING
    evaluate: EvaluateConfig = MISSING
    registry: RegistryConfig = MISSING
    search: SearchConfig = MISSING
    query: QueryConfig = MISSING
    localizer: LocalizerConfig = MISSING
    super_resolution: SuperResolutionConfig = MISSING
    monitor: MonitorConfig = MISSING
    ckpt_path: str | None = MISSING  # resume training from this checkpoint ("last": last.ckpt)


# String options with a fixed set of values (OmegaConf enums would reach checkpoints' pickled
# hyper-parameters, which torch.load's weights_only refuses): checked by compose.validate.
CHOICES: dict[str, tuple[str, ...]] = {
    "query.runtime": ("onnx", "torch"),
    "search.embed.engine": ("local", "ray"),
    "monitor.drift.method": ("ratio", "mmd", "model", "distance"),
}
