"""The search service end to end on the tiny catalog: catalog photos find their own product,
filters and product changes behave (and survive a restart), bad input is a 4xx that says what
is wrong, and an index built by another model version is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import build_index, new_product_photo, noise_png, png

from shoplens.cli import main
from shoplens.config import compose_config
from shoplens.data.cache import open_cache
from shoplens.registry.champion import load_champion
from shoplens.search import IndexModelMismatch
from shoplens.serving.app import create_app


@pytest.fixture(scope="module")
def setup(trained):
    args = build_index(trained)
    cfg = compose_config(args)
    return args, cfg, load_champion(str(cfg.registry.model_name))


@pytest.fixture(scope="module")
def client(setup):
    _, cfg, model = setup
    with TestClient(create_app(cfg, model)) as client:  # runs the lifespan: loads the index
        yield client


@pytest.fixture(scope="module")
def catalog(setup) -> pd.DataFrame:
    return pd.read_parquet(Path(setup[1].paths.catalog_dir) / "manifest.parquet")


def _search(client, data: bytes, **form):
    return client.post("/search", files={"image": ("q.png", data, "image/png")}, data=form)


def test_index_stage_report_and_health(setup, catalog, client):
    _, cfg, model = setup
    report = json.loads((Path(cfg.paths.reports_dir) / "index.json").read_text())
    assert report["images"] == len(catalog) and report["model_version"] == model.version
    health = client.get("/health").json()
    assert health["model_version"] == model.version and health["index_size"] >= len(catalog)
    assert set(catalog["category"]) <= set(health["categories"])
    assert client.get("/docs").status_code == 200 and "<html" in client.get("/").text.lower()


def test_catalog_photo_finds_its_product_and_category_filter(client, catalog):
    for _, row in catalog.sample(6, random_state=0).iterrows():
        body = _search(client, Path(row["path"]).read_bytes(), k=5).json()
        assert body["results"][0]["product_id"] == row["product_id"], body
        # The upload is preprocessed exactly as its indexed copy: the same vector, not a near one.
        assert body["results"][0]["score"] > 0.9999 and len(body["results"]) == 5
    image = client.get(body["results"][0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    category = sorted(set(catalog["category"]) - {row["category"]})[0]
    filtered = _search(client, Path(row["path"]).read_bytes(), k=8, category=category).json()
    assert len(filtered["results"]) == 8
    assert {r["category"] for r in filtered["results"]} == {category}
    similar = client.get(f"/products/{row['product_id']}/similar", params={"k": 3}).json()
    assert len(similar["results"]) == 3
    assert row["product_id"] not in {r["product_id"] for r in similar["results"]}


def test_an_uploaded_catalog_photo_is_preprocessed_exactly_like_its_indexed_copy(
    setup, client, catalog
):
    """The index embedded the preprocess cache; an upload of the same file must reach the model
    as the same pixels (conftest's cache is larger than the model input, as in production)."""
    _, cfg, model = setup
    cache = open_cache(Path(cfg.paths.catalog_dir) / "images.npy")
    image_size = model.pipeline.spec.embedder.image_size
    assert cache.shape[1] != image_size, "the check needs a cache larger than the input"
    searcher = client.app.state.searcher
    for _, row in catalog.sample(3, random_state=1).iterrows():
        uploaded = searcher.catalog_square(Path(row["path"]).read_bytes())
        assert np.array_equal(uploaded, np.asarray(cache[row["cache_index"]]))


def test_added_product_is_found_deleted_and_both_survive_a_restart(setup, client):
    _, cfg, model = setup
    photo = new_product_photo()
    form = {"product_id": "new-star", "category": "red"}
    added = client.post("/products", files={"image": ("s.png", photo, "image/png")}, data=form)
    assert added.status_code == 201, added.text
    assert _search(client, photo, k=3).json()["results"][0]["product_id"] == "new-star"
    with TestClient(create_app(cfg, model)) as restarted:
        top = _search(restarted, photo, k=3).json()["results"][0]
        assert top["product_id"] == "new-star"
        assert restarted.get(top["image_url"]).status_code == 200
        assert restarted.delete("/products/new-star").json()["removed_images"] == 1
        with TestClient(create_app(cfg, model)) as again:
            for app_client in (restarted, again):
                ids = {r["product_id"] for r in _search(app_client, photo, k=10).json()["results"]}
                assert "new-star" not in ids
        assert restarted.delete("/products/new-star").status_code == 404


@pytest.mark.parametrize(
    ("data", "form", "status", "message"),
    [
        (b"", {}, 400, "empty file"),
        (b"just some text, no picture", {}, 400, "not an image"),
        (png(Image.new("RGB", (40, 40)))[:60], {}, 400, "truncated"),
        (noise_png(160), {}, 413, "upload too large"),  # > 60,000 bytes
        (png(Image.new("RGB", (150, 150))), {}, 413, "pixels"),
        (noise_png(8), {}, 400, "too small"),
        (noise_png(40), {"category": "plaid"}, 400, "unknown category"),
        (noise_png(40), {"k": 0}, 422, "greater than or equal to 1"),
        (noise_png(40), {"k": 21}, 422, "less than or equal to 20"),
    ],
)
def test_bad_input_is_a_4xx_that_says_what_is_wrong(client, data, form, status, message):
    response = _search(client, data, **form)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(e["msg"] for e in detail)
    assert message in text.lower()


def test_other_bad_requests(client):
    assert client.post("/search", data={"k": 3}).status_code == 422  # no image
    assert client.get("/products/nope/similar").status_code == 404
    assert client.get("/images/99999999").status_code == 404
    bad = client.post(
        "/products",
        files={"image": ("x.png", noise_png(40), "image/png")},
        data={"product_id": "x", "category": "plaid"},
    )
    assert bad.status_code == 400 and "unknown category" in bad.json()["detail"]


def test_a_shopper_photo_gets_the_same_answer_from_the_cli_and_the_api(
    setup, client, tmp_path, capsys
):
    """One query pipeline behind both: the same photo, the same products and scores (the
    pyfunc without shoplens installed is compared in tests/test_registry.py)."""
    args, cfg, _ = setup
    photo = sorted(Path(cfg.paths.shopper_photos_dir).glob("photos/*.jpg"))[0]
    api = _search(client, photo.read_bytes(), k=5).json()
    assert main(["search", str(photo), "--k", "5", "--json", *args]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [(r["product_id"], r["score"]) for r in api["results"]] == [
        (r["product_id"], round(r["score"], 6)) for r in cli["results"]
    ]
    assert (api["localized"], api["note"]) == (cli["localized"], cli["note"])


def test_cli_search_and_model_mismatch_refused(setup, catalog, tmp_path, capsys):
    args, cfg, model = setup
    row = catalog.iloc[0]
    assert main(["search", row["path"], "--k", "2", "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["product_id"] == row["product_id"]

    other = tmp_path / "index"
    shutil.copytree(cfg.search.dir, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "model_version": "999"}))
    with (
        pytest.raises(IndexModelMismatch, match="version 999"),
        TestClient(create_app(compose_config([*args, f"search.dir={other}"]), model)),
    ):
        pass
    assert main(["search", row["path"], *args, f"search.dir={other}"]) == 1
    assert "rebuild the index" in capsys.readouterr().err


def test_narrowing_searches_only_the_classifiers_top_category(setup, catalog):
    """The mechanism, not the tiny model's accuracy: results come from its top-1 category."""
    args, _, model = setup
    cfg = compose_config(
        [*args, "search.narrow_by_category=true", "search.narrow_top_categories=1"]
    )
    photo = Path(catalog.iloc[3]["path"]).read_bytes()
    with TestClient(create_app(cfg, model)) as narrowed:
        result = narrowed.app.state.searcher.pipeline.query(photo)
        top = model.categories[int(result.logits[0].argmax())]
        results = _search(narrowed, photo, k=10).json()["results"]
    assert results and {r["category"] for r in results} == {top}
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_approximate_index_reports_recall_against_exact(setup, tmp_path):
    from shoplens.pipeline import index

    args = [*setup[0], "search.index.kind=hnsw", f"search.dir={tmp_path / 'hnsw'}"]
    report = index.run(compose_config([*args, f"paths.reports_dir={tmp_path}"]))
    assert report["index_kind"] == "hnsw" and report["recall_queries"] == 6  # 10% of 64
    assert report["hit@1"] >= 0.8 and report["recall@10"] >= 0.8
    assert json.loads((tmp_path / "index.json").read_text()) == report


def test_openapi_declares_a_schema_for_every_answer(client):
    """/docs shows what each route returns, errors included: no hand-built dicts."""
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                content = response.get("content", {})
                assert any("schema" in c for c in content.values()), (method, path, code)
    search = spec["paths"]["/search"]["post"]["responses"]
    assert {"200", "400", "413", "422"} <= set(search)
    body = spec["components"]["schemas"]["SearchResponse"]["properties"]
    assert {"results", "searched", "products", "localized", "note"} <= set(body)
