"""Diagnostics: the mean and variance of a gradient estimator over keys.

An estimator is judged by its bias, its variance and its cost (Mohamed et al.
2020 list these among the properties of an estimator); the first two are
measured here over independent repeats.

References:
  Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 21.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from common._estimators import checks

PRNGKey = checks.PRNGKey
PyTree = checks.PyTree


class GradMoments(NamedTuple):
  """Per-leaf mean and (unbiased, ddof=1) variance of a gradient estimator."""
  mean: PyTree
  variance: PyTree


def grad_moments(grad_fn: Callable[[PRNGKey], PyTree], key: PRNGKey, *,
                 num_repeats: int,
                 batch_size: int | None = None) -> GradMoments:
  """Mean and variance of a stochastic gradient estimator over repeats.

  Calls `grad_fn(key_r)` for keys `jax.random.split(key, num_repeats)` and
  returns the elementwise sample mean and unbiased variance of each leaf. The
  same `key` gives the same sub-keys, so two estimators compared with the same
  `key` see common random numbers. The standard error of the mean is
  sqrt(variance / num_repeats).

  Args:
    grad_fn: key -> gradient pytree (e.g. `functools.partial(pathwise_grad,
      f, dist_fn, params, num_samples=1)` with the key moved first).
    key: PRNG key.
    num_repeats: R >= 2 (static).
    batch_size: evaluate this many repeats at a time (`jax.lax.map`) to bound
      memory; `None` vmaps all R at once.

  Returns:
    GradMoments(mean, variance), pytrees with the structure of grad_fn's output.

  Example:
    >>> import distrax
    >>> from common.estimators import pathwise_grad
    >>> dist_fn = lambda p: distrax.Normal(p["mu"], p["sigma"])
    >>> f, params = lambda x: x**2, {"mu": 1.0, "sigma": 1.0}
    >>> m = grad_moments(lambda k: pathwise_grad(f, dist_fn, params, k,
    ...                  num_samples=1), jax.random.key(0), num_repeats=10_000)
    >>> sorted(m.variance)          # exact: mu 4, sigma 12
    ['mu', 'sigma']
  """
  checks.check_int("num_repeats", num_repeats, minimum=2,
                   why=" (a variance needs two draws)")
  if batch_size is not None:
    checks.check_int("batch_size", batch_size, minimum=1)
  keys = jax.random.split(key, num_repeats)
  if batch_size is None:
    grads = jax.vmap(grad_fn)(keys)
  else:
    grads = jax.lax.map(grad_fn, keys, batch_size=batch_size)
  mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
  variance = jax.tree.map(lambda g: jnp.var(g, axis=0, ddof=1), grads)
  return GradMoments(mean=mean, variance=variance)
