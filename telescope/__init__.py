"""telescope: telescoping muP + Muon hyperparameter sweeps."""

__version__ = "0.1.0"
