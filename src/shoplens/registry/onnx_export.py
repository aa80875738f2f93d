"""The query pipeline's networks as ONNX graphs, checked against the torch networks they came
from before anything measures or ships them.

``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False``): the dynamo
exporter needs ``onnxscript`` and gave nothing more for these convolutional networks; the
legacy one exports EfficientNet-Lite and the segmentation decoder with a dynamic batch and
outputs within 1e-5 of torch. An export that fails, or whose outputs disagree with torch on
real images by more than ``tolerance``, is an :class:`OnnxExportError`: evaluate then measures
torch and records why, and register does not promote the version.

INT8 (:func:`quantize_int8`): ONNX Runtime's static quantization. For the embedder (convolutions
only, calibrated on catalog photos; quantizing its head and L2 normalisation as well left the
embeddings at cosine 0.3 to the float ones) a measured option, not served:
``benchmarks/runtimes.py`` says what it costs. For the localizer the served default
(``query.localizer_int8``): a one-photo graph (or photo and mirror), every operator,
calibrated on training scenes, shipped only where its masks agree with the float graph's
(:func:`mask_agreement`).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shoplens.models import Embedder
from shoplens.models.localizer import Localizer
from shoplens.models.super_resolution import SuperResolver
from shoplens.query import QueryPipeline
from shoplens.query.onnx_network import INPUT, onnx_pipeline

OPSET = 17
FILES = {  # artifact -> file
    "embedder_onnx": "embedder.onnx",
    "localizer_onnx": "localizer.onnx",
    "super_resolver_onnx": "super_resolver.onnx",
}


class OnnxExportError(RuntimeError):
    """The network cannot be exported, or its ONNX graph computes something else."""


def export_onnx(
    model: nn.Module, side: int, path: Path, outputs: Sequence[str], spatial: bool = False
) -> Path:
    """Export with a dynamic batch axis (and height and width when ``spatial``); ``outputs``
    names the graph's outputs in order."""
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    axes = {name: {0: "batch"} for name in (INPUT, *outputs)}
    if spatial:
        axes[INPUT] |= {2: "height", 3: "width"}
        axes |= {name: {0: "batch", 2: "out_height", 3: "out_width"} for name in outputs}
    try:
        with warnings.catch_warnings():
            # Tracing notes about shape checks the graph keeps as constants (GroupNorm's batch
            # check) and the exporter's deprecation notice: the comparison with torch counts.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (torch.zeros(2, 3, side, side),), str(path), input_names=[INPUT],
                output_names=list(outputs), dynamic_axes=axes, opset_version=OPSET,
                dynamo=False,
            )  # fmt: skip
    except Exception as err:  # any exporter failure is a reason not to ship, said as such
        raise OnnxExportError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    return path


class EmbedderHeads(nn.Module):
    """Embedder -> (embedding, logits), or (embedding,) without a category head: the graph
    both exports (torch.export and ONNX) trace."""

    def __init__(self, embedder: Embedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding, logits = self.embedder.forward_with_logits(images)
        return (embedding,) if logits is None else (embedding, logits)


def export_pipeline(
    pipeline: QueryPipeline,
    embedder: Embedder,
    localizer: Localizer | None,
    out_dir: Path,
    super_resolver: SuperResolver | None = None,
) -> tuple[QueryPipeline, dict[str, Path]]:
    """The same query pipeline over ONNX exports of its networks (:data:`FILES`, in
    ``out_dir``); returns it and the files by artifact name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = pipeline.spec
    outputs = ["embedding", "logits"] if spec.embedder.num_classes else ["embedding"]
    files = {"embedder_onnx": out_dir / FILES["embedder_onnx"]}
    export_onnx(EmbedderHeads(embedder), spec.embedder.image_size, files["embedder_onnx"], outputs)
    if localizer is not None and spec.localizer is not None:
        files["localizer_onnx"] = out_dir / FILES["localizer_onnx"]
        export_onnx(localizer, spec.localizer.input_size, files["localizer_onnx"], ["mask"])
    if super_resolver is not None and spec.upscale is not None:
        files["super_resolver_onnx"] = out_dir / FILES["super_resolver_onnx"]
        export_onnx(super_resolver, spec.upscale.below, files["super_resolver_onnx"],
                    ["upscaled"], spatial=True)  # fmt: skip
    try:
        return onnx_pipeline(spec, files), files
    except Exception as err:  # ONNX Runtime refusing the graph is a failed export too
        raise OnnxExportError(f"ONNX Runtime cannot load the export: {err}") from err


def disagreement(
    reference: QueryPipeline, candidate: QueryPipeline, squares: np.ndarray, photos
) -> dict[str, float]:
    """Largest absolute differences between two pipelines' outputs on real inputs: catalog
    squares (embeddings, logits), photos (the localizer's product probabilities) and the
    squares shrunk below the super-resolver's threshold (its output pixels)."""
    a, b = reference.embed_squares(squares), candidate.embed_squares(squares)
    result = {"embedding": float(np.abs(a.embeddings - b.embeddings).max())}
    if a.logits is not None and b.logits is not None:
        result["logits"] = float(np.abs(a.logits - b.logits).max())
    if reference.can_localize and candidate.can_localize and len(photos):
        images = [reference.validate(p) for p in photos]
        masks = zip(reference.product_masks(images), candidate.product_masks(images), strict=True)
        result["mask"] = max(float(np.abs(x - y).max()) for x, y in masks)
    up = reference.spec.upscale
    if up is not None and reference.super_resolver and candidate.super_resolver:
        x = torch.from_numpy(np.ascontiguousarray(squares[:8])).permute(0, 3, 1, 2).float() / 255
        small = F.interpolate(x, size=(up.below - 1, up.below // 2), mode="area")  # not square
        with torch.inference_mode():
            a_up, b_up = reference.super_resolver(small), candidate.super_resolver(small)
        result["upscaled"] = float((a_up - b_up).abs().max())
    return result


def check(differences: dict[str, float], tolerance: float) -> None:
    """Raise :class:`OnnxExportError` naming every output that differs by more than
    ``tolerance`` (NaN included)."""
    bad = {k: v for k, v in differences.items() if not v <= tolerance}
    if bad:
        listed = ", ".join(f"{k} by {v:.3g}" for k, v in bad.items())
        raise OnnxExportError(
            f"the ONNX graphs disagree with torch on real images: {listed} "
            f"(tolerance {tolerance:g})"
        )


def quantize_int8(
    source: Path,
    target: Path,
    calibration: np.ndarray,
    batch: int = 32,
    op_types: Sequence[str] | None = ("Conv",),
    fixed_batch: int | None = None,
    percentile: float | None = None,
) -> Path:
    """Static INT8 (QDQ, per-channel weights) of ``op_types`` (None: every operator ONNX
    Runtime quantizes), activations calibrated on ``calibration`` (normalised images,
    ``(N, 3, S, S)``): their min-max range, or the ``percentile`` of their values (outliers
    clipped). ``fixed_batch``: the graph's batch fixed at that size (what ``/search`` runs: 1,
    or 2 for a photo and its mirror; :class:`~shoplens.query.onnx_network.OnnxNetwork` runs
    a larger batch in parts of that size)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batch = fixed_batch or batch
    # A fixed-batch graph takes only whole batches: a remainder is left out of calibration.
    stop = len(calibration) - len(calibration) % batch if fixed_batch else len(calibration)
    if stop == 0:
        raise ValueError(f"{len(calibration)} calibration images for a batch of {batch}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                {INPUT: np.ascontiguousarray(calibration[i : i + batch], dtype=np.float32)}
                for i in range(0, stop, batch)
            )

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        if fixed_batch:
            fold_shapes(source, prepared, fixed_batch)
        else:
            # Symbolic shape inference gives up on the localizer's upsampling; ONNX's own
            # shape inference and the graph optimisation are what quantization needs.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=None if op_types is None else list(op_types), per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax if percentile is None
            else CalibrationMethod.Percentile,
            extra_options={} if percentile is None else {"CalibPercentile": percentile},
        )  # fmt: skip
    return target


def fold_shapes(source: Path, target: Path, batch: int = 1) -> Path:
    """The graph with its batch fixed at ``batch`` and the shape arithmetic folded into
    constants.

    Why: TF-style "same" padding (EfficientNet-Lite) and the decoder's upsampling compute
    their sizes from the input's shape at run time; with a symbolic batch ONNX Runtime cannot
    fold them, and quantization then wraps that arithmetic too (the localizer's graph: 704
    nodes, 162 once folded, and a float run 15% faster already)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(source))
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = batch
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "fixed.onnx"
        onnx.save(model, str(fixed))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)  # ONNX Runtime writes the folded graph
        ort.InferenceSession(str(fixed), options, providers=["CPUExecutionProvider"])
    return target


def mask_agreement(reference: QueryPipeline, candidate: QueryPipeline, photos) -> float:
    """Mean IoU, photo by photo, of the two pipelines' product masks (probability at least the
    spec's threshold) on ``photos``: how nearly a quantized localizer finds what the float one
    does (1.0: the same pixels; an empty pair counts as agreeing)."""
    from torchmetrics.functional.classification import binary_jaccard_index

    threshold = reference.spec.localizer.threshold
    images = [reference.validate(p) for p in photos]
    ious = [
        float(
            binary_jaccard_index(
                torch.from_numpy(a >= threshold).int(),
                torch.from_numpy(b >= threshold).int(),
                zero_division=1.0,
            )
        )  # fmt: skip
        for a, b in zip(
            reference.product_masks(images), candidate.product_masks(images), strict=True
        )
    ]
    return float(np.mean(ious))
