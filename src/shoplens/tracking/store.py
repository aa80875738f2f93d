"""The MLflow store: SQLite ``mlflow.db`` at the repository root unless told otherwise.

The path is absolute so that runs started from another working directory (Hydra output
folders, DVC's temporary experiment copies) land in the same store. ``MLFLOW_TRACKING_URI``
wins, so a team points every run at an ``mlflow server`` without touching config.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
from filelock import FileLock
from sqlalchemy.engine import make_url

from shoplens.project import repo_root


def tracking_uri(configured: str | None = None, root: Path | None = None) -> str:
    """The configured URI, else ``$MLFLOW_TRACKING_URI``, else ``<root>/mlflow.db`` (``root``:
    the repository root unless given)."""
    if configured:
        return configured
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    return f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"


def redact(uri: str) -> str:
    """A store or tracking URI fit for a log line, a run parameter or a printout: no password."""
    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: keep only what follows any credentials
        return uri.split("@")[-1]


def artifact_root() -> str | None:
    """Artifacts beside the SQLite store (absolute); a server decides its own."""
    uri = tracking_uri()
    if uri.startswith("sqlite:"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


@contextlib.contextmanager
def first_contact_lock(uri: str) -> Iterator[None]:
    """Held while a process first opens a SQLite store. MLflow creates a new database's tables
    and runs its migrations on first contact, in many transactions; two processes doing it at
    once (sweep workers, queued DVC experiments on a fresh project) leave alembic's temporary
    tables behind and the store unusable, which no retry repairs. A lock file beside the
    database makes the second process wait. A server, or another database, migrates once."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = FileLock(f"{uri.removeprefix('sqlite:///')}.lock")
    try:
        lock.acquire()
    except OSError:  # a read-only folder (a served registry): SQLite cannot migrate there either
        yield
        return
    try:
        yield
    finally:
        lock.release()


def configure_mlflow(configured_uri: str | None, experiment: str) -> str:
    """Point the MLflow client at the store and make sure the experiment exists."""
    uri = tracking_uri(configured_uri)
    mlflow.set_tracking_uri(uri)
    with first_contact_lock(uri):
        if mlflow.get_experiment_by_name(experiment) is None:
            location = artifact_root() if uri == tracking_uri() else None
            # Another worker on a server may create it between our check and this call.
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                mlflow.create_experiment(experiment, artifact_location=location)
    return uri
