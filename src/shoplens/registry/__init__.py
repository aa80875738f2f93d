"""Model registry: the embedder as a self-contained MLflow model, and its promotion gate."""
