"""The built-in proxy model (its optimizers: telescope.optim; its training: telescope.training)."""
