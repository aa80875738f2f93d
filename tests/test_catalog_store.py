"""The service's live catalog without a model: journalled changes come back after a restart,
snapshots shorten the replay and are never half-written, a rebuilt base gets every change
re-applied, and additions embedded by an old model are embedded again."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from shoplens.catalog_store import CatalogJournal, DurableCatalog, SnapshotStore
from shoplens.catalog_store.durable import JOURNAL_FILE, SNAPSHOTS_DIR
from shoplens.catalog_store.query_log import QueryLog, QueryRecord
from shoplens.catalog_store.snapshots import CURRENT
from shoplens.search import CatalogIndex, IndexConfig

DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def build_base(directory, version: str = "1", n: int = 5) -> None:
    """An index stage output: n products, one photo each."""
    catalog = CatalogIndex.create(IndexConfig(kind="exact"), DIM, "embedder", version)
    rows = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(n)],
            "category": "shirt",
            "path": [f"p{i}.png" for i in range(n)],
        }  # fmt: skip
    )
    catalog.add_products(rows, np.stack([unit(i) for i in range(n)]))
    directory.mkdir(parents=True, exist_ok=True)
    catalog.save(directory)


def no_reembed(paths):
    raise AssertionError(f"nothing should be re-embedded, got {paths}")


def open_catalog(tmp_path, version="1", reembed=no_reembed, every=1000) -> DurableCatalog:
    return DurableCatalog(tmp_path / "base", tmp_path / "state", "embedder", version, reembed,
                          snapshot_every=every)  # fmt: skip


def top(catalog: DurableCatalog, seed: int) -> str:
    return catalog.index.search(unit(seed)[None], 1)[0][0].product_id


def test_the_journal_returns_changes_in_order_with_their_vectors(tmp_path):
    journal = CatalogJournal(tmp_path / "j.db")
    a = journal.record_add("p1", "shirt", "uploads/a.png", "m:1", unit(1))
    r = journal.record_remove("p0")
    journal.close()
    changes = list(CatalogJournal(tmp_path / "j.db").since(0))
    assert [(c.seq, c.op, c.product_id) for c in changes] == [(a, "add", "p1"), (r, "remove", "p0")]
    np.testing.assert_array_equal(changes[0].vector, unit(1))
    assert list(CatalogJournal(tmp_path / "j.db").since(a))[0].op == "remove"


def test_changes_survive_a_restart_without_touching_the_base(tmp_path):
    build_base(tmp_path / "base")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "base").rglob("*")}
    catalog = open_catalog(tmp_path)
    catalog.add("new", "shirt", "uploads/new.png", unit(100))
    assert catalog.remove("p0") and not catalog.remove("nope")
    # No close(): as after a SIGKILL, nothing but the journal was written.
    assert not (tmp_path / "state" / SNAPSHOTS_DIR).exists()
    again = open_catalog(tmp_path)
    assert again.replayed == 2
    assert top(again, 100) == "new" and not again.index.photos("p0")
    assert len(again.index) == 5
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "base").rglob("*")}


def test_a_snapshot_is_loaded_and_only_the_tail_is_replayed(tmp_path):
    build_base(tmp_path / "base")
    catalog = open_catalog(tmp_path, every=2)
    catalog.add("a", "shirt", "uploads/a.png", unit(101))
    catalog.add("b", "shirt", "uploads/b.png", unit(102))  # the 2nd change: a snapshot
    catalog._snapshotting.join()
    catalog.add("c", "shirt", "uploads/c.png", unit(103))
    again = open_catalog(tmp_path)
    assert again.replayed == 1  # only "c"
    assert {top(again, s) for s in (101, 102, 103)} == {"a", "b", "c"}
    ids = [again.index.photos(p)[0][0] for p in "abc"]
    assert ids == [catalog.index.photos(p)[0][0] for p in "abc"]  # same ids after replay


def test_a_crash_while_snapshotting_leaves_the_previous_snapshot_current(tmp_path):
    build_base(tmp_path / "base")
    catalog = open_catalog(tmp_path)
    catalog.add("a", "shirt", "uploads/a.png", unit(101))
    catalog.close()  # a snapshot holding "a"
    store = SnapshotStore(tmp_path / "state" / SNAPSHOTS_DIR)
    current = (store.dir / CURRENT).read_text()
    half = store.dir / ".seq-000000000009-dead.tmp"  # what a killed writer leaves behind
    half.mkdir()
    (half / "index.faiss").write_bytes(b"")
    catalog = open_catalog(tmp_path)
    assert (store.dir / CURRENT).read_text() == current and top(catalog, 101) == "a"
    catalog.add("b", "shirt", "uploads/b.png", unit(102))
    catalog.close()
    assert not half.exists() and len([p for p in store.dir.iterdir() if p.is_dir()]) == 1


def test_a_rebuilt_base_gets_every_change_again_reembedded_by_the_new_model(tmp_path):
    build_base(tmp_path / "base")
    catalog = open_catalog(tmp_path)
    (tmp_path / "state" / "uploads").mkdir(parents=True)
    for name in ("kept", "gone", "removed"):
        (tmp_path / "state" / "uploads" / f"{name}.png").write_bytes(b"png")
    catalog.add("kept", "shirt", "uploads/kept.png", unit(101))
    catalog.add("gone", "shirt", "uploads/gone.png", unit(102))
    catalog.add("removed", "shirt", "uploads/removed.png", unit(103))
    catalog.remove("removed")
    catalog.close()
    os.remove(tmp_path / "state" / "uploads" / "gone.png")  # its file is lost
    build_base(tmp_path / "base", version="2", n=3)  # dvc repro: a new model, a new index
    asked = []

    def reembed(paths):
        asked.append([os.path.basename(p) for p in paths])
        return np.stack([unit(200 + len(asked)) for _ in paths])

    rebuilt = open_catalog(tmp_path, version="2", reembed=reembed)
    assert asked == [["kept.png", "removed.png"]]  # one batch; the lost file is skipped
    assert [p for p in ("kept", "gone", "removed") if rebuilt.index.photos(p)] == ["kept"]
    assert len(rebuilt.index) == 4 and rebuilt.index.meta["model_version"] == "2"


def test_an_index_of_another_model_is_refused(tmp_path):
    from shoplens.search import IndexModelMismatch

    build_base(tmp_path / "base", version="1")
    with pytest.raises(IndexModelMismatch):
        open_catalog(tmp_path, version="2")
    assert (tmp_path / "state" / JOURNAL_FILE).exists()


def test_query_log_rotates_by_age_and_keeps_photos_only_when_told(tmp_path):
    record = QueryRecord(np.arange(4, dtype=np.float32), "m:1", "Bag", 0.91, True, False)
    log = QueryLog(tmp_path / "queries.db", keep_days=1)
    log.record(record, b"\xff\xd8 a photo", at=1_000.0)
    log.record(record, b"\xff\xd8 a photo", at=1_000.0 + 86_400 + 61)  # a day later: rotates
    vectors, table = log.window(0)
    assert len(table) == 1 and table["at"][0] > 87_000 and not table["has_photo"].any()
    np.testing.assert_array_equal(vectors[0], record.embedding)
    assert (table["category"][0], table["match"][0], table["localized"][0]) == ("Bag", 0, 1)
    kept = QueryLog(tmp_path / "with_photos.db", keep_days=1, store_photos=True)
    kept.record(record, b"\xff\xd8 a photo", at=5.0)
    assert kept.window(0, 10)[1]["has_photo"].all() and len(kept.window(6)[1]) == 0
    with pytest.raises(ValueError, match="keep_days"):
        QueryLog(tmp_path / "bad.db", keep_days=0)
