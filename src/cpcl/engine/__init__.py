"""Training engine: the resolved run config, the epoch loop of docs/method.md, checkpoints and logs."""
