"""Images/second of the shopper-photo train transform against the eval transform (baseline).

Training decodes nothing per epoch: it reads uint8 rows of the decoded cache and augments them
in DataLoader workers, each limited to one torch thread. With ~100 img/s on 2 cores, the train
transform must stay well under 2 ms/image; this measures both transforms in one process, on
synthetic catalog shots (light backdrop, a few coloured products) so that the clutter step
does real work.

    .venv/bin/python benchmarks/augment_throughput.py --size 96 --n 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from shoplens.config import compose_config
from shoplens.data.augment import build_eval_transform, build_train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def synthetic_cache(n: int, side: int, seed: int = 0) -> np.ndarray:
    """``n`` catalog-like squares: uniform light backdrop, one coloured box per image."""
    rng = np.random.default_rng(seed)
    cache = np.empty((n, side, side, 3), np.uint8)
    cache[:] = rng.integers(200, 256, (n, 1, 1, 3), dtype=np.uint8)
    for img in cache:
        y0, x0 = rng.integers(side // 8, side // 3, 2)
        y1, x1 = rng.integers(2 * side // 3, 7 * side // 8, 2)
        img[y0:y1, x0:x1] = rng.integers(0, 200, 3, dtype=np.uint8)
    return cache


def images_per_second(transform, cache: np.ndarray, n: int) -> float:
    for i in range(min(20, len(cache))):  # warm-up: lazy inits, allocator
        transform(cache[i])
    start = time.perf_counter()
    for i in range(n):
        transform(cache[i % len(cache)])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="output side (image_size)")
    parser.add_argument("--n", type=int, default=1000, help="images per transform")
    parser.add_argument("--cache-size", type=int, default=112, help="side of the cached rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (workers use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache = synthetic_cache(min(args.n, 256), args.cache_size)
    evaluate = build_eval_transform(args.size, MEAN, STD)
    # The synthetic-clutter augmentation as conf/ defines it (AugmentationConfig() is all-off:
    # the schema holds types, the values live in conf/).
    aug = compose_config(["augmentation=shopper_photo"]).augmentation
    train = build_train_transform(aug, args.size, MEAN, STD)
    base = images_per_second(evaluate, cache, args.n)
    aug = images_per_second(train, cache, args.n)
    print(f"cache {args.cache_size}px -> {args.size}px, {args.n} images, {args.threads} thread(s)")
    for name, rate in (("eval (baseline)", base), ("train (augment)", aug)):
        print(f"{name:16s} {rate:9.0f} img/s  {1000 / rate:6.3f} ms/img")
    print(f"train/eval time ratio: {base / aug:.2f}x")


if __name__ == "__main__":
    main()
