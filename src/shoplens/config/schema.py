"""Typed schema of the composed configuration.

Hydra composes ``conf/`` (or DVC composes it into ``params.yaml``); the result is merged onto
these dataclasses so that a misspelt key or a wrong type fails *before* any work starts, with
OmegaConf's message naming the key. We merge after composition rather than registering the
schema in Hydra's ConfigStore because DVC composes ``conf/`` in its own process, where our
ConfigStore entries do not exist.

Groups that build third-party objects (the metric loss, the miner) stay free-form ``Any``
nodes with a ``_target_``: their constructor rejects unknown arguments at instantiation,
which also happens before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from shoplens.data.augment import AugmentationConfig
from shoplens.data.backgrounds import PoolSettings
from shoplens.data.copy_paste import SceneSettings
from shoplens.data.cutout import CutoutSettings
from shoplens.evaluation.shopper_photos import BenchmarkSettings
from shoplens.search.config import IndexConfig


@dataclass
class PathsConfig:
    catalog_dir: str = "data/catalog"  # preprocess outputs: manifest, decoded cache
    reports_dir: str = "reports"
    artifacts_dir: str = "artifacts"  # checkpoints, exported models, indexes
    backgrounds_dir: str = "data/backgrounds"  # real photographs, split train / eval
    shopper_photos_dir: str = "data/shopper_photos"  # the photo benchmark (evaluation only)


@dataclass
class DataConfig:
    """Where the catalog comes from, and how training reads it."""

    source: str = MISSING  # fashion_mnist | folder | manifest
    # fashion_mnist: folder with the IDX files; folder: image root (root/<category>/...);
    # manifest: base folder for relative image paths (default: the manifest's folder).
    root: str | None = None
    manifest: str | None = None  # manifest source: CSV/Parquet with path, product_id, category
    # Folder of real photographs to put products in front of (null: the packaged default).
    backgrounds: str | None = None
    per_class: int | None = None  # fashion_mnist: images per category (null: all 7,000)
    image_size: int = 96  # side length the network sees in training and evaluation
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 2


@dataclass
class SplitConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    query_fraction: float = 0.5  # share of val/test products used as queries, rest gallery


@dataclass
class PreprocessConfig:
    min_size: int = 16  # shorter side in pixels; smaller images are quarantined
    max_pixels: int = 40_000_000  # decompression-bomb guard (width * height)
    max_file_bytes: int = 50_000_000
    cache_size: int = 112  # side of the decoded uint8 cache (letterboxed squares)
    near_duplicate_distance: int = 4  # perceptual-hash Hamming distance counted as a copy
    preview_per_category: int = 8
    split: SplitConfig = field(default_factory=SplitConfig)
    cutout: CutoutSettings = field(default_factory=CutoutSettings)
    backgrounds: PoolSettings = field(default_factory=PoolSettings)


@dataclass
class BackboneConfig:
    name: str = "tf_efficientnet_lite0"  # any timm model name
    pretrained: bool = True  # fail loudly if no weights can be loaded
    checkpoint_path: str | None = None  # explicit weights file, tried first
    drop_path_rate: float = 0.0


@dataclass
class ModelConfig:
    embedding_dim: int = 128
    dropout: float = 0.1
    classifier: bool = True  # category head (used by classification losses and search narrowing)
    channels_last: bool = True  # faster convolutions on CPU


@dataclass
class FreezeConfig:
    strategy: str = "full"  # linear_probe | partial | full | gradual
    trainable_stages: int = 2  # partial: the last N backbone stages train
    unfreeze_every: int = 1  # gradual: epochs between unfreezing the next stage (from the top)
    layer_decay: float | None = None  # layer-wise LR decay per stage going down (e.g. 0.7)


@dataclass
class LossConfig:
    name: str = MISSING
    # A pytorch-metric-learning loss as a `_target_` node (null for pure cross-entropy).
    metric: Any = None
    miner: Any = None  # optional pytorch-metric-learning miner (`_target_` node)
    metric_weight: float = 1.0
    classification_weight: float = 0.0  # cross-entropy on the category head; 0 disables it
    label_smoothing: float = 0.0
    loss_lr: float | None = None  # LR of the loss's own parameters (proxies, class centres)
    samples_per_class: int | None = None  # M-per-class sampler for pair losses
    # A pytorch-metric-learning loss over product *instances* (`_target_` node): each product
    # comes as a photo-like view and its catalog shot, positives of each other.
    instance: Any = None
    instance_weight: float = 0.0


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    head_lr_multiplier: float = 10.0  # projection/classifier heads learn faster than the backbone
    kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. momentum for SGD


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # cosine | step | none
    warmup_epochs: float = 0.5
    step_size: int = 3  # step: epochs between LR drops
    gamma: float = 0.1


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"  # ddp: Lightning's DistributedDataParallel
    precision: str = "32-true"
    max_epochs: int = 5
    fast_dev_run: bool = False
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    early_stopping_patience: int = 3
    deterministic: bool = True
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    num_sanity_val_steps: int = 0


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI, else sqlite:///<repository root>/mlflow.db
    uri: str | None = None
    experiment: str = "shoplens"
    run_name: str | None = None
    sample_batches: int = 2  # training batches logged as an image grid
    log_checkpoint: bool = True


@dataclass
class EvaluateConfig:
    """The test-split evaluation: fine-tuned model against the untuned backbone."""

    checkpoint: str = "${paths.artifacts_dir}/train/best.ckpt"
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])  # Recall@K of clean queries
    gallery_queries: int = 8  # rows (queries) in the retrieval-gallery figures
    photos: BenchmarkSettings = field(default_factory=BenchmarkSettings)  # shopper photos


@dataclass
class RegistryConfig:
    """Where the fine-tuned embedder is registered and when it becomes the champion."""

    model_name: str = "shoplens-embedder"  # the query pipeline: embedder + localizer + spec
    localizer_name: str = "shoplens-localizer"
    margin: float = 0.005  # gain over the champion needed to take its place (see gate.py)


@dataclass
class SearchConfig:
    """The index stage, ``shoplens search`` and the HTTP service (``shoplens serve``)."""

    dir: str = "${paths.artifacts_dir}/index"  # CatalogIndex + image map; uploads land here too
    index: IndexConfig = field(default_factory=IndexConfig)  # the index layer's own dataclass
    batch_size: int = 256  # catalog images per embedding call in the index stage
    recall_queries: int = 1000  # held-out embeddings measuring an approximate index vs exact
    recall_k: int = 10
    k_default: int = 10
    k_max: int = 100
    max_upload_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    narrow_by_category: bool = False  # search only the classifier's top categories
    narrow_top_categories: int = 2
    host: str = "127.0.0.1"
    port: int = 8000


@dataclass
class LocalizerConfig:
    """The product localizer (models/localizer.py) and its training scenes."""

    decoder: str = "fpn"  # fpn | unet (segmentation-models-pytorch)
    decoder_channels: int = 64
    input_size: int = 128
    channels_last: bool = True
    freeze_encoder: bool = False
    epochs: int = 3
    steps_per_epoch: int = 150
    batch_size: int = 32
    val_scenes: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    threshold: float = 0.5
    min_area: float = 0.002
    checkpoint: str = "${paths.artifacts_dir}/localizer/best.ckpt"
    scenes: SceneSettings = field(default_factory=SceneSettings)


@dataclass
class QueryConfig:
    """The query pipeline (shoplens.query): recorded in the registered model's spec."""

    localize: bool = True  # the one switch: false searches every photo whole
    crop_margin: float | None = None  # null: as the catalog's shots frame their product
    mask_background: bool = True


@dataclass
class ShoplensConfig:
    seed: int = 42
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    ckpt_path: str | None = None  # resume training from this checkpoint ("last" for last.ckpt)
