"""The registered shoplens model: the whole query pipeline as one MLflow pyfunc.

MLflow runs this file on ``mlflow.pyfunc.load_model`` (models from code: nothing unpickled).
The model ships the ``shoplens`` sources it needs as ``code_paths``, so the same
:class:`~shoplens.query.QueryPipeline` that ``shoplens search``, the HTTP service, the index
stage and evaluate run also runs where only mlflow, torch, numpy, Pillow and scipy are
installed. Artifacts (written by :mod:`shoplens.registry.export`):

* ``embedder``: ``torch.export`` program, normalised ``(N, 3, S, S)`` -> (embedding[, logits]);
* ``localizer`` (optional): ``torch.export`` program, ``(N, 3, L, L)`` -> mask logits;
* ``super_resolver`` (optional): ``torch.export`` program, RGB ``(N, 3, h, w)`` in [0, 1] ->
  ``(N, 3, s*h, s*w)``, for crops smaller than the spec's ``upscale.below``;
* ``embedder_onnx`` / ``localizer_onnx`` / ``super_resolver_onnx``: the same networks as ONNX
  graphs, checked against torch by evaluate; run by ONNX Runtime unless
  ``model_config={"runtime": "torch"}``;
* ``spec``: the :class:`~shoplens.query.QuerySpec` as JSON; ``categories``: JSON list;
* ``calibration`` (optional): evaluate's no-match calibration photos as query embeddings,
  from which the index stage sets the served catalog's "no confident match" threshold.

``predict`` takes shoppers' photos, a DataFrame with a binary ``image`` column of encoded
files (JPEG, PNG, ...), and returns one row per photo: ``embedding``, ``logits``, ``box`` (the
product searched, or None for the whole frame), ``boxes`` (every product found) and ``note``.
A uint8 array ``(N, H, W, 3)`` of catalog squares is embedded as the index stage does
(``params={"output": "logits"}`` for the category head).
"""

import json
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from shoplens.query import QueryPipeline, QuerySpec

OUTPUTS = ("embedding", "logits")


def _program(path: str):
    return torch.export.load(path).module()


class ShoplensQueryModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        artifacts = context.artifacts
        spec = QuerySpec.from_dict(json.loads(Path(artifacts["spec"]).read_text()))
        default = "onnx" if "embedder_onnx" in artifacts else "torch"
        self.runtime = (getattr(context, "model_config", None) or {}).get("runtime") or default
        if self.runtime == "onnx" and "embedder_onnx" not in artifacts:
            # A version registered before ONNX: serve it as it was, say so.
            warnings.warn("this model version has no ONNX graphs: running torch", stacklevel=2)
            self.runtime = "torch"
        if self.runtime == "onnx":
            from shoplens.query.onnx_network import onnx_pipeline

            self.pipeline = onnx_pipeline(spec, artifacts)
        elif self.runtime == "torch":
            localizer = _program(artifacts["localizer"]) if "localizer" in artifacts else None
            upscaler = (
                _program(artifacts["super_resolver"]) if "super_resolver" in artifacts else None
            )
            self.pipeline = QueryPipeline(
                spec, _program(artifacts["embedder"]), localizer, upscaler
            )
        else:
            raise ValueError(f"runtime must be onnx or torch, got {self.runtime!r}")
        self.categories = json.loads(Path(artifacts["categories"]).read_text())
        self.calibration_path = artifacts.get("calibration")

    @property
    def spec(self) -> QuerySpec:
        return self.pipeline.spec

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        params = params or {}
        if isinstance(model_input, pd.DataFrame):
            photos = [bytes(v) for v in model_input["image"]]
            results = self.pipeline.query_batch(photos, localize=params.get("localize"))
            return pd.DataFrame(
                {
                    "embedding": [r.embeddings[0].tolist() for r in results],
                    "logits": [None if r.logits is None else r.logits[0].tolist() for r in results],
                    "box": [
                        list(r.detections[r.searched[0]].box) if r.localized else None
                        for r in results
                    ],
                    "boxes": [[list(d.box) for d in r.detections] for r in results],
                    "note": [r.note for r in results],
                    # The searched crop was super-resolved before embedding (a small product).
                    "upscaled": [bool(r.upscaled and r.upscaled[0]) for r in results],
                    # The product spans most of the photo: the whole photo's embedding too;
                    # search both, the closer match answers (as shoplens' service does).
                    "whole_embedding": [
                        None if r.whole_embedding is None else r.whole_embedding.tolist()
                        for r in results
                    ],
                }
            )
        output = params.get("output", "embedding")
        if output not in OUTPUTS:
            raise ValueError(f"params output must be one of {OUTPUTS}, got {output!r}")
        embedded = self.pipeline.embed_squares(np.asarray(model_input))
        if output == "logits":
            if embedded.logits is None:
                raise ValueError("this model has no category head: no logits to return")
            return embedded.logits
        return embedded.embeddings


mlflow.models.set_model(ShoplensQueryModel())
