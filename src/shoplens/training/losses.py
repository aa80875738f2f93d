"""The training objective: a pytorch-metric-learning loss on the embedding, optionally mixed
with cross-entropy on the category head.

Losses come from config as ``_target_`` nodes. Proxy/classification-style losses (ArcFace,
NormalizedSoftmax, ProxyAnchor) need the number of classes and the embedding size, which only
the data and model know: their config sets ``_partial_: true`` and we pass those two here.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn


class CatalogLoss(nn.Module):
    """metric_weight * metric_loss(embeddings, categories)
    + classification_weight * CE(logits, categories)
    + instance_weight * instance_loss(embeddings, product instances).

    The instance term needs several views of each product in a batch (a photo-like view and
    its catalog shot): category losses alone let look-alike products of one category collapse
    together, which is fine for "find a dress" and useless for "find this dress"."""

    def __init__(
        self,
        metric: nn.Module | None,
        miner: nn.Module | None = None,
        metric_weight: float = 1.0,
        classification_weight: float = 0.0,
        label_smoothing: float = 0.0,
        instance: nn.Module | None = None,
        instance_weight: float = 0.0,
    ):
        super().__init__()
        if metric is None and classification_weight <= 0 and instance is None:
            raise ValueError("the loss has no metric, classification or instance term")
        self.metric, self.miner, self.instance = metric, miner, instance
        self.metric_weight = metric_weight if metric is not None else 0.0
        self.classification_weight = classification_weight
        self.instance_weight = instance_weight if instance is not None else 0.0
        self.label_smoothing = label_smoothing

    @property
    def needs_views(self) -> bool:
        return self.instance_weight > 0

    def forward(
        self,
        embeddings: torch.Tensor,
        logits: torch.Tensor | None,
        labels: torch.Tensor,
        instances: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        total = embeddings.new_zeros(())
        if self.metric is not None and self.metric_weight > 0:
            tuples = self.miner(embeddings, labels) if self.miner is not None else None
            parts["metric"] = self.metric(embeddings, labels, tuples)
            total = total + self.metric_weight * parts["metric"]
        if self.classification_weight > 0:
            if logits is None:
                raise ValueError("a classification loss needs the model's classifier head")
            parts["ce"] = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            total = total + self.classification_weight * parts["ce"]
        if self.instance_weight > 0:
            if instances is None:
                raise ValueError("an instance loss needs several views of each product per batch")
            parts["instance"] = self.instance(embeddings, instances)
            total = total + self.instance_weight * parts["instance"]
        parts["loss"] = total
        return parts

    def own_parameters(self) -> list[nn.Parameter]:
        """Proxies / class centres: they get their own optimizer group and learning rate."""
        return [p for p in self.parameters() if p.requires_grad]


def _instantiate_metric(node: DictConfig, num_classes: int, embedding_dim: int) -> nn.Module:
    built = instantiate(node)
    if isinstance(built, nn.Module):
        return built
    # functools.partial from `_partial_: true`: supply what the data and model decide.
    params = inspect.signature(built.func).parameters
    extra = {}
    if "num_classes" in params:
        extra["num_classes"] = num_classes
    if "embedding_size" in params:
        extra["embedding_size"] = embedding_dim
    return built(**extra)


def build_loss(loss_cfg: DictConfig, num_classes: int, embedding_dim: int) -> CatalogLoss:
    metric = (
        _instantiate_metric(loss_cfg.metric, num_classes, embedding_dim)
        if loss_cfg.metric is not None
        else None
    )
    miner = instantiate(loss_cfg.miner) if loss_cfg.miner is not None else None
    instance = instantiate(loss_cfg.instance) if loss_cfg.get("instance") is not None else None
    return CatalogLoss(
        metric=metric,
        miner=miner,
        metric_weight=loss_cfg.metric_weight,
        classification_weight=loss_cfg.classification_weight,
        label_smoothing=loss_cfg.label_smoothing,
        instance=instance,
        instance_weight=float(loss_cfg.get("instance_weight", 0.0)),
    )
