"""shoplens' Optuna sweeper for Hydra: ``python train.py -m hparams_search=finetune``.

Why our own plugin: the released ``hydra-optuna-sweeper`` pins ``optuna<3``, whose SQLite
storage fails under SQLAlchemy 2 (which MLflow needs), and it runs ``study.optimize`` with no
way to hand the live trial to the training loop for pruning. This one runs Optuna >= 4 with
ask-and-tell against an RDB storage (SQLite by default, PostgreSQL for many machines) and
launches trials in-process, so pruning and MLflow nesting reach Lightning.

``hydra_plugins`` is a namespace package (no ``__init__.py`` one level up): Hydra imports every
module below it at start-up and registers what it finds. So this package imports nothing heavy
at module level; the work is done by :mod:`shoplens.sweeps`, imported when a sweep starts.

* ``config.py``  - the ``hydra/sweeper: shoplens_optuna`` config node (what can be set)
* ``sweeper.py`` - the ``hydra.plugins.sweeper.Sweeper`` that Hydra instantiates
"""
