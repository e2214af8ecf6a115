"""The optimizers every model trains with: Muon for hidden matrices, AdamW for the rest, grouped
by role with the parametrization's learning-rate and weight-decay factors."""
