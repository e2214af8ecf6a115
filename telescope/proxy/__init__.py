"""The proxy: model, optimizers (Muon + AdamW by role), data, one trial, coord check."""
