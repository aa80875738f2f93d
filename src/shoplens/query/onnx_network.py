"""A network exported to ONNX, run by ONNX Runtime, with the call shape the query pipeline
expects of its networks (normalised float tensor in, tensors out).

Why: on the 2-core CPU machines this project serves from, ONNX Runtime runs the same
EfficientNet-Lite0 embedder 3.4x faster than eager PyTorch for one photo and the localizer 2x
(``benchmarks/runtimes.py``), with outputs equal to ~1e-5. The registered model carries both
forms; this is the default, torch is the switch (``query.runtime``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

INPUT = "images"  # the exported graphs' input name (shoplens.registry.onnx_export)


def session_options(threads: int = 0):
    """ONNX Runtime's options as shoplens serves: ``threads`` intra-op threads (0: every core;
    ``$SHOPLENS_ORT_THREADS`` wins), every graph optimisation, no spinning."""
    import onnxruntime as ort  # imported here: only the ONNX runtime needs it

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("SHOPLENS_ORT_THREADS", threads))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between runs: a search also decodes, resizes and crops with Pillow
    # and torch, and spinning ORT threads took those cores (measured: one photo through
    # the query pipeline 71 ms spinning, 26 ms not, torch 44 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxNetwork:
    """``(N, 3, S, S)`` float tensor -> a tuple of tensors (``single``: the one tensor).

    ``threads``: ONNX Runtime's intra-op threads; 0 lets it use every core (the default, as
    torch does). ``$SHOPLENS_ORT_THREADS`` overrides it for a process, e.g. one thread per
    worker when a server runs several.
    """

    def __init__(self, path: str | Path, single: bool = False, threads: int = 0):
        import onnxruntime as ort  # imported here: only the ONNX runtime needs it

        self.path, self.single = str(path), single
        self.session = ort.InferenceSession(
            self.path, session_options(threads), providers=["CPUExecutionProvider"]
        )
        # A graph whose batch is fixed (the INT8 localizer: 1, or 2 for a photo and its
        # mirror; registry/onnx_export.py), or None for a dynamic batch.
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None

    @property
    def one_photo(self) -> bool:
        """A fixed-batch graph made for ``/search``'s single photo (and its mirror)."""
        return self.fixed_batch is not None

    def __call__(self, images: torch.Tensor):
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        size = self.fixed_batch
        if size is not None and len(x) != size:  # run it batch by batch, the last padded
            runs = []
            for start in range(0, len(x), size):
                part = x[start : start + size]
                short = size - len(part)
                if short:
                    part = np.concatenate([part, np.repeat(part[-1:], short, axis=0)])
                runs.append([o[: size - short] for o in self.session.run(None, {INPUT: part})])
            outputs = [torch.from_numpy(np.concatenate(parts)) for parts in zip(*runs, strict=True)]
        else:
            outputs = [torch.from_numpy(o) for o in self.session.run(None, {INPUT: x})]
        return outputs[0] if self.single else tuple(outputs)


def onnx_pipeline(spec, files: dict):
    """The query pipeline over exported graphs: ``files`` maps ``embedder_onnx`` (and, for a
    spec with a localizer or a super-resolver, ``localizer_onnx`` / ``super_resolver_onnx``) to
    their paths. What evaluate checks and what the registered model runs are built here, once."""
    from shoplens.query.pipeline import QueryPipeline

    localizer = files.get("localizer_onnx") if spec.localizer is not None else None
    upscaler = files.get("super_resolver_onnx") if spec.upscale is not None else None
    return QueryPipeline(
        spec,
        OnnxNetwork(files["embedder_onnx"]),
        OnnxNetwork(localizer, single=True) if localizer else None,
        OnnxNetwork(upscaler, single=True) if upscaler else None,
    )
