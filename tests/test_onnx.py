"""ONNX exports of the query pipeline's networks: equal to torch on real-looking inputs, and a
graph that computes something else is caught before it is measured or shipped."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import pattern
from PIL import Image

from shoplens.config import compose_config
from shoplens.models import build_embedder
from shoplens.models.localizer import build_localizer
from shoplens.pipeline.query_setup import embedder_forward
from shoplens.query import EmbedderSpec, LocalizerSpec, QueryPipeline, QuerySpec
from shoplens.query.onnx_network import onnx_pipeline
from shoplens.registry.onnx_export import (
    OnnxExportError,
    check,
    disagreement,
    export_pipeline,
    mask_agreement,
    quantize_int8,
)

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def networks():
    cfg = compose_config(
        ["backbone.name=test_efficientnet", "backbone.pretrained=false", "model.embedding_dim=16",
         "localizer.input_size=64", "localizer.decoder_channels=16"]
    )  # fmt: skip
    torch.manual_seed(0)
    embedder = build_embedder(cfg.backbone, cfg.model, num_classes=4).eval()
    localizer = build_localizer(cfg.backbone, cfg.localizer).eval()
    spec = QuerySpec(
        EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=16,
                     num_classes=4),
        LocalizerSpec(64, (0.5,) * 3, (0.5,) * 3),
    )  # fmt: skip
    return embedder, localizer, QueryPipeline(spec, embedder_forward(embedder), localizer)


def _photos() -> list[bytes]:
    photos = []
    for seed in range(3):
        buffer = io.BytesIO()
        pattern(seed, (96, 72)).save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def _squares(n: int = 8) -> np.ndarray:
    return np.stack([np.asarray(pattern(10 + i, (40, 40)).convert("RGB")) for i in range(n)])


def test_onnx_pipeline_equals_torch_on_images_and_photos(networks, tmp_path):
    embedder, localizer, torch_pipeline = networks
    exported, files = export_pipeline(torch_pipeline, embedder, localizer, tmp_path)
    assert sorted(files) == ["embedder_onnx", "localizer_onnx"]
    differences = disagreement(torch_pipeline, exported, _squares(), _photos())
    assert set(differences) == {"embedding", "logits", "mask"}
    assert max(differences.values()) <= TOLERANCE, differences
    check(differences, TOLERANCE)
    # The whole query (localize -> crop -> embed) agrees too, loaded back from the files alone.
    reloaded = onnx_pipeline(torch_pipeline.spec, files)
    for ours, theirs in zip(
        torch_pipeline.query_batch(_photos()), reloaded.query_batch(_photos()), strict=True
    ):
        assert [d.box for d in ours.detections] == [d.box for d in theirs.detections]
        np.testing.assert_allclose(ours.embeddings, theirs.embeddings, atol=TOLERANCE)


def test_a_graph_that_computes_something_else_is_refused(networks, tmp_path):
    embedder, localizer, torch_pipeline = networks
    other = build_embedder(*_settings(), num_classes=4).eval()  # other (random) weights
    _, files = export_pipeline(
        QueryPipeline(torch_pipeline.spec, embedder_forward(other), localizer), other, localizer,
        tmp_path,
    )  # fmt: skip
    differences = disagreement(
        torch_pipeline, onnx_pipeline(torch_pipeline.spec, files), _squares(), []
    )
    assert differences["embedding"] > 100 * TOLERANCE
    with pytest.raises(OnnxExportError, match="embedding by"):
        check(differences, TOLERANCE)
    with pytest.raises(OnnxExportError, match="logits by nan"):
        check({"logits": float("nan")}, TOLERANCE)


def _settings():
    cfg = compose_config(
        ["backbone.name=test_efficientnet", "backbone.pretrained=false", "model.embedding_dim=16"]
    )
    torch.manual_seed(1)
    return cfg.backbone, cfg.model


def test_onnx_network_keeps_the_batch_dynamic(networks, tmp_path):
    embedder, localizer, torch_pipeline = networks
    exported, _ = export_pipeline(torch_pipeline, embedder, localizer, tmp_path)
    for n in (1, 5):
        embedded = exported.embed_squares(_squares(n))
        assert embedded.embeddings.shape == (n, 16) and embedded.logits.shape == (n, 4)
    masks = exported.product_masks([Image.new("RGB", (50, 30), "white")] * 3)
    assert len(masks) == 3 and masks[0].shape == (64, 64)


def _calibration(n: int = 8, side: int = 64) -> np.ndarray:
    """Normalised images as the localizer sees them (a test's stand-in for training scenes)."""
    images = [np.asarray(pattern(20 + i, (side, side)).convert("RGB")) for i in range(n)]
    return (np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255 - 0.5) / 0.5


def test_an_int8_localizer_runs_photo_by_photo_and_finds_what_the_float_one_finds(
    networks, tmp_path
):
    embedder, localizer, torch_pipeline = networks
    exported, files = export_pipeline(torch_pipeline, embedder, localizer, tmp_path)
    int8 = quantize_int8(
        files["localizer_onnx"], tmp_path / "int8.onnx", _calibration(), op_types=None,
        fixed_batch=1,
    )  # fmt: skip
    again = quantize_int8(
        files["localizer_onnx"], tmp_path / "again.onnx", _calibration(), op_types=None,
        fixed_batch=1, percentile=99.99,
    )  # fmt: skip
    other = quantize_int8(
        files["localizer_onnx"], tmp_path / "other.onnx", _calibration(), op_types=None,
        fixed_batch=1, percentile=99.0,
    )  # fmt: skip
    # The same calibration gives the same bytes (a registered version is not re-made by a
    # re-run), another calibration other bytes.
    assert (
        again.read_bytes()
        == quantize_int8(
            files["localizer_onnx"],
            tmp_path / "again2.onnx",
            _calibration(),
            op_types=None,
            fixed_batch=1,
            percentile=99.99,
        ).read_bytes()
    )
    assert other.read_bytes() != again.read_bytes()
    quantized = onnx_pipeline(torch_pipeline.spec, {**files, "localizer_onnx": int8})
    assert quantized.localizer.one_photo and not exported.localizer.one_photo
    images = [exported.validate(p) for p in _photos()]
    together = quantized.product_masks(images)  # three photos: run one at a time
    for image, mask in zip(images, together, strict=True):
        np.testing.assert_array_equal(quantized.product_masks([image])[0], mask)
    floats = exported.product_masks(images)
    assert max(float(np.abs(a - b).max()) for a, b in zip(floats, together, strict=True)) < 0.1
    assert mask_agreement(exported, exported, _photos()) == 1.0
    assert 0.8 <= mask_agreement(exported, quantized, _photos()) <= 1.0


def test_an_int8_pair_graph_runs_each_photo_beside_its_mirror(networks, tmp_path):
    """With ``average_mirror`` the localizer's graph is fixed at two images (the photo and its
    mirror image, one run); three photos give each one's own mask, as alone, and close to the
    float graph's. A batch that does not fill the last pair is padded, never mixed up."""
    embedder, localizer, torch_pipeline = networks
    mirrored = torch_pipeline.with_spec(
        replace(torch_pipeline.spec, localizer=replace(torch_pipeline.spec.localizer,
                                                       average_mirror=True))
    )  # fmt: skip
    exported, files = export_pipeline(mirrored, embedder, localizer, tmp_path)
    pair = quantize_int8(
        files["localizer_onnx"], tmp_path / "pair.onnx", _calibration(7), op_types=None,
        fixed_batch=2,
    )  # fmt: skip
    quantized = onnx_pipeline(mirrored.spec, {**files, "localizer_onnx": pair})
    assert quantized.localizer.fixed_batch == 2
    images = [exported.validate(p) for p in _photos()]
    together = quantized.product_masks(images)
    for image, mask in zip(images, together, strict=True):
        np.testing.assert_array_equal(quantized.product_masks([image])[0], mask)
    floats = exported.product_masks(images)
    assert max(float(np.abs(a - b).max()) for a, b in zip(floats, together, strict=True)) < 0.1
    odd = torch.from_numpy(_calibration(3))
    padded = quantized.localizer(odd)
    assert padded.shape[0] == 3
    torch.testing.assert_close(padded[2:], quantized.localizer(odd[[2, 2]])[:1])
    torch.testing.assert_close(padded[:2], quantized.localizer(odd[:2]))
