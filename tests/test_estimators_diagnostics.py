"""Tests of common/_estimators/diagnostics.py.

Oracle: `grad_moments` equals numpy's mean and variance (ddof=1) of the same
draws (the keys `jax.random.split(key, R)`), batched evaluation equals the
vmapped one, and the same key gives identical results (common random
numbers).
"""

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E


def quadratic(k):
  return lambda x: jnp.sum((x - k) ** 2)


def normal_fn(p):
  return distrax.Normal(p["mu"], p["sigma"])


def per_repeat_grads(grad_fn, key, num_repeats):
  """The R draws that grad_moments summarises (same keys)."""
  return jax.jit(jax.vmap(grad_fn))(jax.random.split(key, num_repeats))


def test_grad_moments_matches_direct_computation_and_common_random_numbers():
  params = {"mu": 0.3, "sigma": 1.2}
  grad_fn = lambda key: E.pathwise_grad(quadratic(0.0), normal_fn, params, key,
                                        num_samples=3)
  key = jax.random.key(3)
  moments = E.grad_moments(grad_fn, key, num_repeats=500)
  draws = per_repeat_grads(grad_fn, key, 500)
  for name in ("mu", "sigma"):
    np.testing.assert_allclose(moments.mean[name], np.mean(draws[name]),
                               rtol=1e-5)
    np.testing.assert_allclose(moments.variance[name],
                               np.var(draws[name], ddof=1), rtol=1e-4)
  batched = E.grad_moments(grad_fn, key, num_repeats=500, batch_size=64)
  chex.assert_trees_all_close(batched, moments, rtol=1e-5)
  again = E.grad_moments(grad_fn, key, num_repeats=500)
  chex.assert_trees_all_equal(again, moments)


def test_bad_inputs_raise_clear_errors():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"num_repeats must be >= 2 \(a "
                     r"variance needs two draws\); got num_repeats=1"):
    E.grad_moments(lambda k: 0.0, key, num_repeats=1)
  with pytest.raises(TypeError, match="num_repeats must be a Python int"):
    E.grad_moments(lambda k: 0.0, key, num_repeats=10.0)
  with pytest.raises(ValueError, match="batch_size=0"):
    E.grad_moments(lambda k: 0.0, key, num_repeats=10, batch_size=0)
