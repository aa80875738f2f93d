"""Which backbone stages train, and the optimizer parameter groups that go with them.

Strategies (``FreezeConfig.strategy``), with stages from :func:`backbone_stages`:

* ``linear_probe``: no backbone stage trains, only the heads;
* ``partial``: the last ``trainable_stages`` stages and the heads train;
* ``full``: everything trains;
* ``gradual``: at epoch ``e`` the top ``min(e // unfreeze_every, n_stages)`` stages train
  (epoch 0: heads only).

A frozen stage gets ``requires_grad=False`` *and* its BatchNorm layers stay in eval mode
(:meth:`Embedder.set_frozen_norms`), so ``model.train()`` does not let running statistics drift
away from the pretrained ones. Frozen layers keep their module types, so checkpoints stay
interchangeable between strategies (timm's ``freeze_batch_norm_2d`` would swap in
FrozenBatchNorm2d and change the state dict).

Driving it from training: call ``apply_freeze(embedder, cfg, epoch)`` once before building the
optimizer and again in the LightningModule's ``on_train_epoch_start`` with
``self.current_epoch`` (needed for ``gradual``, harmless for the others and right on resume).
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from shoplens.models.embedder import Embedder
from shoplens.models.stages import backbone_stages

STRATEGIES = ("linear_probe", "partial", "full", "gradual")


class FreezeSettings(Protocol):
    """What :func:`apply_freeze` reads from ``FreezeConfig``."""

    strategy: str
    trainable_stages: int
    unfreeze_every: int


def trainable_stage_count(cfg: FreezeSettings, n_stages: int, epoch: int = 0) -> int:
    """How many backbone stages, counted from the top, train under ``cfg`` at ``epoch``."""
    if cfg.strategy == "linear_probe":
        return 0
    if cfg.strategy == "full":
        return n_stages
    if cfg.strategy == "partial":
        if cfg.trainable_stages < 0:
            raise ValueError(f"freeze.trainable_stages must be >= 0, got {cfg.trainable_stages}")
        return min(cfg.trainable_stages, n_stages)
    if cfg.strategy == "gradual":
        if cfg.unfreeze_every < 1:
            raise ValueError(f"freeze.unfreeze_every must be >= 1, got {cfg.unfreeze_every}")
        return min(epoch // cfg.unfreeze_every, n_stages)
    raise ValueError(f"unknown freeze.strategy {cfg.strategy!r}; expected one of {STRATEGIES}")


def apply_freeze(embedder: Embedder, cfg: FreezeSettings, epoch: int = 0) -> int:
    """Set ``requires_grad`` and frozen BatchNorm per ``cfg``; return the trainable stage count.

    Heads always train. Calling it again (next epoch) re-derives everything from scratch.
    """
    stages = backbone_stages(embedder.backbone)
    trainable = trainable_stage_count(cfg, len(stages), epoch)
    first_trainable = len(stages) - trainable
    names = {module: name for name, module in embedder.backbone.named_modules()}
    frozen_norms: list[str] = []
    for index, stage in enumerate(stages):
        frozen = index < first_trainable
        stage.requires_grad_(not frozen)
        if frozen:
            frozen_norms.extend(names[layer] for layer in stage.norm_layers())
    for param in embedder.head_parameters():
        param.requires_grad_(True)
    embedder.set_frozen_norms(frozen_norms)
    return trainable


def _no_weight_decay(name: str, param: nn.Parameter, skip: set[str]) -> bool:
    """timm's rule (``param_groups_weight_decay``): biases, norm and other 1-D params, and the
    model's own ``no_weight_decay()`` names (ViT position embeddings, class token)."""
    return param.ndim <= 1 or name.endswith(".bias") or name in skip


def param_groups(
    embedder: Embedder,
    lr: float,
    weight_decay: float,
    head_lr_multiplier: float = 1.0,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per (stage, decay/no-decay), plus the heads.

    Groups are named ``backbone.stage{i}/decay``, ``heads/no_decay`` ... (``i`` indexes
    :func:`backbone_stages`); the names are MLflow-safe for Lightning's LearningRateMonitor.

    Heads get ``lr * head_lr_multiplier``. Backbone stage ``i`` of ``n`` gets ``lr``, or with
    ``layer_decay`` ``lr * layer_decay ** (n - 1 - i)`` (the top stage gets ``lr``). Groups carry
    ``lr`` itself (no timm ``lr_scale``), so any torch optimizer and scheduler works.

    *All* parameters are included, frozen ones too: ``gradual`` unfreezes stages after the
    optimizer exists, and torch optimizers skip parameters whose ``grad`` is None, so frozen
    ones are neither updated nor decayed. timm's ``param_groups_weight_decay`` and
    ``param_groups_layer_decay`` drop ``requires_grad=False`` parameters, which is why their
    rules are applied here rather than the functions called.
    """
    backbone = embedder.backbone
    skip = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    names = {param: name for name, param in backbone.named_parameters()}
    stages = backbone_stages(backbone)
    top = len(stages) - 1
    sections: list[tuple[str, float, list[tuple[str, nn.Parameter]]]] = [
        (
            f"backbone.stage{i}",
            lr * (layer_decay ** (top - i) if layer_decay else 1.0),
            [(names[p], p) for p in stage.parameters()],
        )
        for i, stage in enumerate(stages)
    ]
    heads = [
        (name, p) for name, p in embedder.named_parameters() if not name.startswith("backbone.")
    ]
    sections.append(("heads", lr * head_lr_multiplier, heads))

    groups: list[dict[str, Any]] = []
    for label, group_lr, named in sections:
        no_decay = [p for n, p in named if _no_weight_decay(n, p, skip)]
        decay = [p for n, p in named if not _no_weight_decay(n, p, skip)]
        for suffix, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                groups.append(
                    {
                        "params": params,
                        "lr": group_lr,
                        "weight_decay": wd,
                        "name": f"{label}/{suffix}",
                    }
                )
    grouped = sum(len(g["params"]) for g in groups)
    if grouped != len(list(embedder.parameters())):
        raise RuntimeError("param_groups: some Embedder parameters fell into no group")
    return groups
