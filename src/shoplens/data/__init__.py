"""The catalog data: sources, image validation, duplicates, splits and the decoded cache.

Modules are imported one by one (``from shoplens.data.images import load_rgb``) so that the
HTTP service, which only needs image decoding, does not pay for pandas or faiss at start-up.
"""
