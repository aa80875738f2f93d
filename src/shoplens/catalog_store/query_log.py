"""What shoppers search, kept (opt-in) so drift can be measured: ``search.query_log``.

Per ``POST /search``: the query embedding the service searched with, the category of its best
result, the top score, whether a product was localized, whether the answer was a confident
match, the model version and the time. Never the photo, unless ``store_photos`` says so
explicitly: an embedding is what drift detection needs, and a photo of a person's room is not
something a shop should keep by default.

The same embedded store as the catalog journal (SQLite, WAL), in its own file beside it. Rows
are a log, not acknowledged data: ``synchronous=NORMAL`` (a crash may lose the last rows, never
corrupt the file) keeps a search's cost to a fraction of a millisecond. Rows older than
``keep_days`` are deleted as new ones arrive (at most once a minute).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,
    category TEXT,
    top_score REAL,
    localized INTEGER NOT NULL,
    match INTEGER,
    photo BLOB
);
CREATE INDEX IF NOT EXISTS queries_at ON queries (at);
"""
ROTATE_EVERY_S = 60.0
QUERY_LOG_FILE = "queries.db"  # in search.state_dir, beside the catalog journal


@dataclass(frozen=True)
class QueryRecord:
    embedding: np.ndarray  # the vector searched with, float32
    model: str  # "name:version"
    category: str | None  # the best result's category
    top_score: float | None
    localized: bool
    match: bool | None  # None: the index has no calibrated threshold


class QueryLog:
    def __init__(self, path: str | Path, keep_days: float, store_photos: bool = False):
        if keep_days <= 0:
            raise ValueError(f"keep_days must be positive, got {keep_days}")
        self.path, self.keep_s, self.store_photos = Path(path), keep_days * 86400, store_photos
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._rotated = 0.0

    def record(self, entry: QueryRecord, photo: bytes | None = None, at: float | None = None):
        at = time.time() if at is None else at
        row = (
            at, entry.model, np.asarray(entry.embedding, np.float32).tobytes(), entry.category,
            entry.top_score, int(entry.localized), None if entry.match is None else int(entry.match),
            photo if self.store_photos else None,
        )  # fmt: skip
        with self._lock:
            self._db.execute(
                "INSERT INTO queries (at, model, embedding, category, top_score, localized, "
                "match, photo) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            if at - self._rotated >= ROTATE_EVERY_S:
                self._db.execute("DELETE FROM queries WHERE at < ?", (at - self.keep_s,))
                self._rotated = at

    def window(self, since: float, until: float | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Embeddings ``(N, D)`` and the other columns of the searches in ``[since, until)``."""
        until = time.time() + 1 if until is None else until
        with self._lock:
            rows = self._db.execute(
                "SELECT at, model, embedding, category, top_score, localized, match, "
                "photo IS NOT NULL FROM queries WHERE at >= ? AND at < ? ORDER BY id",
                (since, until),
            ).fetchall()
        columns = ["at", "model", "category", "top_score", "localized", "match", "has_photo"]
        table = pd.DataFrame([r[:2] + r[3:] for r in rows], columns=columns)
        vectors = [np.frombuffer(r[2], np.float32) for r in rows]
        return (np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)), table

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
