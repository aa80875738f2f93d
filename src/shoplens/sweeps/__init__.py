"""Hyperparameter sweeps: ``python train.py -m hparams_search=finetune`` runs an Optuna study.

Hydra finds the sweeper in ``hydra_plugins/shoplens_optuna_sweeper`` (a thin adapter); the work
is done here, kept free of Hydra's plugin machinery so each part can be tested on its own:

* :mod:`~shoplens.sweeps.space`   - search spaces in Hydra's override grammar, define-by-run
* :mod:`~shoplens.sweeps.study`   - storage, sampler, pruner, and the study's trial budget
* :mod:`~shoplens.sweeps.runner`  - the ask / launch / tell loop and its failure policy
* :mod:`~shoplens.sweeps.context` - how the live trial reaches ``shoplens.pipeline.train``
* :mod:`~shoplens.sweeps.trial`   - the pruning callback and the trial's heartbeat
* :mod:`~shoplens.sweeps.runs`    - MLflow: a parent run per study, a child run per trial
* :mod:`~shoplens.sweeps.best`    - the winner as ``python train.py`` / ``dvc exp run -S`` overrides

Nothing is imported here: training imports :mod:`~shoplens.sweeps.context` on every run and
must not pay for Optuna and MLflow clients it does not use.
"""
