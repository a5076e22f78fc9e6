"""The two basic gradient estimators: pathwise and score function.

Both estimate the gradient of an expectation,

    g(theta) = grad_theta E_{x ~ p(x; theta)} [f(x)]

(Mohamed, Rosca, Figurnov & Mnih 2020, Eq. 1): the pathwise estimator
differentiates f through reparameterized samples (Sec. 5), the score
function (REINFORCE) estimator weights f by the gradient of log p and never
differentiates f (Sec. 4).

References:
  Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
    Machine Learning", JMLR 21, Sections 4 and 5.
  Williams 1992, "Simple statistical gradient-following algorithms for
    connectionist reinforcement learning" (REINFORCE).
  Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Sec. 2.4.
  Figurnov, Mohamed & Mnih 2018, "Implicit Reparameterization Gradients".
  Foerster et al. 2018, "DiCE: The Infinitely Differentiable Monte-Carlo
    Estimator" (the magic-box operator).
  Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
    Free!".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from common._estimators import baselines, checks

Array = checks.Array
PRNGKey = checks.PRNGKey
PyTree = checks.PyTree
Baseline = float | Array | str | None


def pathwise_grad(
    f: Callable[[Array], Array],
    dist_fn: Callable[[PyTree], Any],
    params: PyTree,
    key: PRNGKey,
    *,
    num_samples: int,
) -> PyTree:
  """Pathwise (reparameterization) estimate of grad_params E_{x~p}[f(x)].

  Mohamed et al. 2020, Eq. 35-37: with x = g(eps; params), eps parameter-free,

      grad E[f(x)] ~= (1/S) sum_s grad_params f(g(eps_s; params)).

  Works for any distribution whose `sample` is differentiable in its
  parameters: distrax `Normal`, `MultivariateNormalDiag`, tanh-transformed
  Gaussians (`distrax.Transformed(..., distrax.Tanh())`), and, through
  implicit reparameterization (Figurnov et al. 2018, Eq. 5), `Gamma`, `Beta`,
  `Dirichlet`. Unbiased; needs `f` differentiable.

  Args:
    f: x -> scalar, for one sample x (shape = the distribution's sample shape).
    dist_fn: params -> distribution (distrax/TFP protocol).
    params: any pytree (e.g. a Flax parameter tree).
    key: PRNG key.
    num_samples: S >= 1 (static).

  Returns:
    Gradient estimate, a pytree with the structure of `params`.

  Example:
    >>> import distrax
    >>> dist_fn = lambda p: distrax.Normal(p["mu"], p["sigma"])
    >>> g = pathwise_grad(lambda x: x**2, dist_fn,
    ...                   {"mu": 1.0, "sigma": 1.0}, jax.random.key(0),
    ...                   num_samples=1000)   # ~ {"mu": 2.0, "sigma": 2.0}
    >>> sorted(g)
    ['mu', 'sigma']
  """
  checks.check_num_samples(num_samples)

  def mc_objective(p):
    dist = dist_fn(p)
    checks.check_distribution(dist, need_log_prob=False)
    checks.check_reparameterized(dist, "pathwise_grad")
    samples = dist.sample(seed=key, sample_shape=(num_samples,))
    checks.check_float_samples(samples, dist, "pathwise_grad")
    return jnp.mean(checks.per_sample_f(f, samples))

  return jax.grad(mc_objective)(params)


def score_function_surrogate(log_prob: Array, f_value: Array,
                             baseline: float | Array = 0.0) -> Array:
  """Scalar whose gradient is the score-function (REINFORCE) estimate.

  Williams 1992, Eq. 9; Mohamed et al. 2020, Eq. 13 with a baseline (Eq. 47):

      grad = mean_s [ grad log p(x_s) * (f(x_s) - b) ].

  Built with the DiCE magic box (Foerster et al. 2018, Eq. 3),
  box(l) = exp(l - stop_gradient(l)), which is 1 in value and has gradient
  grad l:

      surrogate = mean_s [ (box(log p_s) - 1) * sg(f_s - b) + sg(f_s) ].

  So the value equals the Monte-Carlo estimate mean_s f_s (usable for
  logging), and differentiating it with respect to whatever produced
  `log_prob` gives the score-function estimate. `f_value` and `baseline` are
  never differentiated.

  Args:
    log_prob: log p(x_s), float array of any shape [...].
    f_value: f(x_s), broadcastable to `log_prob`.
    baseline: b, scalar or broadcastable to `log_prob` (default 0).

  Returns:
    Scalar surrogate.

  Example:
    >>> logits = jnp.zeros(3)                 # a categorical policy
    >>> actions, returns = jnp.array([0, 2]), jnp.array([1.0, 3.0])
    >>> def loss(logits):
    ...   log_prob = jax.nn.log_softmax(logits)[actions]
    ...   return -score_function_surrogate(log_prob, returns, baseline=2.0)
    >>> float(loss(logits))                   # the value is -mean(returns)
    -2.0
    >>> jax.grad(loss)(logits).shape
    (3,)
  """
  checks.check_float("log_prob", log_prob)
  log_prob, f_value, baseline = jnp.broadcast_arrays(log_prob, f_value,
                                                     baseline)
  f_value = jax.lax.stop_gradient(f_value)
  advantage = f_value - jax.lax.stop_gradient(baseline)
  magic_box = jnp.exp(log_prob - jax.lax.stop_gradient(log_prob))
  return jnp.mean((magic_box - 1.0) * advantage + f_value)


def _check_baseline(baseline: Baseline, num_samples: int) -> None:
  if isinstance(baseline, str):
    if baseline != baselines.LEAVE_ONE_OUT:
      raise ValueError(
          f"baseline must be None, a number/array, or "
          f"{baselines.LEAVE_ONE_OUT!r}; got {baseline!r}.")
    checks.check_num_samples(num_samples, minimum=2,
                             why=" with baseline='leave_one_out'")
    return
  checks.check_num_samples(num_samples)
  if baseline is None:
    return
  try:
    dtype = jnp.asarray(baseline).dtype
  except TypeError:
    dtype = None
  if dtype is None or not (jnp.issubdtype(dtype, jnp.floating)
                           or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(
        f"baseline must be None, a real number or array, or "
        f"{baselines.LEAVE_ONE_OUT!r}; got {baseline!r} of type "
        f"{type(baseline).__name__}.")


def score_function_grad(
    f: Callable[[Array], Array],
    dist_fn: Callable[[PyTree], Any],
    params: PyTree,
    key: PRNGKey,
    *,
    num_samples: int,
    baseline: Baseline = None,
) -> PyTree:
  """Score-function (REINFORCE) estimate of grad_params E_{x~p}[f(x)].

  Williams 1992; Mohamed et al. 2020, Eq. 13:

      grad E[f(x)] ~= (1/S) sum_s (f(x_s) - b_s) grad_params log p(x_s; params).

  `f` is evaluated on stopped samples and never differentiated, so it may be
  non-differentiable or a black box. For a distribution with a batch shape
  (independent components), log p(x_s) is the sum over components.

  Args:
    f: x -> scalar, for one sample x.
    dist_fn: params -> distribution with `sample` and `log_prob`.
    params: any pytree.
    key: PRNG key.
    num_samples: S >= 1 (static); >= 2 with `baseline="leave_one_out"`.
    baseline: `None` (b = 0); a scalar or array broadcastable to [S]
      (a constant control variate; unbiased if independent of the samples);
      or `"leave_one_out"`: b_s = mean of the other samples' f (Kool et al.
      2019, Eq. 8; unbiased).

  Returns:
    Gradient estimate, a pytree with the structure of `params`.

  Example:
    >>> import distrax
    >>> dist_fn = lambda p: distrax.Normal(p["mu"], p["sigma"])
    >>> g = score_function_grad(lambda x: x**2, dist_fn,
    ...                         {"mu": 1.0, "sigma": 1.0}, jax.random.key(0),
    ...                         num_samples=1000, baseline="leave_one_out")
    >>> sorted(g)
    ['mu', 'sigma']
  """
  _check_baseline(baseline, num_samples)
  dist = dist_fn(params)
  checks.check_distribution(dist, need_log_prob=True)
  samples = jax.lax.stop_gradient(
      dist.sample(seed=key, sample_shape=(num_samples,)))
  f_values = jax.lax.stop_gradient(checks.per_sample_f(f, samples))
  if baseline is None:
    b = jnp.zeros_like(f_values)
  elif isinstance(baseline, str):
    b = baselines.leave_one_out_baseline(f_values)
  else:
    b = jnp.broadcast_to(jnp.asarray(baseline, f_values.dtype), f_values.shape)

  def surrogate(p):
    log_prob = checks.per_sample_log_prob(
        dist_fn(p).log_prob(samples), num_samples)
    return score_function_surrogate(log_prob, f_values, b)

  return jax.grad(surrogate)(params)
