"""The super-resolver (models/super_resolution.py) and its training on degraded catalog photos
(training/super_resolution.py)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, SPLIT, read_manifest
from shoplens.evaluation.small_crops import shrink_cleanly, shrink_like_a_phone
from shoplens.models.super_resolution import SuperResolver
from shoplens.training.super_resolution import (
    Degradation,
    SuperResolutionModule,
    compare_with_bicubic,
    degrade,
)


def test_an_untrained_resolver_is_bicubic_and_keeps_the_range():
    x = torch.rand(2, 3, 10, 12)
    net = SuperResolver(scale=2)
    out = net(x)
    assert out.shape == (2, 3, 20, 24) and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, net.bicubic(x).clamp(0, 1))
    with pytest.raises(ValueError, match="scale"):
        SuperResolver(scale=5)


def test_degrade_shrinks_by_the_scale_and_draws_per_image():
    hr = torch.rand(3, 3, 32, 32)
    low = degrade(hr, 4, np.random.default_rng(0), Degradation())
    assert low.shape == (3, 3, 8, 8) and low.min() >= 0 and low.max() <= 1
    again = degrade(hr, 4, np.random.default_rng(0), Degradation())
    torch.testing.assert_close(low, again)  # seeded: validation sees the same inputs
    other = degrade(hr, 4, np.random.default_rng(1), Degradation())
    assert not torch.allclose(low, other)


def test_the_held_out_shrink_is_seeded_and_not_the_training_degradation():
    hr = torch.rand(3, 3, 32, 32)
    low = shrink_like_a_phone(hr, 2, np.random.default_rng(0))
    assert low.shape == (3, 3, 16, 16) and low.min() >= 0 and low.max() <= 1
    torch.testing.assert_close(low, shrink_like_a_phone(hr, 2, np.random.default_rng(0)))
    trained_on = degrade(hr, 2, np.random.default_rng(0), Degradation())
    assert not torch.allclose(low, trained_on, atol=0.02)
    assert shrink_cleanly(hr, 4).shape == (3, 3, 8, 8)


def _catalog_squares(workspace, split: str) -> torch.Tensor:
    catalog = workspace / "catalog"
    manifest = read_manifest(catalog)
    rows = np.sort(manifest[manifest[SPLIT] == split]["cache_index"].to_numpy())
    x = torch.from_numpy(np.asarray(open_cache(catalog / CACHE_FILE)[rows])).permute(0, 3, 1, 2)
    return F.interpolate(x.float() / 255, size=(32, 32), mode="area")


def test_a_trained_tiny_resolver_beats_bicubic_on_held_out_test_catalog_photos(workspace):
    torch.manual_seed(0)
    train, test = _catalog_squares(workspace, "train"), _catalog_squares(workspace, "test")
    module = SuperResolutionModule(scale=2, features=16, hidden=8, lr=3e-3)
    trainer = L.Trainer(max_epochs=40, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(train), batch_size=16, shuffle=True))
    # The mechanism: it learns to undo the degradation it trains on, on photos it never saw
    # (the stage's report and gate use held-out shrinking; README: "Small photos").
    low = degrade(test, 2, np.random.default_rng(7), Degradation())
    measured = compare_with_bicubic(module.network, low, test)
    assert measured["psnr"] > measured["bicubic_psnr"] + 0.5, measured
    assert measured["ssim"] > measured["bicubic_ssim"], measured


def test_only_a_small_crop_is_super_resolved_and_only_once():
    from PIL import Image

    from shoplens.query.crop import crop_product
    from shoplens.query.localize import Detection
    from shoplens.query.upscale import Upscaler

    calls = []

    def network(x):
        calls.append(tuple(x.shape))
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    upscaler = Upscaler(network, scale=2, below=40)
    large = Image.new("RGB", (60, 30), (200, 10, 10))
    assert upscaler(large) is large and not calls  # never upscaled
    tiny = Image.new("RGB", (12, 20), (10, 200, 10))
    bigger = upscaler(tiny)
    assert bigger.size == (24, 40) and calls == [(1, 3, 20, 12)]
    assert upscaler(bigger) is bigger and len(calls) == 1  # 40 px is no longer small
    photo = Image.new("RGB", (200, 150), (90, 90, 90))
    small_box = Detection((50, 50, 66, 70), 0.9, 0.01, 1)
    square = crop_product(photo, 80, small_box, margin=0.0, mask_background=False,
                          backdrop=(255, 255, 255), upscale=upscaler)  # fmt: skip
    assert square.shape == (80, 80, 3) and calls[-1] == (1, 3, 20, 16)
    with pytest.raises(ValueError, match="below"):
        Upscaler(network, 2, 0)


# -- the stage, its registered model and the query pipeline --------------------------------
SR = (
    "super_resolution.features=8",
    "super_resolution.hidden=8",
    "super_resolution.epochs=2",
    "super_resolution.batch_size=16",
    "super_resolution.lr=0.003",
    "super_resolution.test_photos=64",
)


@pytest.fixture(scope="module")
def upscaling(workspace, overrides):
    from shoplens.config import compose_config
    from shoplens.pipeline import train_super_resolution

    cfg = compose_config(overrides(workspace, *SR))
    return cfg, train_super_resolution.run(cfg)


def test_the_stage_measures_against_bicubic_on_test_photos_and_tracks_the_run(upscaling):
    import json

    from mlflow import MlflowClient

    cfg, result = upscaling
    reports = Path(cfg.paths.reports_dir) / "super_resolution"
    metrics = json.loads((reports / "metrics.json").read_text())
    # The workspace's photos are 40 px files cached at 40: the native side is the target.
    assert metrics["hr_size"] == 40 and metrics["scale"] == 2
    assert metrics["psnr_gain_db"] == pytest.approx(metrics["psnr"] - metrics["bicubic_psnr"])
    assert 10 < metrics["bicubic_psnr"] < 60 and 0 < metrics["ssim"] <= 1
    assert metrics["clean_bicubic_psnr"] > metrics["bicubic_psnr"]  # phones lose more
    assert (reports / "samples.png").stat().st_size > 10_000
    assert Path(cfg.super_resolution.checkpoint).is_file()
    run = MlflowClient(cfg.tracking.uri).get_run(result["mlflow_run_id"])
    assert run.data.tags["shoplens.stage"] == "train_super_resolution"
    assert run.data.metrics["test/psnr"] == pytest.approx(metrics["psnr"])
    assert "val/psnr" in run.data.metrics


def test_a_resolver_that_does_not_beat_bicubic_enough_never_serves(upscaling, workspace, overrides):
    import mlflow
    from mlflow import MlflowClient

    from shoplens.config import compose_config
    from shoplens.pipeline.query_setup import load_super_resolver
    from shoplens.registry.super_resolution import register_super_resolver
    from shoplens.tracking.runs import checkpoint_sha256, read_train_run

    cfg, result = upscaling
    base = overrides(workspace, *SR)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    client, checkpoint = MlflowClient(), cfg.super_resolution.checkpoint
    info, sha = read_train_run(checkpoint), checkpoint_sha256(checkpoint)
    network = load_super_resolver(compose_config([*base, "super_resolution.min_gain_db=-99"]))
    assert network is not None and network.scale == 2
    strict = compose_config([*base, "super_resolution.min_gain_db=99"])
    assert load_super_resolver(strict) is None  # left out of the query pipeline too
    off = compose_config([*base, "query.super_resolve=false", "super_resolution.min_gain_db=-99"])
    assert load_super_resolver(off) is not None  # carried, so evaluate can measure it on

    version, decision = register_super_resolver(
        client, "sr-gate-test", network, sha, info, result["mlflow_run_id"], 99.0, 0.05
    )
    assert not decision.promote and "under the required 99 dB" in decision.reason
    assert "champion" not in client.get_registered_model("sr-gate-test").aliases
    again, decision = register_super_resolver(
        client, "sr-gate-test", network, sha, info, result["mlflow_run_id"], -99.0, 0.05
    )
    assert again == version and decision.promote  # the same checkpoint: the same version
    tags = client.get_model_version("sr-gate-test", str(version)).tags
    assert float(tags["test.heldout_psnr_gain_db"]) == pytest.approx(
        info["clean_psnr_gain_db"], abs=1e-4
    )
    # A champion from before the held-out measurement: nothing comparable, the bar decides.
    for tag in ("test.heldout_psnr_gain_db", "test.heldout_ssim"):
        client.delete_model_version_tag("sr-gate-test", str(version), tag)
    newer, decision = register_super_resolver(
        client, "sr-gate-test", network, "b" * 64, info, result["mlflow_run_id"], -99.0, 0.05
    )
    assert newer != version and decision.promote, decision.reason
    assert "the champion has no comparable PSNR gain over bicubic (dB)" in decision.reason


def test_only_small_crops_are_super_resolved_in_the_pipeline_and_onnx_agrees(upscaling, tmp_path):
    from PIL import Image

    from shoplens.query import EmbedderSpec, QueryPipeline, QuerySpec, UpscaleSpec
    from shoplens.query.onnx_network import OnnxNetwork
    from shoplens.registry.onnx_export import export_onnx
    from shoplens.training.super_resolution import SuperResolutionModule

    cfg, _ = upscaling
    network = SuperResolutionModule.load_from_checkpoint(
        cfg.super_resolution.checkpoint, map_location="cpu"
    ).network.eval()
    seen = []

    def recording(x):
        seen.append(tuple(x.shape[-2:]))
        return network(x)

    def embed(x):
        return (torch.nn.functional.normalize(x.mean(dim=(2, 3)), dim=1),)

    spec = QuerySpec(EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, 40, 3), localize=False,
                     upscale=UpscaleSpec(2, 20))  # fmt: skip
    pipeline = QueryPipeline(spec, embed, None, recording)
    tiny, large = Image.new("RGB", (16, 18), (200, 30, 30)), Image.new("RGB", (60, 40), "blue")
    small_result, large_result = pipeline.query_batch([tiny, large])
    assert small_result.upscaled == [True] and large_result.upscaled == [False]
    assert seen == [(18, 16)]  # once, and only the small photo
    off = pipeline.with_spec(spec.with_options(super_resolve=False)).query(tiny)
    assert off.upscaled == [False] and len(seen) == 1
    with pytest.raises(ValueError, match="super-resolver"):
        QueryPipeline(spec, embed)  # the spec names one: it must be given

    path = export_onnx(network, 20, tmp_path / "sr.onnx", ["upscaled"], spatial=True)
    onnx = OnnxNetwork(path, single=True)
    for shape in [(1, 3, 7, 19), (2, 3, 16, 16), (1, 3, 1, 1)]:  # any crop, even 1 x 1
        x = torch.rand(*shape)
        torch.testing.assert_close(onnx(x), network(x), atol=1e-5, rtol=0)
