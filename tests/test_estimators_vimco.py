"""Tests of VIMCO (common/_estimators/vimco.py), against exact enumeration.

Oracles (stated here):

* A small model: two Bernoulli latents h (four configurations) with
  q(h; phi) = prod_i Bernoulli(h_i; sigmoid(phi_i)) and a fixed joint
  p(x, h) = exp(LOG_JOINT[h]). For K samples, the objective
      E_{h_1..h_K ~ q}[ log (1/K) sum_k p(x, h_k) / q(h_k; phi) ]
  is a finite sum over the 4^K tuples; its gradient in phi is jax.grad of
  that sum. VIMCO's estimate for one tuple is the gradient of
  `vimco_surrogate` at that tuple, so its exact mean and variance are sums
  over the tuples weighted by prod_k q(h_k). The mean must equal the exact
  gradient (unbiasedness), and the variance must be below that of the plain
  multi-sample score function, whose learning signal is L itself for every
  sample (Mnih & Rezende 2016, Sec. 2.2), in every coordinate.
* The surrogate's value is log (1/K) sum_k w_k (mean over the other axes);
  its gradient in the log weights is the normalised weights w_k / sum_j w_j
  (the learning signals carry no gradient), and its gradient in log_probs
  is the learning signal L - L_{-k}, computed here in numpy from the
  definition: L_{-k} is the bound with log w_k replaced by the mean of the
  other log weights. For K = 2 that is L - log w_j, j the other sample.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E

CONFIGS = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
# log p(x, h), far from log q so that the plain learning signal L is large.
LOG_JOINT = jnp.array([-9.0, -6.5, -8.0, -5.2])
PHI = jnp.array([0.4, -0.9])


def log_q(phi, h):
  """log q(h; phi), summed over the two latents; h [..., 2]."""
  return jnp.sum(h * jax.nn.log_sigmoid(phi)
                 + (1.0 - h) * jax.nn.log_sigmoid(-phi), axis=-1)


def tuples(k):
  return jnp.array(list(itertools.product(range(4), repeat=k)))  # [4^K, K]


def exact_objective_grad(phi, k):
  index = tuples(k)

  def objective(p):
    lq = log_q(p, CONFIGS)  # [4]
    prob = jnp.exp(jnp.sum(lq[index], axis=1))
    bound = (jax.nn.logsumexp(LOG_JOINT[index] - lq[index], axis=1)
             - math.log(k))
    return jnp.sum(prob * bound)
  return jax.jit(jax.grad(objective))(phi)


def vimco_estimate(phi, index):
  """VIMCO's gradient for one tuple of configuration indices [K]."""
  def surrogate(p):
    lq = log_q(p, CONFIGS[index])
    return E.vimco_surrogate(LOG_JOINT[index] - lq, lq)
  return jax.grad(surrogate)(phi)


def plain_estimate(phi, index):
  """Multi-sample score function: signal L (no baseline) for every sample."""
  def surrogate(p):
    lq = log_q(p, CONFIGS[index])
    bound = jax.nn.logsumexp(LOG_JOINT[index] - lq) - math.log(len(index))
    score = jax.lax.stop_gradient(bound) * jnp.sum(
        lq - jax.lax.stop_gradient(lq))
    return bound + score
  return jax.grad(surrogate)(phi)


def exact_moments(estimate, phi, k):
  index = tuples(k)
  prob = np.exp(np.asarray(jnp.sum(log_q(phi, CONFIGS)[index], axis=1),
                           np.float64))
  g = np.asarray(jax.jit(jax.vmap(lambda i: estimate(phi, i)))(index),
                 np.float64)
  mean = prob @ g
  return mean, prob @ (g - mean) ** 2


@pytest.mark.parametrize("k", [2, 3, 4])
def test_exact_expectation_is_the_gradient_with_lower_variance(k):
  mean, variance = exact_moments(vimco_estimate, PHI, k)
  np.testing.assert_allclose(mean, exact_objective_grad(PHI, k), rtol=1e-4,
                             atol=1e-5)
  plain_mean, plain_variance = exact_moments(plain_estimate, PHI, k)
  np.testing.assert_allclose(plain_mean, mean, rtol=1e-4, atol=1e-5)
  assert np.all(variance < 0.5 * plain_variance), (variance, plain_variance)


def _numpy_signals(log_weights):
  """L - L_{-k} from the definition, one sample axis [K]."""
  lw = np.asarray(log_weights, np.float64)
  k = len(lw)
  bound = np.log(np.mean(np.exp(lw)))
  signals = []
  for i in range(k):
    swapped = lw.copy()
    swapped[i] = np.mean(np.delete(lw, i))  # Geometric mean, in logs.
    signals.append(bound - np.log(np.mean(np.exp(swapped))))
  return np.array(signals)


def test_value_and_gradients_match_the_definitions():
  log_weights = jnp.array([[-1.0, 0.5, -2.0], [0.3, 0.3, 1.7]])  # [B=2, K=3]
  log_probs = jnp.array([[-0.7, -1.2, -0.1], [-2.0, -0.4, -0.9]])
  value, (d_weights, d_probs) = jax.jit(jax.value_and_grad(
      lambda lw, lp: E.vimco_surrogate(lw, lp, axis=1), argnums=(0, 1)))(
          log_weights, log_probs)
  bounds = [np.log(np.mean(np.exp(np.asarray(row, np.float64))))
            for row in log_weights]
  np.testing.assert_allclose(value, np.mean(bounds), rtol=1e-6)
  # Mean over the batch of 2: each row's gradients are halved.
  np.testing.assert_allclose(
      d_weights, jax.nn.softmax(log_weights, axis=1) / 2, rtol=1e-5)
  for row in range(2):
    np.testing.assert_allclose(d_probs[row],
                               _numpy_signals(log_weights[row]) / 2,
                               rtol=1e-5, atol=1e-7)
  # K = 2: the other weight is its own geometric mean, L_{-k} = log w_j.
  pair = jnp.array([-1.0, 2.0])
  d_pair = jax.grad(E.vimco_surrogate, argnums=1)(pair, jnp.zeros(2))
  bound = np.log(np.mean(np.exp([-1.0, 2.0])))
  np.testing.assert_allclose(d_pair, [bound - 2.0, bound + 1.0], rtol=1e-6)


def test_axis_jit_and_vmap():
  log_weights = jax.random.normal(jax.random.key(0), (4, 3, 5))
  log_probs = jax.random.normal(jax.random.key(1), (4, 3, 5))
  reference = E.vimco_surrogate(jnp.moveaxis(log_weights, 1, 0),
                                jnp.moveaxis(log_probs, 1, 0))
  np.testing.assert_allclose(
      jax.jit(E.vimco_surrogate, static_argnames="axis")(
          log_weights, log_probs, axis=1), reference, rtol=1e-6)
  grad = jax.jit(jax.grad(E.vimco_surrogate, argnums=1))
  per_row = jax.vmap(grad)(log_weights, log_probs)  # Samples: axis 0 of rows.
  for i in range(4):
    np.testing.assert_allclose(per_row[i], grad(log_weights[i], log_probs[i]),
                               rtol=1e-5, atol=1e-6)


def test_bad_input_is_named():
  lw = jnp.zeros((3, 2))
  with pytest.raises(ValueError, match=r"needs K >= 2 samples along axis 0.*"
                     r"got K=1"):
    E.vimco_surrogate(jnp.zeros((1, 4)), jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match=r"log_weights, log_probs must have "
                     r"the same shape"):
    E.vimco_surrogate(lw, jnp.zeros((3,)))
  with pytest.raises(TypeError, match=r"log_weights must have a floating "
                     r"dtype; got dtype int32"):
    E.vimco_surrogate(jnp.zeros((3, 2), jnp.int32), lw)
  with pytest.raises(TypeError, match=r"axis must be an int; got '0'"):
    E.vimco_surrogate(lw, lw, axis="0")
  with pytest.raises(ValueError, match=r"axis must be in \[-2, 2\).*got "
                     r"axis=2"):
    E.vimco_surrogate(lw, lw, axis=2)
