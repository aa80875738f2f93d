"""A trial's Lightning callback (imported only when a trial trains: train.py stays light)."""

import optuna
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn
from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

from shoplens.training.module import MONITOR


class TrialCallback(PyTorchLightningPruningCallback):
    """Reports validation during ``fit`` only (``train.run`` first validates the untrained
    model: not epoch 0); records the MLflow run and the ``TrialPruned`` on the hook."""

    def __init__(self, hook):
        super().__init__(hook.trial, monitor=MONITOR)
        self.hook = hook

    def setup(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, MLFlowLogger):
            self.hook.mlflow_run_id = trainer.logger.run_id

    def on_validation_end(self, trainer, pl_module) -> None:
        try:
            if trainer.state.fn == TrainerFn.FITTING:
                super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned as pruned:
            self.hook.pruned = pruned
            raise
