"""The SQLite MLflow store under several processes at once (sweep workers, queued DVC
experiments): the first contact creates and migrates the tables, and must happen once."""

from __future__ import annotations

import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

# Each process imports MLflow first (seconds), then waits for the common start time, so that
# all of them touch the fresh database within milliseconds of each other.
FIRST_CONTACT = """
import sys, time
from shoplens.tracking.store import configure_mlflow
start, uri = float(sys.argv[1]), sys.argv[2]
time.sleep(max(0.0, start - time.time()))
configure_mlflow(uri, "shoplens")
"""


def test_processes_creating_a_fresh_sqlite_store_at_once_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 8  # after every interpreter has imported MLflow
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_CONTACT, str(start), uri],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(errors)
    assert [e.name for e in MlflowClient(uri).search_experiments()].count("shoplens") == 1


def test_a_store_whose_lock_cannot_be_created_still_opens(tmp_path, monkeypatch):
    """A registry mounted read-only for serving: no lock file, the store still answers."""
    from filelock import FileLock

    from shoplens.tracking.store import configure_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    configure_mlflow(uri, "shoplens")  # created while the folder was writable

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Read-only file system", self.lock_file)

    monkeypatch.setattr(FileLock, "acquire", read_only)
    assert configure_mlflow(uri, "shoplens") == uri
    assert MlflowClient(uri).get_experiment_by_name("shoplens") is not None
