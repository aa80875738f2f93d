"""Package the fine-tuned embedder as a self-contained MLflow pyfunc model.

The model is logged as code (``pyfunc_model.py``) plus artifacts: a ``torch.export`` program,
a preprocessing spec and the category list. Nothing is pickled and nothing refers to shoplens,
so ``mlflow.pyfunc.load_model("models:/shoplens-embedder@champion")`` works wherever torch and
mlflow are installed. The signature declares uint8 image batches in, float32 embeddings out,
and the ``output`` parameter ("embedding" or "logits") that search uses to narrow by category.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec
from torch import nn

from shoplens.models import Embedder

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


class _Heads(nn.Module):
    """Embedder -> (embedding, logits), or (embedding,) without a category head."""

    def __init__(self, embedder: Embedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding, logits = self.embedder.forward_with_logits(images)
        return (embedding,) if logits is None else (embedding, logits)


def export_artifacts(
    embedder: Embedder, image_size: int, categories: Sequence[str], out_dir: Path
) -> dict[str, str]:
    """Write the pyfunc model's artifacts into ``out_dir``; returns MLflow's artifacts dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # A copy in eval mode (dropout off) with standard-layout weights: channels_last parameters
    # export fine but make torch.export.load warn about incomplete tensors. Inputs still go
    # channels_last inside the graph when the model was built that way.
    model = copy.deepcopy(embedder).eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch")
    program = torch.export.export(_Heads(model), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out_dir / "embedder.pt2")
    spec = embedder.preprocessing
    preprocessing = {
        "image_size": int(image_size),
        "mean": [float(v) for v in spec.mean],
        "std": [float(v) for v in spec.std],
        "interpolation": "bilinear",
        "embedding_dim": int(embedder.embedding_dim),
        "num_classes": int(embedder.num_classes),
    }
    (out_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
    (out_dir / "categories.json").write_text(json.dumps(list(categories), indent=2) + "\n")
    return {
        "program": str(out_dir / "embedder.pt2"),
        "preprocessing": str(out_dir / "preprocessing.json"),
        "categories": str(out_dir / "categories.json"),
    }


def signature(embedding_dim: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, embedding_dim))]),
        params=ParamSchema([ParamSpec("output", "string", "embedding")]),
    )


def log_embedder(
    embedder: Embedder,
    image_size: int,
    categories: Sequence[str],
    input_example: np.ndarray,
    workdir: Path,
    name: str = "embedder",
) -> ModelInfo:
    """Log the pyfunc model to the active run; returns its ModelInfo (``model_uri``)."""
    artifacts = export_artifacts(embedder, image_size, categories, workdir)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        signature=signature(embedder.embedding_dim),
        input_example=input_example,
        # Explicit: inferring them would load the model in a subprocess (slow) to watch imports.
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}",
            f"mlflow=={mlflow.__version__}",
        ],
        metadata={
            "image_size": int(image_size),
            "embedding_dim": int(embedder.embedding_dim),
            "num_classes": int(embedder.num_classes),
        },
    )
