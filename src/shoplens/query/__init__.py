"""The query pipeline a registered model owns: validate -> localize -> crop -> embed.

One implementation for every photo path: ``shoplens search``, ``POST /search``, the index stage
and evaluate's shopper-photo benchmark all call :class:`QueryPipeline`, and the registered
MLflow model ships this package (``code_paths``) so it runs the same code without shoplens
installed. It therefore imports only numpy, Pillow, scipy, torch and
:mod:`shoplens.data.images` (import-linter keeps it that way).
"""

from shoplens.query.localize import Detection, detections_from_mask
from shoplens.query.pipeline import Embedded, QueryPipeline, QueryResult
from shoplens.query.spec import EmbedderSpec, LocalizerSpec, QuerySpec, UpscaleSpec

__all__ = [
    "Detection",
    "Embedded",
    "EmbedderSpec",
    "LocalizerSpec",
    "QueryPipeline",
    "QueryResult",
    "QuerySpec",
    "UpscaleSpec",
    "detections_from_mask",
]
