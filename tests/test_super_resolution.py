"""The super-resolver (models/super_resolution.py) and its training on degraded catalog photos
(training/super_resolution.py)."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, SPLIT, read_manifest
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
