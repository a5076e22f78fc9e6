"""Tests of moe/gating.py: exact P(x, i), load estimator, losses, options.

Monte-Carlo checks use fixed seeds and a 5-standard-error tolerance.

- P(x, i) (Shazeer et al. 2017, Eq. 8-9) against a Monte-Carlo estimate that
  redraws only expert i's noise and decides membership with a full `top_k`
  (k = 1, 2, 3); the test also rejects the non-excluding threshold (the k-th
  largest of all components rather than of the others). P(x, i) = 1 when
  k = E.
- The smooth load: E[sum_i load_i] = k T (5 SE); its gradients reach W_g and
  W_noise and match central finite differences.
- Routing equals a separate `lax.top_k`, and `load` equals the sum of
  `prob_in_top_k` (k = 1, 3, E - 1, E; a zero token with tied logits routes to
  the first experts). Gates are sparse, sum to one, and are the softmax over
  the kept logits; eval mode has no noise and exact counts; routing at zero
  initialisation is balanced.
- `log_softplus` is stable; `cv_squared` and the balancing losses match
  hand-computed values.
- Routing gradients: straight-through has the paper's forward value and the
  dense softmax's gradient; Gumbel top-1 selection frequencies equal the
  softmax (5 SE).
- Gumbel routing: its P(x, i) = 1 - exp(-exp(l_i - t_i)) against a
  Monte-Carlo estimate that redraws only g_i (k = 1, 2, 3; the Gaussian
  formula is rejected), saturated logits give 1 or 0 with finite gradients;
  its load is unbiased (E[sum load] = k T; for k = 1, E[load_i] =
  sum_x softmax(x W_g)_i; 5 SE) and its gradient matches finite
  differences; noisy_logits is x W_g + g (its top k are the experts, the
  gates are softmax(H / tau) renormalised over them, H independent of tau).
- The routing registry: `noisy_top_k(routing_gradient=name)` returns what
  `ROUTINGS[name]` returns, values and gradients.
- Bad options (an unknown routing name, with the valid choices; a non-string
  one raises TypeError; a Gumbel temperature that is not a finite positive
  number), wrong ranks and a missing key raise errors naming the value.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe import gating

T, D, E = 5, 6, 7


def _weights(seed, scale=1.0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k1, (T, D))
  w_gate = scale * jax.random.normal(k2, (D, E))
  w_noise = 0.5 * scale * jax.random.normal(k3, (D, E))
  return x, w_gate, w_noise


def _mc_in_top_k(key, noisy, clean, std, k, num_samples,
                 sample=jax.random.normal):
  """Fraction of redraws of each expert's own noise that keep it in top k.

  Membership is decided by a full `lax.top_k` of the modified logits, not by
  a threshold, so this does not share code with `prob_in_top_k`. `sample`
  draws the standardised noise (normal, or Gumbel for Gumbel routing).
  """
  t, e = noisy.shape
  eps = sample(key, (num_samples, t, e))

  def one(eps_s):
    def per_expert(i):
      h = noisy.at[:, i].set(clean[:, i] + std[:, i] * eps_s[:, i])
      _, idx = jax.lax.top_k(h, k)
      return jnp.any(idx == i, axis=-1)
    return jax.vmap(per_expert, out_axes=1)(jnp.arange(e))

  return jnp.mean(jax.lax.map(one, eps, batch_size=500).astype(jnp.float32),
                  axis=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_prob_in_top_k_matches_monte_carlo(k):
  x, w_gate, w_noise = _weights(0)
  clean = x @ w_gate
  std = jax.nn.softplus(x @ w_noise)
  noisy = clean + std * jax.random.normal(jax.random.key(1), clean.shape)
  p = gating.prob_in_top_k(clean, noisy, std, k)
  n = 20_000
  mc = _mc_in_top_k(jax.random.key(2), noisy, clean, std, k, n)
  se = np.sqrt(np.maximum(p * (1 - p), 1.0 / n) / n)
  np.testing.assert_array_less(np.abs(mc - p), 5 * se)
  # The test has power: the non-excluding threshold (k-th largest of H(x)
  # including i itself, the usual port mistake) is rejected.
  top_vals, _ = jax.lax.top_k(noisy, k)
  naive = jax.scipy.stats.norm.cdf((clean - top_vals[:, k - 1:k]) / std)
  assert np.any(np.abs(mc - naive) > 5 * se)
  # Both in-top-k and out-of-top-k cases were exercised.
  assert 0.05 < float(jnp.mean(p > 0.5)) < 0.95 or k == 1


def test_prob_in_top_k_k_equals_num_experts_is_one():
  x, w_gate, _ = _weights(0)
  clean = x @ w_gate
  p = gating.prob_in_top_k(clean, clean, jnp.ones_like(clean), E)
  np.testing.assert_array_equal(p, 1.0)


def test_load_sums_to_k_tokens_in_expectation():
  x, w_gate, w_noise = _weights(3)
  k = 2

  def load_total(key):
    return jnp.sum(gating.noisy_top_k(x, w_gate, w_noise, key, k=k,
                                      train=True).load)

  totals = jax.vmap(load_total)(jax.random.split(jax.random.key(4), 4000))
  se = float(jnp.std(totals) / np.sqrt(totals.shape[0]))
  assert se > 0
  assert abs(float(jnp.mean(totals)) - k * T) < 5 * se


def test_load_gradient_reaches_both_matrices_and_matches_finite_differences():
  x, w_gate, w_noise = _weights(5)
  key = jax.random.key(6)
  c = jax.random.normal(jax.random.key(7), (E,))

  def f(wg, wn):
    return jnp.sum(c * gating.noisy_top_k(x, wg, wn, key, k=2,
                                          train=True).load)

  g_gate, g_noise = jax.grad(f, argnums=(0, 1))(w_gate, w_noise)
  assert float(jnp.abs(g_gate).max()) > 1e-3
  assert float(jnp.abs(g_noise).max()) > 1e-3
  for i, (w, g) in enumerate([(w_gate, g_gate), (w_noise, g_noise)]):
    d = jax.random.normal(jax.random.key(10 + i), w.shape)
    h = 1e-3
    args_p = [w_gate, w_noise]
    args_m = [w_gate, w_noise]
    args_p[i] = w + h * d
    args_m[i] = w - h * d
    fd = (f(*args_p) - f(*args_m)) / (2 * h)
    np.testing.assert_allclose(fd, jnp.vdot(g, d), rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gumbel_prob_in_top_k_matches_monte_carlo(k):
  """P(x, i) = 1 - exp(-exp(l_i - t_i)) against redraws of g_i alone."""
  x, w_gate, _ = _weights(20)
  logits = x @ w_gate
  perturbed = logits + jax.random.gumbel(jax.random.key(1), logits.shape)
  p = gating.gumbel_prob_in_top_k(logits, perturbed, k)
  n = 20_000
  mc = _mc_in_top_k(jax.random.key(2), perturbed, logits,
                    jnp.ones_like(logits), k, n, sample=jax.random.gumbel)
  se = np.sqrt(np.maximum(p * (1 - p), 1.0 / n) / n)
  np.testing.assert_array_less(np.abs(mc - p), 5 * se)
  # Power: the Gaussian P of Eq. 9 with unit noise is rejected.
  threshold = gating.kth_excluding_threshold(perturbed, k)
  gaussian = jax.scipy.stats.norm.cdf(logits - threshold)
  assert np.any(np.abs(mc - gaussian) > 5 * se)
  assert 0.05 < float(jnp.mean(p > 0.5)) < 0.95 or k == 1


def test_gumbel_prob_in_top_k_saturates_without_nan_gradients():
  """Gaps far beyond float32's exp range give P = 1 or 0, finite gradients."""
  logits = jnp.array([[200.0, 0.0, -200.0]])
  np.testing.assert_array_equal(
      gating.gumbel_prob_in_top_k(logits, logits, 1), [[1.0, 0.0, 0.0]])
  grad = jax.grad(lambda l: jnp.sum(
      gating.gumbel_prob_in_top_k(l, l, 1)))(logits)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(
      gating.gumbel_prob_in_top_k(logits, logits, 3), 1.0)


def test_gumbel_load_is_unbiased():
  """E[sum_i load_i] = k T; with k = 1, E[load_i] = sum_x softmax(x W_g)_i
  (the Gumbel-max trick). 4000 keys, 5 SE."""
  x, w_gate, w_noise = _weights(21, scale=0.5)

  def load(key, k):
    return gating.noisy_top_k(x, w_gate, w_noise, key, k=k, train=True,
                              routing_gradient="gumbel").load

  keys = jax.random.split(jax.random.key(4), 4000)
  for k in (1, 3):
    loads = jax.vmap(lambda key, k=k: load(key, k))(keys)
    totals = jnp.sum(loads, axis=1)
    se = float(jnp.std(totals) / np.sqrt(totals.shape[0]))
    assert se > 0
    assert abs(float(jnp.mean(totals)) - k * T) < 5 * se
  want = jnp.sum(jax.nn.softmax(x @ w_gate, axis=-1), axis=0)
  loads = jax.vmap(lambda key: load(key, 1))(keys)
  se = jnp.std(loads, axis=0) / np.sqrt(loads.shape[0])
  np.testing.assert_array_less(np.abs(jnp.mean(loads, 0) - want), 5 * se)


def test_gumbel_load_gradient_matches_finite_differences():
  x, w_gate, w_noise = _weights(22)
  key = jax.random.key(6)
  c = jax.random.normal(jax.random.key(7), (E,))

  def f(wg):
    return jnp.sum(c * gating.noisy_top_k(
        x, wg, w_noise, key, k=2, train=True,
        routing_gradient="gumbel").load)

  grad = jax.grad(f)(w_gate)
  assert float(jnp.abs(grad).max()) > 1e-3
  d = jax.random.normal(jax.random.key(8), w_gate.shape)
  h = 1e-3
  fd = (f(w_gate + h * d) - f(w_gate - h * d)) / (2 * h)
  np.testing.assert_allclose(fd, jnp.vdot(grad, d), rtol=2e-2, atol=1e-4)


def test_gumbel_routing_is_the_top_k_of_logits_plus_gumbel_noise():
  """noisy_logits H = x W_g + g: its top k are the experts, the forward
  gates are softmax(H / tau) renormalised over them, the load is the sum of
  `gumbel_prob_in_top_k`, and H does not depend on tau."""
  x, w_gate, w_noise = _weights(23)
  k, tau = 3, 0.3
  g = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(9), k=k,
                         train=True, routing_gradient="gumbel",
                         gumbel_temperature=tau)
  _, idx = jax.lax.top_k(g.noisy_logits, k)
  np.testing.assert_array_equal(g.expert_index, idx)
  relaxed = jax.nn.softmax(g.noisy_logits / tau, axis=-1)
  kept = jnp.take_along_axis(relaxed, idx, axis=-1)
  np.testing.assert_allclose(g.expert_weight,
                             kept / jnp.sum(kept, -1, keepdims=True),
                             rtol=1e-5)
  np.testing.assert_allclose(
      g.load, jnp.sum(gating.gumbel_prob_in_top_k(
          g.clean_logits, g.noisy_logits, k), axis=0), rtol=1e-6)
  g_cold = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(9), k=k,
                              train=True, routing_gradient="gumbel",
                              gumbel_temperature=1e-4)
  np.testing.assert_array_equal(g_cold.noisy_logits, g.noisy_logits)
  np.testing.assert_array_equal(g_cold.expert_index, g.expert_index)


def test_gates_sparse_normalised_and_softmax_over_kept_logits():
  x, w_gate, w_noise = _weights(8)
  k = 3
  g = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(0), k=k,
                         train=True)
  np.testing.assert_allclose(jnp.sum(g.gates, -1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(jnp.sum(g.gates > 0, -1), k)
  top, idx = jax.lax.top_k(g.noisy_logits, k)
  np.testing.assert_array_equal(idx, g.expert_index)
  np.testing.assert_allclose(g.expert_weight, jax.nn.softmax(top, -1),
                             rtol=1e-6)
  np.testing.assert_allclose(g.importance, jnp.sum(g.gates, 0), rtol=1e-6)
  np.testing.assert_array_equal(jnp.sum(g.count), k * T)


@pytest.mark.parametrize("k", [1, 3, E - 1, E])
def test_routing_is_lax_top_k_and_load_is_sum_of_prob_in_top_k(k):
  """noisy_top_k shares one top-(k+1) between routing and P(x, i); both must
  equal the separate functions, ties included (a zero token: equal logits,
  first experts win in training without noise and in eval)."""
  x, w_gate, w_noise = _weights(12)
  x = x.at[0].set(0.0)
  g = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(3), k=k,
                         train=True)
  _, idx = jax.lax.top_k(g.noisy_logits, k)
  np.testing.assert_array_equal(g.expert_index, idx)
  np.testing.assert_allclose(
      g.load, jnp.sum(gating.prob_in_top_k(g.clean_logits, g.noisy_logits,
                                           g.noise_std, k), axis=0),
      rtol=1e-6)
  for kwargs in ({"train": False}, {"train": True, "noise": False}):
    g = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(3), k=k,
                           **kwargs)
    np.testing.assert_array_equal(g.expert_index,
                                  jax.lax.top_k(x @ w_gate, k)[1])
    np.testing.assert_array_equal(g.expert_index[0], jnp.arange(k))


def test_eval_mode_is_noise_free_with_exact_load():
  x, w_gate, w_noise = _weights(9)
  g0 = gating.noisy_top_k(x, w_gate, w_noise, None, k=2, train=False)
  g1 = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(1), k=2,
                          train=False)
  np.testing.assert_array_equal(g0.gates, g1.gates)
  np.testing.assert_array_equal(g0.noisy_logits, x @ w_gate)
  np.testing.assert_array_equal(g0.load, g0.count)
  # noise=False in training is also noise-free.
  g2 = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(1), k=2,
                          train=True, noise=False)
  np.testing.assert_array_equal(g0.gates, g2.gates)


def test_zero_init_training_routing_is_balanced():
  t, e, k = 4096, 8, 2
  x = jax.random.normal(jax.random.key(0), (t, D))
  z = jnp.zeros((D, e))
  g = gating.noisy_top_k(x, z, z, jax.random.key(1), k=k, train=True)
  # Multinomial counts: CV ~ sqrt(E / (T k)) ~ 0.03.
  cv_count = float(jnp.sqrt(gating.cv_squared(g.count)))
  assert cv_count < 0.1
  np.testing.assert_allclose(g.load, t * k / e, rtol=0.1)
  np.testing.assert_allclose(g.importance, t / e, rtol=0.1)


def test_log_softplus_is_stable():
  raw = jnp.array([-200.0, -30.0, -15.1, -14.9, 0.0, 20.0])
  val, grad = jax.vmap(jax.value_and_grad(gating.log_softplus))(raw)
  assert np.all(np.isfinite(val)) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(val[3:], jnp.log(jax.nn.softplus(raw[3:])),
                             rtol=1e-5)
  np.testing.assert_allclose(val[:2], raw[:2])
  # Noisy gating with a hugely negative noise pre-activation has finite grads.
  x, w_gate, _ = _weights(0)
  w_noise = jnp.full((D, E), -100.0)
  x = jnp.abs(x)
  grads = jax.grad(lambda wn: gating.load_loss(
      gating.noisy_top_k(x, w_gate, wn, jax.random.key(0), k=2,
                         train=True).load, weight=1.0))(w_noise)
  assert np.all(np.isfinite(grads))


def test_cv_squared_and_losses_values():
  v = jnp.array([1.0, 2.0, 3.0, 6.0])
  np.testing.assert_allclose(gating.cv_squared(v), np.var(v) / np.mean(v)**2,
                             rtol=1e-6)
  np.testing.assert_allclose(gating.cv_squared(jnp.array([3.0])), 0.0)
  np.testing.assert_allclose(gating.cv_squared(jnp.ones(5)), 0.0)
  np.testing.assert_allclose(gating.importance_loss(v, weight=0.2),
                             0.2 * np.var(v) / np.mean(v)**2, rtol=1e-6)
  np.testing.assert_allclose(gating.load_loss(v, weight=0.5),
                             0.5 * np.var(v) / np.mean(v)**2, rtol=1e-6)
  # Switch loss is alpha under uniform routing, N * alpha when collapsed.
  t, e = 64, 4
  uniform = jnp.full((t, e), 1.0 / e)
  idx = jnp.arange(t)[:, None] % e
  np.testing.assert_allclose(
      gating.switch_balance_loss(uniform, idx, alpha=1e-2), 1e-2, rtol=1e-6)
  collapsed = jax.nn.one_hot(jnp.zeros(t, jnp.int32), e)
  np.testing.assert_allclose(
      gating.switch_balance_loss(collapsed, jnp.zeros((t, 1), jnp.int32),
                                 alpha=1e-2), e * 1e-2, rtol=1e-6)
  np.testing.assert_allclose(
      gating.router_z_loss(jnp.zeros((t, e)), weight=1e-3),
      1e-3 * np.log(e)**2, rtol=1e-6)


def test_straight_through_same_forward_denser_gradient():
  x, w_gate, w_noise = _weights(11)
  key = jax.random.key(3)
  c = jax.random.normal(jax.random.key(4), (T, E))

  def f(wg, mode):
    g = gating.noisy_top_k(x, wg, w_noise, key, k=2, train=True,
                           routing_gradient=mode)
    return jnp.sum(c * g.gates), g.gates

  (_, gates_p), grad_p = jax.value_and_grad(
      lambda wg: f(wg, "paper"), has_aux=True)(w_gate)
  (_, gates_st), grad_st = jax.value_and_grad(
      lambda wg: f(wg, "straight_through"), has_aux=True)(w_gate)
  np.testing.assert_array_equal(gates_p, gates_st)
  assert float(jnp.abs(grad_p - grad_st).max()) > 1e-3
  # Straight-through gradient equals that of the dense softmax of H(x).
  grad_dense = jax.grad(lambda wg: jnp.sum(c * jax.nn.softmax(
      gating.noisy_top_k(x, wg, w_noise, key, k=2, train=True).noisy_logits,
      axis=-1)))(w_gate)
  np.testing.assert_allclose(grad_st, grad_dense, rtol=1e-5, atol=1e-6)


def test_gumbel_top1_selection_frequencies_are_softmax():
  x, w_gate, w_noise = _weights(12, scale=0.5)
  x1 = x[:1]

  def chosen(key):
    g = gating.noisy_top_k(x1, w_gate, w_noise, key, k=1, train=True,
                           routing_gradient="gumbel")
    return jax.nn.one_hot(g.expert_index[0, 0], E)

  n = 20_000
  freq = jnp.mean(jax.vmap(chosen)(jax.random.split(jax.random.key(0), n)), 0)
  p = jax.nn.softmax(x1 @ w_gate)[0]
  se = np.sqrt(p * (1 - p) / n)
  np.testing.assert_array_less(np.abs(freq - p), 5 * se)
  g = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(1), k=3,
                         train=True, routing_gradient="gumbel")
  np.testing.assert_allclose(jnp.sum(g.gates, -1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(jnp.sum(g.gates > 0, -1), 3)
  grad = jax.grad(lambda wg: jnp.sum(gating.noisy_top_k(
      x, wg, w_noise, jax.random.key(1), k=3, train=True,
      routing_gradient="gumbel").gates[:, 0]))(w_gate)
  assert float(jnp.abs(grad).max()) > 1e-4


def test_routing_registry_dispatches_to_its_functions():
  """noisy_top_k(routing_gradient=name) is ROUTINGS[name], value and grad."""
  assert gating.ROUTINGS == {
      "paper": gating.paper_routing,
      "straight_through": gating.straight_through_routing,
      "gumbel": gating.gumbel_routing,
  }
  x, w_gate, w_noise = _weights(13)
  c = jax.random.normal(jax.random.key(5), (T, E))
  for name, routing in gating.ROUTINGS.items():
    def f(wg, fn):
      g = fn(x, wg, w_noise, jax.random.key(2), k=2, train=True,
             gumbel_temperature=0.5)
      return jnp.sum(c * g.gates) + jnp.sum(g.load * c[0]), g
    via_name = functools.partial(gating.noisy_top_k, routing_gradient=name)
    (v1, g1), d1 = jax.value_and_grad(f, has_aux=True)(w_gate, via_name)
    (v2, g2), d2 = jax.value_and_grad(f, has_aux=True)(w_gate, routing)
    chex.assert_trees_all_equal((v1, g1, d1), (v2, g2, d2))


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=0), "k must be >= 1; got k=0"),
    (dict(k=E + 1), f"k must be <= num_experts; got k={E + 1}"),
    (dict(k=2, routing_gradient="reinforce"),
     (r"routing_gradient must be one of \('paper', 'straight_through', "
      r"'gumbel'\); got 'reinforce'")),
])
def test_bad_options_raise(kwargs, match):
  x, w_gate, w_noise = _weights(0)
  with pytest.raises(ValueError, match=match):
    gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(0), train=True,
                       **kwargs)


@pytest.mark.parametrize("tau,error,match", [
    (0.0, ValueError, r"finite and > 0; got gumbel_temperature=0\.0\."),
    (float("inf"), ValueError, "got gumbel_temperature=inf"),
    (float("nan"), ValueError, "got gumbel_temperature=nan"),
    (True, TypeError, "real number; got gumbel_temperature=True"),
    ("1.0", TypeError, "real number; got gumbel_temperature='1.0'"),
])
def test_bad_gumbel_temperature_raises(tau, error, match):
  x, w_gate, w_noise = _weights(0)
  with pytest.raises(error, match=match):
    gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(0), k=2,
                       train=True, routing_gradient="gumbel",
                       gumbel_temperature=tau)


def test_non_string_routing_gradient_raises_type_error():
  x, w_gate, w_noise = _weights(0)
  with pytest.raises(TypeError, match=r"routing_gradient must be a str, one "
                     r"of \('paper', .*got \['paper'\] of type list"):
    gating.noisy_top_k(x, w_gate, w_noise, None, k=2, train=False,
                       routing_gradient=["paper"])


def test_wrong_rank_and_missing_key_raise():
  x, w_gate, w_noise = _weights(0)
  with pytest.raises(AssertionError):
    gating.noisy_top_k(x[0], w_gate, w_noise, None, k=2, train=False)
  with pytest.raises(ValueError, match="PRNG key"):
    gating.noisy_top_k(x, w_gate, w_noise, None, k=2, train=True)
