"""Pipeline stages (one module per DVC stage), each a ``run(cfg) -> summary`` function."""
