"""The super-resolver as its own registered model, with its own gate.

Its numbers come from the train_super_resolution stage's test split (held-out catalog photos
shrunk once by held-out code, :mod:`shoplens.evaluation.small_crops`): PSNR and SSIM of the
network and of bicubic upscaling on the same inputs. A version that does not beat bicubic by
``min_gain_db`` never serves (the query pipeline leaves it out too,
:func:`shoplens.pipeline.query_setup.load_super_resolver`); one
that does replaces the champion when its gain beats the champion's by more than
``margin_db``. The query pipeline model carries a copy of the network it was evaluated with,
tagged with this checkpoint's sha256.
"""

from __future__ import annotations

import logging

import numpy as np
from mlflow import MlflowClient

from shoplens.models.super_resolution import SuperResolver
from shoplens.registry.gate import Decision, Standing, decide
from shoplens.registry.versions import (
    DATA_TAG,
    SHA_TAG,
    aliases,
    apply_decision,
    register_network,
    tag_number,
)

log = logging.getLogger(__name__)

# Measured on test photos shrunk by held-out code (evaluation/small_crops.py). The gate's number
# is the clean shrink's (a kernel training never used: does it resolve detail bicubic does not?);
# the phone-like one (sharpening, shot noise, JPEG 40-85) is recorded beside it. Versions from
# before carry "test.psnr_gain_db", measured on the training degradation: never compared.
GAIN_TAG, PSNR_TAG, SSIM_TAG = "test.heldout_psnr_gain_db", "test.heldout_psnr", "test.heldout_ssim"
PHONE_GAIN_TAG = "test.heldout_phone_psnr_gain_db"
NAMES = ("PSNR gain over bicubic (dB)", "SSIM")


def too_weak(metrics: dict, min_gain_db: float) -> str:
    """Why a super-resolver may not serve (it does not beat bicubic enough), or ""."""
    gain = float(metrics.get("clean_psnr_gain_db", float("nan")))
    if not gain >= min_gain_db:
        return (
            f"its test PSNR gain over bicubic (held-out Lanczos shrink), {gain:+.2f} dB, is "
            f"under the required {min_gain_db:g} dB"
        )
    return ""


def register_super_resolver(
    client: MlflowClient,
    name: str,
    network: SuperResolver,
    sha: str,
    metrics: dict,
    run_id: str,
    min_gain_db: float,
    margin_db: float,
) -> tuple[int, Decision]:
    """A version for this checkpoint (reused if registered before), then the gate."""
    data = str(metrics.get("data_version", ""))
    tags = {
        SHA_TAG: sha,
        DATA_TAG: data,
        GAIN_TAG: f"{metrics['clean_psnr_gain_db']:.6g}",
        PSNR_TAG: f"{metrics['clean_psnr']:.6g}",
        SSIM_TAG: f"{metrics['clean_ssim']:.6g}",
        "test.heldout_bicubic_psnr": f"{metrics['clean_bicubic_psnr']:.6g}",
        "test.heldout_bicubic_ssim": f"{metrics['clean_bicubic_ssim']:.6g}",
        PHONE_GAIN_TAG: f"{metrics['psnr_gain_db']:.6g}",
        "test.heldout_phone_ssim": f"{metrics['ssim']:.6g}",
        "shoplens.scale": str(network.scale),
        "shoplens.train_run_id": run_id,
    }
    example = np.zeros((1, 3, 16, 16), np.float32)
    version = register_network(client, name, network, tags, run_id, "super_resolver", example)
    candidate = Standing(version, float(metrics["clean_psnr_gain_db"]), data,
                         photo=float(metrics["clean_ssim"]))  # fmt: skip
    current = aliases(client, name)
    champion = None
    if (held := current.get("champion")) is not None:
        t = client.get_model_version(name, str(held)).tags
        # A version from before the held-out measurement has no comparable numbers: the gate
        # then promotes a challenger that passes the held-out bar.
        champion = Standing(held, tag_number(t, GAIN_TAG), t.get(DATA_TAG, ""),
                            photo=tag_number(t, SSIM_TAG))  # fmt: skip
    decision = decide(candidate, champion, margin_db, NAMES, tolerance=margin_db,
                      refused=too_weak(metrics, min_gain_db))  # fmt: skip
    apply_decision(client, name, version, decision, current)
    log.info("%s v%d: %s", name, version, decision.reason)
    return version, decision
