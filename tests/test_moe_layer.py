"""Tests of moe/layer.py and moe/dispatch.py against simple references.

- Limits: with k = E and no noise the layer equals the dense softmax mixture
  of all experts, for both dispatchers; one expert equals a plain FFN.
- Reference: the sparse layer's values and gradients (all parameters and the
  input) match a dense reference that runs every expert on every token,
  dropless and with capacity 1.0; the capacity reference drops slots in
  GShard priority order. With one slot less of capacity, exactly the excess
  is dropped and counted.
- Dropless dispatch with skewed routing (empty experts, one expert with most
  slots) matches the reference in values and all gradients for block sizes
  (8, 3, 1), (16, 8), (32,), (64, 48, 16) and (16, 8, 4, 2); in most of these,
  tails reach back over rows of lower experts and the front padding.
- The kernel `expert_blocks_ffn`, row by row: every group row holds its own
  expert's FFN, and rows outside every group (front padding, gaps) stay zero
  in the output and the input gradient. `block_plan` on hand-worked counts.
- Each expert's kernels start with variance 1 / fan-in (5 SE).
- Invariances: permuting tokens permutes outputs; eval mode is deterministic
  and train mode is not; dropless equals capacity-limited when nothing
  overflows; leading batch dims are flattened; `chex.assert_max_traces(n=1)`
  holds across batches. Bad options and input ranks raise errors naming the
  value (an unknown routing name with the valid choices, the keys of
  `gating.ROUTINGS`; a non-string one raises TypeError).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe import dispatch
from moe import gating
from moe import layer as layer_module
from moe.layer import MoE

T, D, H = 24, 8, 16


_JITTED = {}


def _apply(layer, variables, x, *, train, rngs=None):
  """Jitted `layer.apply`, one compiled function per layer config."""
  key = repr(layer)
  if key not in _JITTED:
    _JITTED[key] = jax.jit(layer.apply, static_argnames="train")
  return _JITTED[key](variables, x, train=train, rngs=rngs)


def _x(seed=0, t=T):
  return jax.random.normal(jax.random.key(seed), (t, D))


def _init(layer, x, seed=1, gate_scale=1.0):
  """Initialises, then gives W_g / W_noise random values (they start at 0)."""
  variables = jax.jit(layer.init, static_argnames="train")(
      jax.random.key(seed), x, train=False)
  params = dict(variables["params"])
  assert not np.any(params["w_gate"]) and not np.any(params["w_noise"])
  k1, k2, k3 = jax.random.split(jax.random.key(seed + 100), 3)
  params["w_gate"] = gate_scale * jax.random.normal(k1, params["w_gate"].shape)
  params["w_noise"] = 0.3 * jax.random.normal(k2, params["w_noise"].shape)
  params["b1"] = 0.1 * jax.random.normal(k3, params["b1"].shape)
  return {"params": params}


def _experts(variables):
  p = variables["params"]
  return dispatch.ExpertParams(p["w1"], p["b1"], p["w2t"], p["b2"])


def _dense_reference(variables, x, gates):
  """sum_i gates_i FFN_i(x), every expert evaluated on every token."""
  experts = _experts(variables)
  e = experts.w1.shape[0]
  outs = jnp.stack([dispatch.expert_ffn(x, experts, i) for i in range(e)], 1)
  return jnp.einsum("te,ted->td", gates, outs)


@pytest.mark.parametrize("capacity_factor", [None, 8.0])
def test_k_equals_num_experts_without_noise_is_dense_softmax_mixture(
    capacity_factor):
  e = 4
  layer = MoE(num_experts=e, k=e, expert_hidden=H,
              capacity_factor=capacity_factor, block_sizes=(8, 2))
  x = _x()
  variables = _init(layer, x)
  y, aux = _apply(layer, variables, x, train=False)
  gates = jax.nn.softmax(x @ variables["params"]["w_gate"], axis=-1)
  np.testing.assert_allclose(y, _dense_reference(variables, x, gates),
                             rtol=1e-5, atol=1e-5)
  assert float(aux.fraction_dropped) == 0.0


def test_single_expert_is_plain_ffn():
  layer = MoE(num_experts=1, k=1, expert_hidden=H, block_sizes=8)
  x = _x()
  variables = _init(layer, x)
  y, aux = _apply(layer, variables, x, train=True,
                       rngs={"gating": jax.random.key(0)})
  np.testing.assert_allclose(
      y, dispatch.expert_ffn(x, _experts(variables), 0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux.loss, 0.0, atol=1e-7)


@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_sparse_layer_matches_reference_values_and_gradients(
    capacity_factor):
  """Top-2 of 6 in training, against the dense reference with the same gates.

  With capacity 1.0 some slots overflow; the reference zeroes their gates.
  """
  layer = MoE(num_experts=6, k=2, expert_hidden=H,
              capacity_factor=capacity_factor, block_sizes=(8, 3))
  x = _x(3)
  variables = _init(layer, x)
  rngs = {"gating": jax.random.key(5)}
  c = jax.random.normal(jax.random.key(6), (T, D))
  # The gating key the layer derives from rngs (its first make_rng call).
  keys = [layer.apply(variables, rngs=rngs,
                      method=lambda m: m.make_rng("gating"))]
  original = gating.noisy_top_k
  keep = np.ones((T, 6), bool)
  if capacity_factor is not None:
    cap = dispatch.expert_capacity(T, 2, 6, capacity_factor)
    # Slot-major priority: first choices, then second choices, by token.
    keep[:] = False
    used = np.zeros(6, int)
    p = variables["params"]
    idx = np.asarray(original(x, p["w_gate"], p["w_noise"], keys[0], k=2,
                              train=True).expert_index)
    for j in range(2):
      for t in range(T):
        if used[idx[t, j]] < cap:
          keep[t, idx[t, j]] = True
          used[idx[t, j]] += 1

  def loss(variables, x):
    y, aux = _apply(layer, variables, x, train=True, rngs=rngs)
    return jnp.sum(c * jnp.sin(y)) + aux.loss

  def ref_loss(variables, x):
    p = variables["params"]
    g = original(x, p["w_gate"], p["w_noise"], keys[0], k=2, train=True)
    aux = layer_module.aux_statistics(g, jnp.zeros(()), w_importance=0.1,
                                      w_load=0.1, switch_alpha=0.0, z_loss=0.0)
    gates = g.gates * keep
    y = _dense_reference(variables, x, gates)
    return jnp.sum(c * jnp.sin(y)) + aux.loss

  v1, g1 = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables, x)
  v2, g2 = jax.jit(jax.value_and_grad(ref_loss, argnums=(0, 1)))(variables, x)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-5)
  _, aux = _apply(layer, variables, x, train=True, rngs=rngs)
  if capacity_factor is not None:
    assert float(aux.fraction_dropped) > 0.0


AUX_LOSSES = ("w_importance", "w_load", "switch_alpha", "z_loss")


def _gating_weights(seed, t=T, e=8):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k1, (t, D))
  w_gate = jax.random.normal(k2, (D, e))
  w_noise = 0.3 * jax.random.normal(k3, (D, e))
  return x, w_gate, w_noise


def _aux(x, w_gate, w_noise, routing, *, tau=1.0, key=4, **weights):
  """MoEAux of the layer's gating, in training (as `MoE.__call__`)."""
  g = gating.noisy_top_k(x, w_gate, w_noise, jax.random.key(key), k=2,
                         train=True, routing_gradient=routing,
                         gumbel_temperature=tau)
  weights = {**dict.fromkeys(AUX_LOSSES, 0.0), **weights}
  return layer_module.aux_statistics(g, jnp.zeros(()), **weights), g


@pytest.mark.parametrize("loss_name", AUX_LOSSES)
@pytest.mark.parametrize("routing", list(gating.ROUTINGS))
def test_every_auxiliary_loss_has_a_gradient_under_every_routing(
    routing, loss_name):
  """d aux.loss / d (W_g, W_noise) is finite and nonzero, one loss at a time.

  Each of the four losses is built to train the router, so under every
  routing it must reach the gating parameters (a loss that only adds to the
  value would leave the router untouched).
  """
  x, w_gate, w_noise = _gating_weights(0)

  def loss(params):
    return _aux(x, *params, routing, **{loss_name: 1.0})[0].loss

  grads = jax.grad(loss)((w_gate, w_noise))
  l1 = sum(float(jnp.sum(jnp.abs(g))) for g in grads)
  assert np.isfinite(l1) and l1 > 1e-3, (routing, loss_name, l1)


@pytest.mark.parametrize("routing", list(gating.ROUTINGS))
def test_switch_and_z_losses_are_the_papers_formulas_on_router_logits(
    routing):
  """Values and W_g-gradients against closed forms in float64.

  With z = x W_g the router logits, p = softmax(z), f_i the fraction of the
  T k dispatched slots on expert i and P_i = mean_t p_ti:
    Switch (Fedus et al. 2021, Eq. 4-6): alpha E sum_i f_i P_i, gradient
      (alpha E / T) x^T [p_tj (f_j - sum_i f_i p_ti)]  (f held fixed);
    z-loss (Zoph et al. 2022, Eq. 5): w mean_t lse(z_t)^2, gradient
      (2 w / T) x^T [lse(z_t) p_tj].
  """
  x, w_gate, w_noise = _gating_weights(1)
  alpha, w = 0.7, 0.3
  t, e = x.shape[0], w_gate.shape[1]
  x64, z = np.float64(x), np.float64(x) @ np.float64(w_gate)
  lse = np.log(np.sum(np.exp(z - z.max(1, keepdims=True)), 1)) + z.max(1)
  p = np.exp(z - lse[:, None])
  for name, weight in (("switch_alpha", alpha), ("z_loss", w)):
    def loss(wg, name=name, weight=weight):
      return _aux(x, wg, w_noise, routing, **{name: weight})[0].loss
    value, grad = jax.value_and_grad(loss)(w_gate)
    _, g = _aux(x, w_gate, w_noise, routing)
    if name == "switch_alpha":
      f = np.asarray(g.count, np.float64) / (t * 2)
      want = alpha * e * np.sum(f * p.mean(0))
      want_grad = alpha * e / t * x64.T @ (p * (f[None] - (p @ f)[:, None]))
    else:
      want = w * np.mean(lse ** 2)
      want_grad = 2 * w / t * x64.T @ (lse[:, None] * p)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("tau", [1e-3, 1e-4])
def test_gumbel_router_entropy_is_finite_at_tiny_temperatures(tau):
  """At small tau the relaxed softmax underflows to 0 for most experts.

  The router entropy is that of softmax(H), H = x W_g + g, which does not
  depend on tau: it equals the value at tau = 1 with the same key, and the
  float64 entropy of softmax(noisy_logits).
  """
  x, w_gate, w_noise = _gating_weights(2)
  w_gate = 3.0 * w_gate
  aux, g = _aux(x, w_gate, w_noise, "gumbel", tau=tau)
  relaxed = jax.nn.softmax(g.noisy_logits / tau, axis=-1)
  assert float(jnp.mean(relaxed == 0.0)) > 0.1   # Underflow does happen.
  assert np.isfinite(float(aux.router_entropy))
  h = np.float64(g.noisy_logits)
  log_p = h - h.max(1, keepdims=True)
  log_p -= np.log(np.sum(np.exp(log_p), 1, keepdims=True))
  want = np.mean(-np.sum(np.exp(log_p) * log_p, 1))
  np.testing.assert_allclose(aux.router_entropy, want, rtol=1e-5)
  aux_warm, _ = _aux(x, w_gate, w_noise, "gumbel", tau=1.0)
  np.testing.assert_allclose(aux.router_entropy, aux_warm.router_entropy,
                             rtol=1e-6)


def test_router_entropy_takes_zero_log_zero_as_zero():
  """Logits of -inf (probability 0) add nothing: entropy log 2, not NaN."""
  x, w_gate, w_noise = _gating_weights(3, t=2, e=4)
  g = gating.noisy_top_k(x, w_gate, w_noise, None, k=2, train=False)
  g = g._replace(noisy_logits=jnp.array([[0.0, 0.0, -jnp.inf, -jnp.inf],
                                         [1.0, -jnp.inf, 1.0, -jnp.inf]]))
  aux = layer_module.aux_statistics(
      g, jnp.zeros(()), **dict.fromkeys(AUX_LOSSES, 0.0))
  np.testing.assert_allclose(aux.router_entropy, np.log(2.0), rtol=1e-6)


def test_expert_kernels_start_with_variance_one_over_their_fan_in():
  """Each expert is a LeCun-initialised FFN: Var(W1) = 1/D, Var(W2) = 1/H.

  The expert axis is a batch axis, not a receptive field (which would divide
  the variance by E too). The sample variance of n draws has standard error
  at most Var * sqrt(2 / n) (a truncated normal has kurtosis below 3).
  """
  e, d, h = 8, 32, 64
  layer = MoE(num_experts=e, k=2, expert_hidden=h)
  params = layer.init(jax.random.key(0), jnp.zeros((4, d)),
                      train=False)["params"]
  assert params["w1"].shape == params["w2t"].shape == (e, d, h)
  for name, fan_in in (("w1", d), ("w2t", h)):
    w = np.asarray(params[name], np.float64)
    tolerance = 5 * np.sqrt(2 / w.size)
    np.testing.assert_allclose(w.var() * fan_in, 1.0, atol=tolerance)
    per_expert = w.reshape(e, -1).var(axis=1) * fan_in
    np.testing.assert_allclose(per_expert, 1.0,
                               atol=5 * np.sqrt(2 / (w.size // e)))


def test_permuting_tokens_permutes_outputs():
  layer = MoE(num_experts=5, k=2, expert_hidden=H, block_sizes=(4, 2))
  x = _x(7)
  variables = _init(layer, x)
  perm = jax.random.permutation(jax.random.key(8), T)
  y, _ = _apply(layer, variables, x, train=False)
  y_perm, _ = _apply(layer, variables, x[perm], train=False)
  np.testing.assert_allclose(y_perm, y[perm], rtol=1e-5, atol=1e-6)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
  layer = MoE(num_experts=5, k=2, expert_hidden=H, block_sizes=(4, 2))
  x = _x(9)
  variables = _init(layer, x, gate_scale=0.1)
  y1, _ = _apply(layer, variables, x, train=False,
                      rngs={"gating": jax.random.key(1)})
  y2, _ = _apply(layer, variables, x, train=False,
                      rngs={"gating": jax.random.key(2)})
  np.testing.assert_array_equal(y1, y2)
  t1, _ = _apply(layer, variables, x, train=True,
                      rngs={"gating": jax.random.key(1)})
  t2, _ = _apply(layer, variables, x, train=True,
                      rngs={"gating": jax.random.key(2)})
  assert float(jnp.abs(t1 - t2).max()) > 1e-4


def test_dropless_equals_capacity_limited_without_overflow():
  x = _x(10, t=64)
  kw = dict(num_experts=8, k=2, expert_hidden=H)
  dropless = MoE(**kw, block_sizes=(16, 4, 1))
  variables = _init(dropless, x)
  rngs = {"gating": jax.random.key(3)}
  y_a, aux_a = _apply(dropless, variables, x, train=True, rngs=rngs)
  # Capacity large enough that nothing overflows.
  cf = float(jnp.max(aux_a.count)) * 8 / (64 * 2)
  y_b, aux_b = _apply(MoE(**kw, capacity_factor=cf), variables, x,
                      train=True, rngs=rngs)
  assert float(aux_b.fraction_dropped) == 0.0
  np.testing.assert_allclose(y_a, y_b, rtol=1e-5, atol=1e-6)
  # One less slot per expert: exactly the excess is dropped.
  cap = int(jnp.max(aux_a.count)) - 1
  y_c, aux_c = _apply(MoE(**kw, capacity_factor=cap * 8 / (64 * 2)),
                      variables, x, train=True, rngs=rngs)
  expected = float(jnp.sum(jnp.maximum(aux_a.count - cap, 0))) / (64 * 2)
  np.testing.assert_allclose(aux_c.fraction_dropped, expected, rtol=1e-6)
  assert float(jnp.abs(y_c - y_a).max()) > 1e-4


def test_leading_batch_dims_are_flattened():
  layer = MoE(num_experts=4, k=2, expert_hidden=H, block_sizes=(4, 2))
  x = _x(11).reshape(4, 6, D)
  variables = _init(layer, x)
  y, _ = _apply(layer, variables, x, train=False)
  y_flat, _ = _apply(layer, variables, x.reshape(T, D), train=False)
  np.testing.assert_allclose(y, y_flat.reshape(4, 6, D), rtol=1e-6)


def test_no_recompilation_across_batches():
  layer = MoE(num_experts=4, k=2, expert_hidden=H, block_sizes=(4, 2))
  x = _x(12)
  variables = _init(layer, x)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(variables, x, key):
    def loss(v):
      y, aux = _apply(layer, v, x, train=True, rngs={"gating": key})
      return jnp.mean(y**2) + aux.loss
    return jax.grad(loss)(variables)

  for i in range(3):
    step(variables, _x(20 + i), jax.random.key(i))


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=0), "k must be an int >= 1; got k=0"),
    (dict(k=5), "k must be <= num_experts; got k=5 with num_experts=4"),
    (dict(k=2, capacity_factor=0.0), "capacity_factor must be > 0"),
    (dict(k=2, capacity_factor=-1.5), "capacity_factor=-1.5"),
    (dict(k=2, routing_gradient="nope"),
     (r"routing_gradient must be one of \('paper', 'straight_through', "
      r"'gumbel'\); got 'nope'")),
    (dict(k=2, block_sizes=(2, 4)), r"block_sizes=\(2, 4\)"),
    (dict(k=2, block_sizes=0), "block_sizes=\\(0,\\)"),
])
def test_bad_options_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    MoE(num_experts=4, expert_hidden=H, **kwargs).init(
        jax.random.key(0), _x(), train=False)  # Fails before any compute.


def test_non_string_routing_gradient_raises_type_error():
  with pytest.raises(TypeError, match="routing_gradient must be a str, one "
                     "of .*got None of type NoneType"):
    layer_module.check_moe_options(num_experts=4, k=2, expert_hidden=H,
                                   capacity_factor=None,
                                   routing_gradient=None)


def test_wrong_input_rank_raises():
  with pytest.raises(ValueError, match="rank >= 2.*rank 1"):
    MoE(num_experts=4, k=2, expert_hidden=H).init(
        jax.random.key(0), jnp.ones((D,)), train=False)


def _random_expert_params(keys, e):
  """E experts with O(1) random weights and biases (4 keys)."""
  return dispatch.ExpertParams(
      0.3 * jax.random.normal(keys[0], (e, D, H)),
      0.1 * jax.random.normal(keys[1], (e, H)),
      0.3 * jax.random.normal(keys[2], (e, D, H)),
      0.1 * jax.random.normal(keys[3], (e, D)))


@pytest.mark.parametrize("block_sizes", [(8, 3, 1), (16, 8), (32,),
                                         (64, 48, 16), (16, 8, 4, 2)])
def test_dropless_dispatch_with_skewed_routing_matches_reference(block_sizes):
  """Most slots on one expert, some experts empty: full blocks plus an
  end-aligned tail cover every slot exactly once. With (16, 8), (32,) and
  (64, 48, 16) tails reach back over rows of lower experts and the front
  padding, so outputs and gradients check the tails' masked writes and
  masked cotangents. (32,) has one tail block per expert (its weight
  gradient is written); the others can have several (added)."""
  t, e, k = 40, 6, 2
  ks = jax.random.split(jax.random.key(0), 6)
  x = jax.random.normal(ks[0], (t, D))
  params = _random_expert_params(ks[1:5], e)
  first = jnp.where(jnp.arange(t) < 33, 2, 4)
  second = jnp.where(jnp.arange(t) % 2 == 0, 5, 2)
  second = jnp.where(second == first, 0, second)
  idx = jnp.stack([first, second], axis=1).astype(jnp.int32)
  w = jax.nn.softmax(jax.random.normal(ks[5], (t, k)), axis=-1)
  c = jax.random.normal(jax.random.key(9), (t, D))

  def loss(x, w, p):
    y, stats = dispatch.dropless_ffn(x, idx, w, p, block_sizes=block_sizes)
    return jnp.sum(c * jnp.sin(y)), stats.count

  def ref_loss(x, w, p):
    outs = jnp.stack([dispatch.expert_ffn(x, p, i) for i in range(e)], 1)
    y = jnp.einsum("tk,tkd->td", w, jnp.take_along_axis(
        outs, idx[:, :, None], axis=1))
    return jnp.sum(c * jnp.sin(y))

  (v, count), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2),
                                             has_aux=True))(x, w, params)
  v_ref, g_ref = jax.jit(jax.value_and_grad(ref_loss, argnums=(0, 1, 2)))(
      x, w, params)
  assert int(count[1]) == 0 and int(count[3]) == 0 and int(count[2]) > 33
  group_start = block_sizes[0] + jnp.cumsum(count) - count
  plan = dispatch.block_plan(group_start, count,
                             dispatch.check_block_sizes(block_sizes))
  np.testing.assert_array_equal(
      plan.num_full * block_sizes[0] + plan.remainder, count)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5)
  chex.assert_trees_all_close(g, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block_sizes", [(8, 3, 1), (16, 8), (32,)])
def test_expert_blocks_write_each_row_from_its_own_expert_and_zero_elsewhere(
    block_sizes):
  """The kernel's contract, row by row: group rows hold their own expert's
  FFN, rows outside every group (front padding, gaps) stay zero, also in the
  input gradient, whatever the tails overlap."""
  e, pad = 5, block_sizes[0]
  count = jnp.array([3, 0, 21, 1, 9])
  gap = jnp.array([0, 2, 0, 4, 1])  # Unused rows before each group.
  group_start = pad + jnp.cumsum(count + gap) - count
  rows = int(pad + jnp.sum(count + gap)) + 2
  ks = jax.random.split(jax.random.key(3), 6)
  x_rows = jax.random.normal(ks[0], (rows, D))
  params = _random_expert_params(ks[1:5], e)
  owner = np.full(rows, -1)
  for i in range(e):
    owner[int(group_start[i]):int(group_start[i] + count[i])] = i
  run = jax.jit(lambda x: dispatch.expert_blocks_ffn(
      x, group_start, count, params, block_sizes=block_sizes))
  y, vjp = jax.vjp(run, x_rows)
  (dx,) = vjp(jax.random.normal(ks[5], y.shape))
  for r in range(rows):
    if owner[r] < 0:
      np.testing.assert_array_equal(y[r], 0.0)
      np.testing.assert_array_equal(dx[r], 0.0)
    else:
      np.testing.assert_allclose(
          y[r], dispatch.expert_ffn(x_rows[r], params, owner[r]),
          rtol=1e-5, atol=1e-5)
  assert (owner < 0).sum() == int(pad + jnp.sum(gap)) + 2


def test_block_plan_full_blocks_then_a_greedy_tail_ending_at_the_group_end():
  count = jnp.array([0, 5, 16, 17, 40, 33, 13])
  group_start = 16 + jnp.cumsum(count) - count
  plan = dispatch.block_plan(group_start, count, (16, 8, 2))
  np.testing.assert_array_equal(plan.num_full, [0, 0, 1, 1, 2, 2, 0])
  np.testing.assert_array_equal(plan.remainder, [0, 5, 0, 1, 8, 1, 13])
  # Blocks of block_sizes[l] in the tail: a block that holds what is left
  # with < 2 (the smallest size) rows to spare ends it (8 -> 8), else greedy
  # with the smallest size rounding up (5 -> 2+2+2, 13 -> 8+2+2+2, 1 -> 2).
  np.testing.assert_array_equal(plan.tail_count, [[0, 0, 0, 0, 0, 0, 0],
                                                  [0, 0, 0, 0, 1, 0, 1],
                                                  [0, 3, 0, 1, 0, 1, 3]])
  sizes = jnp.array([16, 8, 2])[:, None]
  tail_rows = jnp.sum(sizes * plan.tail_count, axis=0)
  assert bool(jnp.all(tail_rows >= plan.remainder))
  assert bool(jnp.all(tail_rows - plan.remainder < 2))
  # The tail ends exactly at the group's end, its levels end to end.
  last = jnp.max(jnp.where(plan.tail_count > 0,
                           plan.tail_start + sizes * plan.tail_count, 0), 0)
  np.testing.assert_array_equal(jnp.where(tail_rows > 0, last, 0),
                                jnp.where(tail_rows > 0, group_start + count,
                                          0))
  # Binary sizes give the binary decomposition of r rounded up to 16.
  binary = dispatch.block_plan(jnp.array([256]), jnp.array([200]),
                               (256, 128, 64, 32, 16))
  np.testing.assert_array_equal(binary.tail_count[:, 0], [0, 1, 1, 0, 1])
  # The default sizes always end in one tail block; these sizes need not.
  assert dispatch._tail_is_one_block(dispatch.DEFAULT_BLOCK_SIZES)
  assert not dispatch._tail_is_one_block((16, 8, 2))
