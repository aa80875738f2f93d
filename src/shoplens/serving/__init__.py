"""The search service: the champion embedder plus the catalog index, over HTTP and the CLI.

* :mod:`~shoplens.serving.model` - load ``models:/<name>@champion`` and embed uint8 images;
* :mod:`~shoplens.serving.searcher` - validate a photo, embed it, search the index, persist
  product additions and removals (shared by ``shoplens search`` and the app);
* :mod:`~shoplens.serving.app` - the FastAPI app (``create_app(cfg)``) and its web page.
"""
