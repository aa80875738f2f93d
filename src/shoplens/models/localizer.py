"""The product localizer: a segmentation task head on the same pretrained backbone.

segmentation-models-pytorch builds the network (a light FPN or U-Net decoder over a timm
encoder); the encoder's ImageNet weights come from :func:`create_backbone`, the same offline,
strictly checked loading the embedder uses, copied into smp's encoder. The output is one
channel of product-mask logits at the input's resolution; boxes follow from its components
(:mod:`shoplens.query.localize`).
"""

from __future__ import annotations

from typing import Protocol

import segmentation_models_pytorch as smp
import torch
from torch import nn

from shoplens.models.backbone import BackboneSettings, PreprocessingSpec, create_backbone
from shoplens.models.stages import BackboneStage, backbone_stages

DECODERS = ("fpn", "unet")


class LocalizerSettings(Protocol):
    decoder: str  # fpn | unet
    decoder_channels: int  # width of the decoder (FPN pyramid; U-Net's first stage)
    input_size: int
    channels_last: bool


class Localizer(nn.Module):
    """Normalised ``(N, 3, S, S)`` images -> product-mask logits ``(N, 1, S, S)``."""

    def __init__(self, network: nn.Module, preprocessing: PreprocessingSpec, input_size: int,
                 channels_last: bool = False, stage_matcher: dict | None = None):  # fmt: skip
        super().__init__()
        self.network, self.preprocessing = network, preprocessing
        self.input_size, self.channels_last = int(input_size), channels_last
        self.stage_matcher = stage_matcher  # the backbone's timm group_matcher(coarse=True)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def encoder(self) -> nn.Module:
        return self.network.encoder

    def encoder_stages(self) -> list[BackboneStage]:
        """The encoder's coarse stages, input side first, as the embedder's freezing splits
        the same backbone (:mod:`shoplens.models.stages`)."""
        return backbone_stages(self.encoder.model, self.stage_matcher)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)


def _network(name: str, settings: LocalizerSettings) -> nn.Module:
    encoder = f"tu-{name}"  # smp's prefix for any timm encoder
    width = int(settings.decoder_channels)
    if settings.decoder == "fpn":
        return smp.FPN(
            encoder_name=encoder,
            encoder_weights=None,
            classes=1,
            decoder_pyramid_channels=width,
            # smp's segmentation blocks use GroupNorm(32, channels): a multiple of 32.
            decoder_segmentation_channels=max(32, width // 2 // 32 * 32),
        )
    if settings.decoder == "unet":
        return smp.Unet(
            encoder_name=encoder,
            encoder_weights=None,
            classes=1,
            decoder_channels=tuple(max(8, width >> i) for i in range(5)),
        )
    raise ValueError(f"unknown localizer decoder {settings.decoder!r}; choose one of {DECODERS}")


def build_localizer(backbone_cfg: BackboneSettings, settings: LocalizerSettings) -> Localizer:
    """smp network over ``backbone_cfg.name`` with the backbone's pretrained weights.

    Every encoder weight must be found in the loaded backbone (the backbone's pooling head,
    which a feature pyramid does not use, is the only thing left over): a silent partial load
    would train from random features.
    """
    network = _network(backbone_cfg.name, settings)
    backbone, preprocessing = create_backbone(backbone_cfg, num_classes=0)
    target = network.encoder.model  # timm's features_only wrapper, same parameter names
    source = backbone.state_dict()
    missing = [k for k in target.state_dict() if k not in source]
    if missing:
        raise RuntimeError(f"backbone weights lack encoder keys {missing[:5]}")
    target.load_state_dict({k: source[k] for k in target.state_dict()}, strict=True)
    matcher = backbone.group_matcher(coarse=True) if hasattr(backbone, "group_matcher") else None
    return Localizer(network, preprocessing, settings.input_size, settings.channels_last, matcher)
