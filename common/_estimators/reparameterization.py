"""Reparameterized samples: the Gaussian and SAC's tanh-squashed Gaussian.

A reparameterized sample is a deterministic, differentiable function of the
parameters and of parameter-free noise, so gradients flow through it
(Kingma & Welling 2014, Sec. 2.4; Mohamed et al. 2020, Sec. 5). Gamma, Beta
and Dirichlet samples are implicitly reparameterized by distrax/TFP
(Figurnov, Mohamed & Mnih 2018, Eq. 5) and need no helper here: pass them to
`pathwise_grad`.

References:
  Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Sec. 2.4.
  Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 21, Sec. 5.
  Figurnov, Mohamed & Mnih 2018, "Implicit Reparameterization Gradients".
  Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
    Appendix C (tanh change of variables).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from common._estimators import checks

Array = checks.Array
PRNGKey = checks.PRNGKey

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def gaussian_reparameterize(key: PRNGKey, mean: Array, log_std: Array) -> Array:
  """Draws x = mean + exp(log_std) * eps with eps ~ N(0, I).

  The reparameterization ("pathwise") identity of Kingma & Welling 2014,
  Sec. 2.4 (Mohamed et al. 2020, Eq. 37): the sample is a deterministic,
  differentiable function of (mean, log_std) and parameter-free noise, so
  gradients flow into both.

  Args:
    key: PRNG key.
    mean: float array, shape [...].
    log_std: float array, same shape as `mean`.

  Returns:
    Sample of shape [...], dtype of `mean`.

  Example:
    >>> x = gaussian_reparameterize(jax.random.key(0), jnp.zeros(3),
    ...                             jnp.zeros(3))
    >>> x.shape
    (3,)
  """
  checks.check_float("mean", mean)
  checks.check_float("log_std", log_std)
  checks.check_equal_shape(mean=mean, log_std=log_std)
  eps = jax.random.normal(key, jnp.shape(mean), jnp.asarray(mean).dtype)
  return mean + jnp.exp(log_std) * eps


def _log1m_tanh_sq(u: Array) -> Array:
  """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), finite for all u.

  Haarnoja et al. 2018, Appendix C, Eq. 21 (the log-det-Jacobian of tanh),
  in the numerically stable form; the naive form gives -inf once tanh(u)
  rounds to +-1 (|u| > ~9 in float32).
  """
  return 2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u))


def _squashed_gaussian_log_prob(z: Array, u: Array, log_std: Array) -> Array:
  """sum_i [log N(z_i; 0, 1) - log_std_i - log(1 - tanh(u_i)^2)], Eq. 21.

  z = (u - mean) / std is the standardised pre-tanh value (the drawn noise
  when sampling); sums over the last (action) axis.
  """
  gaussian_log_prob = -0.5 * jnp.square(z) - log_std - 0.5 * _LOG_2PI
  return jnp.sum(gaussian_log_prob - _log1m_tanh_sq(u), axis=-1)


def tanh_gaussian_sample_and_log_prob(
    key: PRNGKey, mean: Array, log_std: Array) -> tuple[Array, Array]:
  """Samples a = tanh(u), u ~ N(mean, diag(exp(log_std)^2)), with log p(a).

  The squashed Gaussian policy of Haarnoja et al. 2018 ("Soft Actor-Critic
  Algorithms and Applications"), Appendix C, Eq. 21:

      log pi(a|s) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2).

  The Gaussian term uses the drawn noise directly (-eps^2/2 - log_std -
  log(2 pi)/2), and the Jacobian term the stable identity
  log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), so log p stays finite
  and accurate in float32 for |u| up to 30 and beyond. Gradients flow
  pathwise into `mean` and `log_std` through both outputs.

  Args:
    key: PRNG key.
    mean: float array [..., A].
    log_std: float array [..., A].

  Returns:
    (action [..., A] in [-1, 1], log_prob [...]).

  Example:
    >>> a, logp = tanh_gaussian_sample_and_log_prob(
    ...     jax.random.key(0), jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    >>> a.shape, logp.shape
    ((4, 2), (4,))
  """
  checks.check_float("mean", mean)
  checks.check_float("log_std", log_std)
  checks.check_equal_shape(mean=mean, log_std=log_std)
  checks.check_min_rank("mean", mean, 1, " (the last is the action axis)")
  eps = jax.random.normal(key, jnp.shape(mean), jnp.asarray(mean).dtype)
  u = mean + jnp.exp(log_std) * eps
  return jnp.tanh(u), _squashed_gaussian_log_prob(eps, u, log_std)


def tanh_gaussian_log_prob(action_pre_tanh: Array, mean: Array,
                           log_std: Array) -> Array:
  """log p(tanh(u)) for a tanh-squashed diagonal Gaussian, given u.

  Same density as `tanh_gaussian_sample_and_log_prob` (Haarnoja et al. 2018,
  Appendix C, Eq. 21) evaluated at a given pre-tanh value `u` rather than a
  fresh sample. Use it where the score function of a fixed action is needed.

  Args:
    action_pre_tanh: u, float [..., A].
    mean: float [..., A].
    log_std: float [..., A].

  Returns:
    log_prob [...].

  Example:
    >>> u = jnp.array([[0.5, 30.0]])   # finite even where tanh(u) == 1.0
    >>> tanh_gaussian_log_prob(u, jnp.zeros((1, 2)), jnp.zeros((1, 2))).shape
    (1,)
  """
  checks.check_float("action_pre_tanh", action_pre_tanh)
  checks.check_float("mean", mean)
  checks.check_float("log_std", log_std)
  checks.check_equal_shape(action_pre_tanh=action_pre_tanh, mean=mean,
                           log_std=log_std)
  checks.check_min_rank("action_pre_tanh", action_pre_tanh, 1,
                        " (the last is the action axis)")
  z = (action_pre_tanh - mean) * jnp.exp(-log_std)
  return _squashed_gaussian_log_prob(z, action_pre_tanh, log_std)
