"""The registered champion, loaded once and called without pyfunc's overhead.

Search and the index stage must embed with the *same* model version, so both resolve the alias
``champion`` to a concrete version here and keep that number: the index records it, and the
service refuses an index built by another version. ``mlflow.pyfunc.load_model`` gives a wrapper
that validates the input schema on every call; the query pipeline behind it
(:class:`~shoplens.registry.query_model.ShoplensQueryModel`) is unwrapped and called directly:
the exact same code, without the per-request cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from shoplens.query import QueryPipeline

log = logging.getLogger(__name__)

CHAMPION = "champion"


class UnsupportedModelVersion(RuntimeError):
    """A registered version from before the query pipeline: it cannot answer photos."""


@dataclass
class LoadedModel:
    name: str
    version: str
    python_model: Any  # the ShoplensQueryModel behind the pyfunc wrapper

    @property
    def pipeline(self) -> QueryPipeline:
        return self.python_model.pipeline

    @property
    def categories(self) -> list[str]:
        return list(self.python_model.categories)

    @property
    def runtime(self) -> str:
        return getattr(self.python_model, "runtime", "torch")  # versions before ONNX: torch

    @property
    def calibration_path(self) -> str | None:
        """evaluate's no-match calibration (query embeddings) shipped in the model, if any."""
        return getattr(self.python_model, "calibration_path", None)

    @property
    def embedding_dim(self) -> int:
        return int(self.pipeline.spec.embedder.embedding_dim)

    @property
    def has_logits(self) -> bool:
        return self.pipeline.spec.embedder.num_classes > 0

    def preprocessing(self) -> dict[str, Any]:
        """What an index built with this model must be queried with (stored in its meta)."""
        return self.pipeline.spec.to_dict()

    def embed(self, squares: np.ndarray) -> np.ndarray:
        """Catalog squares uint8 ``(N, S, S, 3)`` -> float32 L2-normalised ``(N, D)``."""
        return self.pipeline.embed_squares(squares).embeddings


def load_champion(
    model_name: str, alias: str = CHAMPION, runtime: str | None = None
) -> LoadedModel:
    """Resolve ``alias`` to a version first, then load exactly that version: loading by alias
    and asking for the version afterwards could race with a promotion in between.
    ``runtime``: ``onnx`` or ``torch`` (None: the model's default, ONNX where it has graphs)."""
    client = MlflowClient()
    try:
        version = str(client.get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException as err:
        raise FileNotFoundError(
            f"no model '{model_name}@{alias}' in the MLflow registry "
            f"({mlflow.get_tracking_uri()}): run `shoplens register` first ({err.message})"
        ) from None
    loaded = load_version(model_name, version, runtime)
    log.info("loaded %s v%s (%s, %s)", model_name, version, alias, loaded.runtime)
    return loaded


def load_version(model_name: str, version: str, runtime: str | None = None) -> LoadedModel:
    """Exactly this version (what a Ray worker embedding for the index stage loads: the
    version the driver resolved, never the alias again)."""
    pyfunc = mlflow.pyfunc.load_model(
        f"models:/{model_name}/{version}", model_config={"runtime": runtime} if runtime else None
    )
    inner = pyfunc.unwrap_python_model()
    if not hasattr(inner, "pipeline"):
        raise UnsupportedModelVersion(
            f"{model_name} v{version} was registered before models carried their query "
            "pipeline: run `dvc repro` (or `shoplens register`) to register the current one"
        )
    return LoadedModel(model_name, str(version), inner)
