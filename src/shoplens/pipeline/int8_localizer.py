"""The served localizer in INT8, where it finds what the float graph finds.

Why: a localized search runs the localizer about twice (the first look, a closer look), and
that network costs about four times the embedder (``benchmarks/network_cost.py``), so it is
most of what localization adds to ``/search``. ONNX Runtime's static quantization of the
one-photo graph (:func:`~shoplens.registry.onnx_export.quantize_int8`; the photo and its
mirror image, a batch of two, with ``localizer.average_mirror``) runs it 1.8x faster on the
demo, shopper photos found as well, small photos 0.03 less often (README, "Shopper
photos").

Its activation ranges are measured on training scenes (train products pasted on train
backgrounds, as the localizer was trained), never on a benchmark photo; benchmark photos only
check the result: the INT8 graph is served only where its masks agree with the float graph's
(:func:`~shoplens.registry.onnx_export.mask_agreement`), else the float graph stays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from shoplens.data.backgrounds import TRAIN, read_pool
from shoplens.data.catalog import read_manifest
from shoplens.query import QueryPipeline
from shoplens.query.onnx_network import onnx_pipeline
from shoplens.query.pipeline import with_mirrors
from shoplens.registry.onnx_export import mask_agreement, quantize_int8
from shoplens.training.localizer_setup import scene_settings
from shoplens.training.scenes import Scenes, pasteable_rows

log = logging.getLogger(__name__)

# Measured on the demo's champion (README, "Shopper photos"): min-max ranges over 64 scenes
# lost 0.007 shopper category@1, percentiles (99.99) over 64 0.001 and over 256 none, for 12
# and 46 s of evaluate; small photos lost 0.03 with each.
CALIBRATION_SCENES = 64
CALIBRATION_PERCENTILE = 99.99
FLOAT_FILE = "localizer_float.onnx"  # the float graph, kept beside the served one


def calibration_scenes(cfg: DictConfig, pipeline: QueryPipeline, count: int) -> np.ndarray:
    """``count`` seeded training scenes, normalised as the localizer sees them."""
    loc = pipeline.spec.localizer
    scenes = Scenes(
        Path(cfg.paths.catalog_dir),
        pasteable_rows(read_manifest(cfg.paths.catalog_dir), "train"),
        read_pool(cfg.paths.backgrounds_dir, TRAIN),
        loc.input_size, scene_settings(cfg), loc.mean, loc.std, length=count, seed=int(cfg.seed),
    )  # fmt: skip
    return torch.stack([scenes[i][0] for i in range(count)]).numpy()


def serve_int8_localizer(
    cfg: DictConfig, exported: QueryPipeline, files: dict[str, Path], photos: list[bytes]
) -> tuple[dict, QueryPipeline]:
    """Quantize the exported localizer graph in place where ``query.localizer_int8`` asks
    for it. Returns (``{"localizer_int8": {"served", "mask_iou"}}``, or ``{}`` when not
    asked; the pipeline over the graphs now in ``files``)."""
    spec = exported.spec
    if not cfg.query.localizer_int8 or "localizer_onnx" not in files or spec.localizer is None:
        return {}, exported
    graph = files["localizer_onnx"]
    float_graph = graph.with_name(FLOAT_FILE)
    graph.replace(float_graph)
    calibration = calibration_scenes(cfg, exported, CALIBRATION_SCENES)
    try:
        # One photo a run, or the photo and its mirror (LocalizerSpec.average_mirror),
        # calibrated on what it will run: each scene beside its mirror image.
        pair = 2 if spec.localizer.average_mirror else 1
        if pair == 2:
            calibration = with_mirrors(torch.from_numpy(calibration)).numpy()
        quantize_int8(float_graph, graph, calibration, op_types=None, fixed_batch=pair,
                      percentile=CALIBRATION_PERCENTILE)  # fmt: skip
        candidate = onnx_pipeline(spec, files)
    except Exception as err:  # a graph ONNX Runtime cannot quantize: the float one serves
        log.warning("INT8 localizer: quantization failed (%s): the float graph is served", err)
        float_graph.replace(graph)
        reason = f"{type(err).__name__}: {err}"
        return {"localizer_int8": {"served": False, "reason": reason}}, exported
    iou = mask_agreement(exported, candidate, photos)
    served = iou >= float(cfg.query.int8_min_mask_iou)
    log.info("INT8 localizer: masks agree with the float graph's at IoU %.3f: %s", iou,
             "served" if served else "not served, the float graph is")  # fmt: skip
    if not served:  # the float graph back in place; ``exported`` already runs it
        float_graph.replace(graph)
        candidate = exported
    return {"localizer_int8": {"served": served, "mask_iou": round(iou, 4)}}, candidate
