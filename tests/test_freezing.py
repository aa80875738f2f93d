"""Backbone stages, freezing strategies and optimizer groups, checked by actually training."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import node

from shoplens.models import (
    Embedder,
    apply_freeze,
    backbone_stages,
    build_embedder,
    param_groups,
)

LR = 1e-2


def make_embedder(name: str = "test_efficientnet") -> Embedder:
    torch.manual_seed(0)
    return build_embedder(
        node("backbone", name=name, pretrained=False),
        node("model", embedding_dim=16, dropout=0.0, classifier=True, channels_last=False),
        num_classes=4,
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm running statistics included)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def train_steps(embedder: Embedder, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    torch.manual_seed(1)
    embedder.train()
    for _ in range(steps):
        images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))
        _, logits = embedder.forward_with_logits(images)
        F.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()


def freeze_and_train(strategy: str, **options: int) -> tuple[Embedder, list, list[set[str]]]:
    """Apply a strategy, train a few steps; return the embedder, its stages and what changed."""
    embedder = make_embedder()
    apply_freeze(embedder, node("freeze", strategy=strategy, **options))
    stages = backbone_stages(embedder.backbone)
    before = [snapshot(stage) for stage in stages]
    heads_before = snapshot(embedder.projection)
    train_steps(embedder, torch.optim.AdamW(param_groups(embedder, LR, 1e-2, 10.0)))
    assert changed(heads_before, embedder.projection), "heads must always train"
    return embedder, stages, [changed(b, s) for b, s in zip(before, stages, strict=True)]


def test_linear_probe_keeps_backbone_and_batchnorm_statistics() -> None:
    embedder = make_embedder()
    apply_freeze(embedder, node("freeze", strategy="linear_probe"))
    backbone_before = snapshot(embedder.backbone)
    heads_before = snapshot(embedder.classifier)
    train_steps(embedder, torch.optim.AdamW(param_groups(embedder, LR, 1e-2, 10.0)))
    assert changed(backbone_before, embedder.backbone) == set()  # weights and running stats
    assert changed(heads_before, embedder.classifier) == {"weight", "bias"}
    norms = [
        m
        for m in embedder.backbone.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert norms and embedder.training and not any(m.training for m in norms)
    embedder.eval().train()  # as Lightning does around validation
    assert not any(m.training for m in norms)
    assert not any(p.requires_grad for p in embedder.backbone.parameters())


def test_partial_trains_exactly_the_last_stages() -> None:
    _, stages, changes = freeze_and_train("partial", trainable_stages=2)
    assert len(stages) == 6
    assert all(changes[i] == set() for i in range(4)), changes
    for stage_changes in changes[4:]:
        assert any(k.endswith("weight") for k in stage_changes)
        assert any(k.endswith("running_mean") for k in stage_changes)  # BN still adapts there


def test_full_trains_every_stage() -> None:
    embedder, _, changes = freeze_and_train("full")
    assert all(stage_changes for stage_changes in changes)
    assert embedder.frozen_norm_names == ()


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0), (1, 0), (2, 1), (5, 2), (99, 6)])
def test_gradual_unfreezes_on_schedule(epoch: int, expected: int) -> None:
    embedder = make_embedder()
    cfg = node("freeze", strategy="gradual", unfreeze_every=2)
    assert apply_freeze(embedder, cfg, epoch=epoch) == expected
    stages = backbone_stages(embedder.backbone)
    flags = [all(p.requires_grad for p in s.parameters()) for s in stages]
    assert flags == [False] * (len(stages) - expected) + [True] * expected
    assert all(not any(p.requires_grad for p in s.parameters()) for s in stages[: 6 - expected])
    frozen_norms = sum(len(list(s.norm_layers())) for s in stages[: 6 - expected])
    assert len(embedder.frozen_norm_names) == frozen_norms


def test_gradual_optimizer_built_at_epoch_zero_trains_unfrozen_stages_later() -> None:
    embedder = make_embedder()
    cfg = node("freeze", strategy="gradual", unfreeze_every=1)
    apply_freeze(embedder, cfg, epoch=0)
    optimizer = torch.optim.AdamW(param_groups(embedder, LR, 1e-2, 10.0))
    stages = backbone_stages(embedder.backbone)
    before = [snapshot(stage) for stage in stages]
    train_steps(embedder, optimizer, steps=1)
    assert not any(changed(b, s) for b, s in zip(before, stages, strict=True))
    apply_freeze(embedder, cfg, epoch=1)
    train_steps(embedder, optimizer, steps=2)
    changes = [changed(b, s) for b, s in zip(before, stages, strict=True)]
    assert changes[-1] and not any(changes[:-1])


def test_layer_decay_lowers_lr_towards_the_input() -> None:
    embedder = make_embedder()
    groups = param_groups(
        embedder, lr=1.0, weight_decay=0.1, head_lr_multiplier=10.0, layer_decay=0.5
    )
    stage_lr = {g["name"].split("/")[0]: g["lr"] for g in groups}
    names = [f"backbone.stage{i}" for i in range(len(backbone_stages(embedder.backbone)))]
    assert [stage_lr[n] for n in names] == [0.5 ** (len(names) - 1 - i) for i in range(len(names))]
    assert stage_lr["heads"] == 10.0
    without = param_groups(embedder, lr=1.0, weight_decay=0.1, head_lr_multiplier=10.0)
    assert {g["lr"] for g in without if g["name"].startswith("backbone.")} == {1.0}


def test_param_groups_cover_everything_once_and_skip_decay_on_1d() -> None:
    embedder = make_embedder("test_vit")
    apply_freeze(embedder, node("freeze", strategy="linear_probe"))  # frozen params still grouped
    groups = param_groups(embedder, lr=1e-3, weight_decay=0.05, head_lr_multiplier=10.0)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(embedder.parameters()))
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    for name, param in embedder.named_parameters():
        expected = param.ndim <= 1 or name in ("backbone.pos_embed", "backbone.cls_token")
        assert (id(param) in no_decay) == expected, name


@pytest.mark.parametrize(
    ("name", "first", "count"),
    [
        ("test_resnet", "conv1+bn1", 5),
        ("test_vit", "patch_embed+cls_token+pos_embed", 7),
        ("test_efficientnet", "conv_stem+bn1", 6),
    ],
)
def test_backbone_stages_partition_the_model(name: str, first: str, count: int) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=0)
    keys = list(model.state_dict())
    stages = backbone_stages(model)
    assert len(stages) == count and stages[0].name == first
    in_stages = [id(p) for s in stages for p in s.parameters()]
    assert sorted(in_stages) == sorted(id(p) for p in model.parameters())
    assert list(model.state_dict()) == keys  # the stage views did not attach themselves


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="linear_probe"):
        apply_freeze(make_embedder(), node("freeze", strategy="frozen"))
