"""The localizer as its own registered model, with its own gate.

Its numbers come from evaluate's shopper-photo benchmark (held-out composites: test products
on evaluation backgrounds): a challenger must beat the champion's mask IoU or box AP@0.5 by
more than the margin without losing more than the margin on the other (the same rule as the
query pipeline's gate). The query pipeline model carries a copy of the localizer it was
evaluated with, tagged with this version.
"""

from __future__ import annotations

import logging

import numpy as np
from mlflow import MlflowClient

from shoplens.models.localizer import Localizer
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

# The mask IoU of the mask the pipeline ends with (closer looks included); versions from before
# carry only the first look's, under "photos.mask_iou", which is not comparable.
IOU_TAG, AP_TAG = "photos.pipeline_mask_iou", "photos.box_ap_at_0.5"
NAMES = ("mask IoU", "box AP@0.5")


def register_localizer(
    client: MlflowClient,
    name: str,
    localizer: Localizer,
    sha: str,
    localization: dict[str, float],
    data_version: str,
    run_id: str,
    margin: float,
) -> tuple[int, Decision]:
    """A version for this checkpoint (reused if registered before), then the gate."""
    tags = {
        SHA_TAG: sha,
        DATA_TAG: data_version,
        IOU_TAG: f"{localization['mask_iou']:.6g}",
        AP_TAG: f"{localization['box_ap@0.5']:.6g}",
        "shoplens.train_run_id": run_id,
    }
    example = np.zeros((1, 3, localizer.input_size, localizer.input_size), np.float32)
    version = register_network(client, name, localizer, tags, run_id, "localizer", example)
    candidate = Standing(
        version, localization["mask_iou"], data_version, photo=localization["box_ap@0.5"]
    )
    current = aliases(client, name)
    champion = None
    if (held := current.get("champion")) is not None:
        t = client.get_model_version(name, str(held)).tags
        note = ""
        if t.get(DATA_TAG) != data_version:
            note = f"(champion v{held} was measured on data version {t.get(DATA_TAG)})"
        # A version from before the pipeline's mask IoU has none comparable: box AP decides.
        champion = Standing(held, tag_number(t, IOU_TAG), t.get(DATA_TAG, ""), note,
                            tag_number(t, AP_TAG))  # fmt: skip
    decision = decide(candidate, champion, margin, NAMES)
    apply_decision(client, name, version, decision, current)
    log.info("%s v%d: %s", name, version, decision.reason)
    return version, decision
