"""Small photos: how search does when the product has fewer pixels than its catalog photo.

    python benchmarks/small_photos.py [--photos 600] [--sr-epochs 3] [--compare-model NAME]

The ruler of the super-resolution work (README, "Small photos"): test-split products at
40-70% of their catalog resolution, as thumbnails and as small products in zoomed-out photos,
on evaluation backgrounds (:mod:`shoplens.evaluation.small_photos`). Every variant answers the
same photos through :class:`~shoplens.query.QueryPipeline` and searches the test split's
catalog shots embedded by its own pipeline (evaluate's shopper-photo scoring, reused), side by
side in one run:

* ``champion``: the registered champion as it serves (localize -> crop -> Lanczos letterbox
  up to the embedder's side -> embed); its embedder trains on products pasted 14-96 px long;
* ``champion_whole_frame``: the same without localization;
* ``champion`` as registered carries the ``train_super_resolution`` stage's network when it
  passed its gate (``query.super_resolve``): then ``champion`` is with super-resolution and
  ``champion-no-sr`` without; ``<model>+sr`` puts the same network in front of another model
  (crops under the spec's ``upscale.below`` super-resolved once, :mod:`shoplens.query.upscale`).
  A champion without one gets a network trained here instead (``--sr-epochs``; 0: none);
* ``--compare-model NAME``: the champion of another registered model, e.g. one trained without
  small products (README, "Small photos", registers one as ``shoplens-embedder-no-lowres``):
  plain upscaling in front of an embedder that never saw low resolution.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from shoplens.config import load_config
from shoplens.data.backgrounds import EVAL, read_pool
from shoplens.data.cache import open_cache
from shoplens.data.catalog import (
    CACHE_FILE,
    CACHE_INDEX,
    CATEGORY,
    CUTOUT,
    LABEL,
    MASKS_FILE,
    PATH,
    PRODUCT_ID,
    SPLIT,
    read_manifest,
)
from shoplens.evaluation.photo_benchmark import Variant, answer, prior_of, search_metrics
from shoplens.evaluation.small_photos import SmallPhotoSettings, make_small_photos
from shoplens.query import QueryPipeline, UpscaleSpec
from shoplens.registry.champion import LoadedModel, load_champion, load_version
from shoplens.tracking import configure_mlflow
from shoplens.training.super_resolution import SuperResolutionModule, catalog_photos


def small_photos(cfg, test: pd.DataFrame, n: int, out: Path) -> pd.DataFrame:
    catalog_dir = Path(cfg.paths.catalog_dir)
    products = test[test[CUTOUT] == ""].reset_index(drop=True)
    native = np.array([max(Image.open(p).size) for p in products[PATH]])
    return make_small_photos(
        products, open_cache(catalog_dir / CACHE_FILE), np.load(catalog_dir / MASKS_FILE),
        native, read_pool(cfg.paths.backgrounds_dir, EVAL), out, SmallPhotoSettings(photos=n),
    )  # fmt: skip


def train_super_resolver(cfg, epochs: int, scale: int = 2):
    """x2 super-resolution trained on the catalog's train split at its native side (28 px)."""
    train = catalog_photos(Path(cfg.paths.catalog_dir), "train", 20000, 28)
    torch.manual_seed(0)
    module = SuperResolutionModule(scale=scale, lr=2e-3)
    L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False).fit(module, DataLoader(TensorDataset(train), 128, True))  # fmt: skip
    return module.network.eval()


def gallery(pipeline: QueryPipeline, cache, test: pd.DataFrame) -> np.ndarray:
    rows = test[CACHE_INDEX].to_numpy()
    return np.concatenate([pipeline.embed_squares(np.asarray(cache[rows[i : i + 256]])).embeddings
                           for i in range(0, len(rows), 256)])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--sr-epochs", type=int, default=3, help="0: no super-resolution variant")
    parser.add_argument("--compare-model", default=None, help="another registered model's champion")
    parser.add_argument("--version", default=None,
                        help="measure this version of the model instead of its champion")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/small_photos.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    cfg = load_config()
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    name, runtime = str(cfg.registry.model_name), str(cfg.query.runtime)
    models: dict[str, LoadedModel] = {
        "champion": load_version(name, args.version, runtime)
        if args.version
        else load_champion(name, runtime=runtime)
    }
    if args.compare_model:
        models[args.compare_model] = load_champion(args.compare_model, runtime=runtime)
    champion = models["champion"].pipeline
    network, upscale = champion.super_resolver, champion.spec.upscale
    if network is None and args.sr_epochs:
        network = train_super_resolver(cfg, args.sr_epochs)
        upscale = UpscaleSpec(network.scale, champion.spec.embedder.letterbox_size // network.scale)
    catalog_dir = Path(cfg.paths.catalog_dir)
    manifest = read_manifest(catalog_dir)
    test = manifest[manifest[SPLIT] == "test"].reset_index(drop=True)
    cache = open_cache(catalog_dir / CACHE_FILE)
    report: dict = {"photos": args.photos, "versions": {k: m.version for k, m in models.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        table = small_photos(cfg, test, args.photos, Path(tmp)).assign(bucket=lambda t: t["kind"])
        report["product_side_px"] = table["product_side"].quantile([0.1, 0.5, 0.9]).tolist()
        for label, model in models.items():
            base = model.pipeline
            g = gallery(base, cache, test)
            plain = base.with_spec(base.spec.with_options(super_resolve=False))
            variants = [Variant(label if base.upscaler is None else f"{label}-no-sr", plain,
                                "localize")]  # fmt: skip
            if label == "champion":
                variants.append(Variant(f"{label}_whole_frame", plain, "frame"))
            if base.upscaler is not None:
                variants.append(Variant(label, base, "localize"))
            elif network is not None:
                spec = base.spec.with_options(upscale=upscale.__dict__, super_resolve=True)
                upscaled = QueryPipeline(spec, base.embedder, base.localizer, network)
                variants.append(Variant(f"{label}+sr", upscaled, "localize"))
            for variant in variants:
                found = answer(variant, table, Path(tmp))
                if variant.mode == "localize":
                    found = found.closer_of_whole_and_crop(g)
                report[variant.name] = search_metrics(
                    found.embeddings, g, table, list(test[CATEGORY]), list(test[PRODUCT_ID]),
                    prior_of(variant.pipeline, test[LABEL].to_numpy()), found.logits,
                )  # fmt: skip
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"product side in the photo (p10, p50, p90): {report['product_side_px']} px")
    print(f"{'variant':<28} {'c@1':>6} {'c@5':>6} {'p@1':>6} {'thumb c@1':>10} {'zoomed c@1':>11}")
    for key, value in report.items():
        if isinstance(value, dict) and "all" in value:
            a = value["all"]
            print(f"{key:<28} {a['category@1']:>6.3f} {a['category@5']:>6.3f} "
                  f"{a['product@1']:>6.3f} {value['thumbnail']['category@1']:>10.3f} "
                  f"{value['zoomed_out']['category@1']:>11.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
