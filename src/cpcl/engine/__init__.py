"""Training engine: the resolved run config, the epoch loop of METHOD.md, checkpoints and logs."""
