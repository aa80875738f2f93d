"""The ``train_super_resolution`` stage: the super-resolver of small crops, tracked in MLflow.

Targets are the catalog's own photos at their native side (train split; val split picks the
checkpoint), inputs degraded on the fly as phones degrade them. The test split, shrunk once
with a fixed seed by held-out code (:mod:`shoplens.evaluation.small_crops`: other kernels,
sharpening, shot noise, subsampled JPEG; never the training degradation), is what the metrics
report and the registry gates on: PSNR and SSIM of the network against bicubic upscaling of the
very same inputs, with and without the phone's effects.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from shoplens.evaluation.small_crops import shrink_cleanly, shrink_like_a_phone
from shoplens.evaluation.sr_plots import save_upscaling_samples
from shoplens.tracking import configure_mlflow, data_version, git_commit
from shoplens.training.super_resolution import (
    Degradation,
    SuperResolutionModule,
    catalog_photos,
    compare_with_bicubic,
    native_side,
)
from shoplens.training.trainer import build_trainer

log = logging.getLogger(__name__)
TEST_SEED = 123  # the test photos' one degradation draw: the same inputs for every version


def degradation(cfg: DictConfig) -> Degradation:
    d = cfg.super_resolution.degradation
    return Degradation(float(d.blur), float(d.noise), tuple(int(q) for q in d.jpeg))


def run(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    sr, catalog = cfg.super_resolution, Path(cfg.paths.catalog_dir)
    reports = Path(cfg.paths.reports_dir) / "super_resolution"
    side = int(sr.hr_size) if sr.hr_size else native_side(catalog)
    if side % int(sr.scale):
        side -= side % int(sr.scale)  # targets the network's output can match exactly
    seed = int(cfg.seed)
    train = catalog_photos(catalog, "train", int(sr.train_photos), side, seed)
    val = catalog_photos(catalog, "val", int(sr.val_photos), side, seed)
    test = catalog_photos(catalog, "test", int(sr.test_photos), side, seed)
    how = degradation(cfg)
    module = SuperResolutionModule(int(sr.scale), int(sr.features), int(sr.hidden),
                                   float(sr.lr), how, seed)  # fmt: skip
    uri = configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    version = data_version(catalog)
    logger = instantiate(
        cfg.tracking.logger,
        run_name="super_resolution",
        tracking_uri=uri,
        tags={
            "mlflow.source.git.commit": git_commit(),
            "shoplens.stage": "train_super_resolution",
            "shoplens.data_version": version,
        },
    )
    logger.log_hyperparams(
        {"super_resolution": OmegaConf.to_container(sr, resolve=True), "hr_size": side}
    )
    trainer, checkpoint = build_trainer(
        cfg.trainer, sr.callbacks, logger, max_epochs=int(sr.epochs)
    )
    batch = int(sr.batch_size)
    started = time.perf_counter()
    trainer.fit(
        module,
        DataLoader(TensorDataset(train), batch_size=batch, shuffle=True),
        DataLoader(TensorDataset(val), batch_size=batch),
    )
    seconds = time.perf_counter() - started
    best = SuperResolutionModule.load_from_checkpoint(checkpoint.best_model_path,
                                                      map_location="cpu").network.eval()  # fmt: skip
    phone = shrink_like_a_phone(test, best.scale, np.random.default_rng(TEST_SEED))
    clean = shrink_cleanly(test, best.scale)
    measured = {"phone": compare_with_bicubic(best, phone, test),
                "clean": compare_with_bicubic(best, clean, test)}  # fmt: skip
    metrics: dict[str, Any] = {"scale": best.scale, "hr_size": side, "test_photos": len(test)}
    for kind, m in measured.items():
        prefix = "" if kind == "phone" else "clean_"
        metrics |= {f"{prefix}{k}": v for k, v in m.items()}
        metrics[f"{prefix}psnr_gain_db"] = m["psnr"] - m["bicubic_psnr"]
    metrics["train_seconds"] = seconds
    logger.log_metrics({f"test/{k}": float(v) for k, v in metrics.items()})
    reports.mkdir(parents=True, exist_ok=True)
    save_upscaling_samples(best, phone[:8], test[:8], reports / "samples.png")
    logger.experiment.log_artifact(logger.run_id, str(reports / "samples.png"), "super_resolution")
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    result = {**metrics, "best_checkpoint": checkpoint.best_model_path,
              "mlflow_run_id": logger.run_id, "data_version": version}  # fmt: skip
    Path(sr.checkpoint).parent.joinpath("run.json").write_text(
        json.dumps(result, indent=2, default=str) + "\n"
    )
    log.info("super-resolution x%d, held-out test shrink: Lanczos %+.2f dB PSNR over bicubic "
             "(SSIM %.3f vs %.3f), phone-like %+.2f dB (SSIM %.3f vs %.3f)", best.scale,
             metrics["clean_psnr_gain_db"], metrics["clean_ssim"], metrics["clean_bicubic_ssim"],
             metrics["psnr_gain_db"], metrics["ssim"], metrics["bicubic_ssim"])  # fmt: skip
    return result
