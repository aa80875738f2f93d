"""The ``shoplens`` command: every pipeline stage as a sub-command taking Hydra overrides.

    shoplens preprocess data=folder data.root=/path/to/images
    shoplens train loss=arcface optimizer.lr=3e-4
    shoplens preprocess --params params.yaml     # what `dvc repro` runs

Stages are imported lazily so that ``shoplens --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

from shoplens.config import ConfigError, load_config

# sub-command -> (module with `run(cfg) -> dict`, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "preprocess": (
        "shoplens.pipeline.preprocess",
        "validate, de-duplicate, split and cache images",
    ),
    "backgrounds": (
        "shoplens.pipeline.backgrounds",
        "build the pool of real background photographs, split train / eval by photograph",
    ),
    "shopper_photos": (
        "shoplens.pipeline.shopper_photos",
        "photograph test products onto evaluation backgrounds: the photo benchmark",
    ),
    "train": ("shoplens.pipeline.train", "fine-tune the backbone (tracked in MLflow)"),
    "train_localizer": (
        "shoplens.pipeline.train_localizer",
        "train the product localizer on copy-paste scenes (tracked in MLflow)",
    ),
    "train_super_resolution": (
        "shoplens.pipeline.train_super_resolution",
        "train the super-resolver of small product crops (tracked in MLflow)",
    ),
    "evaluate": (
        "shoplens.pipeline.evaluate",
        "test-split retrieval: fine-tuned vs untuned backbone, metrics and plots",
    ),
    "register": (
        "shoplens.pipeline.register",
        "register the embedder in MLflow; promote it to champion if it beats the current one",
    ),
    "index": ("shoplens.pipeline.index", "embed the catalog with the champion into a search index"),
    "monitor": (
        "shoplens.pipeline.monitor",
        "drift of logged searches against the benchmark and the previous window: report, flag",
    ),
}
# Commands that take their own arguments besides --params and overrides.
SERVICE = {
    "search": "print the catalog products that look most like a photo",
    "serve": "run the search service (HTTP API, web page at /, OpenAPI at /docs)",
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoplens", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {name: help_text for name, (_, help_text) in STAGES.items()} | SERVICE
    for name, help_text in commands.items():
        stage = sub.add_parser(name, help=help_text, description=help_text)
        if name == "search":
            stage.add_argument("photo", help="image file to search with")
            stage.add_argument("--k", type=int, default=None, help="products (search.k_default)")
            stage.add_argument("--category", default=None, help="only this category")
            stage.add_argument("--json", action="store_true", help="machine-readable output")
            stage.add_argument(
                "--all-products",
                action="store_true",
                help="results for every product found in the photo (shop the look)",
            )
        stage.add_argument(
            "--params",
            metavar="FILE",
            help="read a DVC-composed params.yaml instead of composing conf/ (what dvc repro uses)",
        )
        stage.add_argument("--print-config", action="store_true", help="print config and exit")
        stage.add_argument("overrides", nargs="*", help="Hydra overrides: group=option, a.b=value")
    sub.add_parser("summary", help="print what the last pipeline run produced")
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a problem with the user's input, not a bug: shown without a
    traceback (``-v`` logs it)."""
    from shoplens.data.catalog import CatalogError
    from shoplens.data.images import InvalidImageError
    from shoplens.models.backbone import PretrainedWeightsError
    from shoplens.monitoring.dispatch import DispatchError
    from shoplens.search import IndexModelMismatch
    from shoplens.serving.auth import UnsafeServing

    return (
        ConfigError,
        CatalogError,
        InvalidImageError,
        PretrainedWeightsError,
        FileNotFoundError,
        IndexModelMismatch,
        UnsafeServing,
        DispatchError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    # `search PHOTO --k 3 a=b`: argparse hands overrides after an option back as extras.
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "search" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "summary":
        from shoplens.pipeline.summary import print_summary

        return print_summary()
    try:
        cfg = load_config(args.overrides, params=args.params)
    except ConfigError as err:
        print(f"shoplens {args.command}: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return 0
    try:
        if args.command in SERVICE:
            from shoplens.serving import commands

            if args.command == "serve":
                return commands.serve(cfg)
            return commands.search(
                cfg, args.photo, args.k, args.category, args.json, args.all_products
            )
        result = importlib.import_module(STAGES[args.command][0]).run(cfg)
    except _user_errors() as err:
        # Input problems (bad catalog, missing data) are the user's to fix: no traceback.
        logging.getLogger("shoplens").debug("stage failed", exc_info=True)
        print(f"shoplens {args.command}: {err}", file=sys.stderr)
        return 1
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
