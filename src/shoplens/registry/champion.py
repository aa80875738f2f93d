"""The registered champion embedder, loaded once and called without pyfunc's overhead.

Search and the index stage must embed with the *same* model version, so both resolve the alias
``champion`` to a concrete version here and keep that number: the index records it, and the
service refuses an index built by another version. ``mlflow.pyfunc.load_model`` gives a wrapper
that validates the input schema on every call; the underlying ``ShoplensEmbedder`` (see
``shoplens.registry.pyfunc_model``) is unwrapped and called directly, which for single-photo
queries removes most of the per-request cost while running the exact same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"


@dataclass
class LoadedModel:
    name: str
    version: str
    python_model: Any  # the ShoplensEmbedder behind the pyfunc wrapper

    @property
    def image_size(self) -> int:
        return int(self.python_model.size)

    @property
    def categories(self) -> list[str]:
        return list(self.python_model.categories)

    @property
    def embedding_dim(self) -> int:
        return int(self.python_model.widths["embedding"])

    @property
    def has_logits(self) -> bool:
        return bool(self.python_model.widths["logits"])

    def preprocessing(self) -> dict[str, Any]:
        """What an index built with this model must be queried with (stored in its meta)."""
        m = self.python_model
        return {
            "image_size": self.image_size,
            "mean": [float(v) for v in m.mean.flatten()],
            "std": [float(v) for v in m.std.flatten()],
        }

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> float32 L2-normalised ``(N, D)``."""
        return self.python_model.predict(None, images, params={"output": "embedding"})

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.python_model.predict(None, images, params={"output": "logits"})

    def embed_with_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and category logits from one forward pass (the model must have a head)."""
        if not hasattr(self.python_model, "heads"):  # a version registered before heads()
            return self.embed(images), self.logits(images)
        heads = self.python_model.heads(images)
        return heads["embedding"], heads["logits"]


def load_champion(model_name: str, alias: str = CHAMPION) -> LoadedModel:
    """Resolve ``alias`` to a version first, then load exactly that version: loading by alias
    and asking for the version afterwards could race with a promotion in between."""
    client = MlflowClient()
    try:
        version = str(client.get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException as err:
        raise FileNotFoundError(
            f"no model '{model_name}@{alias}' in the MLflow registry "
            f"({mlflow.get_tracking_uri()}): run `shoplens register` first ({err.message})"
        ) from None
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    inner = pyfunc.unwrap_python_model()  # a ShoplensEmbedder: the models this repo logs
    log.info("loaded %s v%s (%s)", model_name, version, alias)
    return LoadedModel(model_name, version, inner)
