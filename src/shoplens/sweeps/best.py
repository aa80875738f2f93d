"""The winner of a sweep as overrides (each trial stores its own) without the location ones
(``paths``, ``tracking``, ``hydra``, ``hparams_search``): where a sweep ran is not what won.
``python train.py $(python -m shoplens.sweeps.best)``, ``dvc exp run $(... --dvc)``.
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


def hyperparameters(overrides: list[str]) -> list[str]:
    """The overrides that define the model, without the ones that place the run."""
    keys = [o.split("=", 1)[0].lstrip("+~").split(".", 1)[0].split("/", 1)[0] for o in overrides]
    return [o for o, key in zip(overrides, keys, strict=True) if key not in LOCATION_KEYS]


def write_best(study: Any, path: str | Path, storage: str) -> Path | None:
    """Write the study's best COMPLETE trial to ``path`` (atomically); ``None`` if none yet."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    doc = {"study": study.study_name, "storage": storage, "trial": best.number, "value": best.value}
    doc |= {"mlflow_run_id": best.user_attrs.get("mlflow_run_id"), "params": best.params}
    doc["overrides"] = hyperparameters(best.user_attrs.get(OVERRIDES_ATTR, []))
    header = f"# Best trial of Optuna study {study.study_name!r}: python -m shoplens.sweeps.best\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)  # concurrent workers on one machine never leave a torn file
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the best trial's overrides.")
    parser.add_argument("file", nargs="?", default="reports/sweep/best.yaml")
    parser.add_argument("--dvc", action="store_true", help="as `dvc exp run -S ...` options")
    args = parser.parse_args(argv)
    overrides = yaml.safe_load(Path(args.file).read_text())["overrides"]
    print(shlex.join([w for o in overrides for w in (("-S", o) if args.dvc else (o,))]))


if __name__ == "__main__":
    main()
