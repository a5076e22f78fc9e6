"""The suite's warning filters (pytest.ini): our deprecations fail, named
third-party ones are silenced, every other deprecation is shown.

Each case issues a DeprecationWarning attributed to a given module under the
filters pytest.ini installs for every test, and reports what they did to it.
"""

import warnings

import pytest


def _action(message, module):
  with warnings.catch_warnings(record=True) as caught:
    try:
      warnings.warn_explicit(message, DeprecationWarning, "f.py", 1,
                             module=module)
    except DeprecationWarning:
      return "error"
  return "shown" if caught else "ignored"


@pytest.mark.parametrize("module", [
    "common.estimators", "sac.train", "moe.layer", "vae.train",
    "launch.train_moe", "benchmarks.moe_throughput", "test_estimators"])
def test_deprecations_raised_from_our_code_are_errors(module):
  assert _action("jax.foo is deprecated", module) == "error"


def test_named_third_party_deprecations_are_silenced():
  # TensorFlow Probability's JAX backend, imported by distrax.
  assert _action("jax.core.pytype_aval_mappings is deprecated.",
                 "tensorflow_probability.python.internal.backend.jax.ops"
                 ) == "ignored"


def test_other_deprecations_are_shown():
  assert _action("jax.foo is deprecated", "some_library.module") == "shown"
  assert _action("something else is deprecated",
                 "tensorflow_probability.python.internal.backend.jax.ops"
                 ) == "shown"
