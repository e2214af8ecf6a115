"""The proxy: model, optimizers (Muon + AdamW by role), one trial, coord check (its data: telescope.data)."""
