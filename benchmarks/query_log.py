"""What recording searches costs: ``POST /search`` with ``search.query_log.enabled`` off and on,
side by side in one run, against a real ``shoplens serve`` on the demo index.

    python benchmarks/query_log.py [--queries 200] [--rounds 2]

The shopper-photo benchmark's JPEGs, one client (p50 / p99). The two services alternate for
``--rounds`` rounds so that drift in the machine's speed falls on both; each keeps its state in
a temporary directory (the repository's var/ is left alone), and the log's row count is
checked against the requests sent.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path

import httpx
import numpy as np
from search_http import _free_port, _post, _shopper_photos, _start_server

from shoplens.config import load_config


def _round(photos, enabled: bool, state: Path) -> tuple[list[float], int]:
    port = _free_port()
    server = _start_server(
        port, f"search.query_log.enabled={str(enabled).lower()}", f"search.state_dir={state}"
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _, photo in photos[:5]:  # warm-up
                _post(client, photo, 10, "category")
            calls = [_post(client, photo, 10, "category") for _, photo in photos]
    finally:
        server.terminate()
        server.wait(timeout=30)
    if any(not ok for _, _, ok in calls):
        raise RuntimeError("a search failed")
    db = state / "queries.db"
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM queries").fetchone()[0] if (
        db.is_file()
    ) else 0  # fmt: skip
    return [seconds * 1e3 for seconds, _, _ in calls], int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/query_log.json"))
    args = parser.parse_args()
    cfg = load_config()
    photos = _shopper_photos(Path(cfg.paths.shopper_photos_dir), args.queries)
    times, logged = {False: [], True: []}, {False: 0, True: 0}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for enabled in (False, True):
                ms, rows = _round(photos, enabled, Path(tmp) / f"{enabled}-{r}")
                times[enabled] += ms
                logged[enabled] += rows
    report = {
        ("on" if enabled else "off"): {
            "requests": len(ms), "logged_rows": logged[enabled],
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
        }
        for enabled, ms in times.items()
    }  # fmt: skip
    report["p50_on_over_off"] = report["on"]["p50_ms"] / report["off"]["p50_ms"]
    for name in ("off", "on"):
        r = report[name]
        print(f"query log {name:>3}: {r['requests']} searches, {r['logged_rows']} rows logged, "
              f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")  # fmt: skip
    print(f"p50 with the log / without: {report['p50_on_over_off']:.3f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
