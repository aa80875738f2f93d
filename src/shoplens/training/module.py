"""The LightningModule: embedder + loss, per-epoch retrieval Recall@1 on the val split."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from shoplens.evaluation.retrieval import recall_at_k, split_query_gallery
from shoplens.models import apply_freeze, build_embedder, param_groups
from shoplens.training.losses import build_loss

MONITOR = "val/recall_at_1"


class EmbedderModule(L.LightningModule):
    """Built from the resolved config alone, so a checkpoint rebuilds itself (evaluate,
    register and resume need nothing but the ``.ckpt``)."""

    def __init__(self, config: dict[str, Any], num_classes: int, pretrained: bool | None = None):
        super().__init__()
        self.save_hyperparameters()
        cfg = OmegaConf.create(config)
        self.cfg = cfg
        backbone_cfg = cfg.backbone
        if pretrained is not None:  # loading a checkpoint: its weights replace ImageNet's
            backbone_cfg = OmegaConf.merge(backbone_cfg, {"pretrained": pretrained})
        self.embedder = build_embedder(backbone_cfg, cfg.model, num_classes)
        self.loss = build_loss(cfg.loss, num_classes, cfg.model.embedding_dim)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedder(images)

    # -- training ---------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # Gradual unfreezing moves with the epoch; frozen BatchNorm goes back to eval mode
        # after Lightning's model.train().
        apply_freeze(self.embedder, self.cfg.freeze, epoch=self.current_epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        instances = None
        if images.dim() == 5:  # (B, views, C, H, W): views of one product are one instance
            views = images.shape[1]
            instances = torch.arange(len(images), device=images.device).repeat_interleave(views)
            labels = labels.repeat_interleave(views)
            images = images.flatten(0, 1)
        embeddings, logits = self.embedder.forward_with_logits(images)
        parts = self.loss(embeddings, logits, labels, instances)
        for name, value in parts.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", on_step=True, on_epoch=True)
        if not torch.isfinite(parts["loss"]):
            raise FloatingPointError(f"non-finite training loss at step {self.global_step}")
        return parts["loss"]

    # -- validation: Recall@1 of val queries against the val gallery -------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels, is_query = batch
        self._val_outputs.append((self.embedder(images), labels, is_query))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        embeddings, labels, is_query = (torch.cat(t) for t in zip(*self._val_outputs, strict=True))
        self._val_outputs.clear()
        if self.trainer.world_size > 1:  # DDP: every rank saw a shard of the val split
            embeddings, labels, is_query = (
                self.all_gather(t).flatten(0, 1) for t in (embeddings, labels, is_query)
            )
        q, ql, g, gl = split_query_gallery(embeddings.cpu(), labels.cpu(), is_query.cpu())
        metrics = recall_at_k(q, ql, g, gl, ks=(1, 5))
        self.log(MONITOR, metrics["recall@1"], prog_bar=True, sync_dist=False)
        self.log("val/recall_at_5", metrics["recall@5"], sync_dist=False)

    # -- optimisation -------------------------------------------------------------------
    def configure_optimizers(self):
        """``instantiate(cfg.optimizer)`` over the model's parameter groups (backbone stages,
        heads at ``model.head_lr_multiplier`` times the rate, the loss's own parameters),
        then ``instantiate(cfg.scheduler)`` over the optimizer."""
        opt_cfg: DictConfig = self.cfg.optimizer
        heads = float(self.cfg.model.head_lr_multiplier)
        groups = param_groups(
            self.embedder,
            lr=opt_cfg.lr,
            weight_decay=opt_cfg.weight_decay,
            head_lr_multiplier=heads,
            layer_decay=self.cfg.freeze.layer_decay,
        )
        if own := self.loss.own_parameters():
            loss_lr = self.cfg.loss.loss_lr or opt_cfg.lr * heads
            groups.append({"params": own, "lr": loss_lr, "weight_decay": 0.0, "name": "loss"})
        optimizer = instantiate(opt_cfg)(groups)
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches // max_epochs))
        scheduler = instantiate(self.cfg.scheduler)(optimizer, steps_per_epoch, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
