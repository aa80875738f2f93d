"""Small photos: how search does when the product has fewer pixels than its catalog photo.

    python benchmarks/small_photos.py [--photos 600]

The ruler of the super-resolution work (README, "Small photos"): test-split products at
40-70% of their catalog resolution, as thumbnails and as small products in zoomed-out photos,
on evaluation backgrounds (:mod:`shoplens.evaluation.small_photos`), answered by the served
champion and index through the service's code (``Searcher.answer``). Variants side by side in
one run, on the same photos:

* ``as_served``: the registered query pipeline (localize -> crop -> Lanczos letterbox to the
  embedder's side -> embed): the upscaling every small crop gets today;
* ``whole_frame``: the same without localization (``query.localize=false``);
* ``super_resolution``: as served, with crops smaller than half the embedder's letterbox side
  super-resolved x2 first (:mod:`shoplens.query.upscale`) by a network trained here on the
  catalog's train split (benchmarks/super_resolution.py's training, ``--sr-epochs``).

Reports category@1, category@5 and product@1 (the photographed product itself first; it is in
the index) per kind and overall.
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
from tqdm import tqdm

from shoplens.config import load_config
from shoplens.data.backgrounds import EVAL, read_pool
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CUTOUT, MASKS_FILE, PATH, SPLIT, read_manifest
from shoplens.evaluation.shopper_photos import PHOTOS_DIR
from shoplens.evaluation.small_photos import SmallPhotoSettings, make_small_photos
from shoplens.query.upscale import Upscaler
from shoplens.registry.champion import LoadedModel
from shoplens.serving.searcher import Searcher
from shoplens.training.super_resolution import SuperResolutionModule

K = 5


def small_photos(cfg, n: int, out: Path) -> pd.DataFrame:
    catalog_dir = Path(cfg.paths.catalog_dir)
    manifest = read_manifest(catalog_dir)
    products = manifest[(manifest[SPLIT] == "test") & (manifest[CUTOUT] == "")]
    products = products.reset_index(drop=True)
    native = np.array([max(Image.open(p).size) for p in products[PATH]])
    return make_small_photos(
        products, open_cache(catalog_dir / CACHE_FILE), np.load(catalog_dir / MASKS_FILE),
        native, read_pool(cfg.paths.backgrounds_dir, EVAL), out, SmallPhotoSettings(photos=n),
    )  # fmt: skip


def train_super_resolver(cfg, epochs: int, scale: int = 2):
    """x2 super-resolution trained on the catalog's train split at its native side (28 px)."""
    from super_resolution import catalog_photos

    train = catalog_photos(Path(cfg.paths.catalog_dir), "train", 20000, 28)
    torch.manual_seed(0)
    module = SuperResolutionModule(scale=scale, lr=2e-3)
    L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False).fit(module, DataLoader(TensorDataset(train), 128, True))  # fmt: skip
    return module.network.eval()


def answer_all(searcher: Searcher, table: pd.DataFrame, photos: Path, name: str) -> pd.DataFrame:
    rows = []
    for record in tqdm(table.itertuples(), total=len(table), desc=name, unit="photo"):
        answer = searcher.answer((photos / f"{record.photo}.jpg").read_bytes(), K)
        hits = answer.searched.hits
        rows.append({
            "kind": record.kind,
            "category@1": bool(hits) and hits[0].category == record.category,
            f"category@{K}": any(h.category == record.category for h in hits),
            "product@1": bool(hits) and hits[0].product_id == record.product_id,
            "localized": answer.localized,
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--sr-epochs", type=int, default=3, help="0: no super-resolution variant")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/small_photos.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    cfg = load_config()
    served = Searcher(cfg)
    model: LoadedModel = served.model
    variants = {
        "as_served": served,
        "whole_frame": Searcher(load_config(["query.localize=false"]), model),
    }
    report: dict = {"photos": args.photos, "model": f"{model.name}:{model.version}"}
    if args.sr_epochs:
        network = train_super_resolver(cfg, args.sr_epochs)
        with_sr = Searcher(cfg, model)
        below = model.pipeline.spec.embedder.letterbox_size // network.scale
        with_sr.pipeline.upscaler = Upscaler(network, network.scale, below)
        variants["super_resolution"] = with_sr
        report["super_resolution_below_px"] = below
    with tempfile.TemporaryDirectory() as tmp:
        table = small_photos(cfg, args.photos, Path(tmp))
        report["product_side_px"] = {
            "median": float(table["product_side"].median()),
            "p10": float(table["product_side"].quantile(0.1)),
            "p90": float(table["product_side"].quantile(0.9)),
        }
        for name, searcher in variants.items():
            found = answer_all(searcher, table, Path(tmp) / PHOTOS_DIR, name)
            metrics = ["category@1", f"category@{K}", "product@1", "localized"]
            per_kind = found.groupby("kind")[metrics].mean()
            report[name] = {
                "all": {m: float(found[m].mean()) for m in metrics},
                **{
                    kind: {m: float(v) for m, v in row.items()} for kind, row in per_kind.iterrows()
                },
            }
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"product side in the photo: {report['product_side_px']} px")
    for name in variants:
        print(name, json.dumps(report[name], indent=1))


if __name__ == "__main__":
    main()
