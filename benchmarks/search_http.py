"""End-to-end ``POST /search`` against a real ``shoplens serve`` process on localhost, with
and without localization, in one run.

    python benchmarks/search_http.py --queries 200 --concurrency 4 --requests 400

What a shopper's photo costs through the whole service: multipart upload -> validation ->
(localize -> crop) -> embedding with the MLflow champion -> index search -> JSON, over a real
socket to a real uvicorn worker (not FastAPI's in-process TestClient). The service is started
twice, ``query.localize=false`` then ``true`` (the baseline and the change side by side), and
each answers two photo sets on the repository's own index (``make demo`` builds it):

- ``catalog``: catalog photos re-encoded as PNG; hit@1: their own product came back first;
- ``shopper``: the shopper-photo benchmark's JPEGs; hit@1: the right category came first.

For each: one client, one photo at a time (latency p50/p99), then ``--concurrency`` clients (a
bounded thread pool sharing one connection pool) sending ``--requests`` photos as fast as
answers come back: throughput, latency under load, and the error count (every non-200 answer
or transport error; must be 0). ``benchmarks/search.py`` runs this after the index benchmark.
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
from shoplens.evaluation.shopper_photos import read_benchmark, read_photo


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(
    port: int, *overrides: str, timeout_s: float = 180.0, writes: bool = False, env=None
) -> subprocess.Popen:
    """``shoplens serve`` from this interpreter's environment; returns once /health answers.
    Searches only unless ``writes`` (then the token comes from ``env``, serving/auth.py)."""
    command = [sys.executable, "-m", "shoplens.cli", "serve", f"search.port={port}",
               f"search.writes={str(writes).lower()}", *overrides]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
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


def _shopper_photos(photo_dir: Path, n: int) -> list[tuple[str, bytes]]:
    """(category, JPEG bytes) of the first ``n`` shopper-photo benchmark photos (all buckets)."""
    table = read_benchmark(photo_dir).head(n)
    return [(str(r.category), read_photo(photo_dir, r.photo)) for r in table.itertuples()]


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


def _post(
    client: httpx.Client, photo: bytes, k: int, key: str = "product_id"
) -> tuple[float, str | None, bool]:
    """(seconds, the first result's ``key`` or None, ok) of one /search call."""
    start = time.perf_counter()
    try:
        answer = client.post("/search", files={"image": ("q.png", photo)}, data={"k": k})
    except httpx.HTTPError:
        return time.perf_counter() - start, None, False
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        return elapsed, None, False
    results = answer.json()["results"]
    return elapsed, results[0][key] if results else None, True


def _row(name: str, calls: list, photos: list, wall_s: float, clients: int, health: dict) -> dict:
    ms = np.array([c[0] for c in calls]) * 1e3
    hits = [c[1] == photos[i % len(photos)][0] for i, c in enumerate(calls)]
    return {
        "mode": name,
        "localize": bool(health.get("localizer")),
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


def _measure(client, photos, key: str, k: int, concurrency: int, requests: int, health, tag):
    for _, photo in photos[:5]:  # warm-up: first-call allocations, lazy imports
        _post(client, photo, k, key)
    start = time.perf_counter()
    sequential = [_post(client, photo, k, key) for _, photo in photos]
    rows = [_row(f"{tag} seq", sequential, photos, time.perf_counter() - start, 1, health)]
    load = [photos[i % len(photos)][1] for i in range(requests)]
    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        calls = list(pool.map(lambda photo: _post(client, photo, k, key), load))
        wall_s = time.perf_counter() - start
    rows.append(_row(f"{tag} conc", calls, photos, wall_s, concurrency, health))
    return rows


def run(queries: int = 200, k: int = 10, concurrency: int = 4, requests: int = 400) -> list[dict]:
    """Rows for localization off and on, catalog and shopper photos, one client and several;
    [] when there is no built index to serve."""
    cfg = load_config()
    if not (Path(cfg.search.dir) / "meta.json").is_file():
        print(f"no index at {cfg.search.dir}: run `make demo` first; skipping /search", flush=True)
        return []
    sets = [("catalog", _photos(Path(cfg.paths.catalog_dir), queries), "product_id")]
    if (Path(cfg.paths.shopper_photos_dir) / "photos.parquet").is_file():
        sets.append(
            ("shopper", _shopper_photos(Path(cfg.paths.shopper_photos_dir), queries), "category")
        )
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    rows = []
    for localize in ("false", "true"):
        port = _free_port()
        server, base = _start_server(port, f"query.localize={localize}"), f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=60, limits=limits) as client:
                health = client.get("/health").json()
                for name, photos, key in sets:
                    rows += _measure(client, photos, key, k, concurrency, requests, health, name)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return rows


def ratios(rows: list[dict]) -> list[str]:
    """p50 with localization over p50 without, per photo set and load."""
    by = {(r["mode"], r["localize"]): r for r in rows}
    return [
        f"{mode}: p50 with localization / without = "
        f"{by[mode, True]['p50_ms'] / by[mode, False]['p50_ms']:.2f}x"
        for mode in dict.fromkeys(r["mode"] for r in rows)
        if (mode, True) in by and (mode, False) in by
    ]


HEADER = (
    f"{'/search':<13} {'localize':>8} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>7} "
    f"{'p99 ms':>7} {'req/s':>6} {'hit@1':>6}  index"
)


def fmt(r: dict) -> str:
    return (
        f"{r['mode']:<13} {str(r['localize']):>8} {r['clients']:>7} {r['requests']:>8} "
        f"{r['errors']:>6} "
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
    for line in ratios(rows):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "ratios": ratios(rows)}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
