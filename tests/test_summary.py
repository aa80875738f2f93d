"""`shoplens summary` (what `make demo` prints last): baseline vs fine-tuned Recall@1, the
registry's decision and how to open MLflow, from report files shaped like the stages' own
(tests/test_pipeline_e2e.py checks it on the files a real `dvc repro` writes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from shoplens.cli import main
from shoplens.config import compose_config
from shoplens.pipeline.summary import summary_lines

METRICS = {  # evaluate: reports/metrics.json
    "baseline": {"recall@1": 0.25, "recall@5": 0.75},
    "finetuned": {"recall@1": 0.75, "recall@5": 1.0, "accuracy": 0.5},
    "shopper_photos": {
        "baseline_frame": {"all": {"category@1": 0.125, "product@1": 0.0}},
        "pipeline": {"all": {"category@1": 0.5, "product@1": 0.25}},
    },
}


def _registry(version: int, promoted: bool, champion: int, reason: str) -> dict:
    """reports/registry.json as shoplens.pipeline.register writes it."""
    return {
        "model_name": "shoplens-embedder",
        "version": version,
        "model_uri": f"models:/shoplens-embedder/{version}",
        "decision": "champion" if promoted else "challenger",
        "promoted": int(promoted),
        "reused_version": 0,
        "recall@1": 0.75,
        "margin": 0.005,
        "champion_version": champion,
        "previous_champion_version": None if version == champion else champion,
        "previous_champion_recall@1": None if version == champion else 0.8,
        "champion_remeasured": 0,
        "data_version": "dvc:abc.dir",
        "reason": reason,
    }


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project root holding a composed params.yaml and the reports of one pipeline run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    OmegaConf.save(compose_config(), tmp_path / "params.yaml")
    reports = tmp_path / "reports"
    (reports / "train").mkdir(parents=True)
    (reports / "metrics.json").write_text(json.dumps(METRICS))
    (reports / "train" / "metrics.json").write_text(
        json.dumps({"val_recall@1": 0.7, "val_recall@1_initial": 0.3, "epochs": 2})
    )
    reason = "no champion yet: v1 (test recall@1 0.7500) becomes champion"
    (reports / "registry.json").write_text(json.dumps(_registry(1, True, 1, reason)))
    return tmp_path


def test_summary_after_a_promotion(project, monkeypatch, capsys):
    monkeypatch.setenv("SHOPLENS_ROOT", str(project))
    assert main(["summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "evaluate    test Recall@1 baseline 0.250 -> fine-tuned 0.750" in lines
    photos = next(line for line in lines if "shopper photos" in line)
    assert "untuned whole photo 0.125 -> localize -> crop -> embed 0.500" in photos
    assert "(product@1 0.250)" in photos
    assert "train       val Recall@1 0.700 (untrained projection 0.300) after 2 epochs" in lines
    assert (
        "register    shoplens-embedder v1 is champion (promoted): "
        "no champion yet: v1 (test recall@1 0.7500) becomes champion"
    ) in lines
    assert f"MLflow UI   mlflow ui --backend-store-uri sqlite:///{project}/mlflow.db" in lines


def test_summary_when_the_gate_keeps_the_champion(project):
    reason = "v2 test recall@1 0.7500 vs champion v1 0.8000: -0.0500, not better"
    (project / "reports" / "registry.json").write_text(json.dumps(_registry(2, False, 1, reason)))
    lines = summary_lines(project)
    assert f"register    shoplens-embedder v2 is challenger (champion: v1): {reason}" in lines


def test_summary_names_the_configured_store_without_its_password(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://bot:s3cret@mlflow.example.com")
    lines = summary_lines(project)
    assert (
        lines[-1] == "MLflow UI   open https://bot:***@mlflow.example.com (MLflow tracking server)"
    )
    assert not any("s3cret" in line for line in lines)


def test_summary_before_any_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lines = summary_lines(tmp_path)
    assert "nothing yet: run `make demo` (or `dvc repro`)" in lines
    assert lines[-1] == f"MLflow UI   mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db"
