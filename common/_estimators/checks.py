"""Input checks and per-sample helpers shared by the estimator families.

The convention: an argument of the wrong type (a float where an int is
needed, integer logits, a string temperature) raises `TypeError`; an argument
of the right type with a wrong value (num_samples=0, a negative temperature,
mismatched shapes) raises `ValueError`. Every message names the argument, the
value received and what was expected.

Options that can be traced (scalars such as a temperature) are checked when
they are concrete; under `jax.jit` a traced value cannot be inspected, so only
its dtype and shape are checked (make the option static to keep the value
checks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = chex.Array
PRNGKey = chex.PRNGKey
PyTree = Any


def check_int(name: str, value: Any, *, minimum: int, why: str = "") -> None:
  """Checks `value` is a Python int (static under jit) >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(
        f"{name} must be a Python int (it is static under jit); got "
        f"{value!r} of type {type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}{why}; got {name}={value}.")


def check_num_samples(num_samples: Any, *, minimum: int = 1,
                      why: str = "") -> None:
  check_int("num_samples", num_samples, minimum=minimum, why=why)


def check_bool(name: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(
        f"{name} must be a Python bool (it is static under jit); got "
        f"{value!r} of type {type(value).__name__}.")


def check_float(name: str, x: Any) -> None:
  """Checks `x` is an array (or number) with a floating dtype."""
  dtype = jnp.asarray(x).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name} must have a floating dtype; got dtype {dtype}.")


def concrete_float(name: str, value: Any) -> float | None:
  """`float(value)` for a real scalar; None if it is traced under jit.

  Raises TypeError if `value` is not a real number (a string, None, a bool,
  a complex number) and ValueError if it is an array that is not a scalar.
  """
  if isinstance(value, jax.core.Tracer):
    dtype, shape, concrete = value.dtype, value.shape, None
  else:
    concrete = np.asarray(value)
    dtype, shape = concrete.dtype, concrete.shape
  if not (jnp.issubdtype(dtype, jnp.floating)
          or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(
        f"{name} must be a real number; got {name}={value!r} of type "
        f"{type(value).__name__} (dtype {dtype}).")
  if shape != ():
    raise ValueError(
        f"{name} must be a scalar; got {name} of shape {tuple(shape)}.")
  return None if concrete is None else float(concrete)


def check_positive_static(name: str, value: Any) -> None:
  """Checks value > 0 when it is concrete (see `concrete_float`)."""
  concrete = concrete_float(name, value)
  if concrete is not None and not concrete > 0.0:  # Also rejects NaN.
    raise ValueError(f"{name} must be > 0; got {name}={value!r}.")


def check_finite_static(name: str, value: Any, why: str = "") -> None:
  """Checks value is finite when it is concrete (see `concrete_float`)."""
  concrete = concrete_float(name, value)
  if concrete is not None and not math.isfinite(concrete):
    raise ValueError(f"{name} must be finite{why}; got {name}={value!r}.")


def check_positive_array_static(name: str, x: Any) -> None:
  """Checks every entry of x is > 0 when x is concrete (not traced)."""
  if isinstance(x, jax.core.Tracer):
    return
  values = np.asarray(x)
  if not np.all(values > 0):  # Also rejects NaN.
    shown = (values.tolist() if values.size <= 8
             else f"an array of shape {values.shape} with minimum "
                  f"{np.nanmin(values)!r}")
    raise ValueError(f"{name} must be > 0 everywhere; got {name}={shown}.")


def check_equal_shape(**arrays: Any) -> None:
  """Checks the named arrays share one shape (chex), raising ValueError."""
  try:
    chex.assert_equal_shape(list(arrays.values()))
  except AssertionError as error:
    shapes = ", ".join(
        f"{name} of shape {jnp.shape(x)}" for name, x in arrays.items())
    raise ValueError(
        f"{', '.join(arrays)} must have the same shape; got {shapes}."
    ) from error


def check_min_rank(name: str, x: Any, minimum: int, why: str = "") -> None:
  """Checks x has at least `minimum` axes (chex), raising ValueError."""
  try:
    chex.assert_rank(x, set(range(minimum, 33)))
  except AssertionError as error:
    raise ValueError(
        f"{name} must have at least {minimum} axes{why}; got {name} of shape "
        f"{jnp.shape(x)}.") from error


def check_axis(name: str, axis: Any, ndim: int) -> None:
  """Checks `axis` is an int that indexes an array with `ndim` axes."""
  if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
    raise TypeError(f"{name} must be an int; got {axis!r} of type "
                    f"{type(axis).__name__}.")
  if not -ndim <= axis < ndim:
    raise ValueError(f"{name} must be in [-{ndim}, {ndim}) for an array with "
                     f"{ndim} axes; got {name}={axis}.")


def check_distribution(dist: Any, *, need_log_prob: bool) -> None:
  if not hasattr(dist, "sample"):
    raise TypeError(
        "dist_fn(params) must return a distribution with the distrax/TFP "
        f"protocol (sample(seed=..., sample_shape=...)); got {dist!r}.")
  if need_log_prob and not callable(getattr(dist, "log_prob", None)):
    raise TypeError(
        "score-function estimation needs dist_fn(params) to have log_prob(x); "
        f"got {type(dist).__name__} without it.")


def check_reparameterized(dist: Any, caller: str) -> None:
  if getattr(dist, "reparameterization_type", None) is not None and (
      "NOT_REPARAMETERIZED" in str(dist.reparameterization_type)):
    raise TypeError(
        f"{caller} needs a reparameterized distribution; "
        f"{type(dist).__name__} is not (use score_function_grad).")


def check_float_samples(samples: Array, dist: Any, caller: str) -> None:
  if not jnp.issubdtype(samples.dtype, jnp.floating):
    raise TypeError(
        f"{caller} needs a continuous, reparameterized distribution; "
        f"{type(dist).__name__} gives samples of dtype {samples.dtype} "
        "(use score_function_grad or gumbel_softmax).")


def check_scalar_output(name: str, value: Any) -> Array:
  if jnp.shape(value) != ():
    raise ValueError(
        f"{name} must return a scalar; got output of shape {jnp.shape(value)}.")
  return value


def per_sample_f(f: Callable[[Array], Array], samples: Array) -> Array:
  """f on each sample of [S, ...], checked to give one scalar per sample."""
  values = jax.vmap(f)(samples)
  if values.ndim != 1:
    raise ValueError(
        "f must return a scalar for each sample; got per-sample output of "
        f"shape {values.shape[1:]}.")
  return values


def per_sample_log_prob(log_prob: Array, num_samples: int) -> Array:
  """Joint log-density per sample: sums every axis after the sample axis.

  A distrax distribution with a batch shape (e.g. `Normal(mu, sigma)` with
  vector `mu`) returns one log-density per component; the components are
  independent, so the joint log-density of a whole sample is their sum.
  """
  return jnp.reshape(log_prob, (num_samples, -1)).sum(axis=-1)
