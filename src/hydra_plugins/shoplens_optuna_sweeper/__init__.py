"""shoplens' Optuna sweeper for Hydra (``sweeper.py``); the released one pins optuna<3."""
