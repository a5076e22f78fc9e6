"""Noisy top-k gating and the load-balancing losses of sparse MoE layers.

Pure, jit-able functions in the manner of rlax/optax: PRNG key explicit,
options keyword-only, shapes checked on entry. Shapes: `T` tokens, `D` model
width, `E` experts, `K` experts kept per token.

The gate (Shazeer et al. 2017, Eq. 3-5):

    H(x)_i = (x W_g)_i + eps_i * softplus((x W_noise)_i),   eps_i ~ N(0, 1)
    G(x)   = softmax(KeepTopK(H(x), k)),

with KeepTopK setting all but the k largest entries to -inf, i.e. the softmax
is taken over the k kept logits only. Noise is used only in training.

The routings, by `routing_gradient` name, are the functions of the registry
`ROUTINGS`: "paper" (`paper_routing`, the gradient above), "straight_through"
(`straight_through_routing`, the same gates with the dense softmax's
gradient) and "gumbel" (`gumbel_routing`, Gumbel-top-k experts with the
straight-through Gumbel-softmax gradient and the load estimator
`gumbel_prob_in_top_k`).

References:
  Shazeer, Mirhoseini, Maziarz, Davis, Le, Hinton & Dean 2017, "Outrageously
    Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer",
    ICLR 2017: Eq. 3-5 (noisy top-k gating), Eq. 6-7 (importance loss),
    Eq. 8-10 (smooth load estimator and load loss), Appendix A.
  Fedus, Zoph & Shazeer 2021, "Switch Transformers", Eq. 4-6 (balance loss).
  Zoph et al. 2022, "ST-MoE: Designing Stable and Transferable Sparse Expert
    Models", Eq. 5 (router z-loss).
  Jang, Gu & Poole 2017, "Categorical Reparameterization with
    Gumbel-Softmax", Eq. 1, Sec. 2.2; Kool, van Hoof & Welling 2019,
    "Stochastic Beams and Where to Find Them", Sec. 2 (Gumbel-top-k
    sampling); Gumbel 1954, "Statistical Theory of Extreme Values and Some
    Practical Applications" (the Gumbel CDF exp(-exp(-z))).
  Bengio, Leonard & Courville 2013, "Estimating or Propagating Gradients
    Through Stochastic Neurons for Conditional Computation", Sec. 4
    (straight-through).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from common import estimators

Array = chex.Array
PRNGKey = chex.PRNGKey

PAPER = "paper"
STRAIGHT_THROUGH = "straight_through"
GUMBEL = "gumbel"

# Below this, log(softplus(r)) == r to float32 precision (softplus(r) ~ e^r).
_LOG_SOFTPLUS_SWITCH = -15.0
# Floor on the noise scale inside the Phi argument: keeps (d z / d std) finite
# when softplus underflows; Phi is saturated long before this matters.
_MIN_NOISE_STD = 1e-9
# Above this gap logits_i - t_i, 1 - exp(-exp(gap)) is 1 in float32.
_MAX_GUMBEL_GAP = 20.0


class GatingOutput(NamedTuple):
  """Result of `noisy_top_k`.

  Attributes:
    gates: [T, E], zero outside the top k, rows sum to 1 (Eq. 3-5).
    expert_index: [T, K] int32, the kept experts, largest logit first.
    expert_weight: [T, K], gates at `expert_index` (the combine weights).
    importance: [E], sum of gates over the batch (Eq. 6).
    load: [E]; the smooth estimator sum_x P(x, i) (Eq. 8-10;
      `gumbel_prob_in_top_k` for Gumbel routing) when noise is on; the exact
      number of tokens routed to each expert when it is off.
    count: [E], the exact number of tokens routed to each expert.
    clean_logits: [T, E], x W_g, the router logits.
    noisy_logits: [T, E], H(x), whose top k are the experts (equal to
      `clean_logits` without noise; for Gumbel routing x W_g + g).
    noise_std: [T, E], softplus(x W_noise) (zeros without noise).
  """
  gates: Array
  expert_index: Array
  expert_weight: Array
  importance: Array
  load: Array
  count: Array
  clean_logits: Array
  noisy_logits: Array
  noise_std: Array


def _check_k(k: int, num_experts: int) -> None:
  if isinstance(k, bool) or not isinstance(k, int):
    raise TypeError(f"k must be a Python int; got k={k!r}.")
  if k < 1:
    raise ValueError(f"k must be >= 1; got k={k}.")
  if k > num_experts:
    raise ValueError(
        f"k must be <= num_experts; got k={k} with num_experts={num_experts}.")


def log_softplus(raw: Array) -> Array:
  """log(softplus(raw)), finite with finite gradients for every raw.

  For raw below -15, softplus(raw) = log1p(e^raw) ~= e^raw to float32
  precision, so log(softplus(raw)) ~= raw; the double `where` keeps the
  untaken branch from producing NaN gradients.
  """
  small = raw < _LOG_SOFTPLUS_SWITCH
  safe = jnp.where(small, 0.0, raw)
  return jnp.where(small, raw, jnp.log(jax.nn.softplus(safe)))


def _one_hot(index: Array, num_experts: int, dtype) -> Array:
  """[T, m] int -> [T, m, E] one-hot (no gradient)."""
  return jax.nn.one_hot(index, num_experts, dtype=dtype)


def _select(values: Array, one_hot: Array) -> Array:
  """values[t, index[t, j]] as a dense contraction ([T, E], [T, m, E]).

  Its gradient is a dense product too: XLA's CPU scatter (the transpose of
  a gather or of `lax.top_k`) is much slower at these sizes.
  """
  return jnp.einsum("te,tme->tm", values, one_hot)


def kth_excluding_threshold(noisy_logits: Array, k: int) -> Array:
  """kth_excluding(H(x), k, i) for every token and expert (Shazeer App. A).

  The k-th largest component of H(x) with component i excluded. With the
  top k+1 values of H(x): for an i among the kept top k (by the same
  `lax.top_k` selection that picks the experts, so ties are consistent) it is
  the (k+1)-th largest value, otherwise the k-th largest.

  Args:
    noisy_logits: H(x), float [T, E].
    k: 1 <= k < E (with k == E no other component exists; callers treat the
      threshold as -inf).

  Returns:
    Thresholds, float [T, E].
  """
  chex.assert_rank(noisy_logits, 2)
  num_experts = noisy_logits.shape[-1]
  if not 1 <= k < num_experts:
    raise ValueError(
        f"kth_excluding_threshold needs 1 <= k < num_experts; got k={k}, "
        f"num_experts={num_experts}.")
  _, top_index = jax.lax.top_k(jax.lax.stop_gradient(noisy_logits), k + 1)
  one_hot = _one_hot(top_index, num_experts, noisy_logits.dtype)
  return _threshold_from_top(_select(noisy_logits, one_hot), one_hot, k)


def _threshold_from_top(top_values: Array, top_one_hot: Array,
                        k: int) -> Array:
  """`kth_excluding_threshold` from the top k+1 values [T, k + 1] of H(x)
  and their one-hot [T, k + 1, E]."""
  in_top_k = jnp.sum(top_one_hot[:, :k], axis=1) > 0
  return jnp.where(in_top_k, top_values[:, k:k + 1], top_values[:, k - 1:k])


def prob_in_top_k(clean_logits: Array, noisy_logits: Array, noise_std: Array,
                  k: int) -> Array:
  """Shazeer's P(x, i): probability that expert i stays in the top k.

  Shazeer et al. 2017, Eq. 9 (Appendix A): with only expert i's noise redrawn
  and the other components of H(x) held fixed,

      P(x, i) = Phi( ((x W_g)_i - kth_excluding(H(x), k, i))
                     / softplus((x W_noise)_i) ),

  Phi the standard normal CDF. Differentiable in `clean_logits`,
  `noise_std`, and (through the threshold) `noisy_logits`.

  Args:
    clean_logits: x W_g, float [T, E].
    noisy_logits: H(x), float [T, E].
    noise_std: softplus(x W_noise), float [T, E], > 0.
    k: 1 <= k <= E.

  Returns:
    P, float [T, E] in [0, 1]; ones when k == E.
  """
  chex.assert_rank(clean_logits, 2)
  chex.assert_equal_shape([clean_logits, noisy_logits, noise_std])
  num_experts = clean_logits.shape[-1]
  _check_k(k, num_experts)
  if k == num_experts:
    return jnp.ones_like(clean_logits)
  return _prob_from_threshold(clean_logits,
                              kth_excluding_threshold(noisy_logits, k),
                              noise_std)


def _prob_from_threshold(clean_logits: Array, threshold: Array,
                         noise_std: Array) -> Array:
  """Phi((clean - threshold) / noise_std), Shazeer et al. 2017, Eq. 9."""
  z = (clean_logits - threshold) / jnp.maximum(noise_std, _MIN_NOISE_STD)
  return jax.scipy.stats.norm.cdf(z)


def gumbel_prob_in_top_k(logits: Array, perturbed_logits: Array,
                         k: int) -> Array:
  """P(x, i) of Gumbel-top-k routing: probability expert i stays in the top k.

  Shazeer et al. 2017, Eq. 9 (Appendix A) with Gumbel(0, 1) noise in place
  of the Gaussian: H = logits + g, and with only expert i's g_i redrawn and
  the other components of H held fixed, expert i is kept iff
  logits_i + g_i > t_i = kth_excluding(H, k, i). With F(z) = exp(-exp(-z))
  the Gumbel(0, 1) CDF (Gumbel 1954),

      P(x, i) = 1 - F(t_i - logits_i) = 1 - exp(-exp(logits_i - t_i)).

  As for Eq. 9, averaging P(x, i) over the other experts' noise gives the
  probability that i is kept, so E[sum_i P(x, i)] = k and E[P(x, i)] =
  softmax(logits)_i when k = 1 (the Gumbel-max trick). Differentiable in
  `logits` and, through the threshold, in `perturbed_logits`.

  Args:
    logits: x W_g, float [T, E].
    perturbed_logits: H = logits + g, float [T, E].
    k: 1 <= k <= E.

  Returns:
    P, float [T, E] in [0, 1]; ones when k == E.

  Example:
    >>> # Expert 0 is kept while g_0 > H_1 - 0 = 0: P = 1 - exp(-1); expert 1
    >>> # needs g_1 > H_0 - 0 = 0.5: P = 1 - exp(-exp(-0.5)).
    >>> p = gumbel_prob_in_top_k(jnp.zeros((1, 2)), jnp.array([[0.5, 0.0]]),
    ...                          k=1)
    >>> [round(v, 4) for v in p[0].tolist()]
    [0.6321, 0.4548]
  """
  chex.assert_rank(logits, 2)
  chex.assert_equal_shape([logits, perturbed_logits])
  num_experts = logits.shape[-1]
  _check_k(k, num_experts)
  if k == num_experts:
    return jnp.ones_like(logits)
  return _gumbel_prob_from_threshold(
      logits, kth_excluding_threshold(perturbed_logits, k))


def _gumbel_prob_from_threshold(logits: Array, threshold: Array) -> Array:
  """1 - F(threshold - logits) = -expm1(-exp(logits - threshold))."""
  # exp(-exp(gap)) is 0 in float32 well before the cap, so P = 1 exactly
  # there; the cap keeps the gradient 0 instead of 0 * inf = NaN once
  # exp(gap) overflows.
  gap = jnp.minimum(logits - threshold, _MAX_GUMBEL_GAP)
  return -jnp.expm1(-jnp.exp(gap))


def cv_squared(v: Array, *, eps: float = 1e-10) -> Array:
  """Squared coefficient of variation, Var(v) / (mean(v)^2 + eps).

  Population variance over the experts, as in Shazeer et al. 2017, Eq. 7 and
  10 (CV^2 of importance and load). A single expert gives 0.

  Args:
    v: float [E].
    eps: guards an all-zero vector.

  Returns:
    Scalar.
  """
  chex.assert_rank(v, 1)
  if v.shape[0] == 1:
    return jnp.zeros((), v.dtype)
  return jnp.var(v) / (jnp.square(jnp.mean(v)) + eps)


def importance_loss(importance: Array, *, weight: float) -> Array:
  """L_importance = w_importance * CV(Importance)^2 (Shazeer Eq. 6-7).

  Args:
    importance: [E], sum over the batch of the gates.
    weight: w_importance >= 0.
  """
  return weight * cv_squared(importance)


def load_loss(load: Array, *, weight: float) -> Array:
  """L_load = w_load * CV(Load)^2 (Shazeer Eq. 10, Appendix A).

  Args:
    load: [E], the smooth estimator sum_x P(x, i) (Eq. 8-9).
    weight: w_load >= 0.
  """
  return weight * cv_squared(load)


def switch_balance_loss(router_probs: Array, expert_index: Array, *,
                        alpha: float = 1e-2) -> Array:
  """Switch Transformer auxiliary loss, alpha * N * sum_i f_i P_i.

  Fedus et al. 2021, Eq. 4-6: f_i is the fraction of routing slots sent to
  expert i (for k > 1, over all T*k slots; not differentiable) and P_i the
  mean router probability of expert i (differentiable), with p_i(x) the
  softmax of the router logits h(x) = W_r x (Eq. 1). Equals alpha under a
  uniform routing.

  Args:
    router_probs: softmax over all experts of the router logits, [T, E];
      `moe.layer.aux_statistics` passes softmax(x W_g), the logits before
      any routing noise, so that the loss has a gradient under every
      routing.
    expert_index: [T, K] int.
    alpha: coefficient (1e-2 in the paper).

  Returns:
    Scalar.
  """
  chex.assert_rank([router_probs, expert_index], 2)
  num_experts = router_probs.shape[-1]
  dispatch = jax.nn.one_hot(expert_index, num_experts, dtype=router_probs.dtype)
  f = jnp.mean(jnp.sum(dispatch, axis=1), axis=0) / expert_index.shape[1]
  p = jnp.mean(router_probs, axis=0)
  return alpha * num_experts * jnp.sum(jax.lax.stop_gradient(f) * p)


def router_z_loss(logits: Array, *, weight: float = 1e-3) -> Array:
  """ST-MoE router z-loss, weight * mean_x logsumexp(logits(x))^2.

  Zoph et al. 2022, Eq. 5 (coefficient 1e-3 in the paper), on "the logits
  going into the router".

  Args:
    logits: router logits [T, E]; `moe.layer.aux_statistics` passes x W_g,
      the logits before any routing noise.
    weight: coefficient.
  """
  chex.assert_rank(logits, 2)
  return weight * jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))


class _Routed(NamedTuple):
  """A routing's experts and logits, before it picks its gates."""
  clean_logits: Array
  noisy_logits: Array
  noise_std: Array
  one_hot: Array  # [T, K, E], the kept experts, largest logit first.
  top_values: Array  # [T, K], the kept noisy logits.
  load_prob: Array | None  # P(x, i) [T, E] when noise is drawn, else None.


def _top_k_and_threshold(noisy_logits: Array, k: int, with_threshold: bool
                         ) -> tuple[Array, Array, Array | None]:
  """The top k of H(x) as a one-hot, their values, kth_excluding(H, k, i).

  One top-(k+1) serves both the routing (its first k, the same experts as a
  top-k: lax.top_k breaks ties by index) and the thresholds of P(x, i)
  (Shazeer et al. 2017, Appendix A); without `with_threshold` a top-k.

  Returns:
    (one_hot [T, K, E], top_values [T, K], thresholds [T, E] or None).
  """
  num_experts = noisy_logits.shape[-1]
  _, top_index = jax.lax.top_k(jax.lax.stop_gradient(noisy_logits),
                               k + 1 if with_threshold else k)
  top_one_hot = _one_hot(top_index, num_experts, noisy_logits.dtype)
  top_values = _select(noisy_logits, top_one_hot)
  threshold = (_threshold_from_top(top_values, top_one_hot, k)
               if with_threshold else None)
  return top_one_hot[:, :k], top_values[:, :k], threshold


def _shazeer_top_k(x: Array, w_gate: Array, w_noise: Array,
                   key: PRNGKey | None, *, k: int, noisy: bool) -> _Routed:
  """Shazeer et al. 2017, Eq. 3-5 and 8-9: the kept experts and P(x, i).

  H = x W_g + eps * softplus(x W_noise) drawn by
  `common.estimators.gaussian_reparameterize` with log_std =
  log(softplus(x W_noise)) (the pathwise gradient into the noise scale) when
  `noisy`, else H = x W_g.
  """
  num_experts = w_gate.shape[-1]
  clean_logits = x @ w_gate
  if noisy:
    raw_noise = x @ w_noise
    noise_std = jax.nn.softplus(raw_noise)
    noisy_logits = estimators.gaussian_reparameterize(
        key, clean_logits, log_softplus(raw_noise))
  else:
    noise_std = jnp.zeros_like(clean_logits)
    noisy_logits = clean_logits
  with_threshold = noisy and k < num_experts
  one_hot, top_values, threshold = _top_k_and_threshold(
      noisy_logits, k, with_threshold)
  load_prob = None
  if noisy:
    load_prob = (_prob_from_threshold(clean_logits, threshold, noise_std)
                 if with_threshold else jnp.ones_like(clean_logits))
  return _Routed(clean_logits=clean_logits, noisy_logits=noisy_logits,
                 noise_std=noise_std, one_hot=one_hot, top_values=top_values,
                 load_prob=load_prob)


def _kept_softmax(routed: _Routed) -> tuple[Array, Array]:
  """Softmax over the k kept logits (Eq. 3-5): ([T, K], scattered [T, E])."""
  top_gates = jax.nn.softmax(routed.top_values, axis=-1)
  return top_gates, jnp.einsum("tk,tke->te", top_gates, routed.one_hot)


def _gating_output(routed: _Routed, *, gates: Array,
                   expert_weight: Array) -> GatingOutput:
  """GatingOutput of a routing's experts and its gates."""
  # Read back from the one-hot, not sliced off the top-k indices: with that
  # slice XLA:CPU (jaxlib 0.10.2) lowered the top-k as a full sort of the
  # E logits instead of its TopK kernel (~30 ms against ~1 ms at E = 64).
  expert_index = jnp.argmax(routed.one_hot, axis=-1)
  count = jnp.sum(routed.one_hot, axis=(0, 1))
  load = (count if routed.load_prob is None
          else jnp.sum(routed.load_prob, axis=0))
  return GatingOutput(
      gates=gates,
      expert_index=expert_index.astype(jnp.int32),
      expert_weight=expert_weight,
      importance=jnp.sum(gates, axis=0),
      load=load,
      count=count,
      clean_logits=routed.clean_logits,
      noisy_logits=routed.noisy_logits,
      noise_std=routed.noise_std,
  )


def _check_gating_inputs(x: Array, w_gate: Array, w_noise: Array,
                         key: PRNGKey | None, *, k: int, noisy: bool) -> None:
  chex.assert_rank([x, w_gate, w_noise], 2)
  chex.assert_equal_shape([w_gate, w_noise])
  if x.shape[-1] != w_gate.shape[0]:
    raise ValueError(
        f"x has {x.shape[-1]} features but w_gate expects {w_gate.shape[0]}.")
  _check_k(k, w_gate.shape[-1])
  if noisy and key is None:
    raise ValueError("noisy_top_k needs a PRNG key when train=True and "
                     "noise=True.")


def _check_gumbel_temperature(gumbel_temperature: float) -> None:
  """TypeError unless a real number, ValueError unless finite and > 0.

  A temperature traced under `jax.jit` cannot be inspected and passes.
  """
  if isinstance(gumbel_temperature, (bool, str)):
    raise TypeError("gumbel_temperature must be a real number; got "
                    f"gumbel_temperature={gumbel_temperature!r}.")
  try:
    value = float(gumbel_temperature)
  except jax.errors.ConcretizationTypeError:
    return
  except TypeError as error:
    raise TypeError("gumbel_temperature must be a real number; got "
                    f"gumbel_temperature={gumbel_temperature!r}.") from error
  if not 0.0 < value < math.inf:
    raise ValueError("gumbel_temperature must be finite and > 0; got "
                     f"gumbel_temperature={gumbel_temperature!r}.")


def paper_routing(x: Array, w_gate: Array, w_noise: Array,
                  key: PRNGKey | None, *, k: int, train: bool,
                  noise: bool = True,
                  gumbel_temperature: float = 1.0) -> GatingOutput:
  """Noisy top-k gating with the paper's gradient (Shazeer et al. 2017).

  Gates are the softmax over the k kept logits of H (Eq. 3-5); the gradient
  flows through the kept logits and, for the load loss, through the smooth
  estimator P(x, i) (Eq. 8-9). Noise is drawn only when `train and noise`.

  Args:
    x: float [T, D].
    w_gate: W_g, float [D, E].
    w_noise: W_noise, float [D, E].
    key: PRNG key; may be None when no noise is drawn.
    k: experts per token, 1 <= k <= E.
    train: training mode (noise on if `noise`).
    noise: turn the noise term off in training (an ablation).
    gumbel_temperature: unused (every routing of `ROUTINGS` takes the same
      arguments).

  Returns:
    GatingOutput.

  Example:
    >>> x = jnp.ones((3, 4))
    >>> w = 0.1 * jnp.arange(8.0).reshape(4, 2)
    >>> g = paper_routing(x, w, w, None, k=1, train=False)
    >>> g.expert_index.tolist(), g.gates.tolist()
    ([[1], [1], [1]], [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
  """
  del gumbel_temperature
  noisy = bool(train and noise)
  _check_gating_inputs(x, w_gate, w_noise, key, k=k, noisy=noisy)
  routed = _shazeer_top_k(x, w_gate, w_noise, key, k=k, noisy=noisy)
  top_gates, gates = _kept_softmax(routed)
  # The kept softmax is the expert weight: same value and gradient as
  # selecting `gates` at the kept experts, without the extra product.
  return _gating_output(routed, gates=gates, expert_weight=top_gates)


def straight_through_routing(x: Array, w_gate: Array, w_noise: Array,
                             key: PRNGKey | None, *, k: int, train: bool,
                             noise: bool = True,
                             gumbel_temperature: float = 1.0) -> GatingOutput:
  """Noisy top-k gates with the dense softmax's gradient (straight-through).

  The forward gates are those of `paper_routing` (Shazeer et al. 2017,
  Eq. 3-5); the gradient is that of softmax(H) over all E experts
  (`estimators.straight_through`; Bengio et al. 2013, Sec. 4), so the
  logits of unselected experts learn too. The load is the paper's (Eq. 8-9).

  Args:
    As `paper_routing`.

  Returns:
    GatingOutput.

  Example:
    >>> x = jnp.ones((3, 4))
    >>> w = 0.1 * jnp.arange(8.0).reshape(4, 2)
    >>> g = straight_through_routing(x, w, w, None, k=1, train=False)
    >>> g.gates.tolist()                       # the paper's forward gates
    [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    >>> dense = jax.grad(lambda w: straight_through_routing(
    ...     x, w, w, None, k=1, train=False).gates[:, 0].sum())(w)
    >>> bool(jnp.all(dense != 0))              # unselected expert 0 learns
    True
  """
  del gumbel_temperature
  noisy = bool(train and noise)
  _check_gating_inputs(x, w_gate, w_noise, key, k=k, noisy=noisy)
  routed = _shazeer_top_k(x, w_gate, w_noise, key, k=k, noisy=noisy)
  _, gates = _kept_softmax(routed)
  gates = estimators.straight_through(
      gates, jax.nn.softmax(routed.noisy_logits, axis=-1))
  return _gating_output(routed, gates=gates,
                        expert_weight=_select(gates, routed.one_hot))


def gumbel_routing(x: Array, w_gate: Array, w_noise: Array,
                   key: PRNGKey | None, *, k: int, train: bool,
                   noise: bool = True,
                   gumbel_temperature: float = 1.0) -> GatingOutput:
  """Gumbel-top-k routing with the straight-through Gumbel gradient.

  In training with noise, H = logits + g with g ~ Gumbel(0, 1) (the noise
  of `estimators.gumbel_softmax`) and logits = x W_g; the experts are the
  top k of H, a Gumbel-top-k sample without replacement from
  softmax(logits) (Kool et al. 2019, Sec. 2). The forward gates are the
  relaxed weights y = softmax(H / tau) (Jang et al. 2017, Eq. 1)
  renormalised over the chosen k; the gradient is that of y over all E
  experts (straight-through Gumbel, Jang et al. 2017, Sec. 2.2). `load` is
  the smooth estimator sum_x P(x, i) of `gumbel_prob_in_top_k` (Shazeer
  et al. 2017, Eq. 8-9 with Gumbel noise), so the load loss has a gradient.
  W_noise is unused. Without noise the routing is the noise-free top k of
  `paper_routing`.

  Args:
    As `paper_routing`, with gumbel_temperature: tau, finite and > 0.

  Returns:
    GatingOutput; `noisy_logits` is H = logits + g.

  Example:
    >>> x = jnp.ones((3, 4))
    >>> w = 0.1 * jnp.arange(8.0).reshape(4, 2)
    >>> g = gumbel_routing(x, w, w, jax.random.key(0), k=1, train=True,
    ...                    gumbel_temperature=0.5)
    >>> g.expert_index.shape, g.gates.sum(axis=-1).tolist()
    ((3, 1), [1.0, 1.0, 1.0])
  """
  noisy = bool(train and noise)
  _check_gating_inputs(x, w_gate, w_noise, key, k=k, noisy=noisy)
  _check_gumbel_temperature(gumbel_temperature)
  if not noisy:
    routed = _shazeer_top_k(x, w_gate, w_noise, key, k=k, noisy=False)
    _, gates = _kept_softmax(routed)
    return _gating_output(routed, gates=gates,
                          expert_weight=_select(gates, routed.one_hot))
  num_experts = w_gate.shape[-1]
  clean_logits = x @ w_gate
  perturbed = clean_logits + jax.random.gumbel(key, clean_logits.shape,
                                               clean_logits.dtype)
  relaxed = jax.nn.softmax(perturbed / gumbel_temperature, axis=-1)
  with_threshold = k < num_experts
  one_hot, top_values, threshold = _top_k_and_threshold(
      perturbed, k, with_threshold)
  routed = _Routed(
      clean_logits=clean_logits, noisy_logits=perturbed,
      noise_std=jnp.zeros_like(clean_logits), one_hot=one_hot,
      top_values=top_values,
      load_prob=(_gumbel_prob_from_threshold(clean_logits, threshold)
                 if with_threshold else jnp.ones_like(clean_logits)))
  kept = relaxed * jnp.sum(one_hot, axis=1)
  forward = kept / jnp.sum(kept, axis=-1, keepdims=True)
  gates = estimators.straight_through(forward, relaxed)
  return _gating_output(routed, gates=gates,
                        expert_weight=_select(gates, one_hot))


# The routings of `noisy_top_k`, by `routing_gradient` name.
ROUTINGS = {
    PAPER: paper_routing,
    STRAIGHT_THROUGH: straight_through_routing,
    GUMBEL: gumbel_routing,
}


def check_routing_gradient(routing_gradient: str) -> None:
  """Raises unless `routing_gradient` names a routing of `ROUTINGS`.

  TypeError for a non-string, ValueError for an unknown name; both name the
  value and the valid choices.
  """
  if not isinstance(routing_gradient, str):
    raise TypeError(
        f"routing_gradient must be a str, one of {tuple(ROUTINGS)}; got "
        f"{routing_gradient!r} of type {type(routing_gradient).__name__}.")
  if routing_gradient not in ROUTINGS:
    raise ValueError(
        f"routing_gradient must be one of {tuple(ROUTINGS)}; got "
        f"{routing_gradient!r}.")


def noisy_top_k(x: Array, w_gate: Array, w_noise: Array, key: PRNGKey | None,
                *, k: int, train: bool, noise: bool = True,
                routing_gradient: str = PAPER,
                gumbel_temperature: float = 1.0) -> GatingOutput:
  """Noisy top-k gating of Shazeer et al. 2017, Eq. 3-5, with its load.

  H = x W_g + eps * softplus(x W_noise), eps drawn by
  `common.estimators.gaussian_reparameterize` with log_std =
  log(softplus(x W_noise)) (the pathwise gradient into the noise scale).
  Noise is applied only when `train and noise`.

  `routing_gradient` picks the routing from the registry `ROUTINGS`:
    "paper": `paper_routing`, gates = softmax over the k kept logits
      (Eq. 3-5); the gradient flows through the kept logits and, for the
      load loss, through the smooth estimator P(x, i) (Eq. 8-9).
    "straight_through": `straight_through_routing`, same forward gates, the
      gradient of the dense softmax over all E noisy logits.
    "gumbel": `gumbel_routing`, Gumbel-top-k routing with the
      straight-through Gumbel gradient (Jang et al. 2017, Sec. 2.2).

  Args:
    x: float [T, D].
    w_gate: W_g, float [D, E] (zero-initialised in the paper).
    w_noise: W_noise, float [D, E] (zero-initialised in the paper).
    key: PRNG key; may be None when no noise is drawn.
    k: experts per token, 1 <= k <= E.
    train: training mode (noise on if `noise`).
    noise: turn the noise term off in training (an ablation).
    routing_gradient: a key of `ROUTINGS`: "paper", "straight_through" or
      "gumbel".
    gumbel_temperature: > 0, for "gumbel".

  Returns:
    GatingOutput (see its docstring).

  Example:
    >>> x = jnp.ones((3, 4))
    >>> w = 0.1 * jnp.arange(8.0).reshape(4, 2)
    >>> g = noisy_top_k(x, w, w, jax.random.key(0), k=1, train=True)
    >>> g.expert_index.shape, g.gates.shape, g.load.shape
    ((3, 1), (3, 2), (2,))
  """
  check_routing_gradient(routing_gradient)
  return ROUTINGS[routing_gradient](
      x, w_gate, w_noise, key, k=k, train=train, noise=noise,
      gumbel_temperature=gumbel_temperature)
