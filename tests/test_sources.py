"""Each catalog source yields a valid catalog table with the right products and categories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import folder_catalog, node, pattern, save
from PIL import Image

from shoplens.data.catalog import CatalogError, validate_catalog
from shoplens.data.sources import SOURCES, load_source
from shoplens.data.sources import fashion_mnist as fmnist

FMNIST_ROOT = Path(fmnist.DEFAULT_ROOT)


def data_cfg(**values):
    return node("data", **{"root": None, "manifest": None, "per_class": None, **values})


@pytest.mark.skipif(
    not (FMNIST_ROOT / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed at {FMNIST_ROOT} (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_pngs_match_the_idx_arrays_and_labels(tmp_path):
    cfg = data_cfg(source="fashion_mnist", root=str(FMNIST_ROOT), per_class=3)
    catalog = load_source(cfg, tmp_path, seed=7)
    assert len(catalog) == 30
    assert catalog.groupby("category").size().to_dict() == dict.fromkeys(fmnist.CATEGORY_NAMES, 3)
    assert catalog["product_id"].is_unique
    images, labels, product_ids = fmnist.read_pool(FMNIST_ROOT)
    assert images.shape == (70_000, 28, 28) and len(product_ids) == 70_000
    position = {pid: i for i, pid in enumerate(product_ids)}
    for row in catalog.itertuples():
        i = position[row.product_id]
        assert Path(row.path).parent.name == row.category == fmnist.CATEGORY_NAMES[labels[i]]
        assert np.array_equal(np.asarray(Image.open(row.path)), images[i])
    # Same seed, same subset; another seed, another subset.
    assert (
        load_source(cfg, tmp_path, seed=7)["product_id"].tolist() == catalog["product_id"].tolist()
    )
    assert set(load_source(cfg, tmp_path, seed=8)["product_id"]) != set(catalog["product_id"])


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(CatalogError, match=r"apt-get install dataset-fashion-mnist.*data\.root="):
        load_source(data_cfg(source="fashion_mnist", root=str(tmp_path)), tmp_path)


def test_folder_flat_and_nested_products(tmp_path):
    root = tmp_path / "shop"
    save(pattern(1), root / "shoes" / "boot.JPG")  # upper-case extension counts
    save(pattern(2), root / "shoes" / "runner" / "side.png")
    save(pattern(3), root / "shoes" / "runner" / "angles" / "top.webp")
    save(pattern(4), root / "bags" / "tote.png")
    (root / "bags" / "readme.txt").write_text("not an image")
    (root / "bags" / ".DS_Store").write_bytes(b"\0\0")
    save(pattern(5), root / "bags" / ".hidden" / "x.png")
    (root / "shoes" / "broken.jpg").write_bytes(b"")  # listed; preprocess quarantines it
    catalog = load_source(data_cfg(source="folder", root=str(root)), tmp_path)
    got = dict(zip(catalog["path"].map(lambda p: Path(p).name), catalog["product_id"], strict=True))
    assert got == {
        "tote.png": "bags/tote",
        "boot.JPG": "shoes/boot",
        "broken.jpg": "shoes/broken",
        "side.png": "shoes/runner",
        "top.webp": "shoes/runner",
    }
    assert catalog.set_index("product_id")["category"].to_dict()["shoes/runner"] == "shoes"


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        load_source(data_cfg(source="folder", root=str(tmp_path / "nope")), tmp_path)
    (tmp_path / "flat.png").write_bytes(b"x")
    with pytest.raises(CatalogError, match="no category folders"):
        load_source(data_cfg(source="folder", root=str(tmp_path)), tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_resolves_relative_paths_and_keeps_attributes(tmp_path, suffix):
    images = folder_catalog(tmp_path / "img", {"hats": 2})
    table = pd.DataFrame({
        "path": ["img/hats/hats-0.png", str(images["hats"][1])],
        "product_id": ["00123", "00124"],
        "category": ["hats", "hats"],
        "colour": ["red", "NA"],
    })  # fmt: skip
    manifest = tmp_path / f"catalog{suffix}"
    table.to_csv(manifest, index=False) if suffix == ".csv" else table.to_parquet(manifest)
    catalog = load_source(data_cfg(source="manifest", manifest=str(manifest)), tmp_path)
    assert catalog["path"].tolist() == [str(p) for p in images["hats"]]
    assert catalog["product_id"].tolist() == ["00123", "00124"]  # leading zeros kept
    assert catalog["colour"].tolist() == ["red", "NA"]  # "NA" is a colour, not a null


def test_manifest_errors_are_clear(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.png"], "category": ["x"]}).to_csv(manifest, index=False)
    with pytest.raises(CatalogError, match=r"lacks column\(s\) \['product_id'\]"):
        load_source(data_cfg(source="manifest", manifest=str(manifest)), tmp_path)
    pd.DataFrame(
        {"path": ["a.png", "b.png"], "product_id": ["1", ""], "category": ["x", "x"]}
    ).to_csv(manifest, index=False)
    with pytest.raises(CatalogError, match="'product_id' has 1 empty or null"):
        load_source(data_cfg(source="manifest", manifest=str(manifest)), tmp_path)


def test_unknown_source_lists_the_known_ones(tmp_path):
    with pytest.raises(CatalogError, match="known sources: fashion_mnist, folder, manifest"):
        load_source(data_cfg(source="s3"), tmp_path)
    assert set(SOURCES) == {"fashion_mnist", "folder", "manifest"}


def test_validate_catalog_rejects_empty_and_missing_columns():
    with pytest.raises(CatalogError, match="empty"):
        validate_catalog(pd.DataFrame(columns=["path", "product_id", "category"]))
    with pytest.raises(CatalogError, match="missing column"):
        validate_catalog(pd.DataFrame({"path": ["a"]}))
