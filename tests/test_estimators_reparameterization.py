"""Tests of common/_estimators/reparameterization.py.

Oracles: x = mean + exp(log_std) eps has mean `mean` and variance
exp(2 log_std) (within 5 standard errors; the SE of a sample variance is
sqrt((m4 - s^4) / n)), d x / d mean = 1 and d x / d log_std = std * eps
exactly. The tanh-squashed Gaussian log-density equals distrax's
`Transformed(MultivariateNormalDiag, Block(Tanh))`, equals the float64 closed
form log N(u) - [log 4 - 2|u| - 2 log1p(exp(-2|u|))] at |u| up to 30 (where
the naive float32 form is -inf), and integrates to one.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E
from monte_carlo_checks import assert_mean_close, assert_variance_close



def test_gaussian_reparameterize_moments_and_gradients():
  mean, log_std = jnp.full((50_000,), 1.5), jnp.full((50_000,), jnp.log(0.5))
  x = E.gaussian_reparameterize(jax.random.key(13), mean, log_std)
  assert_mean_close(x, 1.5)
  assert_variance_close(x, 0.25)
  key = jax.random.key(14)
  eps = E.gaussian_reparameterize(key, jnp.zeros(3), jnp.zeros(3))
  g_mean, g_log_std = jax.grad(
      lambda m, s: jnp.sum(E.gaussian_reparameterize(key, m, s)),
      argnums=(0, 1))(jnp.zeros(3), jnp.zeros(3))
  np.testing.assert_allclose(g_mean, jnp.ones(3))
  np.testing.assert_allclose(g_log_std, eps, rtol=1e-6)  # d/dlog_std = std*eps.


def test_tanh_gaussian_log_prob_matches_distrax_and_float64():
  mean = jnp.array([[0.3, -1.0], [2.0, 0.0]])
  log_std = jnp.array([[-0.5, 0.2], [0.0, -1.0]])
  key = jax.random.key(15)
  action, log_prob = E.tanh_gaussian_sample_and_log_prob(key, mean, log_std)
  ref = distrax.Transformed(
      distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)),
      distrax.Block(distrax.Tanh(), 1))
  np.testing.assert_allclose(log_prob, ref.log_prob(action), rtol=1e-4)
  # Same density through the given-u entry point.
  eps = jax.random.normal(key, mean.shape)
  u = mean + jnp.exp(log_std) * eps
  np.testing.assert_allclose(E.tanh_gaussian_log_prob(u, mean, log_std),
                             log_prob, rtol=1e-5)

  # Large pre-tanh values: naive float32 log(1 - tanh^2) is -inf; ours is
  # finite and equals the float64 value log(4) - 2|u| - 2 log1p(exp(-2|u|)).
  u64 = np.linspace(-30.0, 30.0, 13)
  with np.errstate(divide="ignore"):
    naive = np.log(1 - np.tanh(u64.astype(np.float32)) ** 2)
  assert np.isinf(naive).any()
  log_det = (np.log(4.0) - 2 * np.abs(u64)
             - 2 * np.log1p(np.exp(-2 * np.abs(u64))))
  # mean = u, log_std = 0, eps = 0.
  expected = -0.5 * np.log(2 * np.pi) - log_det
  got = E.tanh_gaussian_log_prob(jnp.asarray(u64[:, None], jnp.float32),
                                 jnp.asarray(u64[:, None], jnp.float32),
                                 jnp.zeros((13, 1)))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # Sampling at |u| = 30 with tiny noise: finite log-prob and gradients.
  m30 = jnp.array([[30.0, -30.0]])
  ls = jnp.full((1, 2), -10.0)
  a, lp = E.tanh_gaussian_sample_and_log_prob(key, m30, ls)
  assert np.isfinite(lp).all() and np.all(np.abs(a) == 1.0)
  g = jax.grad(lambda m: E.tanh_gaussian_sample_and_log_prob(
      key, m, ls)[1].sum())(m30)
  np.testing.assert_allclose(g, 2.0 * np.sign(m30), rtol=1e-5)


def test_tanh_gaussian_density_integrates_to_one():
  mean, log_std = jnp.array([0.7]), jnp.array([0.4])
  u = jnp.linspace(-15.0, 15.0, 60_001)[:, None]
  log_p = E.tanh_gaussian_log_prob(u, jnp.broadcast_to(mean, u.shape),
                                   jnp.broadcast_to(log_std, u.shape))
  # int p_A(tanh u) |d tanh/du| du = 1.
  integrand = np.exp(np.asarray(log_p, np.float64)) * (1 - np.tanh(
      np.asarray(u[:, 0], np.float64)) ** 2)
  assert np.trapezoid(integrand, np.asarray(u[:, 0])) == pytest.approx(1.0,
                                                                     abs=1e-4)


def test_bad_inputs_raise_clear_errors():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"mean, log_std must have the same "
                     r"shape; got mean of shape \(3,\), log_std of shape "
                     r"\(2,\)"):
    E.gaussian_reparameterize(key, jnp.zeros(3), jnp.zeros(2))
  with pytest.raises(TypeError, match="mean must have a floating dtype"):
    E.tanh_gaussian_sample_and_log_prob(key, jnp.zeros(2, jnp.int32),
                                        jnp.zeros(2))
  with pytest.raises(TypeError, match="log_std must have a floating dtype"):
    E.gaussian_reparameterize(key, jnp.zeros(2), jnp.zeros(2, jnp.int32))
  with pytest.raises(ValueError, match=r"mean must have at least 1 axes.*"
                     r"got mean of shape \(\)"):
    E.tanh_gaussian_sample_and_log_prob(key, jnp.float32(0.0),
                                        jnp.float32(0.0))
  with pytest.raises(ValueError, match=r"action_pre_tanh, mean, log_std must "
                     r"have the same shape"):
    E.tanh_gaussian_log_prob(jnp.zeros((1, 2)), jnp.zeros((1, 2)),
                             jnp.zeros((1, 3)))
