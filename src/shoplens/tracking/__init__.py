"""MLflow tracking: where the store is, and what every run records about its inputs."""

from shoplens.tracking.provenance import data_version, git_commit
from shoplens.tracking.store import artifact_root, configure_mlflow, redact, tracking_uri

__all__ = [
    "artifact_root",
    "configure_mlflow",
    "data_version",
    "git_commit",
    "redact",
    "tracking_uri",
]
