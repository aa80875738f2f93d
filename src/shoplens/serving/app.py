"""The HTTP service: ``create_app(cfg)`` builds it (tests use ``TestClient``), ``serve`` runs it.

FastAPI as its documentation shows it: the searcher (champion + index) is created in the app's
lifespan and handed to routes by a dependency; parameters validate themselves (``Form(ge=,
le=)``); errors are exceptions mapped to status codes by type in exception handlers - 400 for
an image that is empty, not an image, truncated or an unknown category, 413 for one over the
byte or pixel limit, 422 for invalid parameters, 404 for an unknown product, 401/403 for a
write without the right token (serving/auth.py) - each declared in the OpenAPI schema with its
body, so a shop's front end can show the sentence and a 500 always means a bug. Handlers are plain ``def``: FastAPI runs them in its thread pool, so CPU-bound
embedding never blocks the event loop, and the index's readers-writer lock lets searches run
alongside an addition or a removal.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from omegaconf import DictConfig

from shoplens.data.images import ImageTooLarge, InvalidImageError
from shoplens.registry.champion import LoadedModel
from shoplens.search import ProductHit
from shoplens.serving.auth import check_write_policy, require_token, write_token
from shoplens.serving.metrics import instrument
from shoplens.serving.schemas import (
    ErrorBody,
    Health,
    Hit,
    ProductAdded,
    ProductRemoved,
    Region,
    SearchResponse,
    SimilarResponse,
)
from shoplens.serving.searcher import RegionHits, Searcher, UnknownCategory, UnknownProduct

PAGE = FilePath(__file__).with_name("static") / "index.html"
# Index ids are int64: a larger number is a 422, not an overflow deep in the index (schemathesis).
ImageId = Annotated[int, Path(ge=0, le=2**63 - 1, description="an id from a search result")]


def errors(*codes: int) -> dict:
    """OpenAPI declarations of the error answers a route gives (422 FastAPI declares)."""
    return {code: {"model": ErrorBody} for code in codes}


def _hits(hits: list[ProductHit]) -> list[Hit]:
    return [
        Hit(
            rank=rank,
            product_id=h.product_id,
            category=h.category,
            score=round(h.score, 6),
            path=h.path,
            image_id=h.image_id,
            image_url=f"/images/{h.image_id}",
        )
        for rank, h in enumerate(hits, 1)
    ]


def _region(region: RegionHits) -> Region:
    box = list(region.box) if region.box is not None else None
    score = round(region.score, 4) if region.score is not None else None
    return Region(box=box, score=score, results=_hits(region.hits), super_resolved=region.upscaled)


def searcher(request: Request) -> Searcher:
    return request.app.state.searcher


SearcherDep = Annotated[Searcher, Depends(searcher)]


def create_app(cfg: DictConfig, model: LoadedModel | None = None) -> FastAPI:
    """The app; its lifespan loads the champion (or ``model``) and the index at
    ``cfg.search.dir`` and refuses an index built by another model version
    (``IndexModelMismatch``) before serving anything. Raises ``UnsafeServing`` when writes
    are on without a token (serving/auth.py)."""
    k_default, k_max = int(cfg.search.k_default), int(cfg.search.k_max)
    K = Annotated[int, Form(ge=1, le=k_max, description="products to return")]
    KQuery = Annotated[int, Query(ge=1, le=k_max, description="products to return")]
    token = write_token(cfg.search.auth)
    check_write_policy(cfg.search, token)
    writer = [Depends(require_token(token))]
    reader = writer if cfg.search.auth.protect_reads else []
    read_errors = (401, 403) if reader else ()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.searcher = Searcher(cfg, model)
        yield
        app.state.searcher.close()  # a last snapshot: the next start replays nothing

    app = FastAPI(
        title="shoplens",
        description="Find catalog products that look like a photo.",
        lifespan=lifespan,
    )
    instrument(app)  # GET /metrics for Prometheus
    if cfg.search.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.search.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization"],
        )

    @app.exception_handler(InvalidImageError)
    def invalid_image(request: Request, err: InvalidImageError) -> JSONResponse:
        status = 413 if isinstance(err, ImageTooLarge) else 400
        return JSONResponse({"detail": f"invalid image: {err.reason}"}, status_code=status)

    @app.exception_handler(UnknownCategory)
    def unknown_category(request: Request, err: UnknownCategory) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(UnknownProduct)
    def unknown_product(request: Request, err: UnknownProduct) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/health", response_model=Health)  # open: load balancers probe it
    def health(s: SearcherDep) -> Health:
        return Health(**s.health())

    @app.get("/categories", response_model=list[str], dependencies=reader,
             responses=errors(*read_errors))  # fmt: skip
    def categories(s: SearcherDep) -> list[str]:
        return s.categories

    @app.post("/search", response_model=SearchResponse, dependencies=reader,
              responses=errors(400, 413, *read_errors))  # fmt: skip
    def search(
        s: SearcherDep,
        image: Annotated[UploadFile, File(description="the shopper's photo")],
        k: K = k_default,
        category: Annotated[str | None, Form(description="only this category")] = None,
        all_products: Annotated[
            bool, Form(description="results for every product found (shop the look)")
        ] = False,
    ) -> SearchResponse:
        data = read_upload(image, s.limits.max_file_bytes)
        answer = s.answer(data, k, category or None, all_products)
        s.log_query(answer, data)
        return SearchResponse(
            model_name=s.model.name,
            model_version=s.model.version,
            width=answer.width,
            height=answer.height,
            localized=answer.localized,
            note=answer.note,
            super_resolved=answer.searched.upscaled,
            match=answer.match,
            match_threshold=answer.match_threshold,
            searched=_region(answer.searched),
            results=_hits(answer.searched.hits),
            products=[_region(p) for p in answer.products],
        )

    @app.get(
        "/products/{product_id:path}/similar",
        response_model=SimilarResponse,
        dependencies=reader,
        responses=errors(400, 404, *read_errors),
    )
    def similar(
        s: SearcherDep, product_id: str, k: KQuery = k_default, category: str | None = None
    ) -> SimilarResponse:
        hits = s.similar(product_id, k, category)
        return SimilarResponse(model_name=s.model.name, model_version=s.model.version,
                               results=_hits(hits))  # fmt: skip

    if cfg.search.writes:
        add_write_routes(app, writer)

    @app.get(
        "/images/{image_id}",
        response_class=Response,
        dependencies=reader,
        responses={
            200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
            **errors(404, *read_errors),
        },
    )
    def image(s: SearcherDep, image_id: ImageId) -> Response:
        png = s.image_png(image_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return app


def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"upload too large: more than {limit} bytes")
    return data


def add_write_routes(app: FastAPI, writer: list) -> None:
    """POST and DELETE /products, behind the write token; journalled before they answer."""

    @app.post("/products", status_code=201, response_model=ProductAdded, dependencies=writer,
              responses=errors(400, 401, 403, 413))  # fmt: skip
    def add_product(
        s: SearcherDep,
        image: Annotated[UploadFile, File(description="the product's catalog shot")],
        product_id: Annotated[str, Form(min_length=1, pattern=r"\S")],
        category: Annotated[str, Form()],
    ) -> ProductAdded:
        ids = s.add_product(product_id, category, read_upload(image, s.limits.max_file_bytes))
        return ProductAdded(product_id=product_id, category=category, image_ids=ids)

    @app.delete("/products/{product_id:path}", response_model=ProductRemoved,
                dependencies=writer, responses=errors(401, 403, 404))  # fmt: skip
    def delete_product(s: SearcherDep, product_id: str) -> ProductRemoved:
        return ProductRemoved(product_id=product_id, removed_images=s.remove_product(product_id))


def single_threaded_inference() -> None:
    """One torch thread per request: handlers run in worker threads, and torch's intra-op pool
    driven from them spins against itself on a busy machine (measured: ~300 ms per /search on
    two cores vs ~30 ms single-threaded). Concurrency comes from requests, not from one GEMM.
    Process-wide, so only ``serve`` and the benchmark call it, not ``create_app``."""
    import torch

    torch.set_num_threads(1)


def serve(cfg: DictConfig) -> None:
    import uvicorn

    app = create_app(cfg)  # refuses an unsafe write policy before anything else changes
    single_threaded_inference()
    uvicorn.run(app, host=str(cfg.search.host), port=int(cfg.search.port))
