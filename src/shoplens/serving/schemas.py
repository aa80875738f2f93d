"""The HTTP API's request and response shapes (pydantic), so /docs shows every response."""

from __future__ import annotations

from pydantic import BaseModel, Field

Box = list[int]  # x0, y0, x1, y1 in the photo's pixels (x1, y1 exclusive)


class Hit(BaseModel):
    rank: int
    product_id: str
    category: str
    score: float = Field(description="cosine similarity of the product's best-matching photo")
    path: str
    image_id: int
    image_url: str


class Region(BaseModel):
    """A part of the photo that was searched: a product the localizer found, or the whole."""

    box: Box | None = Field(description="the product's box; null: the whole photo")
    score: float | None = Field(None, description="the localizer's confidence in the box")
    results: list[Hit] = Field(default_factory=list)
    super_resolved: bool = Field(
        False, description="the region was small and went through super-resolution once"
    )


class SearchResponse(BaseModel):
    model_name: str
    model_version: str
    width: int
    height: int
    localized: bool = Field(description="a product was found and its crop searched")
    note: str = Field(description="why the whole photo was searched, when it was")
    super_resolved: bool = Field(
        False,
        description="the searched region was smaller than the model's upscale threshold and "
        "was super-resolved once before embedding (never for a large photo)",
    )
    match: bool | None = Field(
        description="false: no confident match, the closest catalog photo's similarity is under "
        "match_threshold (the "
        "shop probably does not sell what was photographed; results are still listed); "
        "null: this index has no calibrated threshold"
    )
    match_threshold: float | None = Field(
        description="the similarity below which a photo has no confident match (results are "
        "ranked with the category head's prior, so the first result need not be the closest)"
    )
    searched: Region = Field(description="the region the results belong to (the main product)")
    results: list[Hit] = Field(description="the searched region's results")
    products: list[Region] = Field(
        description="every product found, largest first; each with results when all_products"
    )


class SimilarResponse(BaseModel):
    model_name: str
    model_version: str
    results: list[Hit]


class ProductAdded(BaseModel):
    product_id: str
    category: str
    image_ids: list[int]


class ProductRemoved(BaseModel):
    product_id: str
    removed_images: int


class Health(BaseModel):
    status: str
    model_name: str
    model_version: str
    localizer: bool = Field(description="the model localizes products in photos")
    index_kind: str
    index_size: int
    match_threshold: float | None = Field(description="no confident match below this score")
    products: int
    categories: list[str]


class ErrorBody(BaseModel):
    detail: str = Field(description="what is wrong with the request, for a person")
