"""Small Lightning callbacks for what people look at: sample batches and the epoch history."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from torchvision.utils import make_grid

from shoplens.data.augment import denormalize


class SampleBatchLogger(L.Callback):
    """Logs the first ``n_batches`` augmented training batches as an image grid to MLflow,
    so a person can see what the network is really trained on."""

    def __init__(self, n_batches: int, mean, std, max_images: int = 32):
        self.n_batches, self.mean, self.std, self.max_images = n_batches, mean, std, max_images

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch > 0 or batch_idx >= self.n_batches or trainer.global_rank != 0:
            return
        logger = trainer.logger
        if not isinstance(logger, MLFlowLogger):
            return
        images = batch[0].detach().cpu()
        if images.dim() == 5:  # (B, views, C, H, W): show each product's views side by side
            images = images.flatten(0, 1)
        images = denormalize(images[: self.max_images], self.mean, self.std)
        grid = make_grid(images, nrow=8, padding=2).permute(1, 2, 0).numpy()
        logger.experiment.log_image(
            logger.run_id, grid, artifact_file=f"samples/train_batch_{batch_idx}.png"
        )


class HistoryWriter(L.Callback):
    """One CSV row per epoch (DVC plots it; MLflow has the same curves). Row ``epoch 0`` is
    the model before training, when the pipeline validates it first."""

    COLUMNS = ("epoch", "step", "val_recall_at_1", "val_recall_at_5", "train_loss")

    def __init__(self, path: str | Path, fresh: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not self.path.exists():
            self.path.write_text(",".join(self.COLUMNS) + "\n")

    def _append(self, trainer, epoch: int) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        m = trainer.callback_metrics

        def value(key: str) -> str:
            v = m.get(key)
            return f"{float(v):.6f}" if isinstance(v, torch.Tensor | float) else ""

        row = [
            epoch,
            trainer.global_step,
            value("val/recall_at_1"),
            value("val/recall_at_5"),
            value("train/loss_epoch"),
        ]
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(row)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":  # trainer.validate() before fitting
            self._append(trainer, 0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs after the epoch's validation, so the row pairs the epoch's loss and recall.
        self._append(trainer, trainer.current_epoch + 1)
