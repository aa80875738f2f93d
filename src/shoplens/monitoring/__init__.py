"""Watching what shoppers search: drift of the query log against a reference (``shoplens monitor``)."""

from shoplens.monitoring.drift import EMBEDDING_METHODS, DriftSettings, Window, compare

__all__ = ["EMBEDDING_METHODS", "DriftSettings", "Window", "compare"]
