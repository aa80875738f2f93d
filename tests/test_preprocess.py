"""The preprocess stage end to end on a tiny generated shop folder: every output exists and
they agree with each other and with the input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import bad_files, folder_catalog, near_copy, pattern, save
from PIL import Image

from shoplens.config import compose_config
from shoplens.data.cache import open_cache
from shoplens.data.catalog import DERIVED_COLUMNS, CatalogError, read_categories, read_manifest
from shoplens.data.images import ImageLimits, letterbox, load_rgb
from shoplens.pipeline.preprocess import run


def mixed_formats(folder: Path) -> None:
    """One product per format or colour mode a shop might upload."""
    exif = Image.Exif()
    exif[0x0112] = 6
    gray16 = (np.asarray(pattern(712).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = pattern(709).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 128))
    images = {
        "png.png": (pattern(700), {}),
        "jpeg.jpg": (pattern(701), {"quality": 92}),
        "webp.webp": (pattern(702), {"quality": 90}),
        "bmp.bmp": (pattern(703), {}),
        "tiff.tif": (pattern(704), {}),
        "gif.gif": (pattern(705).quantize(64), {}),
        "cmyk.jpg": (pattern(706).convert("CMYK"), {}),
        "gray.png": (pattern(707).convert("L"), {}),
        "palette.png": (pattern(708).quantize(32), {"transparency": 0}),
        "rgba.png": (rgba, {}),
        "rotated.jpg": (pattern(710, (60, 30)), {"exif": exif}),
        "gray16.png": (Image.fromarray(gray16), {}),
    }
    for name, (img, params) in images.items():
        save(img, folder / name, **params)


@pytest.fixture()
def shop(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "shop"
    written = folder_catalog(root, {"bags": 6, "hats": 6, "shoes": 6})
    mixed_formats(root / "mixed")
    shutil.copyfile(written["shoes"][0], root / "hats" / "exact-copy.png")
    save(near_copy(Image.open(written["hats"][1])), root / "hats" / "near-copy.jpg", quality=95)
    bad = bad_files(root / "bags")
    return root, bad


def compose(root: Path, tmp_path: Path, *extra: str):
    return compose_config([
        "data=folder", f"data.root={root}",
        f"paths.catalog_dir={tmp_path}/catalog", f"paths.reports_dir={tmp_path}/reports",
        "preprocess.cache_size=32", "preprocess.max_pixels=10000", *extra,
    ])  # fmt: skip


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_preprocess_outputs_exist_and_agree(shop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, bad = shop
    before = fingerprint(root)
    summary = run(compose(root, tmp_path))
    assert fingerprint(root) == before  # input files never touched

    catalog_dir, reports = tmp_path / "catalog", tmp_path / "reports" / "preprocess"
    for name in ("quarantine.csv", "counts.csv", "summary.json", "preview.png"):
        assert (reports / name).is_file(), name
    manifest, cache = read_manifest(catalog_dir), open_cache(catalog_dir / "images.npy")
    categories = read_categories(catalog_dir)
    total = len(before)
    kept = total - len(bad)
    assert len(manifest) == cache.shape[0] == kept == summary["images_kept"]
    assert cache.shape[1:] == (32, 32, 3)
    assert summary["images_total"] == total and summary["images_quarantined"] == len(bad)
    assert summary["train_images"] + summary["val_images"] + summary["test_images"] == kept
    assert json.loads((reports / "summary.json").read_text()) == summary

    quarantine = pd.read_csv(reports / "quarantine.csv")
    assert list(quarantine.columns) == ["path", "reason"]
    reasons = dict(zip(quarantine["path"], quarantine["reason"], strict=True))
    assert set(reasons) == set(bad)
    for path, expected in bad.items():
        assert reasons[path].startswith(expected), (path, reasons[path])
    assert set(manifest["path"]) == set(before) - set(bad)  # every good file kept, mixed ones too

    assert categories == ["bags", "hats", "mixed", "shoes"]
    assert (manifest["category"] == [categories[i] for i in manifest["label"]]).all()
    assert sorted(manifest["cache_index"]) == list(range(kept))
    assert set(DERIVED_COLUMNS) <= set(manifest.columns)
    limits = ImageLimits(max_pixels=10_000)
    for row in manifest.sample(5, random_state=0).itertuples():
        assert np.array_equal(cache[row.cache_index], letterbox(load_rgb(row.path, limits), 32))
    gray16 = manifest.set_index(manifest["path"].map(lambda p: Path(p).name)).loc["gray16.png"]
    assert 40 < cache[gray16.cache_index].mean() < 215  # scaled, not clipped to white

    # copies share a group, and so a split, with the photo they copy
    by_name = manifest.set_index(manifest["path"].map(lambda p: Path(p).name))
    for copy, original in (("exact-copy.png", "shoes-0.png"), ("near-copy.jpg", "hats-1.png")):
        assert by_name.loc[copy, "group_id"] == by_name.loc[original, "group_id"]
        assert by_name.loc[copy, "split"] == by_name.loc[original, "split"]
    assert summary["exact_duplicates"] == 1 and summary["near_duplicates"] == 2
    assert (manifest.groupby("group_id")["split"].nunique() == 1).all()

    counts = pd.read_csv(reports / "counts.csv", keep_default_na=False)
    assert counts["images"].sum() == kept
    val_queries = counts[(counts["split"] == "val") & (counts["role"] == "query")]["images"].sum()
    assert val_queries == summary["val_queries"] > 0


def test_all_images_bad_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "shop"
    bad = bad_files(root / "only")
    stale = tmp_path / "catalog" / "manifest.parquet"  # from an earlier, successful run
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    with pytest.raises(CatalogError, match=f"all {len(bad)} were quarantined"):
        run(compose(root, tmp_path))
    assert not stale.exists()
    quarantine = pd.read_csv(tmp_path / "reports" / "preprocess" / "quarantine.csv")
    assert len(quarantine) == len(bad)


def test_clean_catalog_writes_an_empty_quarantine_with_header(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder_catalog(tmp_path / "shop", {"bags": 5, "hats": 5})
    summary = run(compose(tmp_path / "shop", tmp_path))
    quarantine = tmp_path / "reports" / "preprocess" / "quarantine.csv"
    assert quarantine.read_text().strip() == "path,reason"
    assert summary["images_quarantined"] == 0 and summary["images_kept"] == 10
