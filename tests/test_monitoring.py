"""``shoplens monitor``: drift of logged searches (shoplens.monitoring, pipeline/monitor.py).

Synthetic query embeddings with a known distribution go through the real query log and the
real stage; benchmarks/drift.py measures the same code on photos answered by a real model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest

from shoplens.catalog_store.query_log import QUERY_LOG_FILE, QueryLog, QueryRecord
from shoplens.config import compose_config
from shoplens.evaluation.no_match import Calibration
from shoplens.monitoring import DriftSettings, Window, compare
from shoplens.monitoring.dispatch import DispatchError, dispatch_retrain, payload
from shoplens.pipeline import monitor
from shoplens.search import CatalogIndex, IndexConfig

DIM, CATEGORIES = 16, ("bag", "shirt", "shoe", "coat")
CENTRES = np.random.default_rng(7).normal(size=(len(CATEGORIES), DIM))


def _searches(rng, n, shift=0.0, categories=CATEGORIES, no_match=0.1):
    """Shoppers' query vectors around per-category centres; ``shift`` moves every vector."""
    picks = rng.integers(len(categories), size=n)
    index = [CATEGORIES.index(categories[p]) for p in picks]
    vectors = CENTRES[index] + rng.normal(0, 0.6, (n, DIM))
    vectors[:, : DIM // 2] += shift
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pd.DataFrame({
        "category": [categories[p] for p in picks],
        "top_score": rng.normal(0.9, 0.03, n),
        "match": rng.random(n) >= no_match,
    })  # fmt: skip
    return vectors.astype(np.float32), table


def _window(rng, n, label="w", **kwargs) -> Window:
    return Window(*_searches(rng, n, **kwargs), label)


def test_an_unshifted_window_is_not_flagged_and_each_kind_of_shift_is(tmp_path):
    rng = np.random.default_rng(0)
    reference, settings = _window(rng, 400, "reference"), DriftSettings()
    calm = compare(_window(rng, 200, "calm"), reference, settings, html=tmp_path / "r.html")
    assert not calm["drifted"], calm
    assert (tmp_path / "r.html").stat().st_size > 10_000  # Evidently's report, rendered
    moved = compare(_window(rng, 200, shift=0.5), reference, settings)
    assert moved["drifted"] and moved["embeddings"]["drifted"]
    fewer = compare(_window(rng, 200, categories=("bag", "bag", "bag", "coat")), reference,
                    settings)  # fmt: skip
    assert fewer["category_mix"]["drifted"] and fewer["category_mix"]["p_value"] < 0.01
    unmatched = compare(_window(rng, 200, no_match=0.5), reference, settings)
    assert unmatched["no_match_share"]["drifted"]
    assert unmatched["no_match_share"]["current"] > 0.35 > unmatched["no_match_share"]["reference"]


@pytest.mark.parametrize("method", ["mmd", "model", "distance"])
def test_every_embedding_method_separates_a_large_shift(method):
    rng = np.random.default_rng(1)
    threshold = {"mmd": 0.015, "model": 0.55, "distance": 0.2}[method]
    settings = DriftSettings(method=method, embedding_threshold=threshold)
    reference = _window(rng, 300)
    assert compare(_window(rng, 200, shift=1.0), reference, settings)["embeddings"]["drifted"]


def test_bad_settings_and_incomparable_windows_are_refused():
    with pytest.raises(ValueError, match="drift method"):
        DriftSettings(method="psi")
    with pytest.raises(ValueError, match="alpha"):
        DriftSettings(alpha=1.5)
    rng = np.random.default_rng(2)
    other = Window(np.zeros((50, 8), np.float32), _searches(rng, 50)[1], "other model")
    with pytest.raises(ValueError, match="different models"):
        compare(_window(rng, 50), other, DriftSettings())


def _config(tmp_path, *extra):
    return compose_config([
        f"paths.artifacts_dir={tmp_path / 'artifacts'}", f"paths.reports_dir={tmp_path / 'reports'}",
        f"paths.state_dir={tmp_path / 'var'}", "monitor.references=[previous]",
        "monitor.min_queries=50", *extra,
    ])  # fmt: skip


def _served_index(cfg, version="3") -> CatalogIndex:
    rng = np.random.default_rng(3)
    vectors, table = _searches(rng, 80)
    catalog = CatalogIndex.create(IndexConfig(kind="exact"), DIM, "embedder", version, {})
    rows = pd.DataFrame({"product_id": [f"p{i}" for i in range(80)], "category": table["category"],
                         "path": [f"p{i}.png" for i in range(80)]})  # fmt: skip
    catalog.add_products(rows, vectors)
    catalog.meta["match_threshold"] = 0.8
    catalog.save(cfg.search.dir)
    return catalog


def _log(cfg, rng, start, n, model="embedder:3", **kwargs):
    log = QueryLog(f"{cfg.search.state_dir}/{QUERY_LOG_FILE}", keep_days=30)
    vectors, table = _searches(rng, n, **kwargs)
    for i, (v, row) in enumerate(zip(vectors, table.itertuples(), strict=True)):
        log.record(QueryRecord(v, model, row.category, row.top_score, True, bool(row.match)),
                   at=start + i)  # fmt: skip
    log.close()


@pytest.mark.parametrize("shift", [0.0, 0.6])
def test_the_stage_flags_a_shifted_day_against_the_day_before_only(tmp_path, shift):
    cfg = _config(tmp_path, "monitor.window_hours=1")
    _served_index(cfg)
    rng, now = np.random.default_rng(4), 1_000_000.0
    _log(cfg, rng, now - 7000, 150)  # the previous hour
    _log(cfg, rng, now - 3000, 150, shift=shift)  # the last hour
    _log(cfg, rng, now - 2000, 30, model="embedder:2")  # another version's: not comparable
    result = monitor.run(cfg, now=now)
    assert result["queries"] == 150 and result["other_model_queries"] == 30
    assert result["drifted"] is (shift > 0)
    assert result["comparisons"]["previous"]["embeddings"]["drifted"] is (shift > 0)
    written = json.loads((tmp_path / "reports" / "monitor.json").read_text())
    assert written["drifted"] is result["drifted"] and written["status"] == result["status"]
    assert (tmp_path / "reports" / "monitor" / "previous.html").is_file()
    assert (tmp_path / "reports" / "monitor" / "drift.png").is_file()


def test_the_stage_gives_no_verdict_without_a_log_or_with_too_few_searches(tmp_path):
    cfg = _config(tmp_path)
    _served_index(cfg)
    result = monitor.run(cfg)
    assert not result["drifted"] and "no query log" in result["status"]
    _log(cfg, np.random.default_rng(5), 1_000_000.0, 20, shift=2.0)
    result = monitor.run(cfg, now=1_000_100.0)
    assert not result["drifted"] and "fewer than monitor.min_queries=50" in result["status"]


def test_the_benchmark_reference_is_the_calibration_photos_searched_in_the_served_index(tmp_path):
    cfg = _config(tmp_path)
    catalog = _served_index(cfg)
    rng = np.random.default_rng(6)
    inside = _searches(rng, 40)[0]
    calibration = Calibration(inside, inside[:5], np.array(["face"] * 5), 0.9, 0)
    window = monitor.benchmark_window(catalog, calibration)
    hits = [h[0] for h in catalog.search(inside, 1)]
    assert list(window.table["category"]) == [h.category for h in hits]
    assert list(window.table["match"]) == [h.score >= 0.8 for h in hits]
    np.testing.assert_array_equal(window.embeddings, inside)


class _GitHub(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _GitHub.seen.append((self.path, self.headers["Authorization"], body))
        self.send_response(204 if self.path.startswith("/repos/shop/") else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_flagged_drift_asks_github_for_a_retrain_with_what_drifted(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _GitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}"
    result = {"model": "embedder:3", "queries": 150, "window_hours": 24.0, "comparisons": {
        "previous": {"drifted": True, "embeddings": {"drifted": True},
                     "category_mix": {"drifted": False}},
        "benchmark": {"drifted": False, "embeddings": {"drifted": False}}}}  # fmt: skip
    assert payload(result, "drift-detected")["client_payload"]["drifted"] == {
        "previous": ["embeddings"]
    }
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(DispatchError, match="GITHUB_TOKEN"):
        dispatch_retrain(result, "shop/lens", "drift-detected", api)
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    try:
        assert dispatch_retrain(result, "shop/lens", "drift-detected", api) == "shop/lens"
        path, auth, body = _GitHub.seen[-1]
        assert path == "/repos/shop/lens/dispatches" and auth == "Bearer t0ken"
        assert body["event_type"] == "drift-detected" and body["client_payload"]["queries"] == 150
        with pytest.raises(DispatchError, match="HTTP 404"):
            dispatch_retrain(result, "other/repo", "drift-detected", api)
    finally:
        server.shutdown()


def test_a_failed_retrain_request_still_leaves_the_report(tmp_path, monkeypatch):
    cfg = _config(tmp_path, "monitor.window_hours=1", "monitor.dispatch.enabled=true",
                  "monitor.dispatch.github_repository=shop/lens")  # fmt: skip
    _served_index(cfg)
    rng, now = np.random.default_rng(8), 1_000_000.0
    _log(cfg, rng, now - 7000, 120)
    _log(cfg, rng, now - 3000, 120, shift=0.8)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(DispatchError):
        monitor.run(cfg, now=now)
    written = json.loads((tmp_path / "reports" / "monitor.json").read_text())
    assert written["drifted"] and "GITHUB_TOKEN" in written["dispatch_error"]


def test_searches_without_a_top_score_are_left_out_of_the_score_test():
    rng = np.random.default_rng(9)
    reference, calm, worse = _window(rng, 200), _window(rng, 200), _window(rng, 200)
    worse.table["top_score"] -= 0.05  # the catalog matching worse
    for window in (calm, worse):
        window.table.loc[:40, "top_score"] = None  # answered by an empty index
    assert not compare(calm, reference, DriftSettings())["top_score"]["drifted"]
    assert compare(worse, reference, DriftSettings())["top_score"]["drifted"]
