"""Measure-valued gradients of Gaussian expectations (weak derivatives).

The derivative of a density with respect to a parameter, d p(x; theta) /
d theta_i, is written as a scaled difference of two densities,
c_i (p+(x) - p-(x)); then d/d theta_i E_p[f] = c_i (E_{p+}[f] - E_{p-}[f])
(Mohamed, Rosca, Figurnov & Mnih 2020, Sec. 6). Only values of f are
needed, so f may be non-differentiable (a step function) or a black box.

References:
  Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 21, Sec. 6 (weak derivatives of the Gaussian).
  Pflug 1989, "Sampling derivatives of probabilities", Computing 42.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from common._estimators import checks

Array = checks.Array
PRNGKey = checks.PRNGKey

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _with_coordinate(x: Array, values: Array) -> Array:
  """[S, D] base draws and [S, D] values -> [S, D, D]: copy i of draw s is x_s
  with coordinate i replaced by values[s, i]."""
  diagonal = jnp.eye(x.shape[-1], dtype=bool)
  return jnp.where(diagonal, values[:, :, None], x[:, None, :])


def measure_valued_grad(
    f: Callable[[Array], Array],
    mean: Array,
    scale: Array,
    key: PRNGKey,
    *,
    num_samples: int,
    coupling: bool = True,
) -> tuple[Array, Array]:
  """Measure-valued estimate of grad E[f(x)], x ~ N(mean, diag(scale^2)).

  Mohamed et al. 2020, Sec. 6 (the weak derivatives of the Gaussian). For
  each coordinate i, with x a draw whose other coordinates
  are shared by every term of the same sample:

      d/d mean_i E[f]  = 1 / (scale_i sqrt(2 pi))
                         E[ f(x; x_i = mean_i + scale_i W)
                            - f(x; x_i = mean_i - scale_i W) ],
      d/d scale_i E[f] = 1 / scale_i
                         E[ f(x; x_i = mean_i + scale_i M)
                            - f(x; x_i = mean_i + scale_i N) ],

  W ~ Weibull(shape 2, scale sqrt(2)) (the Rayleigh(1) law, density
  w exp(-w^2 / 2)), M ~ double-sided Maxwell (density m^2 exp(-m^2 / 2) /
  sqrt(2 pi)), N ~ N(0, 1). The same W serves both terms of the mean
  derivative. With `coupling=True`, N = U * M with U ~ Uniform(0, 1), which
  is N(0, 1) and shares M (common random numbers, lower variance); with
  `coupling=False` N is drawn independently. Unbiased; `f` is only
  evaluated, never differentiated, so it may be non-differentiable.

  Cost: 4 D evaluations of f per sample in D = mean.size dimensions (two
  per coordinate for the mean, two for the scale), against one evaluation
  and one gradient for the pathwise estimator.

  Args:
    f: x -> scalar, for one sample x with the shape of `mean`.
    mean: float array [...].
    scale: float array with the shape of `mean`, > 0.
    key: PRNG key.
    num_samples: S >= 1 (static).
    coupling: draw N = U * M (a Python bool, static).

  Returns:
    (grad_mean, grad_scale), each with the shape of `mean`, averaged over S
    samples, under stop_gradient.

  Example:
    >>> step = lambda x: jnp.sum((x > 0).astype(jnp.float32))  # E = Phi(mu/s)
    >>> g_mean, g_scale = measure_valued_grad(
    ...     step, jnp.array([0.5]), jnp.array([1.0]), jax.random.key(0),
    ...     num_samples=1000)    # exact: phi(0.5) = 0.352, -0.5 phi(0.5)
    >>> g_mean.shape, g_scale.shape
    ((1,), (1,))

  References:
    Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
      Machine Learning", JMLR 21, Sec. 6.
  """
  checks.check_num_samples(num_samples)
  checks.check_float("mean", mean)
  checks.check_float("scale", scale)
  checks.check_equal_shape(mean=mean, scale=scale)
  checks.check_positive_array_static("scale", scale)
  checks.check_bool("coupling", coupling)
  mean, scale = jnp.asarray(mean), jnp.asarray(scale)
  shape, dtype = mean.shape, mean.dtype
  mu, sigma = mean.reshape(-1), scale.reshape(-1)
  draw_shape = (num_samples, mu.size)
  key_x, key_w, key_m, key_n = jax.random.split(key, 4)
  x = mu + sigma * jax.random.normal(key_x, draw_shape, dtype)
  w = jax.random.weibull_min(key_w, math.sqrt(2.0), 2.0, draw_shape, dtype)
  m = jax.random.double_sided_maxwell(key_m, 0.0, 1.0, draw_shape, dtype)
  if coupling:
    n = jax.random.uniform(key_n, draw_shape, dtype) * m
  else:
    n = jax.random.normal(key_n, draw_shape, dtype)
  values = jnp.stack([mu + sigma * w, mu - sigma * w,
                      mu + sigma * m, mu + sigma * n])  # [4, S, D]
  points = jax.vmap(_with_coordinate, in_axes=(None, 0))(x, values)
  f_values = checks.per_sample_f(
      f, jax.lax.stop_gradient(points).reshape((-1, *shape)))
  f_values = f_values.reshape(4, num_samples, mu.size)
  grad_mean = jnp.mean(f_values[0] - f_values[1], axis=0) / (sigma * _SQRT_2PI)
  grad_scale = jnp.mean(f_values[2] - f_values[3], axis=0) / sigma
  return jax.lax.stop_gradient(
      (grad_mean.reshape(shape), grad_scale.reshape(shape)))
