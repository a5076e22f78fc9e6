"""Baselines for the score-function estimator: leave-one-out and moving average.

A baseline b is subtracted from f in the score-function estimate
(f(x) - b) grad log p(x); it leaves the estimate unbiased when b does not
depend on the sample x it multiplies (Williams 1992, Sec. 5; Mohamed et al.
2020, Eq. 47).

References:
  Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 21.
  Williams 1992, "Simple statistical gradient-following algorithms for
    connectionist reinforcement learning", Sec. 5.
  Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
    Free!" (ICLR DeepRLStructPred workshop).
  Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", Alg. 1
    (bias correction of an exponential moving average).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from common._estimators import checks

Array = checks.Array

LEAVE_ONE_OUT = "leave_one_out"


def leave_one_out_baseline(f_values: Array, axis: int = 0) -> Array:
  """b_s = mean_{j != s} f_j, the leave-one-out baseline of Kool et al. 2019.

  Kool et al. 2019, Eq. 8: each sample's baseline uses only the other
  samples, so it is independent of that sample and the estimator remains
  unbiased.

  Args:
    f_values: float [..., S, ...] with S >= 2 along `axis`.
    axis: the sample axis.

  Returns:
    Baselines, same shape as `f_values`.

  Example:
    >>> leave_one_out_baseline(jnp.array([1.0, 2.0, 6.0])).tolist()
    [4.0, 3.5, 1.5]
  """
  f_values = jnp.asarray(f_values)
  checks.check_axis("axis", axis, f_values.ndim)
  n = f_values.shape[axis]
  if n < 2:
    raise ValueError(
        f"leave-one-out baseline needs at least 2 samples along axis {axis}; "
        f"got {n}.")
  total = jnp.sum(f_values, axis=axis, keepdims=True)
  return (total - f_values) / (n - 1)


class MovingAverageState(NamedTuple):
  """State of `moving_average_baseline`: biased EMA and update count."""
  ema: Array
  count: Array


def init_moving_average_baseline(shape: tuple[int, ...] = (),
                                 dtype: Any = jnp.float32
                                 ) -> MovingAverageState:
  """Initial state for `moving_average_baseline` (EMA 0, count 0).

  Args:
    shape: shape of the baseline (e.g. () for one scalar, [T] per time step).
    dtype: float dtype of the EMA.

  Example:
    >>> state = init_moving_average_baseline(shape=(), dtype=jnp.float32)
  """
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be a floating dtype; got {dtype!r}.")
  return MovingAverageState(ema=jnp.zeros(shape, dtype),
                            count=jnp.zeros((), jnp.int32))


def moving_average_baseline(
    state: MovingAverageState, values: Array, *, decay: float
) -> tuple[Array, MovingAverageState]:
  """Exponential-moving-average baseline, bias-corrected, pure.

  Returns the baseline computed from the *previous* state, so it does not
  depend on the current `values` and the score-function estimate that uses
  it stays unbiased (Williams 1992, Sec. 5, "reinforcement baseline"). The
  EMA is debiased as in Adam (Kingma & Ba 2015, Alg. 1):
  b_t = ema_t / (1 - decay^t); before any update the baseline is 0.

  Args:
    state: from `init_moving_average_baseline` or a previous call.
    values: float [N, *state.ema.shape]; their mean over axis 0 updates the
      EMA (a scalar state with scalar values is also accepted).
    decay: in [0, 1).

  Returns:
    (baseline with the shape of state.ema, new state).

  Example:
    >>> from common.estimators import score_function_surrogate
    >>> state = init_moving_average_baseline()
    >>> rewards = jnp.array([1.0, 3.0])
    >>> b, state = moving_average_baseline(state, rewards, decay=0.9)
    >>> float(b)                    # no update yet: the baseline is 0
    0.0
    >>> b, state = moving_average_baseline(state, rewards, decay=0.9)
    >>> round(float(b), 4)          # the debiased mean of the first batch
    2.0
    >>> log_probs = jnp.log(jnp.array([0.5, 0.5]))
    >>> loss = -score_function_surrogate(log_probs, rewards, b)
  """
  concrete_decay = checks.concrete_float("decay", decay)
  if concrete_decay is not None and not 0.0 <= concrete_decay < 1.0:
    raise ValueError(f"decay must be in [0, 1); got decay={decay!r}.")
  checks.check_float("values", values)
  values = jnp.asarray(values, state.ema.dtype)
  batch_mean = values if values.ndim == state.ema.ndim else values.mean(axis=0)
  checks.check_equal_shape(**{"mean of values over axis 0": batch_mean,
                              "state.ema": state.ema})
  correction = 1.0 - jnp.power(decay, state.count.astype(state.ema.dtype))
  baseline = jnp.where(state.count > 0,
                       state.ema / jnp.where(state.count > 0, correction, 1.0),
                       jnp.zeros_like(state.ema))
  new_ema = decay * state.ema + (1.0 - decay) * batch_mean
  return jax.lax.stop_gradient(baseline), MovingAverageState(
      ema=jax.lax.stop_gradient(new_ema), count=state.count + 1)
