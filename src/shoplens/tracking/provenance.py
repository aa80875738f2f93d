"""What a run was made from: the code version and the data version."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from shoplens.data.catalog import MANIFEST_FILE
from shoplens.project import repo_root


def git_commit() -> str:
    """HEAD's hash, suffixed ``-dirty`` when tracked files have uncommitted changes."""
    try:
        root = repo_root()
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def data_version(catalog_dir: str | Path) -> str:
    """The hash DVC recorded for the preprocess outputs (``dvc.lock``); outside DVC, the md5
    of the manifest, marked ``unversioned`` so nobody mistakes it for a DVC version."""
    catalog_dir = Path(catalog_dir)
    lock = repo_root() / "dvc.lock"
    if lock.is_file():
        stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("preprocess", {})
        for out in stage.get("outs", []):
            if Path(out["path"]) == catalog_dir or (repo_root() / out["path"]) == catalog_dir:
                return f"dvc:{out['md5']}"
    manifest = catalog_dir / MANIFEST_FILE
    if manifest.is_file():
        return f"unversioned:{hashlib.md5(manifest.read_bytes()).hexdigest()}"
    return "unknown"
