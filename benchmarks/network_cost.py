"""What one photo costs in each exported network, and where the localizer spends it.

    python benchmarks/network_cost.py [--runs 200] [--onnx-dir artifacts/onnx]

Why: the localization path's latency (README, "Search") is bound by the networks, not by the
code around them. This times evaluate's exported graphs (what register ships) for one photo,
side by side in one process: the embedder at its input side and the localizer at its own, on
one ONNX Runtime thread and on two, as the service runs them (spinning off); then splits the
localizer's run by the part of the network each kernel belongs to (ONNX Runtime's own
profiler, one thread), so a cheaper localizer is looked for where the time is.
Writes ``reports/benchmarks/network_cost.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from shoplens.query.onnx_network import session_options


def session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = session_options(threads)  # exactly as the service builds its sessions
    options.enable_profiling = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_side(path: Path) -> int:
    """The graph's input side; a dynamic one (the localizer's) reads 0 and is asked for."""
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape
    return int(dims.dim[-1].dim_value)


def p50_ms(sess: ort.InferenceSession, side: int, runs: int) -> float:
    x = {"images": np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)}
    for _ in range(10):
        sess.run(None, x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, x)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


def parts_ms(path: Path, side: int, runs: int) -> dict[str, float]:
    """Kernel time a run by the network's top-level part (encoder block, decoder, other)."""
    sess = session(path, threads=1, profile=True)
    p50_ms(sess, side, runs)
    trace = Path(sess.end_profiling())
    parts: collections.Counter[str] = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"].split("/")
        if event["name"].startswith("/network/encoder/model/blocks."):
            part = f"encoder {name[4]}"
        elif event["name"].startswith("/network/"):
            part = f"{name[2]}"
        else:
            part = "layout and glue (no network part)"
        parts[part] += event["dur"]
    os.remove(trace)
    return {k: round(v / (runs + 10) / 1000, 2) for k, v in sorted(parts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--onnx-dir", type=Path, default=Path("artifacts/onnx"))
    parser.add_argument("--localizer-side", type=int, default=160, help="localizer.input_size")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/network_cost.json"))
    args = parser.parse_args()
    if "SHOPLENS_ORT_THREADS" in os.environ:
        raise SystemExit("unset SHOPLENS_ORT_THREADS: it would override the threads compared")
    graphs = {name: args.onnx_dir / f"{name}.onnx" for name in ("embedder", "localizer")}
    missing = [str(p) for p in graphs.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"no exported graphs {missing}: run `dvc repro evaluate` first")
    report = {}
    for name, path in graphs.items():
        side = input_side(path) or args.localizer_side
        report[name] = {"side": side}
        for threads in (1, 2):
            report[name][f"p50_ms_{threads}_thread"] = p50_ms(
                session(path, threads), side, args.runs
            )
        print(name, report[name], flush=True)
    parts = parts_ms(graphs["localizer"], report["localizer"]["side"], args.runs)
    report["localizer"]["parts_ms_1_thread"] = parts
    for part, ms in parts.items():
        print(f"  localizer {part}: {ms} ms")
    best = {n: min(v for k, v in report[n].items() if k.startswith("p50")) for n in graphs}
    report["localizer_over_embedder"] = round(best["localizer"] / best["embedder"], 2)
    print(f"one localizer run costs {report['localizer_over_embedder']}x one embedder run")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
