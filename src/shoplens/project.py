"""Where the project is: the checkout holding ``conf/`` (the Hydra tree), ``mlflow.db`` and
``dvc.lock``. Kept apart from :mod:`shoplens.config` so tracking and provenance can find the
root without importing the whole configuration schema (and every stage's settings with it)."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_NAME = "config"


def repo_root() -> Path:
    """The project root: $SHOPLENS_ROOT, else the nearest folder above cwd holding conf/."""
    if env := os.environ.get("SHOPLENS_ROOT"):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "conf" / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    # An editable install: src/shoplens/project.py -> the project root two levels up.
    return Path(__file__).resolve().parents[2]
