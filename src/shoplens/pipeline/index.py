"""The ``index`` stage: every catalog image, embedded by the registered champion, searchable.

Embeds from the preprocess cache (the same letterboxed uint8 pixels training saw) rather than
re-decoding files, and records the model name, version and preprocessing in the index meta so
that search refuses a mismatched model. For approximate kinds (hnsw, ivf, ivfpq) it measures
what the approximation costs on this catalog, not on the benchmark's synthetic one: a random
``search.recall_queries`` embeddings are held out, the index is built from the rest and
compared with exact search on them, then the held-out photos are added (no second build).
``images.parquet`` maps index ids to cache rows so the service can show catalog photos.

The "no confident match" threshold is chosen here, against the gallery the service searches
(a cosine threshold depends on it: :mod:`shoplens.evaluation.no_match`), from the calibration
photos the registered model carries; it goes into the index meta, its rates into index.json.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CACHE_INDEX, CATEGORY, PATH, PRODUCT_ID, read_manifest
from shoplens.evaluation.no_match import Calibration, calibrate
from shoplens.registry.champion import LoadedModel, load_champion
from shoplens.search import CatalogIndex, IndexConfig, create_index, recall_against_exact
from shoplens.tracking import configure_mlflow

log = logging.getLogger(__name__)
IMAGE_MAP = "images.parquet"  # id -> cache_index of the catalog photos


def index_config(cfg: DictConfig) -> IndexConfig:
    return IndexConfig(**OmegaConf.to_container(cfg.search.index, resolve=True))


def embed_cache(model: LoadedModel, cache: np.ndarray, rows: np.ndarray, batch: int) -> np.ndarray:
    parts = [np.zeros((0, model.embedding_dim), np.float32)]
    for start in tqdm(range(0, len(rows), batch), desc="embedding catalog", unit="batch"):
        parts.append(model.embed(np.asarray(cache[rows[start : start + batch]])))
    return np.concatenate(parts)


def _no_match(model: LoadedModel, catalog: CatalogIndex) -> dict[str, float]:
    """The threshold and its rates on this index, or nothing for a model without calibration
    photos (registered before them): its answers are then never marked."""
    if model.calibration_path is None:
        log.warning("%s v%s has no no-match calibration: results are never marked",
                    model.name, model.version)  # fmt: skip
        return {}

    def top_score(queries: np.ndarray) -> np.ndarray:
        return catalog.index.search(queries, 1)[0][:, 0]

    return calibrate(Calibration.load(model.calibration_path), top_score, "the served index")


def run(cfg: DictConfig) -> dict[str, Any]:
    stage_started = time.perf_counter()
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    model = load_champion(str(cfg.registry.model_name), runtime=str(cfg.query.runtime))
    catalog_dir, out = Path(cfg.paths.catalog_dir), Path(cfg.search.dir)
    manifest = read_manifest(catalog_dir).sort_values(CACHE_INDEX, ignore_index=True)
    cache = open_cache(catalog_dir / CACHE_FILE)
    rows = manifest[CACHE_INDEX].to_numpy(np.int64)
    engine = cfg.search.embed
    started = time.perf_counter()
    if engine.engine == "ray":
        from shoplens.pipeline.index_ray import embed_with_ray

        vectors = embed_with_ray(model, catalog_dir / CACHE_FILE, rows,
                                 int(cfg.search.batch_size), engine.ray_address,
                                 int(engine.workers))  # fmt: skip
    else:
        vectors = embed_cache(model, cache, rows, int(cfg.search.batch_size))
    embed_s = time.perf_counter() - started

    config = index_config(cfg).for_size(len(rows))
    catalog = CatalogIndex.create(
        config, model.embedding_dim, model.name, model.version, model.preprocessing()
    )
    rng = np.random.default_rng(int(cfg.seed))
    n_held = min(int(cfg.search.recall_queries), len(rows) // 10) if config.kind != "exact" else 0
    held = np.zeros(len(rows), bool)
    held[rng.choice(len(rows), n_held, replace=False)] = True
    rest, hold = np.flatnonzero(~held), np.flatnonzero(held)
    table = manifest[[PRODUCT_ID, CATEGORY, PATH]].astype(str)
    ids = catalog.add_products(table.iloc[rest], vectors[rest])
    metrics: dict[str, float] = {}
    if n_held:
        exact = create_index(IndexConfig(kind="exact"), model.embedding_dim)
        exact.add(ids, vectors[rest])
        metrics = recall_against_exact(
            catalog.index, exact, vectors[hold], int(cfg.search.recall_k)
        )
        ids = np.concatenate([ids, catalog.add_products(table.iloc[hold], vectors[hold])])

    no_match = _no_match(model, catalog)
    if no_match:
        catalog.meta["match_threshold"] = no_match["match_threshold"]
    out.mkdir(parents=True, exist_ok=True)
    catalog.save(out)
    pd.DataFrame({"id": ids, CACHE_INDEX: rows[np.concatenate([rest, hold])]}).to_parquet(
        out / IMAGE_MAP, index=False
    )
    result = {
        "model_name": model.name,
        "model_version": model.version,
        "index_kind": config.kind,
        "images": len(catalog),
        "products": catalog.n_products,
        "recall_queries": int(n_held),
        **metrics,
        **{f"no_match/{k}": v for k, v in no_match.items()},
        "embed_engine": str(engine.engine),
        "runtime": model.runtime,
        "embed_img_per_s": round(len(rows) / embed_s, 1),
        "seconds": round(time.perf_counter() - stage_started, 1),
    }
    reports = Path(cfg.paths.reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "index.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("indexed %d photos of %d products in %s", len(catalog), catalog.n_products, out)
    return result
