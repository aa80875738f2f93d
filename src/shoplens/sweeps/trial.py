"""One running trial: its pruning callback inside Lightning, and its heartbeat in the storage.

Pruning uses optuna-integration's ``PyTorchLightningPruningCallback``, which works with the
``lightning`` 2.x namespace (it imports ``lightning.pytorch``). Two things change for shoplens:

* ``shoplens.pipeline.train.run`` calls ``trainer.validate`` once before ``fit`` to measure the
  untrained baseline. The stock callback would report that as epoch 0 and could prune a trial
  before it trained a single step; Optuna then keeps the first value reported for a step and
  ignores the real epoch 0. We report during ``fit`` only.
* the callback records the MLflow run id of the training run, so the sweeper can tag that run
  (the trial's child run) with the final state, even when training dies halfway.

Interrupts: Ctrl-C or a scheduler's SIGTERM must leave the trial for the next run rather than
count it as a failure. Hydra turns a KeyboardInterrupt raised while it composes the job into a
``ConfigCompositionException``, so the exception type cannot tell; :class:`Interrupts` records
that the signal arrived and then raises ``KeyboardInterrupt`` as Python would.

The heartbeat: Optuna marks a RUNNING trial whose worker stopped beating as FAIL (and we then
re-queue its parameters), which is how a sweep survives a killed worker. ``study.optimize``
runs such a thread itself; with ask-and-tell the caller has to, hence :class:`Heartbeat`.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn
from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

from shoplens.sweeps.context import TrialHook

log = logging.getLogger(__name__)


class TrialCallback(PyTorchLightningPruningCallback):
    """Reports ``val/recall_at_1`` per training epoch to the trial; raises ``TrialPruned``
    (which ends ``fit``) when the study's pruner says so."""

    def __init__(self, hook: TrialHook):
        super().__init__(hook.trial, monitor=hook.monitor)
        self.hook = hook

    def setup(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, MLFlowLogger):
            self.hook.mlflow_run_id = trainer.logger.run_id

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_end(trainer, pl_module)


class Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds while the trial runs.

    Uses the storage's public ``record_heartbeat``; a storage without heartbeats (or with
    heartbeats switched off) makes this a no-op.
    """

    def __init__(self, study: Any, trial: Any):
        storage = study._storage  # the study's RDBStorage (Optuna exposes no public accessor)
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self._beat = (lambda: storage.record_heartbeat(trial._trial_id)) if interval else None
        self._interval = interval or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except Exception as err:  # a missed beat must not kill the trial
                log.warning("could not record the trial's heartbeat: %s", err)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> Heartbeat:
        if self._beat is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class Interrupts:
    """Within the ``with`` block, SIGINT and SIGTERM set :attr:`seen` and raise
    ``KeyboardInterrupt``; the previous handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.seen = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.seen = True
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
