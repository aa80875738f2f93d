"""dvc.yaml's code deps cover every module each stage imports, so no code edit can leave a
stage stale: the stage's import graph (grimp, import-linter's graph) against its deps."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The training pipeline and the optional monitor stage (monitor/dvc.yaml, run from the root).
STAGES = {
    **yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"],
    **yaml.safe_load((ROOT / "monitor" / "dvc.yaml").read_text())["stages"],
}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("shoplens")


def _file(module: str) -> Path:
    path = ROOT / "src" / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_its_imports(graph, stage):
    command = STAGES[stage]["cmd"].split()
    assert command[:2] == ["shoplens", stage], "each stage runs `shoplens <stage>`"
    module = f"shoplens.pipeline.{stage}"
    deps = [ROOT / d for d in STAGES[stage]["deps"] if d.startswith("src/")]
    for dep in deps:
        assert dep.exists(), f"{stage}: dep {dep.relative_to(ROOT)} does not exist"
    needed = {_file(m) for m in graph.find_upstream_modules(module) | {module}}
    missing = sorted(
        str(f.relative_to(ROOT)) for f in needed if not any(f == d or d in f.parents for d in deps)
    )
    assert not missing, f"stage {stage} imports code its deps lack: {missing}"
