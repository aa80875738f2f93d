"""The localizer's LightningModule: Dice + BCE on the product mask, mask IoU on val scenes."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from segmentation_models_pytorch.losses import DiceLoss, SoftBCEWithLogitsLoss
from torchmetrics.classification import BinaryJaccardIndex

from shoplens.models.localizer import build_localizer

MONITOR = "val/mask_iou"


class LocalizerModule(L.LightningModule):
    """Built from the resolved config alone, so a checkpoint rebuilds itself."""

    def __init__(self, config: dict[str, Any], pretrained: bool | None = None):
        super().__init__()
        self.save_hyperparameters()
        cfg = OmegaConf.create(config)
        self.cfg, loc = cfg, cfg.localizer
        backbone = cfg.backbone
        if pretrained is not None:  # loading a checkpoint: its weights replace ImageNet's
            backbone = OmegaConf.merge(backbone, {"pretrained": pretrained})
        self.localizer = build_localizer(backbone, loc)
        # The encoder stages nearest the input keep their ImageNet weights and statistics:
        # generic edges and textures, and the most expensive stages to back-propagate
        # through at full resolution (README: localizer training, measured).
        self._frozen = self.localizer.encoder_stages()[: int(loc.frozen_stages)]
        for stage in self._frozen:
            stage.requires_grad_(False)
        # Dice keeps small products from drowning in background pixels; BCE keeps edges sharp.
        self.dice, self.bce = DiceLoss("binary", from_logits=True), SoftBCEWithLogitsLoss()
        self.val_iou = BinaryJaccardIndex(threshold=float(loc.threshold))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.localizer(images)

    def on_train_epoch_start(self) -> None:
        for stage in self._frozen:  # frozen BatchNorm keeps ImageNet statistics
            for layer in stage.norm_layers():
                layer.eval()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        logits = self.localizer(images)
        loss = self.dice(logits, masks) + self.bce(logits, masks)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, masks = batch
        self.val_iou.update(torch.sigmoid(self.localizer(images)), masks.int())

    def on_validation_epoch_end(self) -> None:
        self.log(MONITOR, self.val_iou.compute(), prog_bar=True)
        self.val_iou.reset()

    def configure_optimizers(self):
        """``instantiate(localizer.optimizer)`` over the trainable parameters, then the
        scheduler node over it with the run's total steps (a one-cycle schedule)."""
        loc = self.cfg.localizer
        params = [p for p in self.localizer.parameters() if p.requires_grad]
        optimizer = instantiate(loc.optimizer)(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = instantiate(loc.scheduler)(optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
