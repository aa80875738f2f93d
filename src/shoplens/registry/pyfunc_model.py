"""The registered shoplens embedder as an MLflow pyfunc model, logged as code.

MLflow copies this file into the model and runs it on ``mlflow.pyfunc.load_model`` (models from
code: nothing is unpickled). It imports only numpy, torch and mlflow, never shoplens, so a search
service loads the model without the training code or its Hydra config. Everything the model
needs travels as artifacts, written by :mod:`shoplens.registry.export`:

* ``program``: a ``torch.export`` program of the embedder: normalised ``(N, 3, S, S)`` float32
  -> ``(embedding, logits)`` (only ``(embedding,)`` without a category head). Unlike TorchScript
  (deprecated) it keeps the graph and weights of the exact model that was evaluated.
* ``preprocessing``: JSON with ``image_size`` S, ``mean``, ``std`` (what the weights expect),
  ``embedding_dim`` and ``num_classes`` (0 without a category head).
* ``categories``: JSON list; column i of the logits is ``categories[i]``.

Input: RGB images as a uint8 array ``(N, H, W, 3)``; squares (letterboxed, as preprocess does)
keep their proportions, other shapes are stretched. Output: float32 ``(N, D)`` L2-normalised
embeddings, or with ``params={"output": "logits"}`` the category logits ``(N, C)``.
"""

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
import torch.nn.functional as F

OUTPUTS = ("embedding", "logits")
CHUNK = 256  # images per forward pass: bounds memory for large requests


class ShoplensEmbedder(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["preprocessing"]).read_text())
        self.size = int(spec["image_size"])
        self.mean = torch.tensor(spec["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(spec["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.widths = {"embedding": int(spec["embedding_dim"]), "logits": int(spec["num_classes"])}
        self.categories = json.loads(Path(context.artifacts["categories"]).read_text())
        self.program = torch.export.load(context.artifacts["program"]).module()

    def _prepare(self, images: np.ndarray) -> torch.Tensor:
        """uint8 NHWC -> normalised float NCHW, exactly as shoplens' evaluation transform:
        antialiased bilinear resize of the uint8 image, then /255, then (x - mean) / std."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x.float().div(255) - self.mean) / self.std

    def predict(
        self, context, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        output = (params or {}).get("output", "embedding")
        if output not in OUTPUTS:
            raise ValueError(f"params output must be one of {OUTPUTS}, got {output!r}")
        if output == "logits" and not self.widths["logits"]:
            raise ValueError("this model has no category head: no logits to return")
        return self.heads(model_input)[output]

    def heads(self, model_input: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of one forward pass: ``embedding``, and ``logits`` with a head (search
        narrowed by category needs both for one photo)."""
        images = np.asarray(model_input)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        names = [name for name in OUTPUTS if self.widths[name]]
        parts = {name: [torch.zeros(0, self.widths[name])] for name in names}  # empty -> (0, w)
        with torch.inference_mode():
            for start in range(0, len(images), CHUNK):
                outputs = self.program(self._prepare(images[start : start + CHUNK]))
                for name, value in zip(names, outputs, strict=True):
                    parts[name].append(value)
        return {
            name: torch.cat(p).numpy().astype(np.float32, copy=False) for name, p in parts.items()
        }


mlflow.models.set_model(ShoplensEmbedder())
