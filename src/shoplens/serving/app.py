"""The HTTP service: ``create_app(cfg)`` builds it (tests use ``TestClient``), ``serve`` runs it.

Every way a request can be wrong answers 4xx with a sentence that says what is wrong - 400 for
an image that is empty, not an image, truncated or an unknown category, 413 for one over the
byte or pixel limit, 422 for ``k`` outside 1..k_max, 404 for an unknown product - so a shop's
front end can show it and a 500 always means a bug. Handlers are plain ``def``: FastAPI runs
them in its thread pool, so CPU-bound embedding never blocks the event loop, and the index's
readers-writer lock lets searches run alongside an addition or a removal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, Response
from omegaconf import DictConfig

from shoplens.data.images import InvalidImageError
from shoplens.search import ProductHit
from shoplens.serving.model import LoadedModel
from shoplens.serving.searcher import Searcher, UnknownCategory, UnknownProduct

PAGE = Path(__file__).with_name("static") / "index.html"


def _hits(searcher: Searcher, hits: list[ProductHit]) -> dict:
    return {
        "model_name": searcher.model.name,
        "model_version": searcher.model.version,
        "results": [
            {
                "rank": rank,
                "product_id": h.product_id,
                "category": h.category,
                "score": round(h.score, 6),
                "path": h.path,
                "image_id": h.image_id,
                "image_url": f"/images/{h.image_id}",
            }
            for rank, h in enumerate(hits, 1)
        ],
    }


def create_app(cfg: DictConfig, model: LoadedModel | None = None) -> FastAPI:
    """Load the champion (or ``model``) and the index at ``cfg.search.dir``; refuses an index
    built by another model version (``IndexModelMismatch``) before serving anything."""
    searcher = Searcher(cfg, model)
    k_default, k_max = int(cfg.search.k_default), int(cfg.search.k_max)
    app = FastAPI(title="shoplens", description="Find catalog products that look like a photo.")
    app.state.searcher = searcher

    def read_upload(upload: UploadFile) -> bytes:
        limit = searcher.limits.max_file_bytes
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload too large: more than {limit} bytes")
        return data

    def check_k(k: int) -> int:
        if not 1 <= k <= k_max:
            raise HTTPException(422, f"k must be between 1 and {k_max}, got {k}")
        return k

    def guarded(call):
        try:
            return call()
        except InvalidImageError as err:
            status = 413 if err.reason.startswith(("too large", "file too large")) else 400
            raise HTTPException(status, f"invalid image: {err.reason}") from None
        except UnknownCategory as err:
            raise HTTPException(400, str(err)) from None
        except UnknownProduct as err:
            raise HTTPException(404, str(err)) from None

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/health")
    def health() -> dict:
        return searcher.health()

    @app.get("/categories")
    def categories() -> list[str]:
        return searcher.categories

    @app.post("/search")
    def search(
        image: Annotated[UploadFile, File(description="the shopper's photo")],
        k: Annotated[int, Form()] = k_default,
        category: Annotated[str | None, Form()] = None,
    ) -> dict:
        k, data = check_k(k), read_upload(image)
        return _hits(searcher, guarded(lambda: searcher.search(data, k, category or None)))

    @app.get("/products/{product_id:path}/similar")
    def similar(product_id: str, k: int = k_default, category: str | None = None) -> dict:
        check_k(k)
        return _hits(searcher, guarded(lambda: searcher.similar(product_id, k, category)))

    @app.post("/products", status_code=201)
    def add_product(
        image: Annotated[UploadFile, File()],
        product_id: Annotated[str, Form()],
        category: Annotated[str, Form()],
    ) -> dict:
        if not product_id.strip():
            raise HTTPException(400, "product_id must not be empty")
        data = read_upload(image)
        ids = guarded(lambda: searcher.add_product(product_id, category, data))
        return {"product_id": product_id, "category": category, "image_ids": ids}

    @app.delete("/products/{product_id:path}")
    def delete_product(product_id: str) -> dict:
        removed = guarded(lambda: searcher.remove_product(product_id))
        return {"product_id": product_id, "removed_images": removed}

    @app.get("/images/{image_id}", response_class=Response)
    def image(image_id: int) -> Response:
        png = guarded(lambda: searcher.image_png(image_id))
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return app


def single_threaded_inference() -> None:
    """One torch thread per request: handlers run in worker threads, and torch's intra-op pool
    driven from them spins against itself on a busy machine (measured: ~300 ms per /search on
    two cores vs ~30 ms single-threaded). Concurrency comes from requests, not from one GEMM.
    Process-wide, so only ``serve`` and the benchmark call it, not ``create_app``."""
    import torch

    torch.set_num_threads(1)


def serve(cfg: DictConfig) -> None:
    import uvicorn

    single_threaded_inference()
    uvicorn.run(create_app(cfg), host=str(cfg.search.host), port=int(cfg.search.port))
