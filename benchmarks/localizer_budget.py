"""What a bigger training budget buys the localizer, side by side in one process.

Each ``--run NAME=OVERRIDES`` trains the localizer as the ``train_localizer`` stage does
(``shoplens.training.localizer_setup.build``: same module, scenes and Trainer from the
composed ``conf/``), without MLflow, with its own comma-separated Hydra overrides on top of
``--common``. For each run: wall time, steps and scenes per second, best val mask IoU, and a
weights-only checkpoint (``OUT/NAME/best.ckpt``) that ``shoplens evaluate`` can measure on the
shopper-photo benchmark in place of ``artifacts/localizer/best.ckpt``. The val IoU is the
stage's checkpoint signal (val products on *training* backgrounds, the training generator's
scenes), not an evaluation: only evaluate's held-apart benchmark says what a budget buys.

    python benchmarks/localizer_budget.py --out /tmp/budget --common trainer=gpu \\
        --run demo= --run x8=localizer.batch_size=64,localizer.steps_per_epoch=1500

The first run is the baseline the others' times are divided by; ``--warmup`` steps of its
config run untimed before it, so it does not pay for the process's start-up alone.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import lightning as L
import torch

from shoplens.config import compose_config
from shoplens.training.localizer_setup import build
from shoplens.training.trainer import build_trainer


def parse_run(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"--run wants NAME=OVERRIDES, got {text!r}")
    # Commas inside brackets belong to a list value (scale=[0.1,0.9]), not between overrides.
    return name, [o for o in re.split(r",(?![^\[]*\])", overrides) if o]


def train_once(overrides: list[str], out: Path) -> dict:
    ckpt = "localizer.callbacks.model_checkpoint"
    cfg = compose_config(
        [*overrides, f"{ckpt}.dirpath={out}", f"+{ckpt}.save_weights_only=true",
         f"{ckpt}.save_last=false"]
    )  # fmt: skip
    L.seed_everything(cfg.seed, workers=True)
    loc = cfg.localizer
    module, datamodule = build(cfg)
    trainer, checkpoint = build_trainer(
        cfg.trainer, loc.callbacks, logger=False, max_epochs=int(loc.epochs)
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    steps = trainer.global_step
    return {
        "overrides": overrides,
        "accelerator": type(trainer.accelerator).__name__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "precision": str(cfg.trainer.precision),
        "frozen_stages": int(loc.frozen_stages),
        "steps": steps,
        "scenes": steps * int(loc.batch_size),
        "seconds": round(seconds, 1),
        "steps_per_s": round(steps / seconds, 2),
        "scenes_per_s": round(steps * int(loc.batch_size) / seconds, 1),
        "val_mask_iou": round(float(checkpoint.best_model_score), 4),
        "checkpoint": checkpoint.best_model_path,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--common", nargs="*", default=[], help="overrides for every run")
    parser.add_argument("--run", type=parse_run, action="append", required=True)
    parser.add_argument(
        "--warmup", type=int, default=10,
        help="steps of the first run's config trained untimed first (0: none); without them "
        "the first run paid for start-up: 40.2 s vs 35.2 s for the same 80 steps on 2 cores",
    )  # fmt: skip
    args = parser.parse_args()
    if args.warmup > 0:
        first = [*args.common, *args.run[0][1]]
        short = ["localizer.epochs=1", f"localizer.steps_per_epoch={args.warmup}"]
        train_once([*first, *short, "localizer.val_scenes=16"], args.out / "warmup")
    results: dict[str, dict] = {}
    for name, overrides in args.run:
        results[name] = train_once([*args.common, *overrides], args.out / name)
        # Written after each run: a run cut short still leaves the ones before it.
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    base = next(iter(results.values()))
    print(f"\n{'run':<12}{'scenes':>9}{'seconds':>9}{'x time':>8}{'scenes/s':>10}{'val IoU':>9}")
    for name, r in results.items():
        ratio = r["seconds"] / base["seconds"]
        print(f"{name:<12}{r['scenes']:>9}{r['seconds']:>9}{ratio:>8.2f}"
              f"{r['scenes_per_s']:>10}{r['val_mask_iou']:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
