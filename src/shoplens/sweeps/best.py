"""The winner of a sweep as overrides that ``python train.py`` and ``dvc exp run -S`` accept.

Every trial stores the overrides it ran with (user attribute ``shoplens.overrides``), so any
worker, at any time, can write the study's current best from the storage alone. Location
overrides (``paths.*``, ``tracking.*``, ``hydra.*``) and ``hparams_search`` are left out: they
say where a sweep ran, not what won, and the DVC pipeline has its own paths.

    python train.py $(python -m shoplens.sweeps.best)                  # re-train the winner
    dvc exp run $(python -m shoplens.sweeps.best --dvc)                # ... through the pipeline
    python -m shoplens.sweeps.best reports/sweep/best.yaml --dvc       # another file
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

OVERRIDES_ATTR = "shoplens.overrides"
LOCATION_KEYS = ("paths", "tracking", "hydra", "hparams_search")
DEFAULT_FILE = Path("reports") / "sweep" / "best.yaml"


def hyperparameters(overrides: list[str]) -> list[str]:
    """The overrides that define the model, without the ones that place the run."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0].split("/", 1)[0] not in LOCATION_KEYS:
            kept.append(override)
    return kept


def write_best(study: Any, path: str | Path, storage: str) -> Path | None:
    """Write the study's best COMPLETE trial to ``path`` (atomically); ``None`` if none yet."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    overrides = hyperparameters(list(best.user_attrs.get(OVERRIDES_ATTR, [])))
    document = {
        "study": study.study_name,
        "storage": storage,
        "trial": best.number,
        "value": best.value,
        "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        "params": dict(best.params),
        "overrides": overrides,
    }
    header = (
        f"# Best trial of Optuna study {study.study_name!r} (objective: val/recall_at_1).\n"
        "# python train.py $(python -m shoplens.sweeps.best)\n"
        "# dvc exp run $(python -m shoplens.sweeps.best --dvc)\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(header + yaml.safe_dump(document, sort_keys=False))
    os.replace(tmp, path)  # concurrent workers on one machine never leave a torn file
    return path


def read_overrides(path: str | Path = DEFAULT_FILE) -> list[str]:
    document = yaml.safe_load(Path(path).read_text())
    return list(document["overrides"])


def command_line(overrides: list[str], dvc: bool = False) -> str:
    """The overrides as shell words; with ``dvc`` each preceded by ``-S``."""
    words = [w for o in overrides for w in (("-S", o) if dvc else (o,))]
    return shlex.join(words)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the best trial's overrides.")
    parser.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
    parser.add_argument("--dvc", action="store_true", help="as `dvc exp run -S ...` options")
    args = parser.parse_args(argv)
    print(command_line(read_overrides(args.file), dvc=args.dvc))


if __name__ == "__main__":
    main()
