"""The live catalog a service writes to: the index stage's output, a write-ahead journal of
every change since (SQLite), and atomic snapshots. See :mod:`.durable`."""

from shoplens.catalog_store.durable import DurableCatalog
from shoplens.catalog_store.journal import CatalogJournal, Change
from shoplens.catalog_store.snapshots import SnapshotStore

__all__ = ["CatalogJournal", "Change", "DurableCatalog", "SnapshotStore"]
