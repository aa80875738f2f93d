"""Training: the Lightning data module, model module, losses, schedules and MLflow tracking."""
