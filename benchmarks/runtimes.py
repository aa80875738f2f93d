"""Torch vs ONNX Runtime vs ONNX Runtime INT8 for the registered query pipeline, side by side
in one run, on the repository's demo data (``make demo`` builds it).

    python benchmarks/runtimes.py [--photos 1000] [--queries 200] [--requests 400]

For each runtime, the champion's own networks (the ``torch.export`` programs, the ONNX graphs
it ships, and those graphs quantized to INT8 here):

1. quality: clean test Recall@1 (test queries against the test gallery, as evaluate measures
   it), shopper-photo category@1 through the whole query pipeline, and how many benchmark
   photos get the same top-10 list as torch;
2. embedding throughput: catalog photos per second in the index stage's batches;
3. one photo in process: p50 of ``QueryPipeline.query`` (validate -> localize -> crop ->
   embed), the model's share of a search, and how much of it is spent inside the networks
   (``--one-photo-only``: just this part);
4. ``POST /search`` over HTTP against ``shoplens serve query.runtime=...`` (torch and onnx,
   the runtimes a registered model serves): p50 / p99 and throughput with 1 and 4 clients;
5. the index stage itself on the demo catalog (into a temporary directory): torch, ONNX, and
   ONNX on Ray Data (a local Ray, ``search.embed.workers`` actors): photos embedded per second.

INT8: ONNX Runtime static quantization of the shipped graphs (convolutions only,
``shoplens.registry.onnx_export.quantize_int8``), calibrated on *training* data only
(train-split catalog photos, training-background photographs), never on what is measured.
A localizer shipped as INT8 already (``query.localizer_int8``) is used as shipped, in both
the ONNX and the INT8 rows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import torch
from PIL import Image
from search_http import _free_port, _measure, _photos, _shopper_photos, _start_server

from shoplens.config import load_config
from shoplens.data.backgrounds import TRAIN, read_pool
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CACHE_INDEX, LABEL, QUERY, ROLE, SPLIT, read_catalog
from shoplens.evaluation.photo_benchmark import Variant, answer, prior_of, search_metrics
from shoplens.evaluation.retrieval import Prior, recall_at_k
from shoplens.evaluation.shopper_photos import read_benchmark, read_photo
from shoplens.query import QueryPipeline
from shoplens.query.onnx_network import onnx_pipeline
from shoplens.registry.champion import load_champion
from shoplens.registry.onnx_export import FILES, quantize_int8
from shoplens.tracking import configure_mlflow

CALIBRATION = 256  # training images per network for INT8 activation ranges


class _Recorder:
    """A network that keeps the (normalised) inputs it is called with: the pipeline's own
    preprocessing produces the INT8 calibration inputs."""

    def __init__(self, network):
        self.network, self.inputs = network, []

    def __call__(self, x: torch.Tensor):
        self.inputs.append(x.numpy().copy())
        return self.network(x)


def int8_pipeline(cfg, onnx: QueryPipeline, graphs: Path, out: Path) -> QueryPipeline:
    manifest, _ = read_catalog(cfg.paths.catalog_dir)
    train = manifest[manifest[SPLIT] == "train"]
    rows = np.sort(np.random.default_rng(0).choice(train[CACHE_INDEX], CALIBRATION, False))
    squares = np.asarray(open_cache(Path(cfg.paths.catalog_dir) / CACHE_FILE)[rows])
    embedder = _Recorder(onnx.embedder)
    localizer = _Recorder(onnx.localizer) if onnx.localizer is not None else None
    recording = QueryPipeline(onnx.spec, embedder, localizer, onnx.super_resolver)
    recording.embed_squares(squares)
    files = {"embedder_onnx": quantize_int8(
        graphs / FILES["embedder_onnx"], out / "embedder_int8.onnx",
        np.concatenate(embedder.inputs),
    )}  # fmt: skip
    if localizer is not None and onnx.localizer.one_photo:  # served as INT8 already
        files["localizer_onnx"] = graphs / FILES["localizer_onnx"]
    elif localizer is not None:
        rng, scenes = np.random.default_rng(1), []
        for photo in read_pool(cfg.paths.backgrounds_dir, TRAIN).values():
            h, w = photo.shape[:2]
            for _ in range(CALIBRATION // 2 // 15 + 1):  # crops of the training photographs
                side = int(rng.integers(min(h, w) // 3, min(h, w)))
                y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                scenes.append(Image.fromarray(photo[y : y + side, x : x + side]))
        scenes += [Image.fromarray(s) for s in squares[: CALIBRATION // 2]]
        recording.product_masks(scenes)
        files["localizer_onnx"] = quantize_int8(
            graphs / FILES["localizer_onnx"], out / "localizer_int8.onnx",
            np.concatenate(localizer.inputs),
        )  # fmt: skip
    if onnx.spec.upscale is not None:  # the super-resolver stays float (about 1 ms a crop)
        files["super_resolver_onnx"] = graphs / FILES["super_resolver_onnx"]
    return onnx_pipeline(onnx.spec, files)


def quality(cfg, name: str, pipeline: QueryPipeline, photos: int) -> tuple[dict, np.ndarray]:
    """Recall@1, photo category@1, embedding throughput; and the photos' top-10 lists."""
    manifest, _ = read_catalog(cfg.paths.catalog_dir)
    test = manifest[manifest[SPLIT] == "test"].reset_index(drop=True)
    cache = open_cache(Path(cfg.paths.catalog_dir) / CACHE_FILE)
    rows, batch = test[CACHE_INDEX].to_numpy(), int(cfg.search.batch_size)
    start, parts = time.perf_counter(), []
    for i in range(0, len(rows), batch):
        parts.append(pipeline.embed_squares(np.asarray(cache[rows[i : i + batch]])))
    seconds = time.perf_counter() - start
    gallery = np.concatenate([p.embeddings for p in parts])
    is_query = (test[ROLE] == QUERY).to_numpy()
    labels = torch.from_numpy(test[LABEL].to_numpy())
    g = torch.from_numpy(gallery)
    # Ranked as search ranks and evaluate measures: with the spec's category prior.
    prior = prior_of(pipeline, test[LABEL].to_numpy())
    bias = None
    if prior is not None and all(p.logits is not None for p in parts):
        logits = np.concatenate([p.logits for p in parts])
        bias = Prior(prior.weight, prior.gallery_labels[~is_query]).bias(logits[is_query])
    recall = recall_at_k(g[is_query], labels[is_query], g[~is_query], labels[~is_query], ks=(1,),
                         bias=bias)  # fmt: skip
    photo_dir = Path(cfg.paths.shopper_photos_dir)
    table = read_benchmark(photo_dir).head(photos)
    found = answer(Variant(name, pipeline, "localize"), table, photo_dir)
    found = found.closer_of_whole_and_crop(gallery)
    metrics = search_metrics(
        found.embeddings, gallery, table, test["category"].tolist(),
        test["product_id"].astype(str).tolist(), prior, found.logits,
    )["all"]  # fmt: skip
    ranked = found.embeddings @ gallery.T
    if prior is not None and found.logits is not None:
        ranked = ranked + prior.bias(found.logits).numpy()
    top10 = np.argsort(-ranked, axis=1)[:, :10]
    return {
        "runtime": name,
        "recall@1": float(recall["recall@1"]),
        "photo_category@1": metrics["category@1"],
        "photo_product@1": metrics["product@1"],
        "embed_img_per_s": len(rows) / seconds,
    }, top10


class Timed:
    """A network that adds up the time spent in it."""

    def __init__(self, network):
        self.network, self.seconds = network, 0.0

    def __call__(self, x: torch.Tensor):
        start = time.perf_counter()
        out = self.network(x)
        self.seconds += time.perf_counter() - start
        return out


def one_photo_ms(cfg, pipeline: QueryPipeline, n: int = 100) -> tuple[float, float]:
    """p50 of one shopper photo through the pipeline, and the mean time per photo spent
    inside its networks (the rest - decoding, letterboxing, components, crops - is the
    same code for every runtime, so networks-only torch / ONNX bounds what a search gains)."""
    networks = [pipeline.embedder, pipeline.localizer, pipeline.super_resolver]
    timed = [Timed(net) if net is not None else None for net in networks]
    pipeline = QueryPipeline(pipeline.spec, *timed)
    photo_dir = Path(cfg.paths.shopper_photos_dir)
    photos = [read_photo(photo_dir, p) for p in read_benchmark(photo_dir)["photo"].head(n)]
    for photo in photos[:5]:
        pipeline.query(photo)
    for net in timed:
        if net is not None:
            net.seconds = 0.0
    times = []
    for photo in photos:
        start = time.perf_counter()
        pipeline.query(photo)
        times.append(time.perf_counter() - start)
    inside = sum(net.seconds for net in timed if net is not None) / len(photos)
    return float(np.percentile(times, 50) * 1e3), inside * 1e3


def http(cfg, runtimes, queries: int, concurrency: int, requests: int) -> list[dict]:
    sets = [
        ("catalog", _photos(Path(cfg.paths.catalog_dir), queries), "product_id"),
        ("shopper", _shopper_photos(Path(cfg.paths.shopper_photos_dir), queries), "category"),
    ]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    rows = []
    for runtime in runtimes:
        port = _free_port()
        server = _start_server(port, f"query.runtime={runtime}")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                              limits=limits) as client:  # fmt: skip
                health = client.get("/health").json()
                for name, photos, key in sets:
                    for row in _measure(client, photos, key, 10, concurrency, requests, health,
                                        name):  # fmt: skip
                        rows.append({"runtime": runtime, **row})
        finally:
            server.terminate()
            server.wait(timeout=30)
    return rows


def index_stage(engines) -> list[dict]:
    """The index stage, whole, once per (runtime, engine): its own img/s report."""
    from shoplens.pipeline import index

    rows = []
    for runtime, engine in engines:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config([f"query.runtime={runtime}", f"search.embed.engine={engine}",
                               f"search.dir={tmp}/index", f"paths.reports_dir={tmp}"])  # fmt: skip
            report = index.run(cfg)
        rows.append({"runtime": runtime, "engine": engine, "images": report["images"],
                     "embed_img_per_s": report["embed_img_per_s"],
                     "stage_s": report["seconds"]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=1000, help="benchmark photos for quality")
    parser.add_argument("--queries", type=int, default=200, help="distinct photos over HTTP")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400, help="requests under load")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/runtimes.json"))
    parser.add_argument("--one-photo-only", action="store_true",
                        help="only part 3: one photo in process, and its time in the networks")  # fmt: skip
    args = parser.parse_args()
    cfg = load_config()
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    name = str(cfg.registry.model_name)
    torch_model = load_champion(name, runtime="torch")
    onnx_model = load_champion(name, runtime="onnx")
    if onnx_model.python_model.runtime != "onnx":
        raise SystemExit(f"{name} v{onnx_model.version} ships no ONNX graphs: run `dvc repro`")
    graphs = Path(mlflow.artifacts.download_artifacts(
        f"models:/{name}/{onnx_model.version}")) / "artifacts"  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = {
            "torch": torch_model.pipeline,
            "onnx": onnx_model.pipeline,
            "onnx_int8": int8_pipeline(cfg, onnx_model.pipeline, graphs, Path(tmp)),
        }
        rows, tops = [], {}
        for runtime, pipeline in pipelines.items():
            if args.one_photo_only:
                row, tops[runtime] = {"runtime": runtime}, None
            else:
                row, tops[runtime] = quality(cfg, runtime, pipeline, args.photos)
            row["one_photo_p50_ms"], row["networks_ms"] = one_photo_ms(cfg, pipeline)
            rows.append(row)
    if args.one_photo_only:
        torch_row = rows[0]
        for r in rows:
            print(f"{r['runtime']:<10} one photo p50 {r['one_photo_p50_ms']:6.1f} ms, in the "
                  f"networks {r['networks_ms']:6.1f} ms; vs torch: one photo "
                  f"{torch_row['one_photo_p50_ms'] / r['one_photo_p50_ms']:.2f}x, networks "
                  f"{torch_row['networks_ms'] / r['networks_ms']:.2f}x")  # fmt: skip
        return
    for row in rows:
        row["same_top10_as_torch"] = float(
            np.mean(
                [(a == b).all() for a, b in zip(tops[row["runtime"]], tops["torch"], strict=True)]
            )  # fmt: skip
        )
    served = http(cfg, ("torch", "onnx"), args.queries, args.concurrency, args.requests)
    stages = index_stage([("torch", "local"), ("onnx", "local"), ("onnx", "ray")])
    print(f"{'runtime':<10} {'R@1':>6} {'photo c@1':>9} {'prod@1':>7} {'top10=torch':>11} "
          f"{'img/s':>7} {'1 photo ms':>10}")  # fmt: skip
    for r in rows:
        print(f"{r['runtime']:<10} {r['recall@1']:>6.4f} {r['photo_category@1']:>9.3f} "
              f"{r['photo_product@1']:>7.3f} {r['same_top10_as_torch']:>11.3f} "
              f"{r['embed_img_per_s']:>7.0f} {r['one_photo_p50_ms']:>10.1f}")  # fmt: skip
    print(f"\n{'/search':<8} {'photos':<8} {'clients':>7} {'errors':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'req/s':>6} {'hit@1':>6}")  # fmt: skip
    for r in served:
        print(f"{r['runtime']:<8} {r['mode']:<13} {r['clients']:>2} {r['errors']:>6} "
              f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['throughput_rps']:>6.1f} "
              f"{r['hit@1']:>6.3f}")  # fmt: skip
    print(f"\n{'index stage':<12} {'engine':<6} {'images':>7} {'img/s':>7} {'stage s':>8}")
    for r in stages:
        print(f"{r['runtime']:<12} {r['engine']:<6} {r['images']:>7} "
              f"{r['embed_img_per_s']:>7.0f} {r['stage_s']:>8.1f}")  # fmt: skip
    by = {(r["runtime"], r["mode"]): r for r in served}
    ratios = [
        f"{mode}: torch p50 / onnx p50 = "
        f"{by['torch', mode]['p50_ms'] / by['onnx', mode]['p50_ms']:.2f}x"
        for mode in dict.fromkeys(r["mode"] for r in served)
    ]
    base = rows[0]
    ratios += [
        f"{r['runtime']}: one photo {base['one_photo_p50_ms'] / r['one_photo_p50_ms']:.2f}x, "
        f"embedding {r['embed_img_per_s'] / base['embed_img_per_s']:.2f}x vs torch; "
        f"R@1 {r['recall@1'] - base['recall@1']:+.4f}, "
        f"photo c@1 {r['photo_category@1'] - base['photo_category@1']:+.3f}"
        for r in rows[1:]
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ratios += [
        f"index stage {r['runtime']}/{r['engine']}: "
        f"{r['embed_img_per_s'] / stages[0]['embed_img_per_s']:.2f}x torch's img/s"
        for r in stages[1:]
    ]
    print("\n" + "\n".join(ratios))
    report = {"quality": rows, "http": served, "index_stage": stages, "ratios": ratios}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
