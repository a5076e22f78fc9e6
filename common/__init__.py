"""Shared library code for stochgrad: gradient estimators and their helpers."""
