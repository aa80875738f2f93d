"""The ``backgrounds`` stage: the pool of real photographs, split by photograph.

``data.backgrounds`` (a folder) or the packaged default, plus ``data.train_only_backgrounds``
on the training side only -> ``paths.backgrounds_dir`` with
``train/`` (copy-paste training reads only these), ``eval/`` (only the shopper-photo benchmark
reads these) and ``backgrounds.csv``, which records which photograph went where.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from shoplens.data.backgrounds import (
    EVAL,
    TRAIN,
    BackgroundError,
    PoolSettings,
    build_pool,
    folder_photos,
    packaged_photos,
    train_only_photos,
)

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    out, reports = Path(cfg.paths.backgrounds_dir), Path(cfg.paths.reports_dir) / "backgrounds"
    reports.mkdir(parents=True, exist_ok=True)
    source = cfg.data.backgrounds
    photos = folder_photos(source) if source else packaged_photos()
    if not photos:
        raise BackgroundError(
            "no background photographs: the packaged default needs scikit-image, "
            "scikit-learn or matplotlib installed; or set data.backgrounds=/folder/of/photos"
        )
    extra_source = cfg.data.train_only_backgrounds
    extras = train_only_photos(extra_source)
    if extra_source and not extras:
        log.warning(
            "data.train_only_backgrounds=%s: no photographs found%s; training scenes use the "
            "pool's training photographs only", extra_source,
            " (install Debian's opencv-doc)" if extra_source == "opencv" else "",
        )  # fmt: skip
    table, refused = build_pool(
        photos, out, PoolSettings(**cfg.preprocess.backgrounds), int(cfg.seed), extras
    )
    refused.to_csv(reports / "refused.csv", index=False)
    summary = {
        "photographs": len(table),
        "train": int((table["split"] == TRAIN).sum()),
        "eval": int((table["split"] == EVAL).sum()),
        "train_only": int(table["train_only"].sum()),
        "refused": len(refused),
    }
    (reports / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "backgrounds: %d train (%d of them training-only) / %d eval photographs from %s "
        "(eval: %s)", summary["train"], summary["train_only"], summary["eval"],
        source or "the packaged default",
        ", ".join(table.loc[table["split"] == EVAL, "name"]),
    )  # fmt: skip
    return summary
