"""Training losses, one module per family; every loss returns a `LossOutput`."""
