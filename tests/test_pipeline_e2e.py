"""End to end through DVC: the repository's own dvc.yaml, conf/ and DVC settings in a fresh
git + DVC repository, run by `dvc repro` on a tiny generated catalog with a tiny model.

The first run goes through every stage down to the index and promotes the first model to
champion; a second run with nothing changed re-runs nothing; new catalog photos re-run every
stage that depends on the catalog and the promotion gate decides again. ``src`` in the repository is a symlink to this
checkout's ``src``: DVC hashes the stages' code dependencies through it, so dvc.yaml runs as
written. params.yaml is composed from conf/ with overrides, as `dvc exp run -S ...` does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump
from helpers import folder_catalog, pattern, save
from mlflow import MlflowClient

from shoplens.data.catalog import CACHE_FILE, MANIFEST_FILE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = (
    "preprocess", "backgrounds", "shopper_photos", "train", "train_localizer",
    "train_super_resolution", "evaluate", "register", "index",
)  # fmt: skip
MODEL = "shoplens-embedder"
CATEGORIES = {"red": 16, "green": 16, "blue": 16, "gold": 16}


class Repo:
    """The temporary pipeline repository and how to run commands in it."""

    def __init__(self, path: Path, images: Path):
        self.path, self.images = path, images
        self.first_run = ""  # output of the first `dvc repro`
        self.tracking_uri = f"sqlite:///{path / 'mlflow.db'}"
        env = {k: v for k, v in os.environ.items() if k not in ("SHOPLENS_ROOT",)}
        env.pop("MLFLOW_TRACKING_URI", None)
        # The stages call `shoplens`; the stage processes find conf/ from their cwd, the repo.
        self.env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}

    def run(self, *cmd: str, timeout: float = 240) -> str:
        """Run ``cmd`` in the repository; fail with its output if it fails. Its own process
        group, so that a time-out also ends the stage processes DVC started."""
        proc = subprocess.Popen(
            cmd,
            cwd=self.path,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0] + f"\n[killed: still running after {timeout}s]"
        except BaseException:  # pytest-timeout, Ctrl-C: leave no training process behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        with open(self.path.parent / "commands.log", "a") as log:  # pytest keeps its tmp dirs
            log.write(f"$ {' '.join(cmd)}\n{out}\n")
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}"
        return out

    def dvc(self, *args: str) -> str:
        return self.run(str(BIN / "dvc"), *args)

    def locked_md5(self, stage: str, path: str) -> str:
        outs = yaml.safe_load((self.path / "dvc.lock").read_text())["stages"][stage]["outs"]
        return next(out["md5"] for out in outs if out["path"] == path)

    def report(self, name: str) -> dict:
        return json.loads((self.path / "reports" / name).read_text())


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, overrides) -> Repo:
    tmp = tmp_path_factory.mktemp("e2e")
    folder_catalog(tmp / "images", CATEGORIES)
    repo = Repo(tmp / "repo", tmp / "images")
    repo.path.mkdir()
    repo.run("git", "init", "-q")
    repo.dvc("init", "-q")
    # The pipeline definition as the project has it: stages, config tree, DVC's Hydra settings
    # and what DVC ignores; the code the stages depend on through a symlink.
    shutil.copy(ROOT / "dvc.yaml", repo.path / "dvc.yaml")
    shutil.copy(ROOT / ".dvcignore", repo.path / ".dvcignore")
    shutil.copy(ROOT / ".dvc" / "config", repo.path / ".dvc" / "config")
    shutil.copytree(ROOT / "conf", repo.path / "conf")
    (repo.path / "src").symlink_to(ROOT / "src", target_is_directory=True)

    # The tiny data and model of tests/conftest.py; outputs in the default paths inside the
    # repository (its paths.* dropped), the photos outside it in data.root, as a shop's are.
    tiny = [o for o in overrides(tmp) if not o.startswith(("paths.", "tracking.uri="))]
    tiny += [
        f"tracking.uri={repo.tracking_uri}",
        "trainer.max_epochs=2",
        "callbacks.early_stopping=null",
        "tracking.log_checkpoint=false",
    ]
    compose_and_dump(
        repo.path / "params.yaml", str(repo.path / "conf"), None, "config", str(repo.path), tiny
    )
    repo.first_run = repo.dvc("repro")
    return repo


def test_first_repro_runs_every_stage_and_promotes(repo):
    assert ran(repo.first_run) == list(STAGES), repo.first_run[-4000:]
    catalog = repo.path / "data" / "catalog"
    assert (catalog / MANIFEST_FILE).is_file() and (catalog / CACHE_FILE).is_file()
    assert (repo.path / "artifacts" / "train" / "best.ckpt").is_file()
    assert (repo.path / "artifacts" / "localizer" / "best.ckpt").is_file()

    metrics = repo.report("metrics.json")
    assert set(metrics) >= {"baseline", "finetuned"}
    assert all(0.0 <= metrics[m]["recall@1"] <= 1.0 for m in ("baseline", "finetuned"))
    registry = repo.report("registry.json")
    assert registry["decision"] == "champion" and registry["promoted"] == 1
    assert registry["version"] == registry["champion_version"] == 1
    assert registry["recall@1"] == metrics["finetuned"]["recall@1"]
    # The stages found the project from their cwd (conf/ there): the data version is the one
    # DVC locked in this repository, not the checkout's.
    assert registry["data_version"] == f"dvc:{repo.locked_md5('preprocess', 'data/catalog')}"

    shown = json.loads(repo.dvc("metrics", "show", "--json"))[""]["data"]
    assert shown["reports/metrics.json"]["data"] == metrics
    assert shown["reports/registry.json"]["data"]["decision"] == "champion"
    assert shown["reports/train/metrics.json"]["data"]["epochs"] >= 1

    client = MlflowClient(tracking_uri=repo.tracking_uri)
    assert int(client.get_model_version_by_alias(MODEL, "champion").version) == 1
    assert registry["localizer_version"] == 1 and registry["localizer_decision"] == "champion"
    # The super-resolver has its own registered model and gate, whatever it scored.
    sr = repo.report("super_resolution/metrics.json")
    assert registry["super_resolver_version"] == 1
    assert registry["super_resolver_in_pipeline"] == int(sr["psnr_gain_db"] >= 1.0)
    assert "pipeline" in metrics["shopper_photos"]  # the registered pipeline localizes

    # The index holds the whole catalog, embedded by the champion it records.
    indexed = repo.report("index.json")
    assert indexed["model_version"] == "1" and indexed["images"] == sum(CATEGORIES.values())
    out = repo.run(str(BIN / "shoplens"), "search", str(repo.images / "red" / "red-0.png"),
                   "--k", "1", "--json", "--params", "params.yaml")  # fmt: skip
    found = json.loads(out[out.index("\n{\n") :])  # after the log lines (stderr is merged)
    assert found["results"][0]["product_id"].endswith("red-0"), found

    # What `make demo` prints last, from the files the stages wrote.
    summary = repo.run(str(BIN / "shoplens"), "summary")
    base, tuned = metrics["baseline"]["recall@1"], metrics["finetuned"]["recall@1"]
    assert f"test Recall@1 baseline {base:.3f} -> fine-tuned {tuned:.3f}" in summary
    assert f"{MODEL} v1 is champion (promoted)" in summary
    assert f"mlflow ui --backend-store-uri {repo.tracking_uri}" in summary


def test_nothing_changed_nothing_runs(repo):
    out = repo.dvc("repro")
    assert "Data and pipelines are up to date." in out and not ran(out), out
    # Python writes bytecode beside the code the stages depend on: DVC must not count it, or
    # any import (a test run) would make `dvc repro` retrain.
    repo.dvc("check-ignore", "-q", "src/shoplens/models/__pycache__/embedder.cpython-311.pyc")


def test_new_photos_rerun_the_pipeline_and_the_gate(repo):
    """Runs last: it changes the catalog."""
    before = repo.report("registry.json")
    for c, category in enumerate(CATEGORIES):
        for i in range(4):
            save(pattern(70_000 + 100 * c + i), repo.images / category / f"{category}-new-{i}.png")
    out = repo.dvc("repro")
    assert ran(out) == [s for s in STAGES if s != "backgrounds"], out[-4000:]

    summary = repo.report("preprocess/summary.json")
    assert summary["images_kept"] == sum(CATEGORIES.values()) + 4 * len(CATEGORIES)
    after = repo.report("registry.json")
    assert after["data_version"] != before["data_version"]
    assert after["version"] == 2 and after["previous_champion_version"] == 1
    assert after["decision"] in ("champion", "challenger")
    assert after["promoted"] == int(after["decision"] == "champion")
    client = MlflowClient(tracking_uri=repo.tracking_uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert int(champion.version) == after["champion_version"]
    assert int(client.get_model_version_by_alias(MODEL, after["decision"]).version) == 2
