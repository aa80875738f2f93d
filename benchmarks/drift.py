"""How well ``shoplens monitor`` tells a shift from no shift: detection and false-alarm rates on
simulated windows of shopper searches, for each of Evidently's embedding drift methods.

    python benchmarks/drift.py [--window 200] [--windows 20] [--pool 600]

Photos are made by the benchmark's own generator (test-split products, new seeds) and answered
by the served champion and index through the service's code (``Searcher.answer``: localize,
crop, embed, search), then windows are drawn from them:

* ``none``: shopper photos like the benchmark's (evaluation backgrounds): the false-alarm rate;
* ``new_backgrounds``: the same products on photographs the reference never had (the training
  pool: real photos, but not the evaluation ones);
* ``low_light``: ``none``'s photos underexposed (x0.25, gamma 1.5) with sensor noise;
* ``new_category``: things the catalog does not sell held up like products (LFW faces,
  handwritten-digit shapes: the out-of-catalog generator, new seed).

A shifted window mixes ``share`` of shifted photos into unshifted ones. Each window is compared
with the monitor's two references: the served model's benchmark calibration photos, and a
previous window of unshifted searches (disjoint photos); and, for the record, the embeddings
alone against catalog photos (the reference the monitor does not use: it flags everything).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from shoplens.config import load_config
from shoplens.data.backgrounds import EVAL, TRAIN, read_pool
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CUTOUT, MASKS_FILE, SPLIT, read_manifest
from shoplens.evaluation.no_match import Calibration
from shoplens.evaluation.out_of_catalog import make_out_of_catalog, read_out_of_catalog_photo
from shoplens.evaluation.shopper_photos import make_benchmark, read_photo
from shoplens.monitoring import EMBEDDING_METHODS, DriftSettings, Window, compare
from shoplens.pipeline.monitor import benchmark_window
from shoplens.pipeline.shopper_photos import settings as photo_settings
from shoplens.serving.searcher import Searcher

THRESHOLDS = {"ratio": 0.2, "mmd": 0.015, "model": 0.55, "distance": 0.2}  # Evidently's defaults
SHARES = (0.25, 0.5, 1.0)
OTHER_TESTS = ("category_mix", "top_score", "no_match_share")


def underexpose(jpeg: bytes, rng: np.random.Generator) -> bytes:
    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32) / 255
    img = (img**1.5) * 0.25 + rng.normal(0, 6 / 255, img.shape)
    out = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(out, "JPEG", quality=80)
    return out.getvalue()


def photo_pools(cfg, n: int, tmp: Path) -> dict[str, tuple[list[bytes], list[str] | None]]:
    """Photos per condition, with the photographed products' categories where there are."""
    catalog_dir = Path(cfg.paths.catalog_dir)
    manifest = read_manifest(catalog_dir)
    products = manifest[(manifest[SPLIT] == "test") & (manifest[CUTOUT] == "")]
    images, masks = open_cache(catalog_dir / CACHE_FILE), np.load(catalog_dir / MASKS_FILE)
    base = photo_settings(cfg)
    pools = {}
    for name, split, seed in (("none", EVAL, 9101), ("new_backgrounds", TRAIN, 9102)):
        out = tmp / name
        pool = read_pool(cfg.paths.backgrounds_dir, split)
        table = make_benchmark(
            products, images, masks, pool, out, replace(base, photos=n, seed=seed)
        )
        pools[name] = [read_photo(out, p) for p in table["photo"]], list(table["category"])
    rng = np.random.default_rng(9103)
    pools["low_light"] = [underexpose(p, rng) for p in pools["none"][0]], pools["none"][1]
    out = tmp / "foreign"
    foreign = make_out_of_catalog(
        read_pool(cfg.paths.backgrounds_dir, EVAL), out, replace(base, seed=9104), n * 3 // 2
    )
    things = foreign[foreign["kind"] != "scene"]["photo"]
    pools["new_category"] = [read_out_of_catalog_photo(out, p) for p in things], None
    return pools


def answered(searcher: Searcher, photos: list[bytes], label: str) -> Window:
    vectors, rows = [], []
    for photo in tqdm(photos, desc=label, unit="photo"):
        answer = searcher.answer(photo, 1)
        top = answer.searched.hits[0] if answer.searched.hits else None
        vectors.append(answer.embedding)
        rows.append({"category": top.category if top else None,
                     "top_score": top.score if top else None, "match": answer.match})  # fmt: skip
    return Window(np.stack(vectors), pd.DataFrame(rows), label)


def take(window: Window, idx: np.ndarray, label: str) -> Window:
    return Window(window.embeddings[idx], window.table.iloc[idx].reset_index(drop=True), label)


def join(a: Window, b: Window, label: str) -> Window:
    return Window(np.concatenate([a.embeddings, b.embeddings]),
                  pd.concat([a.table, b.table], ignore_index=True), label)  # fmt: skip


def catalog_window(cfg, searcher: Searcher, n: int = 1000) -> Window:
    """Catalog shots of test products, embedded as the index embeds them (for the record)."""
    manifest = read_manifest(Path(cfg.paths.catalog_dir))
    rows = np.sort(manifest[manifest[SPLIT] == "test"]["cache_index"].to_numpy()[:n])
    cache = open_cache(Path(cfg.paths.catalog_dir) / CACHE_FILE)
    vectors = searcher.pipeline.embed_squares(np.asarray(cache[rows])).embeddings
    table = pd.DataFrame({"category": "-", "top_score": 1.0, "match": [True] * len(rows)})
    return Window(vectors, table, "catalog shots")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=int, default=200, help="searches per window")
    parser.add_argument("--windows", type=int, default=50, help="windows per condition")
    parser.add_argument("--pool", type=int, default=600, help="photos made per condition")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/drift.json"))
    args = parser.parse_args()
    cfg = load_config()
    started = time.perf_counter()
    searcher = Searcher(cfg)
    pools, accuracy = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (photos, categories) in photo_pools(cfg, args.pool, Path(tmp)).items():
            pools[name] = answered(searcher, photos, name)
            if categories is not None:  # does the shift hurt search? category@1 on the pool
                found = pools[name].table["category"].to_numpy(str)
                accuracy[name] = float(np.mean(found == np.asarray(categories, str)))
    benchmark = benchmark_window(searcher.index, Calibration.load(searcher.model.calibration_path))
    catalog = catalog_window(cfg, searcher)
    rng, unshifted, rows = np.random.default_rng(0), pools["none"], []
    conditions = [("none", 0.0)] + [(s, share) for s in pools if s != "none" for share in SHARES]
    for shift, share in tqdm(conditions, desc="conditions"):
        flags: dict[tuple[str, str, str], list[bool]] = {}
        for _ in range(args.windows):
            # A previous window and the current window's unshifted searches: disjoint photos.
            order = rng.permutation(len(unshifted))
            n_shift = int(round(share * args.window))
            previous = take(unshifted, order[: args.window], "previous")
            window = take(unshifted, order[args.window : 2 * args.window - n_shift], "current")
            if n_shift:
                pool = pools[shift]
                window = join(window, take(pool, rng.choice(len(pool), n_shift, replace=False),
                                           shift), "current")  # fmt: skip
            for ref_name, ref in (("benchmark", benchmark), ("previous", previous)):
                found = compare(window, ref, DriftSettings())  # ratio + the three other tests
                others = any(found[t]["drifted"] for t in OTHER_TESTS)
                for test in ("embeddings", *OTHER_TESTS):
                    flags.setdefault(("ratio", ref_name, test), []).append(found[test]["drifted"])
                flags.setdefault(("ratio", ref_name, "any"), []).append(found["drifted"])
                for method in EMBEDDING_METHODS[1:]:  # the others: their embedding test only
                    settings = DriftSettings(method=method, embedding_threshold=THRESHOLDS[method])
                    score, _, _ = settings.drift_method()(
                        pd.DataFrame(window.embeddings), pd.DataFrame(ref.embeddings)
                    )
                    drifted = bool(score > settings.embedding_threshold)
                    flags.setdefault((method, ref_name, "embeddings"), []).append(drifted)
                    flags.setdefault((method, ref_name, "any"), []).append(drifted or others)
            on_catalog = compare(window, catalog, DriftSettings())["embeddings"]["drifted"]
            flags.setdefault(("ratio", "catalog shots", "embeddings"), []).append(on_catalog)
        for (method, ref_name, test), values in flags.items():
            rows.append({"shift": shift, "share": share, "method": method, "reference": ref_name,
                         "test": test, "flag_rate": float(np.mean(values))})  # fmt: skip
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"window": args.window, "windows": args.windows, "pool": args.pool,
              "category_at_1": accuracy, "seconds": time.perf_counter() - started,
              "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2))
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(f"category@1 of each pool (does the shift hurt search?): {accuracy}")
    for test in ("any", "embeddings"):
        view = table[table["test"] == test].pivot_table(
            index=["shift", "share"], columns=["reference", "method"], values="flag_rate"
        )
        print(f"\nflag rate ({test}), window {args.window}, {args.windows} windows per row\n{view}")
    view = table[(table["method"] == "ratio") & (table["reference"] != "catalog shots")]
    view = view[~view["test"].isin(["any"])].pivot_table(
        index=["shift", "share"], columns=["reference", "test"], values="flag_rate"
    )
    print(f"\nflag rate of each test (ratio method)\n{view}")


if __name__ == "__main__":
    main()
