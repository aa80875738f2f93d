#!/usr/bin/env bash
# Retrain shoplens through the DVC pipeline and report what happened; what the GitHub workflow
# .github/workflows/retrain.yml runs, and usable the same way on a laptop:
#
#   scripts/retrain.sh                                        # dvc repro (conf/ as committed)
#   scripts/retrain.sh -S loss=arcface -S optimizer.lr=3e-4   # dvc exp run -S ... (an experiment)
#   scripts/retrain.sh --dry-run -S loss=arcface              # print the commands, run nothing
#
# Steps: pull the DVC-tracked data and outputs from the default remote, run the pipeline
# (preprocess -> train -> evaluate -> register: the register stage's promotion gate decides
# whether alias `champion` moves), push what it produced back to the remote, then write a
# markdown summary: `dvc metrics diff --md`, the registry decision (reports/registry.json) and
# the key plots. The summary goes to $GITHUB_STEP_SUMMARY when set, else to stdout; it is always
# kept as <reports_dir>/retrain_summary.md (the workflow posts it as a commit comment with CML).
#
# The DVC remote: the repository's default (.dvc/config: `local`, a folder beside the
# checkout), or $DVC_REMOTE_URL when set (e.g. s3://bucket/shoplens, with AWS_* credentials;
# added as remote `env` in .dvc/config.local, which git ignores). On a CI runner a local folder
# is thrown away with the runner: the script says so in the summary.
#
# Exit status: that of the pipeline. A model that does not beat the champion is a successful
# retrain (exit 0: the gate kept the champion and registered the model as `challenger`).
#
# Credentials come from the environment only: MLFLOW_TRACKING_URI (else sqlite mlflow.db at the
# repository root), MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, and the DVC remote's
# (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ...). Empty ones (an unset GitHub secret) are unset.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/retrain.sh [--dry-run] [--no-pull] [--allow-local-store] [-S key=value ...]

  -S, --set-param key=value  a Hydra override of conf/ (repeatable): runs `dvc exp run -S ...`;
                             a bare key=value is taken as -S key=value
  --no-pull                  do not `dvc pull` before running
  --no-push                  do not `dvc push` what the pipeline produced
  --allow-local-store        on a CI runner without MLFLOW_TRACKING_URI, register into the
                             runner's throwaway mlflow.db anyway (refused otherwise)
  -n, --dry-run              print the commands that would run, run nothing
  -h, --help                 this help
EOF
}

dry_run=0
pull=1
push=1
allow_local_store=0
overrides=()
while (($#)); do
  case "$1" in
    -n | --dry-run) dry_run=1 ;;
    --no-pull) pull=0 ;;
    --no-push) push=0 ;;
    --allow-local-store) allow_local_store=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    -S | --set-param)
      if (($# < 2)) || [[ "$2" != *=* ]]; then
        echo "retrain.sh: $1 needs a key=value argument" >&2
        exit 2
      fi
      overrides+=("$2")
      shift
      ;;
    -S*=* | --set-param=*=*)
      value="${1#--set-param=}"
      overrides+=("${value#-S}")
      ;;
    -*)
      echo "retrain.sh: unknown option $1" >&2
      usage >&2
      exit 2
      ;;
    *=*) overrides+=("$1") ;;
    *)
      echo "retrain.sh: unexpected argument '$1' (overrides are key=value)" >&2
      exit 2
      ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# The stages call `shoplens`, so the project's venv (where there is one) goes first on PATH.
if [[ -x "$root/.venv/bin/dvc" ]]; then
  PATH="$root/.venv/bin:$PATH"
fi
python="$(command -v python || command -v python3)"
if [[ -x "$root/.venv/bin/python" ]]; then
  python="$root/.venv/bin/python"
fi

# An unset GitHub secret arrives as an empty variable: unset it so clients use their defaults.
for name in MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD \
  AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_ENDPOINT_URL DVC_REMOTE_URL; do
  if [[ -v "$name" && -z "${!name}" ]]; then
    unset "$name"
  fi
done

# On a CI runner (CI=true: GitHub Actions and most CI systems set it) the default SQLite store
# is deleted with the runner: a model trained, registered and promoted there would be lost, and
# the next run would compare against no champion at all. Refuse, unless told explicitly.
if [[ "${CI:-}" == "true" && -z "${MLFLOW_TRACKING_URI:-}" ]] && ((!allow_local_store)); then
  echo "retrain.sh: no MLFLOW_TRACKING_URI on a CI runner: the model would be registered into" \
    "this runner's mlflow.db, which is thrown away with it. Set the MLFLOW_TRACKING_URI secret" \
    "to a tracking server (README, 'Retraining'), or pass --allow-local-store to do it anyway." >&2
  exit 2
fi

# Where the stages write their reports (paths.reports_dir of params.yaml).
reports_dir="$("$python" - <<'EOF' 2>/dev/null || echo reports
import yaml

print(((yaml.safe_load(open("params.yaml")) or {}).get("paths") or {}).get("reports_dir") or "reports")
EOF
)"

# Print a command (shell-quoted); run it unless this is a dry run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if ((!dry_run)); then
    "$@"
  fi
}

# `dvc exp run` composes params.yaml from conf/ itself; `dvc repro` reads it as it is, so make
# sure it says what conf/ says (someone may have edited conf/ without `make params`).
compose_params() {
  "$python" -m shoplens.config.params --file "$root/params.yaml" "$@"  # --check: exit 3 if stale
}

notes=()
status=0  # the first failure's exit status: a failed step skips the rest but still reports
if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
  run dvc remote add --local --force --default env "$DVC_REMOTE_URL" || status=$?
fi
if ((dry_run)) && [[ -n "${DVC_REMOTE_URL:-}" ]]; then
  remote=env
else
  remote="$(dvc remote default 2>/dev/null || true)"
fi
remote_url=""
if [[ -n "$remote" ]]; then
  remote_url="$(dvc remote list 2>/dev/null | awk -v r="$remote" '$1 == r {print $2}')"
  remote_url="${remote_url:-${DVC_REMOTE_URL:-}}"
fi
if [[ -z "$remote" ]]; then
  notes+=("No default DVC remote: nothing pulled or pushed; the pipeline reads data.root.")
  echo "retrain.sh: no default DVC remote configured, skipping dvc pull and push"
elif [[ "${CI:-}" == "true" && "$remote_url" != *://* ]]; then
  notes+=("DVC remote '$remote' is a folder on this runner, thrown away with it: set the DVC_REMOTE_URL secret (README, 'Retraining').")
fi
if ((pull)) && ((!status)) && [[ -n "$remote" ]]; then
  # Outputs never pushed are simply rebuilt by the pipeline; any other error (credentials,
  # network) fails the retrain.
  run dvc pull --allow-missing || status=$?
  if ((status)); then
    notes+=("\`dvc pull\` from remote '$remote' failed (exit $status): the pipeline did not run.")
  fi
fi

if ((${#overrides[@]})); then
  pipeline=(dvc exp run)
  for override in "${overrides[@]}"; do
    pipeline+=(-S "$override")
  done
else
  pipeline=(dvc repro)
  if ((dry_run)); then
    echo "+ (recompose params.yaml from conf/ if it is out of date)"
  elif ((!status)); then
    stale=0
    compose_params --check || stale=$?
    if ((stale == 3)); then
      compose_params || status=$?
      notes+=("params.yaml was out of date with conf/: recomposed it before \`dvc repro\`.")
      echo "retrain.sh: params.yaml was out of date with conf/, recomposed it"
    elif ((stale)); then
      status=$stale
      notes+=("Composing conf/ into params.yaml failed (exit $stale): the pipeline did not run.")
    fi
  fi
fi

registry_before="$(cksum 2>/dev/null <"$reports_dir/registry.json" || true)"
if ((!status)); then
  run "${pipeline[@]}" || status=$?
fi
# What the run produced (data versions, models' files, metrics) goes to the remote, so the
# next retrain (or a teammate's `dvc pull`) starts from it instead of rebuilding.
if ((push)) && ((!status)) && [[ -n "$remote" ]]; then
  if run dvc push; then
    notes+=("Pushed the pipeline's outputs to DVC remote '$remote'.")
  else
    status=$?
    notes+=("\`dvc push\` to remote '$remote' failed (exit $status).")
  fi
fi

diff_cmd=(dvc metrics diff --md)
summary_file="$reports_dir/retrain_summary.md"
if ((dry_run)); then
  printf '+'
  printf ' %q' "${diff_cmd[@]}"
  printf '\n+ (write the summary to %s)\n' "${GITHUB_STEP_SUMMARY:-$summary_file}"
  exit 0
fi

# The registry decision as a markdown table, and KEY=VALUE lines for $GITHUB_OUTPUT.
registry_report() {
  "$python" - "$reports_dir/registry.json" "$1" <<'EOF'
import json
import sys
from pathlib import Path

path, form = Path(sys.argv[1]), sys.argv[2]
if not path.is_file():
    if form == "markdown":
        print(f"No registry decision: `{path}` was not written (the pipeline stopped before it).")
    sys.exit(0)
r = json.loads(path.read_text())
if form == "outputs":
    print(f"decision={r.get('decision')}")
    print(f"promoted={r.get('promoted')}")
    print(f"model_version={r.get('version')}")
    sys.exit(0)


def fmt(value):
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


verdict = "promoted to champion" if r.get("promoted") else "champion kept"
print(f"**{r.get('model_name')} v{r.get('version')}: {r.get('decision')}** ({verdict})\n")
print("| | |\n|---|---|")
rows = [
    ("model", f"`{r.get('model_uri')}`"),
    ("test Recall@1", fmt(r.get("recall@1"))),
    ("previous champion", fmt(r.get("previous_champion_version"))),
    ("previous champion Recall@1", fmt(r.get("previous_champion_recall@1"))),
    ("champion now", fmt(r.get("champion_version"))),
    ("margin", fmt(r.get("margin"))),
    ("data version", f"`{r.get('data_version')}`"),
]
for key, value in rows:
    print(f"| {key} | {value} |")
print(f"\n{r.get('reason')}")
EOF
}

mkdir -p "$reports_dir"
{
  echo "## shoplens retrain"
  echo
  # shellcheck disable=SC2016 # markdown backticks, not a command substitution
  printf -- '- command: `%s`\n' "${pipeline[*]}"
  if [[ -n "${RETRAIN_REASON:-}" ]]; then
    printf -- '- started by: %s\n' "$RETRAIN_REASON"
  fi
  if ((status)); then
    echo "- result: **failed** (exit $status)"
  else
    echo "- result: pipeline succeeded"
  fi
  if [[ -n "${MLFLOW_TRACKING_URI:-}" ]]; then
    echo "- MLflow: the tracking server in \$MLFLOW_TRACKING_URI"
  else
    echo "- MLflow: local store (no MLFLOW_TRACKING_URI; on a CI runner it is thrown away)"
  fi
  for note in "${notes[@]}"; do
    echo "- $note"
  done
  echo
  echo "### Metrics (\`dvc metrics diff\`: HEAD vs this run)"
  echo
  # HEAD has no metrics when reports/ is not committed: the table then shows only new values.
  metrics_diff="$("${diff_cmd[@]}" 2>&1)" || metrics_diff+=$'\n(dvc metrics diff failed)'
  echo "${metrics_diff:-No metric changed.}"
  echo
  echo "### Registry decision"
  echo
  registry_report markdown 2>&1 || echo "(could not read $reports_dir/registry.json)"
  registry_after="$(cksum 2>/dev/null <"$reports_dir/registry.json" || true)"
  if [[ -n "$registry_before" && "$registry_before" == "$registry_after" ]]; then
    echo
    echo "_This run did not re-run the gate: the decision above is from an earlier run._"
  fi
  # The key plots, as paths relative to this file (CML uploads them with the comment).
  plots=()
  for plot in evaluate/category_recall.png evaluate/no_match.png evaluate/retrieval_gallery.png \
    monitor/drift.png; do
    if [[ -f "$reports_dir/$plot" ]]; then
      plots+=("$plot")
    fi
  done
  if ((${#plots[@]})); then
    echo
    echo "### Plots"
    for plot in "${plots[@]}"; do
      printf '\n![%s](%s)\n' "$plot" "$plot"
    done
  fi
} >"$summary_file"

if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
  cat "$summary_file" >>"$GITHUB_STEP_SUMMARY"
else
  cat "$summary_file"
fi
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
  registry_report outputs >>"$GITHUB_OUTPUT" || true
fi
exit "$status"
