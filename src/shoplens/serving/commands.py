"""``shoplens search PHOTO`` and ``shoplens serve``: the service's code path from a terminal.

``search`` loads the champion and the index the same way the app does (so it also refuses an
index built by another model version) and prints the best products for one photo, as a table
for people or ``--json`` for scripts. Kept apart from the CLI module so that ``shoplens --help``
never imports torch, MLflow or FastAPI.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from shoplens.data.images import read_image_bytes


def search(
    cfg: DictConfig,
    photo: str,
    k: int | None,
    category: str | None,
    as_json: bool,
    all_products: bool = False,
) -> int:
    from shoplens.serving.searcher import Searcher, UnknownCategory

    k = int(cfg.search.k_default) if k is None else k
    if not 1 <= k <= int(cfg.search.k_max):
        print(f"shoplens search: --k must be between 1 and {cfg.search.k_max}", file=sys.stderr)
        return 2
    searcher = Searcher(cfg)
    try:
        data = read_image_bytes(Path(photo), searcher.limits)
        answer = searcher.answer(data, k, category, all_products)
    except UnknownCategory as err:
        print(f"shoplens search: {err}", file=sys.stderr)
        return 2
    regions = answer.products if all_products and answer.localized else [answer.searched]
    if as_json:
        payload = {
            "model_name": searcher.model.name,
            "model_version": searcher.model.version,
            "localized": answer.localized,
            "note": answer.note,
            "super_resolved": answer.searched.upscaled,
            "match": answer.match,
            "match_threshold": answer.match_threshold,
            "box": list(answer.searched.box) if answer.searched.box else None,
            "results": [asdict(h) for h in answer.searched.hits],
            "products": [
                {"box": list(r.box) if r.box else None, "results": [asdict(h) for h in r.hits]}
                for r in answer.products
            ],
        }
        print(json.dumps(payload, indent=2))
        return 0
    name = f"{searcher.model.name} v{searcher.model.version}"
    print(f"{photo} ({answer.width}x{answer.height}), {name}")
    if answer.match is False:
        print(
            f"no confident match: the best score is under {answer.match_threshold:.4f}; the "
            "shop probably does not sell this (closest products anyway:)"
        )
    for region in regions:
        where = f"product at {region.box}" if region.box else f"whole photo ({answer.note})"
        if region.upscaled:
            where += ", super-resolved: it was small"
        print(f"{len(region.hits)} products like the {where}")
        print(f"{'rank':>4}  {'score':>7}  {'product_id':<24} {'category':<16} image")
        for rank, h in enumerate(region.hits, 1):
            print(f"{rank:>4}  {h.score:7.4f}  {h.product_id:<24} {h.category:<16} {h.path}")
    return 0


def serve(cfg: DictConfig) -> int:
    from shoplens.serving.app import serve as run_server

    run_server(cfg)
    return 0
