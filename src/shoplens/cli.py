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
    "train": ("shoplens.pipeline.train", "fine-tune the backbone (tracked in MLflow)"),
    "evaluate": (
        "shoplens.pipeline.evaluate",
        "test-split retrieval: fine-tuned vs untuned backbone, metrics and plots",
    ),
    "register": (
        "shoplens.pipeline.register",
        "register the embedder in MLflow; promote it to champion if it beats the current one",
    ),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoplens", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in STAGES.items():
        stage = sub.add_parser(name, help=help_text, description=help_text)
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

    return ConfigError, CatalogError, InvalidImageError, PretrainedWeightsError, FileNotFoundError


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
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
    module = importlib.import_module(STAGES[args.command][0])
    try:
        result = module.run(cfg)
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
