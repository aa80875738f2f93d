"""What super-resolution adds to ``POST /search`` for a small photo: the real service started
twice on the repository's index, ``query.super_resolve=false`` and ``true`` side by side,
asked the same small photos one at a time and in turn, in one run.

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
from shoplens.evaluation.shopper_photos import read_photo


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
        photos = [(read_photo(Path(tmp), name), category)
                  for name, category in zip(table["photo"], table["category"], strict=True)]  # fmt: skip
        # Both services up at once and asked in turn, photo by photo (order alternating): a
        # slower minute of the machine falls on both sides, not on whichever ran second.
        servers, ports = [], {}
        try:
            for switch in ("false", "true"):
                ports[switch] = _free_port()
                servers.append(_start_server(ports[switch], f"query.super_resolve={switch}"))
            clients = {s: httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=60)
                       for s, p in ports.items()}  # fmt: skip
            for client in clients.values():
                for photo, _ in photos[:5]:  # warm-up
                    _ask(client, photo)
            calls: dict[str, list] = {s: [] for s in clients}
            for i, (photo, category) in enumerate(photos):
                for switch in ("false", "true") if i % 2 else ("true", "false"):
                    calls[switch].append((*_ask(clients[switch], photo), category))
            for client in clients.values():
                client.close()
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)
        for switch in ("false", "true"):
            ms = np.array([c[0] for c in calls[switch]]) * 1e3
            answered = [c for c in calls[switch] if c[1] is not None]
            rows.append({
                "super_resolve": switch == "true",
                "requests": len(calls[switch]),
                "errors": len(calls[switch]) - len(answered),
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
