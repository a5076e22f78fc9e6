"""Tests of vae/losses.py against hand-computed and Monte-Carlo values."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae import gradients
from vae import losses


def test_bernoulli_log_likelihood_by_hand():
  logits = jnp.array([[0.0, 2.0, -1.0]])
  x = jnp.array([[1.0, 0.0, 1.0]])
  s = 1.0 / (1.0 + np.exp(-np.array([0.0, 2.0, -1.0])))
  expected = np.log(s[0]) + np.log(1 - s[1]) + np.log(s[2])
  np.testing.assert_allclose(losses.bernoulli_log_likelihood(logits, x),
                             [expected], rtol=1e-6)
  # Stable for large logits (no log(0)).
  big = losses.bernoulli_log_likelihood(jnp.array([100.0, -100.0]),
                                        jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(big, -200.0, rtol=1e-6)


def test_gaussian_kl_analytic_matches_monte_carlo():
  """KL(q||p) = E_q[log q(z) - log p(z)], 200k draws, within 5 SE."""
  mean = jnp.array([0.5, -1.0, 0.0])
  log_var = jnp.array([0.3, -1.2, 0.0])
  z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(
      jax.random.key(0), (200_000, 3))
  terms = np.asarray(losses.gaussian_log_density(z, mean, log_var)
                     - losses.gaussian_log_density(z, 0.0, jnp.zeros(3)))
  kl = float(losses.gaussian_kl_to_standard_normal(mean, log_var))
  se = terms.std(ddof=1) / np.sqrt(len(terms))
  assert abs(terms.mean() - kl) < 5 * se
  # By hand: 1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2).
  v = np.exp(np.asarray(log_var))
  np.testing.assert_allclose(
      kl, 0.5 * np.sum(v + np.asarray(mean) ** 2 - 1 - np.asarray(log_var)),
      rtol=1e-6)
  assert float(losses.gaussian_kl_to_standard_normal(
      jnp.zeros(4), jnp.zeros(4))) == 0.0


def test_categorical_kl_and_log_prob_by_enumeration():
  logits = jnp.array([[1.0, 0.0, -1.0], [0.2, 0.2, 3.0]])  # N=2, K=3.
  q = np.asarray(jax.nn.softmax(logits))
  kl = sum(np.sum(q[i] * np.log(q[i] * 3)) for i in range(2))
  np.testing.assert_allclose(losses.categorical_kl_to_uniform(logits), kl,
                             rtol=1e-5)
  np.testing.assert_allclose(
      losses.categorical_kl_to_uniform(jnp.zeros((4, 5))), 0.0, atol=1e-6)
  total = 0.0
  for a, b in itertools.product(range(3), range(3)):
    one_hot = jax.nn.one_hot(jnp.array([a, b]), 3)
    log_q = float(losses.categorical_log_prob(one_hot, logits))
    np.testing.assert_allclose(log_q, np.log(q[0, a] * q[1, b]), rtol=1e-5)
    total += math.exp(log_q)
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_importance_weighted_bound_k1_is_the_elbo_term_and_grows_with_k():
  log_w = jax.random.normal(jax.random.key(0), (50, 1)) * 3.0
  np.testing.assert_allclose(losses.importance_weighted_bound(log_w),
                             log_w[:, 0], rtol=1e-6)
  # log mean exp of equal weights is the weight itself.
  np.testing.assert_allclose(
      losses.importance_weighted_bound(jnp.full((2, 7), -3.5)), -3.5,
      rtol=1e-6)
  # Burda Theorem 1: E[L_k] increases with k; log-normal weights.
  w = jax.random.normal(jax.random.key(1), (20_000, 10))
  l1 = np.asarray(losses.importance_weighted_bound(w[:, :1]))
  l10 = np.asarray(losses.importance_weighted_bound(w))
  diff = l10 - l1
  assert diff.mean() > 5 * diff.std(ddof=1) / np.sqrt(len(diff))
  assert l10.mean() < 0.5 + 1e-6  # Below log E[w] = 1/2.


def test_codebook_perplexity_uniform_is_k_and_single_code_is_one():
  np.testing.assert_allclose(
      losses.codebook_perplexity(jnp.arange(64) % 16, 16), 16.0, rtol=1e-5)
  np.testing.assert_allclose(
      losses.codebook_perplexity(jnp.full((5, 7), 3), 16), 1.0, rtol=1e-6)
  # Two codes used 3:1 -> exp(H(3/4, 1/4)).
  h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
  np.testing.assert_allclose(
      losses.codebook_perplexity(jnp.array([0, 0, 0, 1]), 8), np.exp(h),
      rtol=1e-5)


def test_nearest_code_and_vq_loss_gradients():
  codebook = jax.random.normal(jax.random.key(0), (6, 3))
  z_e = jax.random.normal(jax.random.key(1), (4, 5, 3))
  index = losses.nearest_code(z_e, codebook)
  brute = np.argmin(np.sum((np.asarray(z_e)[..., None, :]
                            - np.asarray(codebook)) ** 2, -1), -1)
  np.testing.assert_array_equal(index, brute)

  def total(z_e, codebook, which):
    z_q = codebook[losses.nearest_code(z_e, codebook)]
    return jnp.sum(losses.vq_losses(z_e, z_q, beta=0.25)[which])

  # van den Oord Eq. 3: the codebook loss moves only the codebook, the
  # commitment loss only the encoder output; values by hand.
  g_ze, g_cb = jax.grad(total, argnums=(0, 1))(z_e, codebook, 0)
  assert float(jnp.abs(g_ze).max()) == 0.0 and float(jnp.abs(g_cb).max()) > 0
  g_ze, g_cb = jax.grad(total, argnums=(0, 1))(z_e, codebook, 1)
  assert float(jnp.abs(g_cb).max()) == 0.0
  np.testing.assert_allclose(
      g_ze, 2 * 0.25 * (z_e - codebook[index]), rtol=1e-5, atol=1e-6)
  codebook_loss, commitment = losses.vq_losses(z_e, codebook[index], beta=0.25)
  sq = np.sum((np.asarray(z_e) - np.asarray(codebook)[brute]) ** 2, (1, 2))
  np.testing.assert_allclose(codebook_loss, sq, rtol=1e-5)
  np.testing.assert_allclose(commitment, 0.25 * sq, rtol=1e-5)


def test_gumbel_temperature_schedule_of_jang_et_al():
  tau = lambda t: float(gradients.gumbel_temperature(
      jnp.asarray(t), initial=1.0, minimum=0.5, anneal_rate=1e-4,
      anneal_every=500))
  assert tau(0) == 1.0 and tau(499) == 1.0  # Updated every N steps.
  np.testing.assert_allclose(tau(500), math.exp(-0.05), rtol=1e-6)
  np.testing.assert_allclose(tau(1999), math.exp(-0.15), rtol=1e-6)
  assert tau(100_000) == 0.5  # Floor.
