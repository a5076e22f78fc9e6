"""Shared library code for stochgrad: gradient estimators, checkpoints, logs."""
