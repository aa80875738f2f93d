"""The ``register`` stage: the evaluated query pipeline becomes a version of the registered
model, and the promotion gate decides whether alias ``champion`` moves to it.

Two registered models: the localizer (``registry.localizer_name``, its own gate on mask IoU
and box AP) and the query pipeline (``registry.model_name``: embedder + localizer + spec as one
pyfunc, gated on test Recall@1 and shopper-photo category@1). Search loads
``models:/<registry.model_name>@champion``, so only a pipeline that measurably beats the
champion changes what shoppers get; anything else is kept as ``challenger`` for a person to
inspect. Re-running with the same checkpoints and query spec reuses their versions. Decisions and reasons go
to ``reports/registry.json`` and onto the versions' tags.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from omegaconf import DictConfig
from PIL import Image

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, read_catalog
from shoplens.data.dedup import content_hash
from shoplens.evaluation.no_match import CALIBRATION_FILE
from shoplens.pipeline.query_setup import load_localizer, load_super_resolver, torch_pipeline
from shoplens.registry.export import log_query_model, query_code_sha256
from shoplens.registry.gate import CHAMPION, Standing, decide
from shoplens.registry.localizer import register_localizer
from shoplens.registry.model_card import model_card
from shoplens.registry.onnx_export import FILES
from shoplens.registry.super_resolution import register_super_resolver
from shoplens.registry.versions import (
    CHECKPOINT_TAG,
    CODE_TAG,
    DATA_TAG,
    LOCALIZER_TAG,
    NETWORK_TAGS,
    ONNX_TAG,
    PACKAGING_TAG,
    SPEC_TAG,
    SUPER_RESOLVER_TAG,
    aliases,
    apply_decision,
    champion_standing,
    find_version,
    metric_tags,
    photo_score,
    small_score,
)
from shoplens.tracking import configure_mlflow, git_commit
from shoplens.tracking.runs import checkpoint_sha256, read_train_run, training_run_id
from shoplens.training.module import EmbedderModule

log = logging.getLogger(__name__)
NO_LOCALIZER = "none"


class EvaluationMissing(FileNotFoundError):
    """No evaluation of these checkpoints: none in reports/, or one of other checkpoints."""


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EvaluationMissing(f"{path} not found: run `shoplens evaluate` first")
    return json.loads(path.read_text())


def _checked(cfg: DictConfig, reports: Path) -> tuple[dict, dict, str, str, str]:
    """metrics, evaluated, embedder, localizer and super-resolver sha (NO_LOCALIZER: none in
    the pipeline): refuses metrics of other checkpoints."""
    metrics = _read(reports / "metrics.json")
    evaluated = _read(reports / "evaluate" / "evaluated.json")
    sha = checkpoint_sha256(cfg.evaluate.checkpoint)
    localizer = Path(cfg.localizer.checkpoint)
    loc_sha = checkpoint_sha256(localizer) if localizer.is_file() else NO_LOCALIZER
    upscaling = Path(cfg.super_resolution.checkpoint)
    used = load_super_resolver(cfg) is not None
    sr_sha = checkpoint_sha256(upscaling) if used else NO_LOCALIZER
    if (
        evaluated["checkpoint_sha256"] != sha
        or evaluated.get("localizer_sha256") != loc_sha
        or evaluated.get("super_resolver_sha256", NO_LOCALIZER) != sr_sha
    ):
        raise EvaluationMissing(
            f"{reports / 'metrics.json'} was measured on other checkpoints than "
            f"{cfg.evaluate.checkpoint}, {localizer} and {upscaling}: run `shoplens evaluate` "
            "again"
        )
    return metrics, evaluated, sha, loc_sha, sr_sha


def run(cfg: DictConfig) -> dict[str, Any]:
    reports = Path(cfg.paths.reports_dir)
    metrics, evaluated, sha, loc_sha, sr_sha = _checked(cfg, reports)
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    client, name = MlflowClient(), str(cfg.registry.model_name)
    data = evaluated["data_version"]
    localizer, localizer_result = load_localizer(cfg.localizer.checkpoint), {}
    localization = (metrics.get("shopper_photos", {}).get("pipeline") or {}).get("localization")
    if localizer is not None and localization:
        loc_run = training_run_id(
            client, read_train_run(cfg.localizer.checkpoint), cfg.tracking.experiment, "register"
        )
        loc_version, loc_decision = register_localizer(
            client, str(cfg.registry.localizer_name), localizer, loc_sha, localization, data,
            loc_run, float(cfg.registry.margin),
        )  # fmt: skip
        localizer_result = {
            "localizer_version": loc_version,
            "localizer_decision": loc_decision.alias,
            "localizer_reason": loc_decision.reason,
        }

    super_resolver, sr_result = load_super_resolver(cfg), _register_super_resolver(cfg, client)

    # Metric tags always describe the latest evaluation of this exact pipeline (and its data).
    measured = {DATA_TAG: data, **metric_tags(metrics)}
    module = EmbedderModule.load_from_checkpoint(
        cfg.evaluate.checkpoint, map_location="cpu", pretrained=False
    )
    pipeline = torch_pipeline(cfg, module.embedder.eval(), localizer, super_resolver)
    spec = json.dumps(pipeline.spec.to_dict(), sort_keys=True)
    if spec != json.dumps(evaluated.get("query_spec"), sort_keys=True):
        raise EvaluationMissing(
            "the metrics were measured with another query pipeline than this config builds "
            "(query, localizer or search limits changed): run `shoplens evaluate` again"
        )
    code = query_code_sha256()
    if evaluated.get("query_code_sha256") != code:
        raise EvaluationMissing(
            "the metrics were measured with other query pipeline code than this checkout's "
            "(src/shoplens/query changed): run `shoplens evaluate` again"
        )
    identity = {CHECKPOINT_TAG: sha, LOCALIZER_TAG: loc_sha, SUPER_RESOLVER_TAG: sr_sha,
                SPEC_TAG: content_hash(spec.encode()), CODE_TAG: code}  # fmt: skip
    calibration = reports / "evaluate" / CALIBRATION_FILE
    onnx_files, onnx_refusal = _onnx_files(cfg, evaluated)
    packaging = [name for name, there in (("calibration", calibration.is_file()),
                                          ("onnx", bool(onnx_files))) if there]  # fmt: skip
    if packaging:
        identity[PACKAGING_TAG] = ",".join(packaging)
    if onnx_files:
        graphs = json.dumps(evaluated["onnx"]["sha256"], sort_keys=True)
        identity[ONNX_TAG] = content_hash(graphs.encode())
    existing = find_version(client, name, identity)
    if existing is None:
        tags = {**identity, **measured}
        version = _log_and_register(
            cfg, client, module, pipeline, localizer, super_resolver, tags,
            {"calibration": calibration, **onnx_files},
        )  # fmt: skip
    else:
        version = int(existing.version)
        for key, value in measured.items():
            client.set_model_version_tag(name, str(version), key, value)
        log.info("these checkpoints are already %s v%d: reusing it", name, version)

    trained = module.cfg
    card = model_card(name, version, metrics, evaluated, {
        "training run": read_train_run(cfg.evaluate.checkpoint).get("mlflow_run_id", "unknown"),
        "backbone": trained["backbone"]["name"], "loss": trained["loss"]["name"],
        "freezing": trained["freeze"]["strategy"], "image size": trained["data"]["image_size"],
    })  # fmt: skip
    client.update_model_version(name, str(version), description=card)

    current = aliases(client, name)
    previous = current.get(CHAMPION)
    champion, same_networks = None, False
    if previous is not None:
        held = client.get_model_version(name, str(previous)).tags
        same_networks = all(held.get(tag) == identity.get(tag) for tag in NETWORK_TAGS)
        champion = champion_standing(
            client, name, previous, data, Path(cfg.paths.catalog_dir),
            Path(cfg.paths.shopper_photos_dir),
        )  # fmt: skip
    recall, photo = float(metrics["finetuned"]["recall@1"]), photo_score(metrics)
    small = small_score(metrics)
    candidate = Standing(version, recall, data, photo=photo, small=small)
    decision = decide(
        candidate, champion, float(cfg.registry.margin),
        tolerance=float(cfg.registry.tolerance), same_networks=same_networks,
        refused=onnx_refusal,
    )  # fmt: skip
    apply_decision(client, name, version, decision, current)
    result = {
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "decision": decision.alias,
        "promoted": int(decision.promote),
        "reused_version": int(existing is not None),
        "recall@1": recall,
        "photo_category@1": photo,
        "small_photo_category@1": small,
        "margin": float(cfg.registry.margin),
        "tolerance": float(cfg.registry.tolerance),
        "champion_version": version if decision.promote else previous,
        "previous_champion_version": previous,
        "previous_champion_recall@1": champion.recall if champion else None,
        "previous_champion_photo_category@1": champion.photo if champion else None,
        "previous_champion_small_photo_category@1": champion.small if champion else None,
        "champion_remeasured": int(bool(champion and champion.note)),
        "data_version": data,
        "reason": decision.reason,
        **localizer_result,
        **sr_result,
    }
    (reports / "registry.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("%s v%d: %s", name, version, decision.reason)
    return result


def _onnx_files(cfg: DictConfig, evaluated: dict) -> tuple[dict[str, Path], str]:
    """The ONNX graphs evaluate exported and checked (artifact name -> file), or no files and
    the reason the version may not be promoted."""
    onnx = evaluated.get("onnx") or {"status": "failed", "reason": "evaluated without export"}
    if onnx["status"] != "ok":
        return {}, f"its ONNX export failed or disagrees with torch ({onnx['reason']})"
    directory = Path(cfg.paths.artifacts_dir) / "onnx"
    files = {name: directory / FILES[name] for name in onnx["sha256"]}
    for name, path in files.items():
        if not path.is_file() or checkpoint_sha256(path) != onnx["sha256"][name]:
            raise EvaluationMissing(
                f"{path} is not the ONNX graph evaluate checked: run `shoplens evaluate` again"
            )
    return files, ""


def _register_super_resolver(cfg: DictConfig, client: MlflowClient) -> dict[str, Any]:
    """The super-resolution stage's network as a version of its own registered model, through
    its gate (registry/super_resolution.py); {} when there is none."""
    checkpoint = Path(cfg.super_resolution.checkpoint)
    if not checkpoint.is_file():
        return {}
    from shoplens.training.super_resolution import SuperResolutionModule

    info = read_train_run(checkpoint)
    network = SuperResolutionModule.load_from_checkpoint(checkpoint, map_location="cpu").network
    run_id = training_run_id(client, info, cfg.tracking.experiment, "register")
    sr = cfg.super_resolution
    version, decision = register_super_resolver(
        client, str(cfg.registry.super_resolver_name), network, checkpoint_sha256(checkpoint),
        info, run_id, float(sr.min_gain_db), float(sr.margin_db),
    )  # fmt: skip
    return {
        "super_resolver_version": version,
        "super_resolver_decision": decision.alias,
        "super_resolver_reason": decision.reason,
        "super_resolver_in_pipeline": int(load_super_resolver(cfg) is not None),
    }


def _log_and_register(
    cfg, client: MlflowClient, module, pipeline, localizer, super_resolver, tags: dict,
    extra: dict[str, Path],
) -> int:  # fmt: skip
    """Log the query-pipeline pyfunc to the embedder's training run and register a version."""
    checkpoint = cfg.evaluate.checkpoint
    _, categories = read_catalog(cfg.paths.catalog_dir)
    example = _example_photo(cfg.paths.catalog_dir)
    run_id = training_run_id(
        client, read_train_run(checkpoint), cfg.tracking.experiment, "register"
    )
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        model = log_query_model(
            module.embedder, localizer, super_resolver, pipeline.spec, categories, example,
            Path(tmp),
            extra={name: path for name, path in extra.items() if path.is_file()},
        )  # fmt: skip
    # The code the model was trained with: the training run's commit, not today's.
    commit = client.get_run(run_id).data.tags.get("mlflow.source.git.commit") or git_commit()
    tags = {**tags, "shoplens.git_commit": commit, "shoplens.train_run_id": run_id}
    version = mlflow.register_model(model.model_uri, str(cfg.registry.model_name), tags=tags)
    return int(version.version)


def _example_photo(catalog_dir) -> bytes:
    """A catalog photo as PNG bytes: the model's input example, within any upload limits."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(open_cache(Path(catalog_dir) / CACHE_FILE)[0])).save(buffer, "PNG")
    return buffer.getvalue()
