"""``params.yaml`` composed from ``conf/`` exactly as ``dvc exp run`` composes it.

``dvc repro`` never composes (only ``dvc exp run`` does), so after ``conf/`` is edited by hand
``params.yaml`` must be recomposed: ``make params`` and ``scripts/retrain.sh`` both call this,
so there is one composition with DVC's own function and the project's plugin folder.

    python -m shoplens.config.params            # rewrite params.yaml if it is out of date
    python -m shoplens.config.params --check    # exit 3 if it is out of date, change nothing
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from shoplens.config.compose import CONFIG_NAME, config_dir, repo_root

STALE = 3  # exit status of --check when params.yaml differs from conf/


def compose_params(out: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Write ``conf/`` (plus Hydra ``overrides``) composed by DVC's ``compose_and_dump``."""
    from dvc.utils.hydra import compose_and_dump  # DVC is heavy: only when composing

    plugins = repo_root() / ".dvc" / "plugins"
    compose_and_dump(out, str(config_dir()), None, CONFIG_NAME, str(plugins), list(overrides))
    return Path(out)


def refresh(params: str | Path, write: bool = True) -> bool:
    """Whether ``params`` was out of date with ``conf/``; with ``write`` it is recomposed."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = compose_params(Path(tmp) / "params.yaml")
        if Path(params).is_file() and filecmp.cmp(fresh, params, shallow=False):
            return False
        if write:
            shutil.copyfile(fresh, params)
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help=f"exit {STALE} if out of date")
    parser.add_argument("--file", default=None, help="default: <repository root>/params.yaml")
    args = parser.parse_args(argv)
    params = Path(args.file) if args.file else repo_root() / "params.yaml"
    stale = refresh(params, write=not args.check)
    if args.check:
        return STALE if stale else 0
    print(f"{params}: {'recomposed from conf/' if stale else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
