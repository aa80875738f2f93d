"""``shoplens monitor``: have shoppers' searches drifted from what the served model was measured on?

Reads the query log the service keeps (``search.query_log.enabled=true``), takes the last
``monitor.window_hours`` of searches answered by the model that built the served index (the
vectors of another version are not comparable and are only counted), and compares them
(:mod:`shoplens.monitoring`) with

* ``benchmark``: the served model's shopper-photo benchmark photos, as query embeddings (the
  no-match calibration the registered version carries), searched in the served index like a
  shopper's photo: what this model was measured on;
* ``previous``: the window before the current one, when it holds ``min_queries`` searches.

Not with the catalog's own photos: a shopper photo is not a catalog shot, so that comparison
flags drift on every window (benchmarks/drift.py measures it).

Writes ``<reports>/monitor.json`` (DVC metrics: each comparison's tests and ``drifted``),
Evidently's HTML report per reference and a plot under ``<reports>/monitor/``. With
``monitor.dispatch.enabled`` a flagged drift asks GitHub to run the retrain workflow.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from shoplens.catalog_store.query_log import QUERY_LOG_FILE, QueryLog
from shoplens.evaluation.no_match import Calibration
from shoplens.monitoring import DriftSettings, Window, compare
from shoplens.monitoring.dispatch import DispatchError, dispatch_retrain
from shoplens.monitoring.plots import save_drift_plot
from shoplens.registry.champion import load_version
from shoplens.search import CatalogIndex
from shoplens.tracking import configure_mlflow

log = logging.getLogger(__name__)
REFERENCES = ("benchmark", "previous")


def logged_window(query_log: QueryLog, since: float, until: float, model: str, label: str):
    """The searches in ``[since, until)`` answered by ``model``, and how many were not."""
    embeddings, table = query_log.window(since, until)
    mine = (table["model"] == model).to_numpy(bool)
    table = table[mine].reset_index(drop=True)
    table["match"] = table["match"].map(lambda m: None if pd.isna(m) else bool(m)).astype(object)
    return Window(embeddings[mine] if mine.any() else embeddings[:0], table, label), int(
        (~mine).sum()
    )


def benchmark_window(catalog: CatalogIndex, calibration: Calibration) -> Window:
    """The benchmark's in-catalog photos searched in the served index, as the service would
    (by cosine: the calibration keeps no head logits, so with ``query.category_prior`` the
    service's first result's category can differ a little; ``top_score`` is the closest
    similarity in both)."""
    queries = calibration.in_catalog
    best = [hits[0] if hits else None for hits in catalog.search(queries, 1)]
    threshold = catalog.meta.get("match_threshold")
    scores = [h.score if h else None for h in best]
    table = pd.DataFrame(
        {
            "category": [h.category if h else None for h in best],
            "top_score": scores,
            "match": [
                None if threshold is None or s is None else bool(s >= float(threshold))
                for s in scores
            ],
        }
    )
    return Window(queries, table, "shopper-photo benchmark")


def _calibration(cfg: DictConfig, name: str, version: str) -> Calibration | None:
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    model = load_version(name, version, runtime=str(cfg.query.runtime))
    if model.calibration_path is None:
        log.warning("%s v%s carries no calibration photos: no benchmark reference", name, version)
        return None
    return Calibration.load(model.calibration_path)


def _settings(cfg: DictConfig) -> DriftSettings:
    return DriftSettings(**OmegaConf.to_container(cfg.monitor.drift, resolve=True))


def run(cfg: DictConfig, now: float | None = None) -> dict[str, Any]:
    references = [str(r) for r in cfg.monitor.references]
    if unknown := sorted(set(references) - set(REFERENCES)):
        raise ValueError(f"monitor.references: unknown {unknown}; choose from {REFERENCES}")
    settings, min_queries = _settings(cfg), int(cfg.monitor.min_queries)
    reports = Path(cfg.paths.reports_dir)
    out_dir = reports / "monitor"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.html"):
        stale.unlink()
    catalog = CatalogIndex.load(cfg.search.dir)
    model = f"{catalog.meta['model_name']}:{catalog.meta['model_version']}"
    window_s = float(cfg.monitor.window_hours) * 3600
    now = time.time() if now is None else now
    result: dict[str, Any] = {"model": model, "window_hours": float(cfg.monitor.window_hours),
                              "drifted": False, "comparisons": {}}  # fmt: skip
    path = Path(cfg.search.state_dir) / QUERY_LOG_FILE
    if not path.is_file():
        result["status"] = f"no query log at {path}: serve with search.query_log.enabled=true"
        return _finish(cfg, result, reports)
    query_log = QueryLog(path, keep_days=float(cfg.search.query_log.keep_days))
    try:
        current, others = logged_window(query_log, now - window_s, now, model, "last window")
        previous, _ = logged_window(
            query_log, now - 2 * window_s, now - window_s, model, "previous window"
        )
    finally:
        query_log.close()
    result.update(queries=len(current), other_model_queries=others)
    if len(current) < min_queries:
        result["status"] = (
            f"{len(current)} searches by {model} in the last {cfg.monitor.window_hours} h, "
            f"fewer than monitor.min_queries={min_queries}: no verdict"
        )
        return _finish(cfg, result, reports)
    windows = {}
    if "benchmark" in references:
        calibration = _calibration(cfg, *model.split(":", 1))
        if calibration is not None:
            windows["benchmark"] = benchmark_window(catalog, calibration)
    if "previous" in references:
        if len(previous) >= min_queries:
            windows["previous"] = previous
        else:
            log.info("previous window: %d searches, fewer than %d: skipped", len(previous),
                     min_queries)  # fmt: skip
    for name, reference in windows.items():
        found = compare(current, reference, settings, html=out_dir / f"{name}.html")
        result["comparisons"][name] = found
        log.info("drift against the %s: %s", reference.label, found["drifted"])
    result["drifted"] = any(c["drifted"] for c in result["comparisons"].values())
    result["status"] = "drift" if result["drifted"] else (
        "no drift" if windows else "no reference to compare with"
    )  # fmt: skip
    if windows:
        save_drift_plot(current, windows, out_dir / "drift.png")
    return _finish(cfg, result, reports)


def _finish(cfg: DictConfig, result: dict, reports: Path) -> dict:
    """Write the verdict first, then ask for a retrain: a failed request loses no report."""
    path = reports / "monitor.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("monitor: %s", result["status"])
    dispatch = cfg.monitor.dispatch
    if result["drifted"] and dispatch.enabled:
        try:
            result["dispatched"] = dispatch_retrain(
                result, dispatch.github_repository, str(dispatch.event_type), str(dispatch.api_url)
            )
        except DispatchError as err:
            result["dispatch_error"] = str(err)
            raise
        finally:
            path.write_text(json.dumps(result, indent=2) + "\n")
    return result
