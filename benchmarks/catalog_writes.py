"""Catalog writes: what one ``POST /products`` costs in storage, before and after the journal.

    python benchmarks/catalog_writes.py --sizes 25000 1000000

*Before* (the service until this change): add the vector in memory, then save the whole index
(FAISS file, id table, meta) inside the request. *After*: one journal row (SQLite, WAL,
``synchronous=FULL``: on disk before the answer) and the in-memory add; the index is
snapshotted in the background every ``search.snapshot_every`` changes. Both on the same
synthetic catalog (``shoplens.search.synthetic``), with the index kind ``auto`` picks for the
size, in one process, side by side. Embedding the photo costs the same in both and is left out
(``benchmarks/search_http.py`` times whole requests).

Also reported: one background snapshot, and a restart that replays the journal written here.
Target (catalog-service issue): after, p50 <= 50 ms at 1M photos.
Writes reports/benchmarks/catalog_writes.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shoplens.catalog_store import DurableCatalog
from shoplens.search import CatalogIndex, IndexConfig
from shoplens.search.synthetic import clustered_catalog

MODEL, VERSION = "embedder", "1"


def _row(i: int) -> pd.DataFrame:
    return pd.DataFrame({"product_id": [f"new-{i}"], "category": ["c0"], "path": [f"u/{i}.png"]})


def _stats(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"writes": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}  # fmt: skip


def _base(directory: Path, n: int, dim: int) -> np.ndarray:
    """The index stage's output for ``n`` synthetic photos; returns fresh vectors to add."""
    synthetic = clustered_catalog(n, dim=dim, seed=0)
    config = IndexConfig(kind="auto").for_size(n)
    catalog = CatalogIndex.create(config, dim, MODEL, VERSION)
    rows = pd.DataFrame({"product_id": [f"p{p}" for p in synthetic.product],
                         "category": [f"c{synthetic.category[p]}" for p in synthetic.product],
                         "path": [f"{i}.png" for i in range(n)]})  # fmt: skip
    catalog.add_products(rows, synthetic.vectors)
    catalog.save(directory)
    return clustered_catalog(1000, dim=dim, seed=1).vectors


def measure(n: int, dim: int, writes_before: int, writes_after: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        base.mkdir()
        start = time.perf_counter()
        fresh = _base(base, n, dim)
        built_s = time.perf_counter() - start

        before, catalog = [], CatalogIndex.load(base)  # a copy the old way rewrites
        saved = tmp / "rewritten"
        saved.mkdir()
        for i in range(writes_before):
            start = time.perf_counter()
            catalog.add_products(_row(i), fresh[i][None])
            catalog.save(saved)
            before.append(time.perf_counter() - start)
        del catalog

        state = tmp / "state"
        durable = DurableCatalog(base, state, MODEL, VERSION, reembed=None, snapshot_every=10**9)
        after = []
        for i in range(writes_after):
            start = time.perf_counter()
            durable.add(f"new-{i}", "c0", f"u/{i}.png", fresh[i % len(fresh)])
            after.append(time.perf_counter() - start)
        start = time.perf_counter()
        durable.snapshot()
        snapshot_s = time.perf_counter() - start
        durable.journal.close()

        start = time.perf_counter()  # a restart with no snapshot: the base + every row
        (state / "snapshots").rename(tmp / "no-snapshots")
        restarted = DurableCatalog(base, state, MODEL, VERSION, reembed=None)
        replay_s = time.perf_counter() - start
        assert len(restarted.index) == n + writes_after
        before_s, after_s = _stats(before), _stats(after)
        return {
            "photos": n,
            "index_kind": IndexConfig(kind="auto").for_size(n).kind,
            "base_built_s": built_s,
            "before": before_s,
            "after": after_s,
            "p50_speedup": before_s["p50_ms"] / after_s["p50_ms"],
            "snapshot_s": snapshot_s,
            "restart_replaying_s": replay_s,
            "replayed": restarted.replayed,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--writes-before", type=int, default=20)
    parser.add_argument("--writes-after", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/catalog_writes.json"))
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        row = measure(n, args.dim, args.writes_before, args.writes_after)
        rows.append(row)
        b, a = row["before"], row["after"]
        print(f"{n:>9,} photos ({row['index_kind']}): before p50 {b['p50_ms']:8.1f} ms "
              f"p99 {b['p99_ms']:8.1f} | after p50 {a['p50_ms']:6.2f} ms p99 {a['p99_ms']:6.2f} "
              f"| x{row['p50_speedup']:.0f} | snapshot {row['snapshot_s']:.2f} s, restart "
              f"replaying {row['replayed']} rows {row['restart_replaying_s']:.2f} s", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
