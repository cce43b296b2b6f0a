"""Training: losses, the Lightning module, callbacks, loggers, config -> objects, runs, pipeline."""
