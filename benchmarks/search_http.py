"""End-to-end ``POST /search`` against a real ``shoplens serve`` process on localhost.

    python benchmarks/search_http.py --queries 200 --concurrency 4 --requests 400

What a shopper's photo costs through the whole service: multipart upload -> validation ->
letterbox -> embedding with the MLflow champion -> index search -> JSON, over a real socket to
a real uvicorn worker (not FastAPI's in-process TestClient). Two measurements on the
repository's own index (``make demo`` / ``shoplens index`` builds it):

- one client, one photo at a time: latency p50/p99 (target: p50 < 100 ms on 2 CPU cores);
- ``--concurrency`` clients (a bounded thread pool sharing one connection pool) sending
  ``--requests`` photos as fast as answers come back: throughput, latency under load, and the
  error count (every non-200 answer or transport error; must be 0).

Queries are catalog photos re-encoded as PNG; hit@1 says their own product came back first.
``benchmarks/search.py`` runs this after the index benchmark so both land in one report.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from PIL import Image

from shoplens.config import load_config
from shoplens.data.cache import open_cache


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(port: int, timeout_s: float = 180.0) -> subprocess.Popen:
    """``shoplens serve`` from this interpreter's environment; returns once /health answers."""
    command = [sys.executable, "-m", "shoplens.cli", "serve", f"search.port={port}"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"shoplens serve exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise TimeoutError(f"shoplens serve did not answer /health within {timeout_s:.0f} s")


def _photos(catalog: Path, n: int) -> list[tuple[str, bytes]]:
    """(product_id, PNG bytes) of ``n`` random photos of the catalog in ``catalog``."""
    manifest = pd.read_parquet(catalog / "manifest.parquet")
    picks = np.random.default_rng(0).choice(len(manifest), min(n, len(manifest)), replace=False)
    cache, photos = open_cache(catalog / "images.npy"), []
    for row in manifest.iloc[picks].itertuples():
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(cache[row.cache_index])).save(buffer, format="PNG")
        photos.append((str(row.product_id), buffer.getvalue()))
    return photos


def _post(client: httpx.Client, photo: bytes, k: int) -> tuple[float, str | None, bool]:
    """(seconds, first product id or None, ok) of one /search call."""
    start = time.perf_counter()
    try:
        answer = client.post("/search", files={"image": ("q.png", photo)}, data={"k": k})
    except httpx.HTTPError:
        return time.perf_counter() - start, None, False
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        return elapsed, None, False
    results = answer.json()["results"]
    return elapsed, results[0]["product_id"] if results else None, True


def _row(name: str, calls: list, photos: list, wall_s: float, clients: int, health: dict) -> dict:
    ms = np.array([c[0] for c in calls]) * 1e3
    hits = [c[1] == photos[i % len(photos)][0] for i, c in enumerate(calls)]
    return {
        "mode": name,
        "clients": clients,
        "requests": len(calls),
        "errors": sum(not c[2] for c in calls),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "throughput_rps": len(calls) / wall_s,
        "hit@1": float(np.mean(hits)),
        "index_size": health["index_size"],
        "index_kind": health.get("index_kind"),
        "model_version": health["model_version"],
    }


def run(queries: int = 200, k: int = 10, concurrency: int = 4, requests: int = 400) -> list[dict]:
    """Sequential and concurrent rows; [] when there is no built index to serve."""
    cfg = load_config()
    if not (Path(cfg.search.dir) / "meta.json").is_file():
        print(f"no index at {cfg.search.dir}: run `make demo` first; skipping /search", flush=True)
        return []
    photos = _photos(Path(cfg.paths.catalog_dir), queries)
    port = _free_port()
    server, base = _start_server(port), f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    try:
        with httpx.Client(base_url=base, timeout=60, limits=limits) as client:
            health = client.get("/health").json()
            for _, photo in photos[:5]:  # warm-up: first-call allocations, lazy imports
                _post(client, photo, k)
            start = time.perf_counter()
            sequential = [_post(client, photo, k) for _, photo in photos]
            rows = [_row("sequential", sequential, photos, time.perf_counter() - start, 1, health)]
            load = [photos[i % len(photos)][1] for i in range(requests)]
            with ThreadPoolExecutor(concurrency) as pool:
                start = time.perf_counter()
                calls = list(pool.map(lambda photo: _post(client, photo, k), load))
                wall_s = time.perf_counter() - start
            rows.append(_row("concurrent", calls, photos, wall_s, concurrency, health))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


HEADER = (
    f"{'/search':<11} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'req/s':>6} {'hit@1':>6}  index"
)


def fmt(r: dict) -> str:
    return (
        f"{r['mode']:<11} {r['clients']:>7} {r['requests']:>8} {r['errors']:>6} "
        f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['throughput_rps']:>6.1f} "
        f"{r['hit@1']:>6.3f}  {r['index_kind']} {r['index_size']} photos, model v{r['model_version']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200, help="distinct catalog photos")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4, help="clients sending at once")
    parser.add_argument("--requests", type=int, default=400, help="requests under load")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/search_http.json"))
    args = parser.parse_args()
    rows = run(args.queries, args.k, args.concurrency, args.requests)
    print(HEADER)
    for r in rows:
        print(fmt(r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
