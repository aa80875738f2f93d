"""Training throughput: shoplens' Lightning training step vs a minimal hand-written PyTorch
loop over the same model, data, transform, loss and batch size, in one process.

    python benchmarks/train_throughput.py --batches 30 --image-size 64

Prints images/second for both and their ratio (target: shoplens >= 0.90 of the plain loop).
The first `--warmup` batches of each are excluded (allocator and thread-pool start-up).
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
from hydra.utils import instantiate
from omegaconf import OmegaConf

from shoplens.config import compose_config
from shoplens.data.augment import build_eval_transform, build_train_transform
from shoplens.models import param_groups
from shoplens.training.datamodule import CatalogDataModule
from shoplens.training.module import EmbedderModule


def synthetic_catalog(root: Path, n: int, size: int, classes: int) -> Path:
    rng = np.random.default_rng(0)
    np.save(root / "images.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    labels = np.arange(n) % classes
    ids = [f"p{i}" for i in range(n)]
    pd.DataFrame(
        {
            "path": ids, "product_id": ids, "category": [f"c{label}" for label in labels],
            "split": "train", "role": "", "group_id": np.arange(n), "label": labels,
            "cache_index": np.arange(n), "content_hash": ids, "phash": ids,
            "cutout": "no mask in this synthetic catalog",
        }
    ).to_parquet(root / "manifest.parquet")  # fmt: skip
    (root / "categories.json").write_text(json.dumps([f"c{i}" for i in range(classes)]))
    return root


class BatchTimer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.images = warmup, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.images += len(batch[0])
            self.end = time.perf_counter()


def shoplens_step(cfg, datamodule, num_classes, batches, warmup) -> float:
    module = EmbedderModule(OmegaConf.to_container(cfg, resolve=True), num_classes)
    timer = BatchTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    return timer.images / (timer.end - timer.start)


def plain_loop(cfg, datamodule, num_classes, batches, warmup) -> float:
    """What an engineer would write by hand: no framework, same model, loss and optimizer."""
    module = EmbedderModule(OmegaConf.to_container(cfg, resolve=True), num_classes)
    model, loss_fn = module.embedder, module.loss
    groups = param_groups(
        model, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.model.head_lr_multiplier
    )
    if own := loss_fn.own_parameters():
        groups.append({"params": own, "lr": cfg.optimizer.lr})
    optimizer = instantiate(cfg.optimizer)(groups)  # the configured optimizer, all its kwargs
    model.train()
    images_seen, start = 0, None
    for i, (images, labels, _) in enumerate(datamodule.train_dataloader()):
        if i == warmup:
            start = time.perf_counter()
        embeddings, logits = model.forward_with_logits(images)
        loss = loss_fn(embeddings, logits, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            images_seen += len(images)
        if i + 1 >= batches:
            break
    return images_seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    args = parser.parse_args()

    # One view per image and synthetic clutter: the default instance loss and copy-paste need a
    # preprocessed catalog with masks and backgrounds, which this synthetic one does not have.
    single_view = ["loss=cross_entropy", "augmentation=shopper_photo"]
    cfg = compose_config([f"data.batch_size={args.batch_size}", *single_view, *args.overrides])
    with tempfile.TemporaryDirectory() as tmp:
        n = args.batch_size * (args.batches + 2)
        synthetic_catalog(Path(tmp), n, args.image_size + 16, classes=10)
        module = EmbedderModule(OmegaConf.to_container(cfg, resolve=True), 10)
        spec = module.embedder.preprocessing
        datamodule = CatalogDataModule(
            tmp,
            build_train_transform(cfg.augmentation, args.image_size, spec.mean, spec.std),
            build_eval_transform(args.image_size, spec.mean, spec.std),
            batch_size=args.batch_size,
            num_workers=args.workers,
        )
        torch.manual_seed(0)
        plain = plain_loop(cfg, datamodule, 10, args.batches, args.warmup)
        ours = shoplens_step(cfg, datamodule, 10, args.batches, args.warmup)
        plain_again = plain_loop(cfg, datamodule, 10, args.batches, args.warmup)
    baseline = (plain + plain_again) / 2  # the plain loop runs before and after: drift cancels
    print(
        f"backbone {cfg.backbone.name}, {args.image_size}px, batch {args.batch_size}, "
        f"{args.workers} workers, loss {cfg.loss.name}, freeze {cfg.freeze.strategy}"
    )
    print(f"plain PyTorch loop : {baseline:7.1f} img/s  (runs: {plain:.1f}, {plain_again:.1f})")
    print(f"shoplens (Lightning): {ours:7.1f} img/s")
    print(f"ratio shoplens/plain: {ours / baseline:.3f}")


if __name__ == "__main__":
    main()
