"""Models: pretrained backbones (offline weights included), the embedder, freezing strategies."""

from shoplens.models.backbone import (
    PreprocessingSpec,
    PretrainedWeightsError,
    create_backbone,
    preprocessing_spec,
)
from shoplens.models.embedder import Embedder, build_embedder
from shoplens.models.freezing import (
    STRATEGIES,
    apply_freeze,
    param_groups,
    trainable_stage_count,
)
from shoplens.models.pretrained import PACKAGED_WEIGHTS, packaged_state_dict
from shoplens.models.stages import BackboneStage, backbone_stages

__all__ = [
    "PACKAGED_WEIGHTS",
    "STRATEGIES",
    "BackboneStage",
    "Embedder",
    "PreprocessingSpec",
    "PretrainedWeightsError",
    "apply_freeze",
    "backbone_stages",
    "build_embedder",
    "create_backbone",
    "packaged_state_dict",
    "param_groups",
    "preprocessing_spec",
    "trainable_stage_count",
]
