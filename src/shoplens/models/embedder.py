"""The embedding model: pretrained backbone -> projection -> L2-normalised embedding.

Search compares embeddings by inner product, so the embedding is L2-normalised: inner product
then equals cosine similarity and a FAISS inner-product index ranks by angle only.

The optional category classifier reads the *normalised* embedding, not the raw projection.
Cross-entropy on the raw projection can lower its loss by growing vector norms, information
that normalisation throws away before search; on the normalised embedding every gradient the
classifier sends shapes the directions search actually compares (as in normalised-softmax
metric learning). The linear layer's weight norm still lets logits sharpen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from shoplens.models.backbone import BackboneSettings, PreprocessingSpec, create_backbone


class EmbedderSettings(Protocol):
    """What :func:`build_embedder` reads from ``ModelConfig``."""

    embedding_dim: int
    dropout: float
    classifier: bool
    channels_last: bool


class Embedder(nn.Module):
    """Backbone pooled features -> dropout -> Linear -> L2-normalised ``embedding_dim`` vector.

    ``backbone`` must be headless (timm ``num_classes=0``) so that it returns pooled features.
    Frozen BatchNorm layers (set by :func:`shoplens.models.freezing.apply_freeze`) stay in eval
    mode through every ``train()`` call, so their running statistics never change.
    """

    def __init__(
        self,
        backbone: nn.Module,
        preprocessing: PreprocessingSpec,
        embedding_dim: int = 128,
        dropout: float = 0.1,
        num_classes: int = 0,
        classifier: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if classifier and num_classes < 1:
            raise ValueError("classifier=True needs num_classes >= 1 (the number of categories)")
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes if classifier else 0
        # timm: head_hidden_size is the pooled width after any pre-logits layer.
        features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(features, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes) if classifier else None
        self.channels_last = channels_last
        self.frozen_norm_names: tuple[str, ...] = ()  # backbone BatchNorm layers kept in eval
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features: the untuned baseline's embedding."""
        return self.backbone(self._prepare(images))

    def forward_with_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(embedding, category logits)``; logits are None without a classifier."""
        projected = self.projection(self.dropout(self.pooled_features(images)))
        embedding = F.normalize(projected, dim=-1)
        logits = self.classifier(embedding) if self.classifier is not None else None
        return embedding, logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings, shape ``(batch, embedding_dim)``: what search uses."""
        return self.forward_with_logits(images)[0]

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the new layers (projection and classifier), not the backbone's."""
        yield from self.projection.parameters()
        if self.classifier is not None:
            yield from self.classifier.parameters()

    def set_frozen_norms(self, names: Iterable[str]) -> None:
        """Keep these backbone BatchNorm layers in eval mode from now on (applied at once)."""
        self.frozen_norm_names = tuple(names)
        self.train(self.training)

    def train(self, mode: bool = True) -> Embedder:
        """``nn.Module.train``, then put frozen BatchNorm layers back into eval mode.

        A LightningModule holding this Embedder needs nothing extra: ``Module.train`` recurses
        into this override, and Lightning's own mode save/restore around validation copies the
        per-layer flags, so frozen layers stay in eval.
        """
        super().train(mode)
        if mode:
            for name in self.frozen_norm_names:
                self.backbone.get_submodule(name).eval()
        return self


def build_embedder(
    backbone_cfg: BackboneSettings, model_cfg: EmbedderSettings, num_classes: int
) -> Embedder:
    """Create the backbone (weights per :func:`create_backbone`) and wrap it in an Embedder.

    ``num_classes`` is the number of categories for the classifier; with
    ``model_cfg.classifier`` false it is ignored.
    """
    backbone, preprocessing = create_backbone(backbone_cfg, num_classes=0)
    return Embedder(
        backbone,
        preprocessing,
        embedding_dim=model_cfg.embedding_dim,
        dropout=model_cfg.dropout,
        num_classes=num_classes,
        classifier=model_cfg.classifier,
        channels_last=model_cfg.channels_last,
    )
