"""Multi-sample variational bounds: IWAE, with the STL and DReG gradients.

The K-sample importance-weighted bound of Burda et al. 2016,

    L_K = E_{z_1..K ~ q} [ log (1/K) sum_k w_k ],  w_k = p(x, z_k) / q(z_k),

tightens the ELBO (K = 1) as K grows, but the standard reparameterized
gradient of the inference (variational) parameters loses signal-to-noise
ratio as K grows (Rainforth et al. 2018). Sticking the landing (Roeder et
al. 2017) and doubly reparameterized gradients (Tucker et al. 2019) remove
the score-function terms that cause it.

References:
  Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders"
    (ICLR).
  Roeder, Wu & Duvenaud 2017, "Sticking the Landing: Simple, Lower-Variance
    Gradient Estimators for Variational Inference" (NeurIPS).
  Tucker, Lawson, Gu & Maddison 2019, "Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives" (ICLR).
  Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018, "Tighter
    Variational Bounds are Not Necessarily Better" (ICML).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from common._estimators import checks

Array = checks.Array
PRNGKey = checks.PRNGKey
PyTree = checks.PyTree

_ESTIMATORS = ("iwae", "stl", "dreg")


def _check_estimator(estimator: Any) -> None:
  if not isinstance(estimator, str):
    raise TypeError(
        f"estimator must be a string, one of {list(_ESTIMATORS)}; got "
        f"{estimator!r} of type {type(estimator).__name__}.")
  if estimator not in _ESTIMATORS:
    raise ValueError(
        f"estimator must be one of {list(_ESTIMATORS)}; got "
        f"estimator={estimator!r}.")


def iwae_grad(
    log_joint: Callable[[PyTree, Array], Array],
    dist_fn: Callable[[PyTree], Any],
    model_params: PyTree,
    variational_params: PyTree,
    key: PRNGKey,
    *,
    num_samples: int,
    estimator: str,
) -> tuple[Array, PyTree, PyTree]:
  """The K-sample IWAE bound and its gradients (ascent direction).

  With z_k = z(eps_k; phi) reparameterized draws of q_phi = dist_fn(phi),
  log w_k = log p_theta(x, z_k) - log q_phi(z_k) and normalized weights
  w~_k = w_k / sum_j w_j, the bound is (Burda et al. 2016, Sec. 3)

      L_K = log (1/K) sum_k w_k.

  The model gradient is the same for every estimator:
  grad_theta L_K = sum_k w~_k grad_theta log p_theta(x, z_k). The variational
  gradient depends on `estimator`:

    * "iwae": the standard reparameterized gradient, sum_k w~_k
      d log w_k / d phi, the total derivative through z_k and through the
      parameters of log q (Burda et al. 2016, Sec. 3).
    * "stl": sticking the landing (Roeder et al. 2017): log q is evaluated
      with stop-gradient parameters, sum_k w~_k (d log w_k / d z_k)
      (d z_k / d phi); the dropped term is the score function of q. Unbiased
      for K = 1; for K > 1 it is biased (Tucker et al. 2019, Sec. 3).
    * "dreg": doubly reparameterized (Tucker et al. 2019, Eq. 8):
      sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi), log q again at
      stopped parameters. Unbiased for every K, and its signal-to-noise ratio
      does not decay with K as that of "iwae" does (Rainforth et al. 2018).

  At q = the exact posterior, log w_k = log p(x) for every z, so the "stl"
  and "dreg" variational gradients are zero on every draw. One forward pass
  of `log_joint` over the K samples; "dreg" takes two backward passes.

  Args:
    log_joint: (model_params, z) -> log p(x, z), a scalar, for one z (the
      data x is closed over).
    dist_fn: variational_params -> a reparameterizable distribution of z
      (distrax/TFP protocol, with `log_prob`; a batch shape is summed over).
    model_params: theta, any pytree.
    variational_params: phi, any pytree.
    key: PRNG key.
    num_samples: K >= 1 (static).
    estimator: "iwae", "stl" or "dreg" (static).

  Returns:
    (bound L_K, a scalar; grad_model_params with the structure of
    `model_params`; grad_variational_params with the structure of
    `variational_params`), the gradients as an ascent direction of L_K,
    all under stop_gradient.

  Example:
    >>> import distrax
    >>> log_joint = lambda theta, z: (                # p(z) = N(0, 1),
    ...     distrax.Normal(0.0, 1.0).log_prob(z)       # p(x|z) = N(z + b, 1)
    ...     + distrax.Normal(z + theta["b"], 1.0).log_prob(1.5))
    >>> dist_fn = lambda phi: distrax.Normal(phi["mu"], phi["sigma"])
    >>> bound, g_model, g_q = iwae_grad(
    ...     log_joint, dist_fn, {"b": 0.0}, {"mu": 0.0, "sigma": 1.0},
    ...     jax.random.key(0), num_samples=8, estimator="dreg")
    >>> sorted(g_model), sorted(g_q)
    (['b'], ['mu', 'sigma'])

  References:
    Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders".
    Roeder, Wu & Duvenaud 2017, "Sticking the Landing".
    Tucker, Lawson, Gu & Maddison 2019, "Doubly Reparameterized Gradient
      Estimators for Monte Carlo Objectives", Eq. 8.
  """
  _check_estimator(estimator)
  checks.check_num_samples(num_samples)
  stop_q_params = estimator != "iwae"

  def log_weights(theta, phi):
    dist = dist_fn(phi)
    checks.check_distribution(dist, need_log_prob=True)
    checks.check_reparameterized(dist, "iwae_grad")
    z = dist.sample(seed=key, sample_shape=(num_samples,))
    checks.check_float_samples(z, dist, "iwae_grad")
    q_params = jax.lax.stop_gradient(phi) if stop_q_params else phi
    log_q = checks.per_sample_log_prob(dist_fn(q_params).log_prob(z),
                                       num_samples)
    log_p = jax.vmap(lambda z_k: checks.check_scalar_output(
        "log_joint(model_params, z)", log_joint(theta, z_k)))(z)
    return log_p - log_q

  log_w, backward = jax.vjp(log_weights, model_params, variational_params)
  weights = jax.nn.softmax(log_w)
  grad_model, grad_variational = backward(weights)
  if estimator == "dreg":
    _, grad_variational = backward(jnp.square(weights))
  bound = jax.nn.logsumexp(log_w) - math.log(num_samples)
  return jax.lax.stop_gradient((bound, grad_model, grad_variational))
