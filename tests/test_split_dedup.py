"""Duplicate groups and the grouped, stratified split: no copy of a photo crosses a split."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from helpers import near_copy, node, pattern

from shoplens.data import dedup
from shoplens.data.catalog import CatalogError
from shoplens.data.split import split_catalog

SPLIT_CFG = node("preprocess.split", val_fraction=0.2, test_fraction=0.2)


def png_bytes(img) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def catalog_with_copies() -> tuple[pd.DataFrame, np.ndarray]:
    """3 categories x 12 one-photo products; three products are copies of another one:
    'a-copy' is byte-identical to 'a-0', 'b-near' a re-encoded 'b-0' and 'c-x' a copy of
    'a-1' filed under another category. Product 'a-multi' has two different photos."""
    images: dict[str, list] = {}
    for c, category in enumerate("abc"):
        for i in range(12):
            images[f"{category}-{i}"] = [pattern(1000 * c + i)]
    images["a-copy"] = images["a-0"]
    images["b-near"] = [near_copy(images["b-0"][0])]
    images["c-x"] = images["a-1"]
    images["a-multi"] = [pattern(5000), pattern(5001)]
    rows, thumbnails = [], []
    for product, photos in images.items():
        for j, img in enumerate(photos):
            rows.append({
                "path": f"{product}-{j}.png",
                "product_id": product,
                "category": product.split("-")[0],
                "content_hash": dedup.content_hash(png_bytes(img)),
                "phash": dedup.perceptual_hash(img),
            })  # fmt: skip
            thumbnails.append(dedup.thumbnail(img))
    return pd.DataFrame(rows), np.stack(thumbnails)


def grouped_split(seed: int) -> pd.DataFrame:
    df, thumbnails = catalog_with_copies()
    duplicates = dedup.find_duplicates(df, max_distance=4, thumbnails=thumbnails)
    df["group_id"] = dedup.assign_groups(df, duplicates)
    return split_catalog(df, SPLIT_CFG, seed)


def test_duplicates_are_found_and_grouped():
    df, thumbnails = catalog_with_copies()
    duplicates = dedup.find_duplicates(df, max_distance=4, thumbnails=thumbnails)
    assert duplicates.exact_duplicates == 2  # a-copy, c-x
    assert duplicates.near_duplicates == 2  # b-0 and b-near
    groups = dedup.assign_groups(df, duplicates).groupby(df["product_id"]).first()
    assert groups["a-0"] == groups["a-copy"]
    assert groups["b-0"] == groups["b-near"]
    assert groups["a-1"] == groups["c-x"]
    linked = {"a-0", "a-copy", "b-0", "b-near", "a-1", "c-x"}
    others = groups.drop(list(linked))
    assert others.is_unique and not set(others) & set(groups[list(linked)])
    assert len(dedup.assign_groups(df, duplicates)[df["product_id"] == "a-multi"].unique()) == 1


def test_thumbnail_check_rejects_look_alikes_with_equal_hashes():
    same_hash = ["00ff00ff00ff00ff"] * 3
    thumbs = np.stack([dedup.thumbnail(pattern(s)) for s in (1, 2)] + [dedup.thumbnail(pattern(1))])
    assert dedup.near_duplicate_pairs(same_hash, 4).tolist() == [[0, 1], [0, 2], [1, 2]]
    assert dedup.near_duplicate_pairs(same_hash, 4, thumbs).tolist() == [[0, 2]]


def test_hamming_distance_threshold_is_inclusive():
    hashes = ["0000000000000000", "000000000000000f", "000000000000001f"]  # 0, 4, 5 bits
    assert dedup.near_duplicate_pairs(hashes, 4).tolist() == [[0, 1], [1, 2]]
    assert dedup.near_duplicate_pairs(hashes, 5).tolist() == [[0, 1], [0, 2], [1, 2]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_product_or_group_spans_two_splits(seed):
    df = grouped_split(seed)
    assert (df.groupby("product_id")["split"].nunique() == 1).all()
    assert (df.groupby("group_id")["split"].nunique() == 1).all()
    assert (df.groupby("group_id")["role"].nunique() == 1).all()
    for product, copy in (("a-0", "a-copy"), ("b-0", "b-near"), ("a-1", "c-x")):
        by_product = df.set_index("product_id")["split"]
        assert by_product[product] == by_product[copy]


def test_every_category_has_train_and_query_and_gallery_in_val_and_test():
    df = grouped_split(0)
    for category, part in df.groupby("category"):
        present = set(zip(part["split"], part["role"], strict=True))
        assert present == {("train", ""), ("val", "query"), ("val", "gallery"),
                           ("test", "query"), ("test", "gallery")}, category  # fmt: skip


def test_split_is_reproducible_and_seed_dependent():
    first, again, other = grouped_split(3), grouped_split(3), grouped_split(4)
    assert first[["split", "role"]].equals(again[["split", "role"]])
    assert not first["split"].equals(other["split"])


def test_fractions_are_roughly_respected():
    n = 100
    df = pd.DataFrame({"product_id": [f"p{i}" for i in range(n)], "category": "x",
                       "group_id": np.arange(n)})  # fmt: skip
    counts = split_catalog(df, SPLIT_CFG, 0)["split"].value_counts()
    assert counts.to_dict() == {"train": 60, "val": 20, "test": 20}


def test_too_few_products_names_the_category():
    df = pd.DataFrame({
        "product_id": [f"p{i}" for i in range(13)],
        "category": ["shoes"] * 10 + ["hats"] * 3,
        "group_id": np.arange(13),
    })  # fmt: skip
    with pytest.raises(CatalogError, match=r"'hats' has 3 product group.*at least 5") as caught:
        split_catalog(df, SPLIT_CFG, 0)
    assert "shoes" not in str(caught.value)
