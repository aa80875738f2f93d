"""Evaluation: retrieval metrics, the baseline comparison, plots."""
