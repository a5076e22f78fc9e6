"""Biased gradients through discrete choices: Gumbel-softmax, straight-through.

Both replace the zero (or undefined) derivative of a discrete choice by the
derivative of a continuous surrogate; the gradients are biased, with low
variance.

References:
  Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax".
  Maddison, Mnih & Teh 2017, "The Concrete Distribution".
  Bengio, Leonard & Courville 2013, "Estimating or Propagating Gradients
    Through Stochastic Neurons for Conditional Computation".
  van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
    Learning" (VQ-VAE), Eq. 3.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common._estimators import checks

Array = checks.Array
PRNGKey = checks.PRNGKey


def straight_through(forward: Array, surrogate: Array) -> Array:
  """Value of `forward`, gradient of `surrogate`.

  The straight-through estimator (Bengio et al. 2013, Sec. 4; van den Oord et
  al. 2017, Eq. 3, "copy gradients from decoder input to encoder output"):
  computed as surrogate - sg(surrogate) + sg(forward), whose value is exactly
  `forward` (x - x == 0 in IEEE arithmetic for finite x) and whose Jacobian is
  that of `surrogate`.

  Args:
    forward: array [...] used in the forward pass (e.g. a hard one-hot, a
      quantised vector).
    surrogate: float array of the same shape whose gradient is passed back.

  Returns:
    Array [...] equal to `forward`, with the dtype of `surrogate`.

  Example:
    >>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> z_e = jnp.array([[0.9, 0.8]])                   # encoder output
    >>> indices = jnp.argmin(
    ...     jnp.sum((z_e[:, None] - codebook) ** 2, axis=-1), axis=-1)
    >>> z_q = straight_through(codebook[indices], z_e)  # VQ-VAE, Eq. 3
    >>> z_q.tolist()                                    # the codebook vector
    [[1.0, 1.0]]
    >>> jax.grad(lambda z: straight_through(codebook[indices], z).sum())(
    ...     z_e).tolist()                               # identity gradient
    [[1.0, 1.0]]
  """
  checks.check_float("surrogate", surrogate)
  checks.check_equal_shape(forward=forward, surrogate=surrogate)
  surrogate = jnp.asarray(surrogate)
  return (surrogate - jax.lax.stop_gradient(surrogate)
          + jax.lax.stop_gradient(jnp.asarray(forward, surrogate.dtype)))


def gumbel_softmax(key: PRNGKey, logits: Array, *, temperature: float,
                   hard: bool = False, axis: int = -1) -> Array:
  """Relaxed one-hot sample from Categorical(softmax(logits)).

  Jang et al. 2017, Eq. 1 (Maddison et al. 2017, Eq. 11, the Concrete
  distribution):  y = softmax((logits + g) / temperature), g ~ Gumbel(0, 1).
  With `hard=True` the forward value is the exact one-hot of argmax(y) (a
  sample from the categorical, Gumbel-max trick) and the gradient is that of
  the relaxed y (Jang et al. 2017, Sec. 2.2, straight-through Gumbel).

  Args:
    key: PRNG key.
    logits: float [..., K] (unnormalised log-probabilities along `axis`).
    temperature: > 0; small values approach one-hot samples.
    hard: straight-through one-hot output (a Python bool).
    axis: the category axis.

  Returns:
    Array with the shape of `logits`; sums to 1 along `axis`.

  Example:
    >>> y = gumbel_softmax(jax.random.key(0), jnp.zeros(4), temperature=0.5,
    ...                    hard=True)   # an exact one-hot vector
    >>> sorted(y.tolist())
    [0.0, 0.0, 0.0, 1.0]
  """
  checks.check_float("logits", logits)
  checks.check_min_rank("logits", logits, 1, " (a category axis)")
  checks.check_positive_static("temperature", temperature)
  checks.check_bool("hard", hard)
  checks.check_axis("axis", axis, logits.ndim)
  gumbels = jax.random.gumbel(key, logits.shape, logits.dtype)
  y_soft = jax.nn.softmax((logits + gumbels) / temperature, axis=axis)
  if not hard:
    return y_soft
  index = jnp.argmax(y_soft, axis=axis)
  y_hard = jax.nn.one_hot(index, logits.shape[axis], dtype=logits.dtype,
                          axis=axis)
  return straight_through(y_hard, y_soft)
