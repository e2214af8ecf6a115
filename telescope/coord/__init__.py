"""Coordinate checks: activation scale against width (study), and the pre-sweep check of a user's model."""
