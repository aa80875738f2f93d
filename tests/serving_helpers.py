"""Shared set-up of the serving and browser tests: the tiny trained model registered as the
champion in the workspace's SQLite store, then the index stage run on the tiny catalog."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image, ImageDraw

from shoplens.config import compose_config
from shoplens.pipeline import evaluate, index, register

# Small limits so the "too large" cases need no large test files.
LIMITS = ("search.max_upload_bytes=60000", "search.max_pixels=20000", "search.k_max=20")
# The tiny model's head is barely trained and its cosines all sit near 1, so a category prior
# would rank by the head alone: these tests check the cosine path, and
# test_search_ranks_with_the_registered_category_prior (test_serving.py) the prior's.
RANKING = ("query.category_prior=0.0",)
TOKEN = "test-write-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def token_file(directory: Path) -> str:
    """A secret file holding TOKEN, as a ``search.auth.token_file`` override."""
    path = directory / "write-token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return f"search.auth.token_file={path}"


def build_index(trained: list[str]):
    """Evaluate, register (champion: the first version) and index; returns the config."""
    workspace = Path(str(compose_config(trained).paths.catalog_dir)).parent
    args = [*trained, *LIMITS, *RANKING, token_file(workspace)]
    cfg = compose_config(args)
    evaluate.run(cfg)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    register.run(cfg)
    index.run(cfg)
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def new_product_photo() -> bytes:
    """A product unlike the catalog's: a purple star on black."""
    image = Image.new("RGB", (40, 40), (10, 10, 10))
    ImageDraw.Draw(image).polygon(
        [(20, 2), (25, 15), (38, 15), (27, 24), (31, 38), (20, 29), (9, 38), (13, 24), (2, 15)],
        fill=(150, 30, 200),
    )
    return png(image)


def noise_png(side: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return png(Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)))
