"""Tests of common/_estimators/relaxations.py.

Oracles: hard Gumbel-softmax samples are exact one-hot vectors distributed as
Categorical(softmax(logits)) (a chi-squared test at p > 1e-3; Jang et al.
2017, Gumbel-max); the relaxed sample sums to one and is positive; the
straight-through gradient equals the relaxed (soft) gradient exactly; the
straight-through value equals `forward` exactly and its gradient is the
identity (van den Oord et al. 2017, Eq. 3).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from common import estimators as E


def test_straight_through_value_and_gradient():
  x = jnp.array([0.2, 1.7, -2.4, 0.5])
  y = E.straight_through(jnp.round(x), x)
  np.testing.assert_array_equal(y, jnp.round(x))
  g = jax.grad(lambda v: jnp.sum(E.straight_through(jnp.round(v), v) * 3.0))(x)
  np.testing.assert_array_equal(g, jnp.full(4, 3.0))
  # VQ-VAE: value is the codebook vector, gradient goes to the encoder output.
  codebook = jnp.array([[0.0, 0.0], [1.0, 1.0]])
  z_e = jnp.array([0.9, 0.8])
  z_q = codebook[jnp.argmin(jnp.sum((codebook - z_e) ** 2, -1))]
  out, vjp = jax.vjp(lambda z: E.straight_through(z_q, z), z_e)
  np.testing.assert_array_equal(out, z_q)
  np.testing.assert_array_equal(vjp(jnp.array([1.0, -2.0]))[0], [1.0, -2.0])


def test_gumbel_softmax_hard_is_exact_one_hot_and_follows_softmax():
  logits = jnp.array([1.0, 0.5, -1.0, 2.0, 0.0])
  n = 40_000
  y = E.gumbel_softmax(jax.random.key(16), jnp.broadcast_to(logits, (n, 5)),
                       temperature=0.5, hard=True)
  y = np.asarray(y)
  assert set(np.unique(y)) <= {0.0, 1.0}
  np.testing.assert_array_equal(y.sum(-1), np.ones(n))
  counts = y.sum(0)
  probs = np.asarray(jax.nn.softmax(logits), np.float64)
  chi2 = stats.chisquare(counts, n * probs / probs.sum())
  assert chi2.pvalue > 1e-3, (counts, n * probs)
  soft = E.gumbel_softmax(jax.random.key(16), logits, temperature=2.0)
  assert float(soft.sum()) == pytest.approx(1.0, abs=1e-6)
  assert float(soft.min()) > 0.0


def test_gumbel_softmax_gradients_are_finite_and_straight_through():
  logits = jnp.array([[0.1, -0.3, 0.7], [2.0, 0.0, -1.0]])
  w = jnp.array([1.0, -2.0, 3.0])
  key = jax.random.key(17)
  loss = lambda l, hard: jnp.sum(
      E.gumbel_softmax(key, l, temperature=0.7, hard=hard) * w)
  g_soft = jax.grad(loss)(logits, False)
  g_hard = jax.grad(loss)(logits, True)
  assert np.isfinite(g_hard).all() and np.abs(g_hard).sum() > 0
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-6)  # Straight-through.
  y_axis0 = E.gumbel_softmax(key, logits.T, temperature=0.7, hard=True, axis=0)
  np.testing.assert_array_equal(y_axis0.sum(axis=0), jnp.ones(2))
  g_axis0 = jax.grad(lambda l: jnp.sum(E.gumbel_softmax(
      key, l, temperature=0.7, hard=True, axis=0) * w[:, None]))(logits.T)
  assert np.isfinite(g_axis0).all() and np.abs(g_axis0).sum() > 0


def test_gumbel_softmax_traced_temperature():
  """temperature may be traced under jit; same value as a static one."""
  key, logits = jax.random.key(1), jnp.array([0.5, -0.5, 1.0])
  traced = jax.jit(lambda t: E.gumbel_softmax(key, logits, temperature=t))
  np.testing.assert_allclose(
      traced(jnp.float32(0.7)),
      E.gumbel_softmax(key, logits, temperature=0.7), rtol=1e-6)


def test_bad_inputs_raise_clear_errors():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="temperature=0.0"):
    E.gumbel_softmax(key, jnp.zeros(3), temperature=0.0)
  with pytest.raises(ValueError, match="temperature=-1"):
    E.gumbel_softmax(key, jnp.zeros(3), temperature=-1)
  with pytest.raises(TypeError, match="temperature must be a real number; "
                     "got temperature='hot'"):
    E.gumbel_softmax(key, jnp.zeros(3), temperature="hot")
  with pytest.raises(ValueError, match=r"temperature must be a scalar; got "
                     r"temperature of shape \(3,\)"):
    E.gumbel_softmax(key, jnp.zeros(3), temperature=jnp.ones(3))
  with pytest.raises(TypeError, match="logits must have a floating dtype"):
    E.gumbel_softmax(key, jnp.zeros(3, jnp.int32), temperature=1.0)
  with pytest.raises(ValueError, match=r"logits must have at least 1 axes.*"
                     r"shape \(\)"):
    E.gumbel_softmax(key, jnp.float32(0.0), temperature=1.0)
  with pytest.raises(TypeError,
                     match="hard must be a Python bool.*got 1 of type int"):
    E.gumbel_softmax(key, jnp.zeros(3), temperature=1.0, hard=1)
  with pytest.raises(ValueError, match="axis=2"):
    E.gumbel_softmax(key, jnp.zeros((2, 3)), temperature=1.0, axis=2)
  with pytest.raises(ValueError, match=r"forward, surrogate must have the "
                     r"same shape.*\(2,\).*\(3,\)"):
    E.straight_through(jnp.zeros(2), jnp.zeros(3))
  with pytest.raises(TypeError, match="surrogate must have a floating dtype"):
    E.straight_through(jnp.zeros(3), jnp.zeros(3, jnp.int32))
