"""The search service end to end on the tiny catalog: catalog photos find their own product,
filters and product changes behave (and survive a restart), bad input is a 4xx that says what
is wrong, and an index built by another model version is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serving_helpers import AUTH, build_index, free_port, new_product_photo, noise_png, png

from shoplens.cli import main
from shoplens.config import compose_config
from shoplens.data.cache import open_cache
from shoplens.evaluation.no_match import Calibration
from shoplens.registry.champion import load_champion
from shoplens.search import CatalogIndex, IndexModelMismatch, category_log_prior, search_with_prior
from shoplens.serving.app import create_app
from shoplens.serving.searcher import Searcher


@pytest.fixture(scope="module")
def setup(trained):
    args = build_index(trained)
    cfg = compose_config(args)
    return args, cfg, load_champion(str(cfg.registry.model_name))


@pytest.fixture(scope="module")
def client(setup):
    _, cfg, model = setup
    # runs the lifespan: loads the index
    with TestClient(create_app(cfg, model), headers=AUTH) as client:
        yield client


@pytest.fixture(scope="module")
def catalog(setup) -> pd.DataFrame:
    return pd.read_parquet(Path(setup[1].paths.catalog_dir) / "manifest.parquet")


def _search(client, data: bytes, headers=None, **form):
    files = {"image": ("q.png", data, "image/png")}
    return client.post("/search", files=files, data=form, headers=headers)


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


def test_search_ranks_with_the_registered_category_prior(setup, client, catalog):
    """With a category prior in the model's spec, /search returns the prior-ranked products
    (search_with_prior on the photo's own embedding and head), keeps their cosine scores, and
    decides `match` on the closest photo's similarity."""
    searcher = client.app.state.searcher
    plain = searcher.pipeline
    searcher.pipeline = plain.with_spec(plain.spec.with_options(category_prior=0.5))
    try:
        photo = Path(catalog.iloc[3]["path"]).read_bytes()
        body = _search(client, photo, k=5).json()
        result = searcher.pipeline.query(photo)
        rows = [(result.embeddings[0], result.logits[0])]
        if result.whole_embedding is not None:  # searched whole too: the closer one answers
            rows.append((result.whole_embedding, result.whole_logits))
        found = [
            search_with_prior(searcher.index, vector, 5,
                              category_log_prior(logits, searcher.model.categories), 0.5)
            for vector, logits in rows
        ]  # fmt: skip
        hits, best = found[0] if len(found) == 1 or found[0][1] >= found[1][1] else found[1]
    finally:
        searcher.pipeline = plain
    assert [r["product_id"] for r in body["results"]] == [h.product_id for h in hits]
    assert [r["score"] for r in body["results"]] == pytest.approx([h.score for h in hits])
    assert body["match"] is (best >= body["match_threshold"])
    cosine = _search(client, photo, k=5).json()  # the registered spec again: cosine order
    scores = [r["score"] for r in cosine["results"]]
    assert scores == sorted(scores, reverse=True)


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
    with TestClient(create_app(cfg, model), headers=AUTH) as restarted:
        top = _search(restarted, photo, k=3).json()["results"][0]
        assert top["product_id"] == "new-star"
        assert restarted.get(top["image_url"]).status_code == 200
        assert restarted.delete("/products/new-star").json()["removed_images"] == 1
        with TestClient(create_app(cfg, model), headers=AUTH) as again:
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
    assert client.get(f"/images/{2**63}").status_code == 422  # past int64: found by schemathesis
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


def test_no_confident_match_under_the_threshold_the_index_stage_chose(setup, client, catalog):
    """The registered model carries evaluate's calibration photos; the index stage chose the
    threshold on its own gallery from them; the service marks answers under it."""
    _, cfg, model = setup
    report = json.loads((Path(cfg.paths.reports_dir) / "index.json").read_text())
    threshold = report["no_match/match_threshold"]
    calibration = Calibration.load(model.calibration_path)
    assert len(calibration.in_catalog) == cfg.evaluate.photos.photos
    assert len(calibration.out_of_catalog) == cfg.evaluate.photos.out_of_catalog
    assert client.get("/health").json()["match_threshold"] == pytest.approx(threshold)
    photo = Path(catalog.iloc[0]["path"]).read_bytes()  # a catalog shot: its own photo scores 1
    body = _search(client, photo, k=3).json()
    assert body["match"] is (body["results"][0]["score"] >= threshold)
    assert body["match_threshold"] == pytest.approx(threshold)
    searcher = client.app.state.searcher
    searcher.index.meta["match_threshold"] = 1.5  # above any cosine: nothing matches
    try:
        unsure = _search(client, photo, k=3).json()
    finally:
        searcher.index.meta["match_threshold"] = threshold
    assert unsure["match"] is False and len(unsure["results"]) == 3  # still shown, marked


def test_approximate_index_reports_recall_against_exact(setup, tmp_path):
    from shoplens.pipeline import index

    args = [*setup[0], "search.index.kind=hnsw", f"search.dir={tmp_path / 'hnsw'}"]
    report = index.run(compose_config([*args, f"paths.reports_dir={tmp_path}"]))
    assert report["index_kind"] == "hnsw" and report["recall_queries"] == 6  # 10% of 64
    assert report["hit@1"] >= 0.8 and report["recall@10"] >= 0.8
    assert json.loads((tmp_path / "index.json").read_text()) == report


@pytest.mark.slow
def test_the_ray_engine_builds_the_same_index_as_the_local_one(setup, tmp_path):
    """Ray Data on a local Ray (2 actors, batches finishing in any order): the same vectors
    for the same ids as the local engine, and the same no-match threshold."""
    from shoplens.pipeline import index

    args, cfg, _ = setup
    ray_args = [*args, "search.embed.engine=ray", "search.embed.workers=2",
                "search.batch_size=16", f"search.dir={tmp_path / 'ray'}",
                f"paths.reports_dir={tmp_path}"]  # fmt: skip
    report = index.run(compose_config(ray_args))
    assert report["embed_engine"] == "ray" and report["images"] == 64
    local, remote = CatalogIndex.load(cfg.search.dir), CatalogIndex.load(tmp_path / "ray")
    queries = np.random.default_rng(0).normal(size=(16, local.index.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    (ls, li), (rs, ri) = local.index.search(queries, 64), remote.index.search(queries, 64)
    np.testing.assert_array_equal(ri, li)  # every photo, ranked the same for 16 queries
    np.testing.assert_allclose(rs, ls, atol=1e-5)
    assert remote.meta["match_threshold"] == pytest.approx(local.meta["match_threshold"])
    local_table = pd.read_parquet(Path(cfg.search.dir) / "images.parquet")
    assert pd.read_parquet(tmp_path / "ray" / "images.parquet").equals(local_table)


class _FlakyRay:
    """Ray's init as a busy machine sees it: the first local starts time out."""

    # Ray's two start deadlines, as it raises them (neither is a TimeoutError).
    GCS_PORT = RuntimeError("Timed out waiting for file .../gcs_server_port_...")
    RAYLET = Exception("The current node timed out during startup. This could happen ...")

    def __init__(self, failures: int, error: Exception = GCS_PORT):
        self.failures, self.error, self.inits, self.shutdowns = failures, error, 0, 0

    def init(self, **kwargs):
        self.inits += 1
        if self.inits <= self.failures:
            raise self.error

    def shutdown(self):
        self.shutdowns += 1


def test_a_local_ray_that_misses_its_start_is_started_again_but_a_cluster_is_not(monkeypatch):
    from shoplens.pipeline.index_ray import _init_ray

    wait = "RAY_gcs_server_port_wait_time_s"  # Ray's own spelling, lower case and all
    monkeypatch.delenv(wait, raising=False)
    ray = _FlakyRay(failures=2)
    _init_ray(ray, address=None)
    assert (ray.inits, ray.shutdowns) == (3, 2)
    assert os.environ[wait] == "90"
    ray = _FlakyRay(failures=1, error=_FlakyRay.RAYLET)  # the raylet's deadline (seen on CI)
    _init_ray(ray, address=None)
    assert (ray.inits, ray.shutdowns) == (2, 1)
    with pytest.raises(RuntimeError, match="Timed out"):
        _init_ray(_FlakyRay(failures=3), address=None)  # a third miss is the user's to see
    with pytest.raises(Exception, match="timed out during startup"):
        _init_ray(_FlakyRay(failures=1, error=_FlakyRay.RAYLET), address="ray://head:10001")
    refused = _FlakyRay(failures=1, error=ValueError("runtime_env: bad pip spec"))
    with pytest.raises(ValueError, match="runtime_env"):
        _init_ray(refused, address=None)  # not a timeout: no second start
    assert refused.inits == 1
    monkeypatch.setenv(wait, "300")
    _init_ray(_FlakyRay(failures=0), address=None)
    assert os.environ[wait] == "300"  # the operator's wait wins


def test_the_query_log_is_off_by_default_and_records_no_photo_when_on(setup, catalog, tmp_path):
    args, cfg, model = setup
    assert not (Path(cfg.search.state_dir) / "queries.db").exists()  # the module's service: off
    photo = Path(catalog.iloc[5]["path"]).read_bytes()
    on = compose_config([*args, "search.query_log.enabled=true",
                         f"search.state_dir={tmp_path / 'state'}"])  # fmt: skip
    with TestClient(create_app(on, model), headers=AUTH) as service:
        answers = [_search(service, photo, k=3).json() for _ in range(2)]
        vectors, table = service.app.state.searcher.query_log.window(0)
        expected = service.app.state.searcher.answer(photo, 3).embedding
    assert len(table) == 2 and not table["has_photo"].any()
    assert list(table["category"]) == [a["results"][0]["category"] for a in answers]
    assert table["top_score"][0] == pytest.approx(answers[0]["results"][0]["score"])
    assert bool(table["localized"][0]) == answers[0]["localized"]
    assert table["model"][0] == f"{model.name}:{model.version}"
    np.testing.assert_allclose(vectors[0], expected, atol=1e-6)


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


def test_metrics_count_requests_per_route_and_show_the_service_state(setup):
    _, cfg, model = setup
    with TestClient(create_app(cfg, model), headers=AUTH) as api:
        for _ in range(2):
            assert _search(api, new_product_photo(), k=1).status_code == 200
        assert _search(api, b"not an image", k=1).status_code == 400
        text = api.get("/metrics").text
        index_size = len(api.app.state.searcher.index)
    assert 'http_requests_total{handler="/search",method="POST",status="200"} 2.0' in text
    assert 'http_requests_total{handler="/search",method="POST",status="400"} 1.0' in text
    assert 'http_request_duration_seconds_bucket{handler="/search"' in text
    assert f'shoplens_model_info{{name="{model.name}",version="{model.version}"}} 1.0' in text
    assert f"shoplens_index_photos {float(index_size)}" in text
    assert "shoplens_catalog_changes_total 0.0" in text


def test_writes_need_the_token_and_reads_stay_open(setup):
    _, cfg, model = setup
    photo, form = new_product_photo(), {"product_id": "intruder", "category": "red"}
    files = {"image": ("s.png", photo, "image/png")}
    wrong = {"Authorization": "Bearer not-the-token"}
    with TestClient(create_app(cfg, model)) as anonymous:
        missing = anonymous.post("/products", files=files, data=form)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert anonymous.post("/products", files=files, data=form, headers=wrong).status_code == 403
        assert anonymous.delete("/products/new-star").status_code == 401
        assert anonymous.delete("/products/new-star", headers=wrong).status_code == 403
        assert _search(anonymous, photo, k=1).status_code == 200
        assert not anonymous.app.state.searcher.index.photos("intruder")
    spec = create_app(cfg, model).openapi()
    assert {"401", "403"} <= set(spec["paths"]["/products"]["post"]["responses"])


def test_a_service_with_open_writes_refuses_to_start(setup, monkeypatch, capsys):
    """No token and writes on: `shoplens serve` exits before listening, and says why."""
    args, _, _ = setup
    monkeypatch.delenv("SHOPLENS_WRITE_TOKEN", raising=False)
    no_token = [*args, "search.auth.token_file=null"]
    assert main(["serve", *no_token]) == 1
    assert "no token is configured" in capsys.readouterr().err
    exposed = [*no_token, "search.auth.open_writes=true", "search.host=0.0.0.0"]
    assert main(["serve", *exposed]) == 1
    assert "only on localhost" in capsys.readouterr().err
    unprotected = [*no_token, "search.writes=false", "search.auth.protect_reads=true"]
    assert main(["serve", *unprotected]) == 1
    assert "protect_reads=true but no token" in capsys.readouterr().err


def test_writes_off_protected_reads_and_cors(setup):
    args, _, model = setup
    cfg = compose_config(
        [
            *args,
            "search.writes=false",
            "search.auth.protect_reads=true",
            "search.cors_origins=[https://shop.example]",
        ]  # fmt: skip
    )
    app = create_app(cfg, model)
    assert "/products" not in app.openapi()["paths"]
    with TestClient(app) as api:
        assert _search(api, new_product_photo(), k=1).status_code == 401
        assert _search(api, new_product_photo(), k=1, headers=AUTH).status_code == 200
        assert api.get("/health").status_code == 200  # load balancers probe without a token
        preflight = api.options(
            "/search",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        other = api.options(
            "/search",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def _serve(args: list[str], port: int) -> subprocess.Popen:
    """A real `shoplens serve` process; returns once /health answers."""
    command = [sys.executable, "-m", "shoplens.cli", "serve", f"search.port={port}", *args]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180  # torch, MLflow and the model: seconds, more on a busy CI
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"shoplens serve exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.3)
    server.kill()
    pytest.fail("shoplens serve did not start within 180 s")


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(setup, tmp_path):
    """Clients add and remove products while the service is killed with SIGKILL at a random
    instant, three times: every start succeeds, every acknowledged write is there, and the
    index stage's output is never written."""
    args, cfg, _ = setup
    args = [*args, f"search.state_dir={tmp_path / 'state'}", "search.snapshot_every=5"]
    base = {p: p.read_bytes() for p in Path(cfg.search.dir).rglob("*") if p.is_file()}
    port, rng = free_port(), np.random.default_rng(0)
    added, removed = set(), set()

    def check(url: str) -> None:
        for pid in added | removed:
            status = httpx.get(f"{url}/products/{pid}/similar", params={"k": 1}).status_code
            assert status == (404 if pid in removed else 200), pid

    def write(url: str, worker: int, stop: threading.Event) -> None:
        photo, i, deleting = new_product_photo(), 0, None
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
            while not stop.is_set():
                pid = f"crash-{worker}-{uuid.uuid4().hex[:8]}"
                files = {"image": ("s.png", photo, "image/png")}
                form = {"product_id": pid, "category": "red"}
                try:
                    if http.post("/products", files=files, data=form).status_code == 201:
                        added.add(pid)
                    i += 1
                    if i % 3 == 0:
                        deleting = pid
                        if http.delete(f"/products/{pid}").status_code == 200:
                            added.discard(pid)
                            removed.add(pid)
                        deleting = None
                except httpx.TransportError:
                    # The server is gone: an unanswered request promised nothing either way.
                    if deleting is not None:
                        added.discard(deleting)
                    return

    for _cycle in range(3):
        server, url = _serve(args, port), f"http://127.0.0.1:{port}"
        check(url)
        stop = threading.Event()
        writers = [threading.Thread(target=write, args=(url, w, stop)) for w in range(2)]
        for t in writers:
            t.start()
        time.sleep(float(rng.uniform(1.5, 4.0)))
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for t in writers:
            t.join()
    assert len(added) >= 10 and removed
    server = _serve(args, port)
    try:
        check(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert base == {p: p.read_bytes() for p in Path(cfg.search.dir).rglob("*") if p.is_file()}


# -- schemathesis: every operation of the OpenAPI schema, generated inputs -------------------
# Last in this module: fuzzed writes (mostly refused) must not disturb the tests above.
# Hypothesis driven directly (operation.as_strategy), not schemathesis' pytest plugin, which
# does not load under pytest 9.
FUZZ_EXAMPLES = int(os.environ.get("SHOPLENS_FUZZ_EXAMPLES", "100"))  # per operation and mode


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


def _fuzz(operation, mode, cases: dict[str, int]) -> None:
    """Up to FUZZ_EXAMPLES generated requests to one operation; Hypothesis shrinks a failure."""
    label = f"{operation.label} ({mode.value})"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def fuzz(case) -> None:
        cases[label] = cases.get(label, 0) + 1
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    try:
        fuzz()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
        assert mode == schemathesis.GenerationMode.NEGATIVE, label


def test_generated_requests_never_get_a_5xx_and_match_the_schema(setup):
    """Schema-valid and schema-invalid inputs to every operation: never a 5xx; status, content
    type and body are the ones the schema declares for that status."""
    _, cfg, model = setup
    app = create_app(cfg, model)
    app.state.searcher = Searcher(cfg, model)  # from_asgi calls the app without its lifespan
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    cases: dict[str, int] = {}
    for result in schema.get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _fuzz(result.ok(), mode, cases)
    app.state.searcher.close()
    assert len({label.rsplit(" (", 1)[0] for label in cases}) >= 7, cases
    print(f"schemathesis: {sum(cases.values())} cases, 0 failures: {cases}")
