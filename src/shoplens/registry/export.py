"""Package the query pipeline (embedder, localizer, super-resolver, their spec) as one MLflow
pyfunc model.

The networks are saved as ``torch.export`` programs (graph and weights of exactly the model
that was evaluated; TorchScript is deprecated), the spec as JSON, and the ``shoplens`` sources
travel as ``code_paths`` so :mod:`shoplens.registry.query_model` runs the same pipeline code
wherever the model is loaded (see its docstring for inputs and outputs).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime
import pandas as pd
import PIL
import scipy
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from torch import nn

import shoplens
from shoplens.data.dedup import content_hash
from shoplens.models import Embedder
from shoplens.models.localizer import Localizer
from shoplens.models.super_resolution import SuperResolver
from shoplens.query import QuerySpec
from shoplens.registry.onnx_export import EmbedderHeads

MODEL_CODE = Path(__file__).with_name("query_model.py")
PACKAGE_DIR = Path(shoplens.__file__).parent  # shipped as code_paths


def query_code_sha256() -> str:
    """sha256 of the code a registered query model runs (``shoplens.query`` and the pyfunc
    wrapper): part of a version's identity, because the same networks and spec through
    changed pipeline code (e.g. another second look) answer differently, and a version's
    metric tags must describe the code it ships. Evaluate records it, register checks it.
    Every byte counts, comments too: a wasted version at worst, never stale code."""
    files = sorted((PACKAGE_DIR / "query").rglob("*.py")) + [MODEL_CODE]
    return content_hash(
        b"".join(
            path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0"
            for path in files
        )
    )


def export_program(model: nn.Module, side: int, path: Path, spatial: bool = False) -> Path:
    """``torch.export`` with a dynamic batch (and height and width when ``spatial``: the
    super-resolver takes crops of any size). A copy in eval mode with standard-layout weights:
    channels_last parameters export fine but make torch.export.load warn about incomplete
    tensors (inputs still go channels_last inside the graph when the model does that)."""
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, side, side)
    dims = {0: torch.export.Dim("batch")}
    if spatial:
        dims |= {2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)}
    program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
    torch.export.save(program, path)
    return path


def export_artifacts(
    embedder: Embedder,
    localizer: Localizer | None,
    super_resolver: SuperResolver | None,
    spec: QuerySpec,
    categories: Sequence[str],
    out_dir: Path,
    extra: dict[str, Path] | None = None,
) -> dict[str, str]:
    """Write the pyfunc model's artifacts into ``out_dir``; returns MLflow's artifacts dict.
    ``extra``: files shipped as they are, by artifact name: ``calibration`` (evaluate's
    no-match calibration photos as query embeddings, :mod:`shoplens.evaluation.no_match`)
    and ``embedder_onnx`` / ``localizer_onnx`` (the graphs evaluate checked against torch)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = {
        "embedder": export_program(
            EmbedderHeads(embedder), spec.embedder.image_size, out_dir / "embedder.pt2"
        ),
        "spec": out_dir / "spec.json",
        "categories": out_dir / "categories.json",
    }
    if localizer is not None and spec.localizer is not None:
        artifacts["localizer"] = export_program(
            localizer, spec.localizer.input_size, out_dir / "localizer.pt2"
        )
    if super_resolver is not None and spec.upscale is not None:
        artifacts["super_resolver"] = export_program(
            super_resolver, spec.upscale.below, out_dir / "super_resolver.pt2", spatial=True
        )
    artifacts.update(extra or {})
    (out_dir / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    (out_dir / "categories.json").write_text(json.dumps(list(categories), indent=2) + "\n")
    return {name: str(path) for name, path in artifacts.items()}


def signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        params=ParamSchema(
            [ParamSpec("output", "string", "embedding"), ParamSpec("localize", "boolean", True)]
        ),
    )


def _requirements() -> list[str]:
    versions = {
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pillow": PIL.__version__,
        "scipy": scipy.__version__,
        "mlflow": mlflow.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return [f"{name}=={version}" for name, version in versions.items()]


def log_query_model(
    embedder: Embedder,
    localizer: Localizer | None,
    super_resolver: SuperResolver | None,
    spec: QuerySpec,
    categories: Sequence[str],
    input_example: bytes,
    workdir: Path,
    name: str = "query_pipeline",
    extra: dict[str, Path] | None = None,
) -> ModelInfo:
    """Log the pyfunc model to the active run; returns its ModelInfo (``model_uri``)."""
    artifacts = export_artifacts(
        embedder, localizer, super_resolver, spec, categories, workdir, extra
    )
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        code_paths=[str(PACKAGE_DIR)],
        signature=signature(),
        # The default runtime; load_model(..., model_config={"runtime": "torch"}) overrides it
        # (MLflow lets a load override only keys the logged model_config has).
        model_config={"runtime": "onnx" if "embedder_onnx" in artifacts else "torch"},
        input_example=pd.DataFrame({"image": [input_example]}),
        # Explicit: inferring them would load the model in a subprocess (slow) to watch imports.
        pip_requirements=_requirements(),
        metadata={
            "image_size": int(spec.embedder.image_size),
            "embedding_dim": int(spec.embedder.embedding_dim),
            "num_classes": int(spec.embedder.num_classes),
            "localizer": spec.localizer is not None,
            "super_resolver": spec.upscale is not None,
        },
    )
