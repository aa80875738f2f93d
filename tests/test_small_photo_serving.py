"""Small photos through the registered model and the HTTP service: the super-resolver trained
by its stage ships inside the query pipeline (ONNX by default), a small photo is super-resolved
once and the response says so, a large one never is, and hostile shapes are a 4xx or a
flagged answer, never a 500."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import AUTH, build_index

from shoplens.config import compose_config
from shoplens.pipeline import train_super_resolution
from shoplens.query import UpscaleSpec
from shoplens.registry.champion import load_champion
from shoplens.serving.app import create_app

SMALL = (
    "super_resolution.features=8",
    "super_resolution.hidden=8",
    "super_resolution.epochs=1",
    "super_resolution.batch_size=16",
    "super_resolution.test_photos=32",
    # The mechanism, not the network's quality (tests/test_super_resolution.py measures it):
    # whatever this tiny one scores, it goes into the pipeline.
    "super_resolution.min_gain_db=-99",
    # Whole photos: whether a photo is small does not depend on what a tiny localizer finds.
    "query.localize=false",
)


@pytest.fixture(scope="module")
def served(trained):
    args = [*trained, *SMALL]
    train_super_resolution.run(compose_config(args))
    args = build_index(args)
    cfg = compose_config(args)
    model = load_champion(str(cfg.registry.model_name))
    with TestClient(create_app(cfg, model), headers=AUTH) as client:
        yield cfg, model, client


def _png(width: int, height: int, colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _search(client, data: bytes):
    return client.post("/search", files={"image": ("q.png", data, "image/png")})


def test_the_registered_pipeline_carries_the_super_resolver(served):
    cfg, model, _ = served
    # The cache side is 40 px: crops under 20 px come out of the x2 network still smaller.
    assert model.pipeline.spec.upscale == UpscaleSpec(2, 20)
    assert model.runtime == "onnx" and model.pipeline.upscaler is not None
    registry = json.loads((Path(cfg.paths.reports_dir) / "registry.json").read_text())
    assert registry["super_resolver_in_pipeline"] == 1
    assert registry["super_resolver_decision"] == "champion"
    # evaluate answered the small-photo benchmark with and without it, side by side
    small = json.loads((Path(cfg.paths.reports_dir) / "metrics.json").read_text())["small_photos"]
    assert set(small) == {"pipeline", "pipeline_no_sr", "oracle_mask", "oracle_mask_no_sr"}
    for variant in small.values():  # the true-mask ceiling answers the same photos
        assert variant["all"]["photos"] == 24 and set(variant) >= {"thumbnail", "zoomed_out"}


def test_a_small_photo_is_super_resolved_and_a_large_one_is_not(served):
    _, _, client = served
    small = _search(client, _png(16, 18))
    assert small.status_code == 200, small.text
    assert small.json()["super_resolved"] and small.json()["searched"]["super_resolved"]
    assert small.json()["results"]
    large = _search(client, _png(120, 100))
    assert large.status_code == 200 and not large.json()["super_resolved"]


@pytest.mark.parametrize(
    ("width", "height", "status"),
    [(1, 1, 400), (16, 1200, 200), (1200, 16, 200), (3, 900, 400), (16, 5000, 413)],
)
def test_hostile_shapes_are_a_4xx_or_an_answer_never_a_500(served, width, height, status):
    _, _, client = served
    response = _search(client, _png(width, height))
    assert response.status_code == status, response.text
    if status == 200:  # an extreme aspect ratio: searched whole, its long side is not small
        assert response.json()["results"] and not response.json()["super_resolved"]
