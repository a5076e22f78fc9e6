"""Implementations behind `common.estimators`, one module per family.

Import the estimators from `common.estimators`; the layout of this package
is private and may change.
"""
