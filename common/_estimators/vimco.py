"""VIMCO: the multi-sample bound with a per-sample leave-one-out baseline.

For K >= 2 samples h_k ~ q(h | x) with weights w_k = p(x, h_k) / q(h_k | x),
the K-sample bound (Burda et al. 2016, Eq. 8; Mnih & Rezende 2016, Sec. 2)

    L = log (1/K) sum_k w_k

has the gradient

    grad E[L] = E[ sum_k w~_k grad log w_k + sum_k L grad log q(h_k | x) ],

w~_k = w_k / sum_j w_j (Mnih & Rezende 2016, Sec. 2.2). VIMCO replaces the
common learning signal L of the score term by a local one for each sample,

    L - L_{-k},   L_{-k} = log (1/K) (sum_{j != k} w_j + w^_{-k}),
    w^_{-k} = exp( (1/(K-1)) sum_{j != k} log w_j ),

the bound with sample k's weight replaced by the geometric mean of the
others' (Mnih & Rezende 2016, Sec. 3). L_{-k} does not depend on h_k, so the
estimate stays unbiased.

References:
  Mnih & Rezende 2016, "Variational Inference for Monte Carlo Objectives"
    (ICML), Sec. 2.2 (gradient of the bound) and Sec. 3 (the per-sample
    learning signals, with the geometric-mean substitute).
  Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
    Eq. 8.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from common._estimators import checks

Array = checks.Array


def _log_mean_exp(x: Array, axis: int) -> Array:
  return jax.nn.logsumexp(x, axis=axis) - math.log(x.shape[axis])


def _learning_signals(log_weights: Array) -> Array:
  """L - L_{-k} for log weights [K, ...] (Mnih & Rezende 2016, Sec. 3)."""
  k = log_weights.shape[0]
  bound = _log_mean_exp(log_weights, axis=0)  # [...]
  others = (jnp.sum(log_weights, axis=0) - log_weights) / (k - 1)  # [K, ...]
  # swapped[k, j] = log w_j, except log w^_{-k} on the diagonal j = k.
  eye = jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (log_weights.ndim - 1))
  swapped = jnp.where(eye, others[:, None], log_weights[None, :])
  return bound - _log_mean_exp(swapped, axis=1)


def vimco_surrogate(log_weights: Array, log_probs: Array,
                    axis: int = 0) -> Array:
  """Scalar whose value is the K-sample bound and whose gradient is VIMCO's.

  Mnih & Rezende 2016, Sec. 3: with L = log (1/K) sum_k w_k over the sample
  axis and the local learning signals L - L_{-k} of the module docstring,

      surrogate = mean[ L + sum_k sg(L - L_{-k}) (log_probs_k
                                                  - sg(log_probs_k)) ],

  the mean over every axis but the sample axis. Its value is the mean bound
  (log_probs_k - sg(log_probs_k) is exactly 0); its gradient is the direct
  term grad L = sum_k w~_k grad log w_k, through `log_weights`, plus the
  score term sum_k (L - L_{-k}) grad log_probs_k. The learning signals are
  stopped, so they carry no gradient. Maximise it (or descend its negation).

  Args:
    log_weights: float [..., K, ...], log w_k = log p(x, h_k) - log q(h_k |
      x), differentiable in whatever p and q depend on (the direct term).
    log_probs: float, the shape of `log_weights`: log q(h_k | x), summed over
      each sample's variables (the score term).
    axis: the sample axis, K >= 2 along it.

  Returns:
    Scalar: the mean K-sample bound, with VIMCO's gradient.

  Example:
    >>> logits = jnp.array([0.5, -0.5])               # q(h) = softmax(logits)
    >>> h = jnp.array([0, 1, 1])                      # K = 3 samples
    >>> log_joint = jnp.log(jnp.array([0.2, 0.1]))    # log p(x, h)
    >>> def surrogate(logits):
    ...   log_q = jax.nn.log_softmax(logits)[h]
    ...   return vimco_surrogate(log_joint[h] - log_q, log_q)
    >>> bound = jax.nn.logsumexp(log_joint[h] - jax.nn.log_softmax(logits)[h])
    >>> bool(jnp.isclose(surrogate(logits), bound - jnp.log(3.0)))
    True
    >>> jax.grad(surrogate)(logits).shape
    (2,)

  References:
    Mnih & Rezende 2016, "Variational Inference for Monte Carlo Objectives"
      (ICML).
  """
  checks.check_float("log_weights", log_weights)
  checks.check_float("log_probs", log_probs)
  log_weights, log_probs = jnp.asarray(log_weights), jnp.asarray(log_probs)
  checks.check_equal_shape(log_weights=log_weights, log_probs=log_probs)
  checks.check_axis("axis", axis, log_weights.ndim)
  k = log_weights.shape[axis]
  if k < 2:
    raise ValueError(
        f"vimco_surrogate needs K >= 2 samples along axis {axis} (the "
        f"leave-one-out signals need another sample); got K={k}.")
  log_weights = jnp.moveaxis(log_weights, axis, 0)
  log_probs = jnp.moveaxis(log_probs, axis, 0)
  bound = _log_mean_exp(log_weights, axis=0)
  signals = jax.lax.stop_gradient(_learning_signals(log_weights))
  score = jnp.sum(signals * (log_probs - jax.lax.stop_gradient(log_probs)),
                  axis=0)
  return jnp.mean(bound + score)
