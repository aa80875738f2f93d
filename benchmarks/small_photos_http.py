"""What super-resolution adds to ``POST /search`` for a small photo: the real service started
twice on the repository's index, ``query.super_resolve=false`` then ``true``, answering the same
small photos one at a time, in one run.

    python benchmarks/small_photos_http.py [--photos 200]

The photos are the small-photo benchmark's (test-split products at 40-70% of their catalog
resolution, thumbnails and zoomed-out photos on evaluation backgrounds, benchmarks/
small_photos.py). Reports p50/p99 per side, their ratio, the share of answers flagged
``super_resolved`` and category@1 (the right category first). Needs a champion that carries a
super-resolver (``make demo`` registers one when it beats bicubic).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from search_http import _free_port, _start_server
from small_photos import small_photos

from shoplens.config import load_config
from shoplens.data.catalog import SPLIT, read_manifest


def _ask(client: httpx.Client, photo: bytes) -> tuple[float, dict | None]:
    start = time.perf_counter()
    answer = client.post("/search", files={"image": ("q.jpg", photo)}, data={"k": 10})
    elapsed = time.perf_counter() - start
    return elapsed, answer.json() if answer.status_code == 200 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument(
        "--out", type=Path, default=Path("reports/benchmarks/small_photos_http.json")
    )
    args = parser.parse_args()
    cfg = load_config()
    manifest = read_manifest(Path(cfg.paths.catalog_dir))
    test = manifest[manifest[SPLIT] == "test"].reset_index(drop=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        table = small_photos(cfg, test, args.photos, Path(tmp))
        photos = [((Path(tmp) / name).read_bytes(), category)
                  for name, category in zip(table["photo"], table["category"], strict=True)]  # fmt: skip
        for switch in ("false", "true"):
            port = _free_port()
            server = _start_server(port, f"query.super_resolve={switch}")
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                    for photo, _ in photos[:5]:  # warm-up
                        _ask(client, photo)
                    calls = [(*_ask(client, photo), category) for photo, category in photos]
            finally:
                server.terminate()
                server.wait(timeout=30)
            ms = np.array([c[0] for c in calls]) * 1e3
            answered = [c for c in calls if c[1] is not None]
            rows.append({
                "super_resolve": switch == "true",
                "requests": len(calls),
                "errors": len(calls) - len(answered),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "super_resolved_share": float(np.mean([c[1]["super_resolved"] for c in answered])),
                "category@1": float(np.mean([bool(c[1]["results"]) and
                                             c[1]["results"][0]["category"] == c[2]
                                             for c in answered])),
            })  # fmt: skip
    off, on = rows
    report = {"photos": len(photos), "rows": rows, "p50_ratio": on["p50_ms"] / off["p50_ms"],
              "p50_added_ms": on["p50_ms"] - off["p50_ms"]}  # fmt: skip
    for r in rows:
        print(f"super_resolve={str(r['super_resolve']).lower():<5} p50 {r['p50_ms']:6.1f} ms  "
              f"p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  super-resolved "
              f"{r['super_resolved_share']:.2f}  category@1 {r['category@1']:.3f}")  # fmt: skip
    print(f"p50 with / without super-resolution: {report['p50_ratio']:.2f}x "
          f"({report['p50_added_ms']:+.1f} ms)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
