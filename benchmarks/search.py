"""Vector-index benchmark: exact vs IVF-Flat vs IVF-PQ (+ exact re-ranking) vs HNSW.

    python benchmarks/search.py --sizes 10000 100000 1000000 --dim 256 --queries 200

For each catalog size, on clustered synthetic embeddings (``shoplens.search.synthetic``:
categories -> products -> a few noisy photos each; queries are fresh photos of indexed
products), it builds every index through shoplens' own ``VectorIndex`` API (so timings include
what the service pays: normalisation, locking, id mapping) and reports build time, serialized
size, top-10 latency p50/p99 one query at a time and in batches of ``--batch``, the single-query
speed-up over exact, and hit@1 / recall@10 against exact search. ``--sweep`` adds rows for other
``nprobe`` / ``ef_search`` values on the same built index (search-time knobs only).

Latency is timed with ``--search-threads`` OpenMP threads (default 1): a service answers
concurrent requests on separate cores anyway, and on a shared, oversubscribed machine OpenMP's
spin-waiting made multi-threaded single-query timings 10-30x slower and erratic. Builds use
FAISS' default thread count.

Then ``search_http`` times end-to-end ``POST /search`` on a real ``shoplens serve`` process
(one client, then ``--http-concurrency`` clients), when ``make demo`` has built an index.

Target (search issue): at 1M, an approximate index >= 20x faster than exact per single query
with hit@1 >= 0.99 against exact. Writes reports/benchmarks/search.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from pathlib import Path

import faiss
import numpy as np
import search_http  # this directory's end-to-end /search benchmark

from shoplens.search import IndexConfig, agreement, create_index
from shoplens.search.synthetic import clustered_catalog

SWEEP = {
    "ivf": ("nprobe", (8, 16, 64)),
    "ivfpq": ("nprobe", (8, 16, 64)),
    "hnsw": ("ef_search", (32, 64, 256)),
}


def latencies(index, queries: np.ndarray, batch: int, k: int, threads: int) -> dict[str, float]:
    """p50/p99 milliseconds per call: single queries, then ``batch``-sized batches."""
    build_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        return _latencies(index, queries, batch, k)
    finally:
        faiss.omp_set_num_threads(build_threads)


def _latencies(index, queries: np.ndarray, batch: int, k: int) -> dict[str, float]:
    index.search(queries[:4], k)  # warm-up (thread pool, caches)
    single = []
    for q in queries:
        start = time.perf_counter()
        index.search(q[None], k)
        single.append(time.perf_counter() - start)
    batched = []
    for start_row in range(0, len(queries) - batch + 1, batch) or [0]:
        start = time.perf_counter()
        index.search(queries[start_row : start_row + batch], k)
        batched.append(time.perf_counter() - start)
    ms = 1e3
    return {
        "single_p50_ms": float(np.percentile(single, 50) * ms),
        "single_p99_ms": float(np.percentile(single, 99) * ms),
        "batch_p50_ms": float(np.percentile(batched, 50) * ms),
        "batch_p99_ms": float(np.percentile(batched, 99) * ms),
    }


def build(kind: str, config: IndexConfig, data, dim: int):
    index = create_index(dataclasses.replace(config, kind=kind), dim)
    start = time.perf_counter()
    index.add(np.arange(len(data.vectors), dtype=np.int64), data.vectors)
    return index, time.perf_counter() - start


def measure(index, build_s: float, config, queries, exact_result, args) -> list[dict]:
    """One row per search setting of a built index (its defaults, then any --sweep values)."""
    kind = index.kind
    base = {"size": len(index), "kind": kind, "build_s": build_s, "bytes": index.nbytes()}
    settings = [None]
    if args.sweep and kind in SWEEP:
        settings += list(SWEEP[kind][1])
    rows = []
    for value in settings:
        if value is not None:
            index.config = dataclasses.replace(config, kind=kind, **{SWEEP[kind][0]: value})
        knobs = {f: getattr(index.config, f) for f in ("nprobe", "ef_search", "refine_k")}
        row = {**base, "default": value is None, "params": _params(kind, index, knobs)}
        row.update(latencies(index, queries, args.batch, args.k, args.search_threads))
        row.update(agreement(index.search(queries, args.k), exact_result, args.k))
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def _params(kind: str, index, knobs: dict) -> str:
    c = index.config
    if kind == "hnsw":
        return f"M={c.hnsw_m} efC={c.ef_construction} ef={knobs['ef_search']}"
    if kind in ("ivf", "ivfpq"):
        nlist = c.auto_nlist(len(index))
        pq = f" pq={c.pq_m}x{c.pq_nbits} refine={knobs['refine_k']}" if kind == "ivfpq" else ""
        return f"nlist={nlist} nprobe={knobs['nprobe']}{pq}"
    return ""


HEADER = (
    f"{'size':>8} {'kind':<6} {'params':<36} {'build s':>8} {'MB':>7} {'1q p50':>7} "
    f"{'1q p99':>7} {'x exact':>7} {'b64 p50':>8} {'b64 p99':>8} {'hit@1':>6} {'R@10':>6}"
)


def _fmt(r: dict) -> str:
    return (
        f"{r['size']:>8} {r['kind']:<6} {r['params'] + ('' if r['default'] else ' *'):<36} "
        f"{r['build_s']:>8.1f} {r['bytes'] / 2**20:>7.0f} {r['single_p50_ms']:>7.3f} "
        f"{r['single_p99_ms']:>7.3f} {r.get('speedup', float('nan')):>7.1f} "
        f"{r['batch_p50_ms']:>8.2f} {r['batch_p99_ms']:>8.2f} {r['hit@1']:>6.3f} "
        f"{r['recall@10']:>6.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=["ivf", "ivfpq", "hnsw"])
    parser.add_argument("--search-threads", type=int, default=1, help="OpenMP threads when timing")
    parser.add_argument("--sweep", action="store_true", help="also other nprobe / ef_search")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="IndexConfig overrides, e.g. nprobe=16 ef_search=64",
    )
    parser.add_argument("--view-noise", type=float, default=1.0, help="photo noise (harder: up)")
    parser.add_argument("--product-spread", type=float, default=1.0)
    parser.add_argument("--categories", type=int, default=None, help="default: size // 1000")
    parser.add_argument("--http-requests", type=int, default=400, help="0: skip /search")
    parser.add_argument("--http-concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/search.json"))
    args = parser.parse_args()
    overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = IndexConfig(**overrides)

    rows: list[dict] = []
    print(HEADER, flush=True)
    for size in args.sizes:
        data = clustered_catalog(
            size,
            args.dim,
            categories=args.categories,
            product_spread=args.product_spread,
            view_noise=args.view_noise,
            seed=0,
        )
        queries, _ = data.queries(args.queries, seed=1)
        exact, build_s = build("exact", config, data, args.dim)
        exact_result = exact.search(queries, args.k)
        rows += measure(exact, build_s, config, queries, exact_result, args)
        del exact
        for kind in args.kinds:
            index, build_s = build(kind, config, data, args.dim)
            rows += measure(index, build_s, config, queries, exact_result, args)
            del index
            gc.collect()
        exact_p50 = next(r for r in rows if r["size"] == size and r["kind"] == "exact")
        for r in rows:
            if r["size"] == size:
                r["speedup"] = exact_p50["single_p50_ms"] / r["single_p50_ms"]
        del data
        gc.collect()

    http = []
    if args.http_requests:  # after the index rows, so the two never compete for the cores
        http = search_http.run(args.queries, args.k, args.http_concurrency, args.http_requests)
    print("\n" + HEADER)
    for r in rows:
        print(_fmt(r))
    if http:
        print("\n" + search_http.HEADER)
        for r in http:
            print(search_http.fmt(r))
        for line in search_http.ratios(http):
            print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "http": http}
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
