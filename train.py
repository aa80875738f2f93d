"""Train shoplens' embedder: a Hydra app over conf/.

    python train.py                                   # the defaults (conf/config.yaml)
    python train.py backbone=resnet50 freeze=full loss=arcface optimizer.lr=3e-4
    python train.py -m hparams_search=finetune        # an Optuna sweep

Everything is built from the composed config in src/shoplens; this file only wires Hydra in.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from shoplens.config import validate
from shoplens.pipeline.train import run
from shoplens.sweeps import active_trial


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # In an Optuna sweep this run is the trial's: each epoch is reported to the trial (pruning)
    # and the MLflow run is nested under the study's parent run.
    trial = active_trial()
    result = run(
        validate(cfg),
        extra_callbacks=trial.callbacks() if trial else (),
        extra_tags=trial.mlflow_tags if trial else None,
    )
    return result["val_recall@1"]  # the objective a sweeper maximises


if __name__ == "__main__":
    main()
