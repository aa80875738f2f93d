"""Helpers for the sweep tests: run ``python train.py -m`` as a user would, and a throwaway
PostgreSQL server on localhost for the many-machines storage.

The sweeps run as subprocesses from the repository root (the way people start them), with
every path, the Optuna storage and the MLflow store pointed into the test's tmp folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]


def sweep_args(workspace: Path, overrides, study: str, *extra: str, storage: str | None = None):
    """``train.py -m`` arguments for a sweep of the tiny catalog, one short epoch per trial."""
    return [
        sys.executable,
        "train.py",
        "-m",
        *overrides(workspace, "trainer.max_epochs=1", "tracking.log_checkpoint=false"),
        f"hydra.sweep.dir={workspace / 'multirun' / study}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.storage={storage or sqlite_url(workspace)}",
        *extra,
    ]


def sqlite_url(workspace: Path) -> str:
    return f"sqlite:///{workspace / 'optuna.db'}"


def run_sweep(args: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def start_sweep(args: list[str], log: Path, threads: int | None = None) -> subprocess.Popen:
    """Start a sweep in the background; ``threads`` caps torch's threads per worker (several
    workers on one machine each spinning up a thread per core slow each other down badly)."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    env["PYTHONFAULTHANDLER"] = "1"  # a worker killed by a signal leaves its stack in the log
    with log.open("w") as out:
        return subprocess.Popen(
            args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
            preexec_fn=_interruptible,
        )  # fmt: skip


def _interruptible() -> None:
    """Ctrl-C works in the worker even where the suite runs as a background job of a
    non-interactive shell, which starts with SIGINT ignored (Python then installs no
    KeyboardInterrupt handler): the tests interrupt workers on purpose."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load(study: str, storage: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=storage)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    initdb = found[0] if found else shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh PostgreSQL cluster in /tmp on a free localhost port; yields a SQLAlchemy URL.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
    user the Debian package creates. Skips (with the reason) where the server is missing.
    """
    bindir = _binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (.ci/run installs Debian's postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="shoplens-pg-"))
    if prefix:
        os.chown(home, user.pw_uid, user.pw_gid)
    data, port = home / "data", _free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    try:
        init = ["-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]
        subprocess.run([*prefix, str(bindir / "initdb"), *init], **run)
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
        ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log")]
        subprocess.run([*ctl, "-w", "-t", "60", "-o", options, "start"], **run)
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE optuna")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/optuna"
    finally:
        stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(stop, capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)
