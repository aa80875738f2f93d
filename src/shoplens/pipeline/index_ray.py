"""The index stage's catalog embedding on Ray Data (``search.embed.engine=ray``).

Why Ray: a catalog of millions of photos takes hours through one process; Ray Data spreads the
same code over every core of a cluster. Cache row numbers stream through ``workers`` actors in
batches of ``search.batch_size``; each actor loads the model version the driver resolved (never
the alias again: a promotion mid-run must not mix two models) and reads only its batch's pixels
from the memory-mapped catalog cache, so no process ever holds the catalog's images. The driver
receives embeddings batch by batch, in whatever order they finish, and puts each where its
position says: the same vectors as the local engine (a test holds them equal).

A cluster's nodes need the catalog cache at the same path (a shared volume, or ``dvc pull`` on
each) and the MLflow tracking server the driver uses; a local Ray (``ray_address: null``) needs
nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mlflow
import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)


class _EmbedBatches:
    """A Ray Data actor: the model version, loaded once, embeds the batches it is sent."""

    def __init__(self, tracking_uri: str, name: str, version: str, runtime: str, cache: str):
        from shoplens.data.cache import open_cache
        from shoplens.registry.champion import load_version

        mlflow.set_tracking_uri(tracking_uri)
        self.model = load_version(name, version, runtime)
        self.cache = open_cache(Path(cache))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = np.asarray(self.cache[batch["cache_index"]])
        return {"position": batch["position"], "embedding": self.model.embed(pixels)}


def _is_start_timeout(error: Exception) -> bool:
    """Ray's two ways of saying a local start was too slow, neither its own exception type."""
    return "timed out" in str(error).lower()


def _init_ray(ray, address: str | None, attempts: int = 3) -> None:
    """Connect to ``address``, or start a local Ray when it is None.

    Why the retries and the longer wait: a local start on an idle 2-core machine takes 4 s, but
    a busy small machine has missed both of Ray's start deadlines (seen on CI): the GCS port file
    (a RuntimeError after ``RAY_gcs_server_port_wait_time_s``, 30 s by default: we allow 90, and
    an operator's own setting wins) and the raylet registering with the GCS (a bare Exception
    after 30 s that Ray hard-codes in ``ray._private.node``, so only a new start helps). A start
    that failed for any other reason, or a cluster's, is the user's to see at once.
    """
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "90")
    # One ONNX Runtime / torch thread per actor: the actors share the cores between them.
    env = {"env_vars": {"SHOPLENS_ORT_THREADS": "1", "OMP_NUM_THREADS": "1"}}
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, runtime_env=env, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)  # fmt: skip
            return
        except Exception as error:
            ray.shutdown()
            if address is not None or attempt == attempts or not _is_start_timeout(error):
                raise
            log.warning("local Ray did not start (%s); starting it again", error)


def embed_with_ray(
    model, cache_path: Path, rows: np.ndarray, batch: int, address: str | None, workers: int
) -> np.ndarray:
    """Embeddings of cache ``rows`` in their order, ``(len(rows), D)`` float32."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "search.embed.engine=ray needs Ray Data: pip install 'shoplens[ray]'"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(ray, address)
    try:
        # Enough blocks that every actor gets work (one block would feed a single actor),
        # handed over as arrays: a read task would need a core the actors already hold.
        blocks = max(1, min(-(-len(rows) // batch), workers * 8))
        positions = np.array_split(np.arange(len(rows)), blocks)
        data = ray.data.from_numpy(positions).map_batches(
            lambda b: {"position": b["data"], "cache_index": rows[b["data"]]}
        )
        embedded = data.map_batches(
            _EmbedBatches,
            fn_constructor_args=(mlflow.get_tracking_uri(), model.name, str(model.version),
                                 model.runtime, str(Path(cache_path).resolve())),
            batch_size=batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
        )  # fmt: skip
        vectors = np.zeros((len(rows), model.embedding_dim), np.float32)
        done = np.zeros(len(rows), bool)
        with tqdm(total=len(rows), desc="embedding catalog (ray)", unit="img") as bar:
            for out in embedded.iter_batches(batch_size=None, batch_format="numpy"):
                vectors[out["position"]] = out["embedding"]
                done[out["position"]] = True
                bar.update(len(out["position"]))
        if not done.all():
            raise RuntimeError(f"Ray returned {done.sum()} of {len(rows)} embeddings")
        return vectors
    finally:
        if started_here:
            ray.shutdown()
