"""Training: validation of a config, the run directory, callbacks and the trainer."""
