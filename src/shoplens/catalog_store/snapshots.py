"""Atomic snapshots of a catalog index, so a restart replays only the journal's tail.

A snapshot is a :class:`~shoplens.search.catalog_index.CatalogIndex` saved into a fresh
directory, every file fsynced, the directory renamed into place, and only then the ``CURRENT``
pointer replaced (temp file, fsync, ``os.replace``). A crash at any instant leaves either the
previous snapshot current or the new one complete: never a half-written index, which is what
saving over the live files did. Older snapshots are deleted after the pointer moves.

Each snapshot records the journal sequence number it contains and the *base* it grew from (the
index stage's output, identified by model and build time): a snapshot of another base is never
loaded, because the index stage rebuilt the catalog under it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from shoplens.search.catalog_index import CatalogIndex

CURRENT, INFO = "CURRENT", "snapshot.json"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    journal_seq: int
    base: str


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):  # files before their directories
        _fsync(path)
    _fsync(directory)


class SnapshotStore:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def latest(self, base: str) -> Snapshot | None:
        """The current snapshot if it grew from ``base``, else None."""
        pointer = self.dir / CURRENT
        if not pointer.is_file():
            return None
        path = self.dir / pointer.read_text(encoding="utf-8").strip()
        info = json.loads((path / INFO).read_text(encoding="utf-8"))
        if info["base"] != base:
            return None
        return Snapshot(path, int(info["journal_seq"]), info["base"])

    def write(self, catalog: CatalogIndex, journal_seq: int, base: str) -> Snapshot:
        """Save ``catalog`` (which must contain exactly the journal up to ``journal_seq``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"seq-{journal_seq:012d}-{uuid.uuid4().hex[:8]}"
        tmp = self.dir / f".{name}.tmp"
        tmp.mkdir()
        catalog.save(tmp)
        info = {"journal_seq": int(journal_seq), "base": base}
        (tmp / INFO).write_text(json.dumps(info), encoding="utf-8")
        _fsync_tree(tmp)
        os.replace(tmp, self.dir / name)
        pointer = self.dir / f".{CURRENT}.{name}.tmp"
        pointer.write_text(name, encoding="utf-8")
        _fsync(pointer)
        os.replace(pointer, self.dir / CURRENT)
        _fsync(self.dir)
        for old in self.dir.iterdir():  # older snapshots and leftovers of a crashed write
            if old.name not in (name, CURRENT):
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        return Snapshot(self.dir / name, int(journal_seq), base)
