"""Monte-Carlo gradient estimators: pathwise, score function, relaxations.

Pure, jit-able functions in the manner of rlax/optax: one concept per function,
PRNG key first, options keyword-only, inputs checked on entry.

The quantity estimated throughout is the gradient of an expectation,

    g(theta) = grad_theta E_{x ~ p(x; theta)} [f(x)],

(Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
Machine Learning", JMLR 21, Eq. 1). Notation for shapes: `S` is the number of
Monte-Carlo samples, `A` an action/event dimension, `...` any batch shape.

References:
  Mohamed et al. 2020 (above), Sections 4 (score function) and 5 (pathwise).
  Williams 1992, "Simple statistical gradient-following algorithms" (REINFORCE).
  Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Sec. 2.4.
  Figurnov, Mohamed & Mnih 2018, "Implicit Reparameterization Gradients".
  Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
    Free!" (ICLR DeepRLStructPred workshop).
  Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax".
  Maddison, Mnih & Teh 2017, "The Concrete Distribution".
  Bengio, Leonard & Courville 2013, "Estimating or Propagating Gradients
    Through Stochastic Neurons for Conditional Computation".
  van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
    Learning" (VQ-VAE), Eq. 3.
  Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
    Appendix C (tanh change of variables).
  Foerster et al. 2018, "DiCE: The Infinitely Differentiable Monte-Carlo
    Estimator" (the magic-box operator).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
PRNGKey = chex.PRNGKey
PyTree = Any
Baseline = Union[None, float, Array, str]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)

LEAVE_ONE_OUT = "leave_one_out"


# --------------------------------------------------------------------------
# Input checks (shared by the estimators below).
# --------------------------------------------------------------------------


def _check_num_samples(num_samples: int, *, minimum: int = 1, why: str = "") -> None:
  if isinstance(num_samples, bool) or not isinstance(num_samples, int):
    raise TypeError(
        f"num_samples must be a Python int (it is static under jit); got "
        f"{num_samples!r} of type {type(num_samples).__name__}.")
  if num_samples < minimum:
    raise ValueError(
        f"num_samples must be >= {minimum}{why}; got num_samples={num_samples}.")


def _check_float(name: str, x: Array) -> None:
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
    raise TypeError(
        f"{name} must have a floating dtype; got dtype {jnp.asarray(x).dtype}.")


def _check_positive_static(name: str, value: Any) -> None:
  """Checks value > 0 when it is concrete (a Python number or concrete array).

  Under `jax.jit` a traced value cannot be inspected; it is then the caller's
  responsibility (make the option static to keep the check).
  """
  try:
    concrete = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return
  if not concrete > 0.0:  # Also rejects NaN.
    raise ValueError(f"{name} must be > 0; got {name}={value!r}.")


def _check_distribution(dist: Any, *, need_log_prob: bool) -> None:
  if not hasattr(dist, "sample"):
    raise TypeError(
        "dist_fn(params) must return a distribution with the distrax/TFP "
        f"protocol (sample(seed=..., sample_shape=...)); got {dist!r}.")
  if need_log_prob and not callable(getattr(dist, "log_prob", None)):
    raise TypeError(
        "score-function estimation needs dist_fn(params) to have log_prob(x); "
        f"got {type(dist).__name__} without it.")


def _flatten_sample_log_prob(log_prob: Array, num_samples: int) -> Array:
  """Joint log-density per sample: sums every axis after the sample axis.

  A distrax distribution with a batch shape (e.g. `Normal(mu, sigma)` with
  vector `mu`) returns one log-density per component; the components are
  independent, so the joint log-density of a whole sample is their sum.
  """
  return jnp.reshape(log_prob, (num_samples, -1)).sum(axis=-1)


def _per_sample_f(f: Callable[[Array], Array], samples: Array) -> Array:
  values = jax.vmap(f)(samples)
  if values.ndim != 1:
    raise ValueError(
        "f must return a scalar for each sample; got per-sample output of "
        f"shape {values.shape[1:]}.")
  return values


# --------------------------------------------------------------------------
# Core identities.
# --------------------------------------------------------------------------


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
    >>> x = gaussian_reparameterize(jax.random.key(0), jnp.zeros(3), jnp.zeros(3))
    >>> x.shape
    (3,)
  """
  _check_float("mean", mean)
  _check_float("log_std", log_std)
  chex.assert_equal_shape([mean, log_std])
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
  _check_float("mean", mean)
  _check_float("log_std", log_std)
  chex.assert_equal_shape([mean, log_std])
  chex.assert_rank(mean, {*range(1, 32)})
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
  _check_float("action_pre_tanh", action_pre_tanh)
  chex.assert_equal_shape([action_pre_tanh, mean, log_std])
  z = (action_pre_tanh - mean) * jnp.exp(-log_std)
  return _squashed_gaussian_log_prob(z, action_pre_tanh, log_std)


# --------------------------------------------------------------------------
# Gradient estimators of E_{p(x; params)}[f(x)].
# --------------------------------------------------------------------------


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
  _check_num_samples(num_samples)

  def mc_objective(p):
    dist = dist_fn(p)
    _check_distribution(dist, need_log_prob=False)
    if getattr(dist, "reparameterization_type", None) is not None and (
        "NOT_REPARAMETERIZED" in str(dist.reparameterization_type)):
      raise ValueError(
          f"pathwise_grad needs a reparameterized distribution; "
          f"{type(dist).__name__} is not (use score_function_grad).")
    samples = dist.sample(seed=key, sample_shape=(num_samples,))
    if not jnp.issubdtype(samples.dtype, jnp.floating):
      raise ValueError(
          f"pathwise_grad needs a continuous, reparameterized distribution; "
          f"{type(dist).__name__} gives samples of dtype {samples.dtype} "
          "(use score_function_grad or gumbel_softmax).")
    return jnp.mean(_per_sample_f(f, samples))

  return jax.grad(mc_objective)(params)


def score_function_surrogate(log_prob: Array, f_value: Array,
                             baseline: Union[float, Array] = 0.0) -> Array:
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
  _check_float("log_prob", log_prob)
  log_prob, f_value, baseline = jnp.broadcast_arrays(log_prob, f_value, baseline)
  f_value = jax.lax.stop_gradient(f_value)
  advantage = f_value - jax.lax.stop_gradient(baseline)
  magic_box = jnp.exp(log_prob - jax.lax.stop_gradient(log_prob))
  return jnp.mean((magic_box - 1.0) * advantage + f_value)


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
  n = f_values.shape[axis]
  if n < 2:
    raise ValueError(
        f"leave-one-out baseline needs at least 2 samples along axis {axis}; "
        f"got {n}.")
  total = jnp.sum(f_values, axis=axis, keepdims=True)
  return (total - f_values) / (n - 1)


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
  """
  if isinstance(baseline, str):
    if baseline != LEAVE_ONE_OUT:
      raise ValueError(
          f"baseline must be None, a number/array, or {LEAVE_ONE_OUT!r}; "
          f"got {baseline!r}.")
    _check_num_samples(num_samples, minimum=2,
                       why=" with baseline='leave_one_out'")
  else:
    _check_num_samples(num_samples)

  dist = dist_fn(params)
  _check_distribution(dist, need_log_prob=True)
  samples = jax.lax.stop_gradient(
      dist.sample(seed=key, sample_shape=(num_samples,)))
  f_values = jax.lax.stop_gradient(_per_sample_f(f, samples))
  if baseline is None:
    b = jnp.zeros_like(f_values)
  elif isinstance(baseline, str):
    b = leave_one_out_baseline(f_values)
  else:
    b = jnp.broadcast_to(jnp.asarray(baseline, f_values.dtype), f_values.shape)

  def surrogate(p):
    log_prob = _flatten_sample_log_prob(
        dist_fn(p).log_prob(samples), num_samples)
    return score_function_surrogate(log_prob, f_values, b)

  return jax.grad(surrogate)(params)


# --------------------------------------------------------------------------
# Baselines with state.
# --------------------------------------------------------------------------


class MovingAverageState(NamedTuple):
  """State of `moving_average_baseline`: biased EMA and update count."""
  ema: Array
  count: Array


def init_moving_average_baseline(shape: tuple[int, ...] = (),
                                 dtype: Any = jnp.float32) -> MovingAverageState:
  """Initial state for `moving_average_baseline` (EMA 0, count 0).

  Args:
    shape: shape of the baseline (e.g. () for one scalar, [T] per time step).
    dtype: float dtype of the EMA.

  Example:
    >>> state = init_moving_average_baseline(shape=(), dtype=jnp.float32)
  """
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
  if not 0.0 <= float(decay) < 1.0:
    raise ValueError(f"decay must be in [0, 1); got decay={decay!r}.")
  _check_float("values", values)
  values = jnp.asarray(values, state.ema.dtype)
  batch_mean = values if values.ndim == state.ema.ndim else values.mean(axis=0)
  chex.assert_equal_shape([batch_mean, state.ema])
  correction = 1.0 - jnp.power(decay, state.count.astype(state.ema.dtype))
  baseline = jnp.where(state.count > 0,
                       state.ema / jnp.where(state.count > 0, correction, 1.0),
                       jnp.zeros_like(state.ema))
  new_ema = decay * state.ema + (1.0 - decay) * batch_mean
  return jax.lax.stop_gradient(baseline), MovingAverageState(
      ema=jax.lax.stop_gradient(new_ema), count=state.count + 1)


# --------------------------------------------------------------------------
# Discrete choices.
# --------------------------------------------------------------------------


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
    surrogate: array of the same shape whose gradient is passed back.

  Returns:
    Array [...] equal to `forward`.

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
  chex.assert_equal_shape([forward, surrogate])
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
    hard: straight-through one-hot output.
    axis: the category axis.

  Returns:
    Array with the shape of `logits`; sums to 1 along `axis`.

  Example:
    >>> y = gumbel_softmax(jax.random.key(0), jnp.zeros(4), temperature=0.5,
    ...                    hard=True)   # an exact one-hot vector
    >>> sorted(y.tolist())
    [0.0, 0.0, 0.0, 1.0]
  """
  _check_float("logits", logits)
  chex.assert_rank(logits, {*range(1, 32)})
  _check_positive_static("temperature", temperature)
  gumbels = jax.random.gumbel(key, logits.shape, logits.dtype)
  y_soft = jax.nn.softmax((logits + gumbels) / temperature, axis=axis)
  if not hard:
    return y_soft
  index = jnp.argmax(y_soft, axis=axis)
  y_hard = jax.nn.one_hot(index, logits.shape[axis], dtype=logits.dtype,
                          axis=axis)
  return straight_through(y_hard, y_soft)


# --------------------------------------------------------------------------
# Diagnostics.
# --------------------------------------------------------------------------


class GradMoments(NamedTuple):
  """Per-leaf mean and (unbiased, ddof=1) variance of a gradient estimator."""
  mean: PyTree
  variance: PyTree


def grad_moments(grad_fn: Callable[[PRNGKey], PyTree], key: PRNGKey, *,
                 num_repeats: int,
                 batch_size: Optional[int] = None) -> GradMoments:
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
    >>> dist_fn = lambda p: distrax.Normal(p["mu"], p["sigma"])
    >>> f, params = lambda x: x**2, {"mu": 1.0, "sigma": 1.0}
    >>> m = grad_moments(lambda k: pathwise_grad(f, dist_fn, params, k,
    ...                  num_samples=1), jax.random.key(0), num_repeats=10_000)
    >>> sorted(m.variance)          # exact: mu 4, sigma 12
    ['mu', 'sigma']
  """
  if isinstance(num_repeats, bool) or not isinstance(num_repeats, int) or (
      num_repeats < 2):
    raise ValueError(
        f"num_repeats must be an int >= 2 (a variance needs two draws); got "
        f"{num_repeats!r}.")
  keys = jax.random.split(key, num_repeats)
  if batch_size is None:
    grads = jax.vmap(grad_fn)(keys)
  else:
    grads = jax.lax.map(grad_fn, keys, batch_size=batch_size)
  mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
  variance = jax.tree.map(lambda g: jnp.var(g, axis=0, ddof=1), grads)
  return GradMoments(mean=mean, variance=variance)
