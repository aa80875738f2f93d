"""Query-pipeline knobs side by side: the champion's networks, the same photos, one process.

    python benchmarks/query_variants.py crop_margin=0.05 localizer.tile_zoom=1.75 ...

Why: the query spec's inference knobs (crop margin, mask threshold, tiles, closer looks) change
no weights, so they can be measured without training: each variant is the champion's pipeline
with one ``key=value`` changed (``localizer.<field>`` for the localizer's), answered on the
shopper-photo and small-photo benchmarks against the test split (evaluate's scoring, reused),
beside the champion as registered. Differences here are the knob's, not a training run's.
Knobs chosen this way are chosen on the benchmark: README, "Small photos", says what that
costs. Writes ``reports/benchmarks/query_variants.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd

from shoplens.config import load_config
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CACHE_INDEX, LABEL, SPLIT, read_manifest
from shoplens.evaluation.photo_benchmark import Variant, answer, prior_of, search_metrics
from shoplens.evaluation.shopper_photos import read_benchmark
from shoplens.evaluation.small_photos import SMALL_DIR
from shoplens.evaluation.small_photos import TABLE_FILE as SMALL_TABLE
from shoplens.pipeline.index import embed_cache
from shoplens.query import QueryPipeline
from shoplens.registry.champion import load_champion
from shoplens.tracking import configure_mlflow


def with_knob(pipeline: QueryPipeline, assignment: str) -> QueryPipeline:
    """The pipeline with one spec field changed: ``crop_margin=0.05``, ``localizer.threshold=0.6``."""
    key, _, text = assignment.partition("=")
    value = json.loads(text)  # numbers, true/false, null
    spec = pipeline.spec
    if key.startswith("localizer."):
        if spec.localizer is None:
            raise SystemExit("the champion has no localizer")
        # LocalizerSpec refuses a field it does not have.
        localizer = {**dataclasses.asdict(spec.localizer), key.removeprefix("localizer."): value}
        return pipeline.with_spec(spec.with_options(localizer=localizer))
    if key not in {f.name for f in dataclasses.fields(spec)}:  # from_dict would ignore it
        raise SystemExit(f"unknown query spec field {key!r}")
    return pipeline.with_spec(spec.with_options(**{key: value}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("knobs", nargs="+", help="key=value, one variant each")
    parser.add_argument("--model", default="shoplens-embedder")
    args = parser.parse_args()
    cfg = load_config()
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    loaded = load_champion(args.model)
    champion = loaded.pipeline
    variants = {"champion": champion} | {k: with_knob(champion, k) for k in args.knobs}

    catalog_dir, photo_dir = Path(cfg.paths.catalog_dir), Path(cfg.paths.shopper_photos_dir)
    test = read_manifest(catalog_dir).query(f"{SPLIT} == 'test'").reset_index(drop=True)
    cache = open_cache(catalog_dir / CACHE_FILE)
    # Every variant shares the embedder: the test gallery is embedded once, as the index does.
    gallery = embed_cache(loaded, cache, test[CACHE_INDEX].to_numpy(), batch=256)
    categories, products = test["category"].tolist(), test["product_id"].astype(str).tolist()
    labels = test[LABEL].to_numpy()  # ranked as search ranks: with the spec's category prior
    small = pd.read_parquet(photo_dir / SMALL_DIR / SMALL_TABLE).assign(bucket=lambda t: t.kind)
    sets = {
        "shopper": (read_benchmark(photo_dir), photo_dir),
        "small": (small, photo_dir / SMALL_DIR),
    }

    results = {}
    for name, pipeline in variants.items():
        results[name] = {}
        for set_name, (table, directory) in sets.items():
            start = time.perf_counter()
            found = answer(Variant(name, pipeline, "localize"), table, directory)
            ms = 1000 * (time.perf_counter() - start) / len(table)
            closer = found.closer_of_whole_and_crop(gallery)
            metrics = search_metrics(closer.embeddings, gallery, table, categories, products,
                                     prior_of(pipeline, labels), closer.logits)  # fmt: skip
            results[name][set_name] = {**metrics, "ms_per_photo": round(ms, 1)}
        shop, small_all = results[name]["shopper"], results[name]["small"]["all"]
        buckets = " ".join(
            f"{b} {m['category@1']:.3f}"
            for b, m in shop.items()
            if isinstance(m, dict) and b != "all"
        )
        print(
            f"{name}: shopper category@1 {shop['all']['category@1']:.3f} product@1 "
            f"{shop['all']['product@1']:.3f} ({buckets}); small photos category@1 "
            f"{small_all['category@1']:.3f}; {shop['ms_per_photo']} ms a shopper photo",
            flush=True,
        )
    out = Path(cfg.paths.reports_dir) / "benchmarks" / "query_variants.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
