"""shoplens: search a product catalog with a photo.

Fine-tunes a pretrained image backbone on a shop's catalog, tracks every run in MLflow,
promotes the better model and serves a FAISS index of the catalog.
"""

__version__ = "0.1.0"
