"""The catalog a service writes to: the index stage's output, plus every change since, durably.

Three parts, each on disk where it belongs:

* the **base**: the index the ``index`` stage built (a DVC output, so the service never writes
  into it: ``dvc repro`` may replace it at any time);
* the **journal** (:mod:`~shoplens.catalog_store.journal`): each acknowledged addition or removal,
  committed before the response;
* **snapshots** (:mod:`~shoplens.catalog_store.snapshots`): the base with the journal applied up to
  some row, written atomically every ``snapshot_every`` changes in a background thread and on
  a clean shutdown, so a start replays only the journal's tail.

A start loads the newest snapshot of the current base (or the base itself) and replays what
follows. When the index stage has rebuilt the base, every journalled change is replayed onto
the new one, and additions embedded by another model version are re-embedded from their stored
photos: a shop's API additions outlive retraining.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from shoplens.catalog_store.journal import ADD, CatalogJournal, Change
from shoplens.catalog_store.snapshots import SnapshotStore
from shoplens.data.catalog import CATEGORY, PATH, PRODUCT_ID
from shoplens.search.catalog_index import META_FILE, CatalogIndex

log = logging.getLogger(__name__)
JOURNAL_FILE, SNAPSHOTS_DIR = "journal.db", "snapshots"
Reembed = Callable[[list[str]], np.ndarray]  # stored upload paths -> vectors of this model


def base_identity(directory: str | Path) -> str:
    """Which index-stage build a snapshot grew from: model, version and build time."""
    meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    return f"{meta['model_name']}:{meta['model_version']}:{meta['created_at']}"


class DurableCatalog:
    def __init__(
        self,
        base_dir: str | Path,
        state_dir: str | Path,
        model_name: str,
        model_version: str,
        reembed: Reembed,
        snapshot_every: int = 1000,
    ):
        if not (Path(base_dir) / META_FILE).is_file():
            raise FileNotFoundError(f"no index in {base_dir}: run `shoplens index` first")
        self.state_dir = Path(state_dir)
        self.model = f"{model_name}:{model_version}"
        self.snapshot_every = int(snapshot_every)
        self.base = base_identity(base_dir)
        self.journal = CatalogJournal(self.state_dir / JOURNAL_FILE)
        self.snapshots = SnapshotStore(self.state_dir / SNAPSHOTS_DIR)
        latest = self.snapshots.latest(self.base)
        # Either way check_model: vectors of another model are not comparable to ours.
        self.index = CatalogIndex.load(
            latest.path if latest else base_dir, model_name, model_version
        )
        self._applied = latest.journal_seq if latest else 0
        self._since_snapshot = 0
        self.changes = 0  # journalled by this process (Prometheus: shoplens_catalog_changes)
        self._write = threading.Lock()  # journal row and in-memory change, in one order
        self._snapshotting: threading.Thread | None = None
        self.replayed = self._replay(self.journal.since(self._applied), reembed)

    # -- writes: journal first, then memory ----------------------------------------------------
    def add(self, product_id: str, category: str, path: str, vector: np.ndarray) -> list[int]:
        with self._write:
            seq = self.journal.record_add(product_id, category, path, self.model, vector)
            ids = self._add_rows([(product_id, category, path)], np.atleast_2d(vector))
            self._advance(seq)
        return ids

    def remove(self, product_id: str) -> list[tuple[int, str]]:
        """Remove every photo of ``product_id``; returns them (empty: it was not indexed)."""
        with self._write:
            photos = self.index.photos(product_id)
            if photos:
                seq = self.journal.record_remove(product_id)
                self.index.remove_product(product_id)
                self._advance(seq)
        return photos

    def _add_rows(self, rows: list[tuple[str, str, str]], vectors: np.ndarray) -> list[int]:
        table = pd.DataFrame(rows, columns=[PRODUCT_ID, CATEGORY, PATH])
        return self.index.add_products(table, np.asarray(vectors, np.float32)).tolist()

    def _advance(self, seq: int) -> None:
        self._applied, self._since_snapshot = seq, self._since_snapshot + 1
        self.changes += 1
        busy = self._snapshotting is not None and self._snapshotting.is_alive()
        if self._since_snapshot >= self.snapshot_every and not busy:
            self._snapshotting = threading.Thread(target=self.snapshot, name="index-snapshot")
            self._snapshotting.start()

    # -- replay ------------------------------------------------------------------------------
    def _replay(self, changes: Iterable[Change], reembed: Reembed) -> int:
        """Apply journalled changes; consecutive additions go in one batch (one index update)."""
        count, batch = 0, []
        for change in changes:
            count += 1
            if change.op == ADD:
                batch.append(change)
                continue
            self._apply_adds(batch, reembed)
            batch = []
            self.index.remove_product(change.product_id)
        self._apply_adds(batch, reembed)
        if count:
            log.info("replayed %d journalled catalog change(s) onto %s", count, self.base)
            self._since_snapshot = count
        return count

    def _apply_adds(self, batch: list[Change], reembed: Reembed) -> None:
        if not batch:
            return
        stale = [c for c in batch if c.model != self.model]
        fresh: dict[int, np.ndarray] = {}
        if stale:  # embedded by an earlier model: embed the stored photos again
            present = [c for c in stale if (self.state_dir / str(c.path)).is_file()]
            if len(present) < len(stale):
                log.warning("%d added photo(s) lost their file; not re-indexed",
                            len(stale) - len(present))  # fmt: skip
            if present:
                vectors = reembed([str(self.state_dir / str(c.path)) for c in present])
                fresh = dict(zip([c.seq for c in present], vectors, strict=True))
        keep = [c for c in batch if c.model == self.model or c.seq in fresh]
        if keep:
            vectors = np.stack([fresh.get(c.seq, c.vector) for c in keep])
            self._add_rows([(c.product_id, c.category, c.path) for c in keep], vectors)
        self._applied = batch[-1].seq

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Write the index as it is now; writers wait meanwhile (seconds at a million photos,
        once every ``snapshot_every`` changes), readers do not."""
        with self._write:
            if self._since_snapshot:
                self.snapshots.write(self.index, self._applied, self.base)
                self._since_snapshot = 0

    def close(self) -> None:
        """Finish a running snapshot, write a last one (a fast next start), close the journal."""
        if self._snapshotting is not None:
            self._snapshotting.join()
        self.snapshot()
        self.journal.close()
