"""Training trials: one model alone or k trials packed into one batched model, on the built-in
proxy or the user's own model."""
