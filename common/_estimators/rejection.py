"""Gamma gradients through a standardizing transform: RSVI and G-REP.

Both estimate grad E[f(z)] for z ~ Gamma(concentration a, rate b) by writing
z = T(eps; a) / b with eps a function of z whose density pi(eps; a) still
depends on a (weakly), so the gradient splits into a pathwise part and a
score-function correction:

    grad_a E[f(z)] = E_pi[ grad_z f(z) d T(eps; a) / da / b ]         (g_rep)
                   + E_pi[ f(z) d log pi(eps; a) / da ]              (g_corr),

the derivatives at fixed eps, and grad_b E[f(z)] = E[grad_z f(z) (-z / b)]
(pathwise: the law of eps does not depend on b). RSVI takes T from the
Marsaglia-Tsang rejection sampler of the Gamma (Naesseth et al. 2017); G-REP
standardizes log z (Ruiz, Titsias & Blei 2016). Neither runs a rejection
loop: z is drawn by `jax.random`, and eps = T^{-1}(z; a) has density pi.

References:
  Naesseth, Ruiz, Linderman & Blei 2017, "Reparameterization Gradients
    through Acceptance-Rejection Sampling Algorithms" (AISTATS).
  Ruiz, Titsias & Blei 2016, "The Generalized Reparameterization Gradient"
    (NeurIPS).
  Marsaglia & Tsang 2000, "A Simple Method for Generating Gamma Variables",
    ACM TOMS 26(3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from common._estimators import checks

Array = checks.Array
PRNGKey = checks.PRNGKey


def _check_gamma_inputs(concentration: Array, rate: Array,
                        num_samples: int) -> tuple[Array, Array]:
  checks.check_num_samples(num_samples)
  checks.check_float("concentration", concentration)
  checks.check_float("rate", rate)
  concentration, rate = jnp.asarray(concentration), jnp.asarray(rate)
  try:
    shape = jnp.broadcast_shapes(concentration.shape, rate.shape)
  except ValueError:
    shape = None
  if shape != concentration.shape:
    raise ValueError(
        "rate must broadcast to the shape of concentration; got "
        f"concentration of shape {concentration.shape} and rate of shape "
        f"{rate.shape}.")
  checks.check_positive_array_static("concentration", concentration)
  checks.check_positive_array_static("rate", rate)
  return concentration, rate


def _mean_implicit_grad(
    f: Callable[[Array], Array],
    concentration: Array,
    rate: Array,
    noise: tuple[Array, ...],
    standard_sample: Callable[[tuple[Array, ...], Array],
                              tuple[Array, Array]],
) -> tuple[Array, Array]:
  """Mean over draws of grad_(a, b) [f(z) + sg(f(z)) (l - sg(l))].

  `standard_sample(noise_s, a)` returns (z_1, l) with z_1 = T(eps; a) ~
  Gamma(a, 1) and l = log pi(eps; a) summed over the entries; z = z_1 / b.
  The gradient of the surrogate is g_rep + g_corr (module docstring).
  """
  def one_draw(noise_s):
    def surrogate(a, b):
      z_1, log_pi = standard_sample(noise_s, a)
      value = checks.check_scalar_output("f", f(z_1 / b))
      score = log_pi - jax.lax.stop_gradient(log_pi)
      return value + jax.lax.stop_gradient(value) * score
    return jax.grad(surrogate, argnums=(0, 1))(concentration, rate)

  grads = jax.vmap(one_draw)(noise)
  return jax.lax.stop_gradient(
      jax.tree.map(lambda g: jnp.mean(g, axis=0), grads))


def _marsaglia_tsang_log_pi(eps: Array, alpha: Array) -> tuple[Array, Array]:
  """(h(eps, alpha), log pi(eps; alpha)) for the Marsaglia-Tsang proposal.

  h = (alpha - 1/3) v^3 with v = 1 + eps / sqrt(9 alpha - 3), and
  pi(eps; alpha) = Gamma(h; alpha, 1) |dh/deps|, dh/deps = sqrt(alpha - 1/3)
  v^2 (Naesseth et al. 2017, the density of the accepted eps):

      log pi = (alpha - 1) log h - h - lgamma(alpha)
               + log(alpha - 1/3) / 2 + 2 log v.
  """
  d = alpha - 1.0 / 3.0
  log_v = jnp.log1p(eps / jnp.sqrt(9.0 * alpha - 3.0))
  log_h = jnp.log(d) + 3.0 * log_v
  h = jnp.exp(log_h)
  log_pi = ((alpha - 1.0) * log_h - h - special.gammaln(alpha)
            + 0.5 * jnp.log(d) + 2.0 * log_v)
  return h, log_pi


def _marsaglia_tsang_inverse(z: Array, alpha: Array) -> Array:
  """eps = h^{-1}(z, alpha) = sqrt(9 alpha - 3) ((z / (alpha - 1/3))^(1/3) - 1).

  The inverse of the Marsaglia-Tsang map h (see `_marsaglia_tsang_log_pi`).
  """
  return jnp.sqrt(9.0 * alpha - 3.0) * (
      jnp.cbrt(z / (alpha - 1.0 / 3.0)) - 1.0)


def _check_shape_augmentation(concentration: Array,
                              shape_augmentation: int) -> None:
  checks.check_int("shape_augmentation", shape_augmentation, minimum=0)
  if isinstance(concentration, jax.core.Tracer):
    return
  smallest = float(np.min(np.asarray(concentration)))
  if smallest + shape_augmentation < 1.0:
    raise ValueError(
        "gamma_rejection_grad needs concentration + shape_augmentation >= 1 "
        "(the Marsaglia-Tsang proposal is defined for shape >= 1); got "
        f"min(concentration)={smallest!r} with shape_augmentation="
        f"{shape_augmentation}; use shape_augmentation >= "
        f"{math.ceil(1.0 - smallest)}.")


def gamma_rejection_grad(
    f: Callable[[Array], Array],
    concentration: Array,
    rate: Array,
    key: PRNGKey,
    *,
    num_samples: int,
    shape_augmentation: int = 1,
) -> tuple[Array, Array]:
  """RSVI estimate of grad E[f(z)], z ~ Gamma(concentration, rate) elementwise.

  Naesseth et al. 2017 (rejection sampling variational inference), with the
  Marsaglia & Tsang 2000 proposal for the Gamma(alpha, 1):

      z_1 = h(eps, alpha) = (alpha - 1/3) (1 + eps / sqrt(9 alpha - 3))^3.

  The accepted eps has density pi(eps; alpha) = q(h(eps, alpha); alpha)
  |dh/deps| (q the Gamma(alpha, 1) density; Naesseth et al. 2017, the
  density of the accepted eps),
  and the gradient is g_rep + g_cor (their decomposition):

      g_rep = E_pi[ grad_z f(z) dz/dalpha ]           (eps held fixed),
      g_cor = E_pi[ f(z) d/dalpha log pi(eps; alpha) ],

      log pi = (alpha - 1) log h - h - lgamma(alpha)
               + log(alpha - 1/3) / 2 + 2 log(1 + eps / sqrt(9 alpha - 3)).

  Given z_1 ~ Gamma(alpha, 1), the accepted eps is h^{-1}(z_1, alpha), so z_1
  is drawn with `jax.random.gamma` and inverted: no rejection loop.

  Shape augmentation with B = `shape_augmentation` (Naesseth et al. 2017,
  their Gamma example): for concentration a,

      z_1 = z~ * prod_{i=1..B} u_i^(1 / (a + i - 1)),
      z~ ~ Gamma(a + B, 1) by the proposal above, u_i ~ Uniform(0, 1),

  which is Gamma(a, 1); the u_i are parameter-free, so they add a pathwise
  term, and the correction uses pi(eps; a + B). B raises the shape seen by
  the proposal (the correction term shrinks as a + B grows) at the cost of B
  uniforms per entry. B = 0 means no augmentation. The proposal is defined
  for shape >= 1, so a + B >= 1 is required: with concrete inputs this is
  checked (ValueError naming min(concentration) and B); under jit with a
  traced concentration it is not (a + B <= 1/3 gives NaN).

  The rate is pathwise: z = z_1 / rate, grad_rate = E[grad_z f(z) (-z / rate)].
  Unbiased; needs `f` differentiable. `f` is called once per sample.

  Args:
    f: z -> scalar, for one sample z with the shape of `concentration`.
    concentration: a > 0, float array [...].
    rate: b > 0, float array broadcastable to the shape of `concentration`.
    key: PRNG key.
    num_samples: S >= 1 (static).
    shape_augmentation: B >= 0, a Python int (static); a + B >= 1.

  Returns:
    (grad_concentration with the shape of `concentration`, grad_rate with the
    shape of `rate`), averaged over S samples, under stop_gradient.

  Example:
    >>> g_a, g_b = gamma_rejection_grad(       # d/da E[z] = 1/b, d/db = -a/b^2
    ...     jnp.sum, jnp.array([0.5, 2.0]), jnp.array([1.0, 2.0]),
    ...     jax.random.key(0), num_samples=1000, shape_augmentation=1)
    >>> g_a.shape, g_b.shape
    ((2,), (2,))

  References:
    Naesseth, Ruiz, Linderman & Blei 2017, "Reparameterization Gradients
      through Acceptance-Rejection Sampling Algorithms" (AISTATS).
    Marsaglia & Tsang 2000, "A Simple Method for Generating Gamma Variables".
  """
  concentration, rate = _check_gamma_inputs(concentration, rate, num_samples)
  _check_shape_augmentation(concentration, shape_augmentation)
  dtype, shape = concentration.dtype, concentration.shape
  key_gamma, key_u = jax.random.split(key)
  alpha = jax.lax.stop_gradient(concentration) + shape_augmentation
  z_tilde = jax.random.gamma(key_gamma, alpha, (num_samples, *shape), dtype)
  eps = _marsaglia_tsang_inverse(z_tilde, alpha)
  log_u = jnp.log(jax.random.uniform(
      key_u, (num_samples, shape_augmentation, *shape), dtype,
      minval=jnp.finfo(dtype).tiny, maxval=1.0))
  offsets = jnp.arange(shape_augmentation, dtype=dtype).reshape(
      (-1,) + (1,) * len(shape))

  def standard_sample(noise_s, a):
    eps_s, log_u_s = noise_s
    h, log_pi = _marsaglia_tsang_log_pi(eps_s, a + shape_augmentation)
    log_boost = jnp.sum(log_u_s / (a + offsets), axis=0)
    return h * jnp.exp(log_boost), jnp.sum(log_pi)

  return _mean_implicit_grad(f, concentration, rate, (eps, log_u),
                             standard_sample)


def gamma_generalized_reparam_grad(
    f: Callable[[Array], Array],
    concentration: Array,
    rate: Array,
    key: PRNGKey,
    *,
    num_samples: int,
) -> tuple[Array, Array]:
  """G-REP estimate of grad E[f(z)], z ~ Gamma(concentration, rate) elementwise.

  Ruiz, Titsias & Blei 2016, Eqs. 6-8, with their standardization of the
  Gamma: for z_1 = rate * z ~ Gamma(a, 1),

      eps = T^{-1}(z_1; a) = (log z_1 - digamma(a)) / sqrt(trigamma(a)),
      z_1 = T(eps; a) = exp(eps s + digamma(a)),  s = sqrt(trigamma(a)),

  whose density pi(eps; a) = q(T(eps; a); a) |dT/deps| depends on a only
  weakly (its first two moments are 0 and 1 for every a). The gradient is
  g_rep + g_corr (Eqs. 7-8):

      g_rep  = E_pi[ grad_z f(z) dz/da ]                  (eps held fixed),
      g_corr = E_pi[ f(z) (d/da log q(T(eps; a); a) + d/da log |dT/deps|) ].

  With L = log T = eps s + digamma(a), log q(T; a) = (a - 1) L - e^L -
  lgamma(a) and log |dT/deps| = L + log s, so

      log pi(eps; a) = a L - e^L - lgamma(a) + log(trigamma(a)) / 2,
      d/da log pi    = eps s + (a - e^L) (eps psi2(a) / (2 s) + trigamma(a))
                       + psi2(a) / (2 trigamma(a)),

  with psi2 the second polygamma function (the code differentiates log pi
  with `jax.grad`, which gives this expression). eps is obtained from
  log z_1, drawn with `jax.random.loggamma` (accurate for small a, where
  z_1 underflows in float32). The rate is pathwise: z = z_1 / rate (the law
  of eps does not depend on it). Unbiased; needs `f` differentiable; `f` is
  called once per sample.

  Args:
    f: z -> scalar, for one sample z with the shape of `concentration`.
    concentration: a > 0, float array [...].
    rate: b > 0, float array broadcastable to the shape of `concentration`.
    key: PRNG key.
    num_samples: S >= 1 (static).

  Returns:
    (grad_concentration with the shape of `concentration`, grad_rate with the
    shape of `rate`), averaged over S samples, under stop_gradient.

  Example:
    >>> g_a, g_b = gamma_generalized_reparam_grad(
    ...     lambda z: jnp.sum(jnp.log(z)), jnp.array([0.5, 2.0]),
    ...     jnp.array(1.0), jax.random.key(0),
    ...     num_samples=1000)          # d/da E[log z] = trigamma(a)
    >>> g_a.shape, g_b.shape
    ((2,), ())

  References:
    Ruiz, Titsias & Blei 2016, "The Generalized Reparameterization Gradient"
      (NeurIPS), Eqs. 6-8 and their Gamma transformation.
  """
  concentration, rate = _check_gamma_inputs(concentration, rate, num_samples)
  a = jax.lax.stop_gradient(concentration)
  log_z = jax.random.loggamma(key, a, (num_samples, *a.shape), a.dtype)
  eps = (log_z - special.digamma(a)) / jnp.sqrt(special.polygamma(1, a))

  def standard_sample(noise_s, a):
    (eps_s,) = noise_s
    log_scale = 0.5 * jnp.log(special.polygamma(1, a))
    log_t = eps_s * jnp.exp(log_scale) + special.digamma(a)
    t = jnp.exp(log_t)
    log_pi = a * log_t - t - special.gammaln(a) + log_scale
    return t, jnp.sum(log_pi)

  return _mean_implicit_grad(f, concentration, rate, (eps,), standard_sample)
