"""The sparsely-gated Mixture-of-Experts layer (Flax linen).

    y = sum_i G(x)_i E_i(x)                       (Shazeer et al. 2017, Eq. 1)

with G the noisy top-k gate of `moe.gating.noisy_top_k` (Eq. 3-5) and E_i
ReLU FFN experts, dispatched dropless (default) or with a capacity limit by
`moe.dispatch`. The auxiliary loss is

    w_importance * CV(Importance)^2 + w_load * CV(Load)^2     (Eq. 6-10)
    + Switch balance loss (Fedus et al. 2021, Eq. 4-6), optional
    + router z-loss (Zoph et al. 2022, Eq. 5), optional,

the last two on the router logits x W_g (see `aux_statistics`).

Example:
  >>> layer = MoE(num_experts=8, k=2, expert_hidden=32, block_sizes=(16, 8))
  >>> x = jnp.ones((16, 8))                               # [T, D]
  >>> variables = layer.init(jax.random.key(0), x, train=False)
  >>> y, aux = layer.apply(variables, x, train=True,
  ...                      rngs={"gating": jax.random.key(1)})
  >>> y.shape
  (16, 8)
  >>> loss = jnp.mean(y ** 2) + aux.loss                  # task loss + aux loss

References:
  Shazeer et al. 2017, "Outrageously Large Neural Networks", Eq. 1, 3-10,
    Appendix A. Fedus et al. 2021, "Switch Transformers", Eq. 4-6.
  Zoph et al. 2022, "ST-MoE", Eq. 5. Lepikhin et al. 2021, "GShard".
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from moe import dispatch
from moe import gating
from moe import parallel

Array = chex.Array


class MoEAux(NamedTuple):
  """Auxiliary outputs of one MoE call (all scalars unless noted).

  Attributes:
    loss: total auxiliary loss (add it to the task loss).
    cv_importance: CV(Importance) = std/mean over experts (Table 6).
    cv_load: CV of the exact per-expert slot counts (Table 6 "CV(Load)").
    max_over_mean_load: max/mean of the exact counts (Table 6).
    fraction_dropped: dropped slots / (T * k); 0 when dropless.
    router_entropy: mean over tokens of the entropy (nats) of the softmax
      over all experts of the routing logits H(x) (`noisy_logits`: x W_g
      plus the routing's noise in training), 0 log 0 taken as 0.
    importance: [E] (Eq. 6).
    load: [E], the smooth load estimate in training with noise, else counts.
    count: [E], exact slots routed to each expert.
  """
  loss: Array
  cv_importance: Array
  cv_load: Array
  max_over_mean_load: Array
  fraction_dropped: Array
  router_entropy: Array
  importance: Array
  load: Array
  count: Array


def expert_kernel_init(*, in_axis: int, out_axis: int):
  """LeCun-style truncated normal per expert: variance 1 / fan_in.

  Axis 0 (the experts) is a batch axis: without it `variance_scaling` would
  count it as a receptive field and divide the variance by E as well.
  """
  return nn.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis,
      batch_axis=0)


def check_moe_options(*, num_experts: int, k: int, expert_hidden: int,
                      capacity_factor: Optional[float],
                      routing_gradient: str = gating.PAPER,
                      block_sizes=dispatch.DEFAULT_BLOCK_SIZES,
                      gumbel_temperature: float = 1.0) -> None:
  """Raises ValueError naming the first bad option.

  `routing_gradient` must be a key of the registry `gating.ROUTINGS`
  (TypeError if it is not a string).
  """
  for name, value in (("num_experts", num_experts),
                      ("expert_hidden", expert_hidden)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be an int >= 1; got {name}={value!r}.")
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be an int >= 1; got k={k!r}.")
  if k > num_experts:
    raise ValueError(
        f"k must be <= num_experts; got k={k} with num_experts={num_experts}.")
  if capacity_factor is not None and not (
      isinstance(capacity_factor, (int, float)) and capacity_factor > 0):
    raise ValueError(
        "capacity_factor must be > 0, or None for dropless dispatch; got "
        f"capacity_factor={capacity_factor!r}.")
  gating.check_routing_gradient(routing_gradient)
  if (isinstance(gumbel_temperature, bool)
      or not isinstance(gumbel_temperature, (int, float))
      or not 0 < gumbel_temperature < math.inf):
    raise ValueError(
        "gumbel_temperature must be finite and > 0; got "
        f"gumbel_temperature={gumbel_temperature!r}.")
  dispatch.check_block_sizes(block_sizes)


def _entropy(logits: Array) -> Array:
  """Entropy (nats) of softmax(logits) over the last axis, [T, E] -> [T].

  -sum_i p_i log p_i from the log-softmax, with 0 log 0 = 0 (the convention
  of `jax.scipy.special.entr`): a logit of -inf, or a probability that
  underflows to 0, adds 0 instead of NaN.
  """
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)


def aux_statistics(g: gating.GatingOutput, fraction_dropped: Array, *,
                   w_importance: float, w_load: float, switch_alpha: float,
                   z_loss: float) -> MoEAux:
  """Auxiliary loss and Table 6 statistics from a gating output.

  The Switch balance loss (Fedus et al. 2021, Eq. 4-6) and the router
  z-loss (Zoph et al. 2022, Eq. 5) are functions of the router logits: in
  both papers the logits h(x) = W_r x that the router's softmax normalises
  (Fedus Eq. 1; ST-MoE Eq. 5, "the logits going into the router"), with no
  noise added to them. Here they are `g.clean_logits` = x W_g under every
  routing; the routing noise (Shazeer's Gaussian, the Gumbel of Gumbel-top-k)
  enters the Switch loss through f_i, the fraction of slots actually
  dispatched. Both losses have a gradient in W_g under every routing.

  Args:
    g: output of `gating.noisy_top_k` for the whole batch.
    fraction_dropped: scalar from the dispatcher.
    w_importance, w_load: Shazeer Eq. 7 and Eq. 10 weights.
    switch_alpha: Switch balance-loss coefficient (0 = off).
    z_loss: router z-loss coefficient (0 = off).

  Returns:
    MoEAux.
  """
  loss = (gating.importance_loss(g.importance, weight=w_importance)
          + gating.load_loss(g.load, weight=w_load))
  if switch_alpha:
    loss = loss + gating.switch_balance_loss(
        jax.nn.softmax(g.clean_logits, axis=-1), g.expert_index,
        alpha=switch_alpha)
  if z_loss:
    loss = loss + gating.router_z_loss(g.clean_logits, weight=z_loss)
  sg = jax.lax.stop_gradient
  count = sg(g.count)
  return MoEAux(
      loss=loss,
      cv_importance=jnp.sqrt(gating.cv_squared(sg(g.importance), eps=0.0)),
      cv_load=jnp.sqrt(gating.cv_squared(count, eps=0.0)),
      max_over_mean_load=jnp.max(count) / jnp.mean(count),
      fraction_dropped=fraction_dropped,
      router_entropy=sg(jnp.mean(_entropy(g.noisy_logits))),
      importance=sg(g.importance),
      load=sg(g.load),
      count=count,
  )


class MoE(nn.Module):
  """Noisy top-k gated MoE layer of ReLU FFN experts.

  Attributes:
    num_experts: E >= 1.
    k: experts per token, 1 <= k <= E.
    expert_hidden: H, hidden width of each expert.
    capacity_factor: None for dropless dispatch, else > 0: each expert takes
      at most ceil(capacity_factor * T * k / E) slots, the rest are dropped.
    w_importance: Shazeer Eq. 7 weight.
    w_load: Shazeer Eq. 10 weight.
    switch_alpha: Switch Transformer balance loss coefficient (0 = off).
    z_loss: ST-MoE router z-loss coefficient (0 = off).
    noise: use the gating noise in training (ablation switch).
    routing_gradient: a key of `gating.ROUTINGS`: "paper",
      "straight_through" or "gumbel".
    gumbel_temperature: tau > 0 of the Gumbel-softmax, for "gumbel".
    block_sizes: rows per block of the dropless dispatcher, an int or a
      decreasing tuple (see `dispatch.dropless_ffn`).
    expert_mesh: if set, experts are sharded over `expert_axis` of this mesh
      and tokens exchanged by all-to-all (`moe.parallel`); needs a
      capacity_factor. Parameters keep their global shapes.
    expert_axis: the mesh axis name.
  """
  num_experts: int
  k: int
  expert_hidden: int
  capacity_factor: Optional[float] = None
  w_importance: float = 0.1
  w_load: float = 0.1
  switch_alpha: float = 0.0
  z_loss: float = 0.0
  noise: bool = True
  routing_gradient: str = gating.PAPER
  gumbel_temperature: float = 1.0
  block_sizes: tuple[int, ...] = dispatch.DEFAULT_BLOCK_SIZES
  expert_mesh: Optional[jax.sharding.Mesh] = None
  expert_axis: str = "expert"

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, MoEAux]:
    """Applies the layer.

    Args:
      x: float [..., D] with at least one leading (token) axis; leading axes
        are flattened into T tokens and restored on output.
      train: training mode (gating noise on; needs rngs={"gating": key}).

    Returns:
      (y with the shape of x, MoEAux).
    """
    check_moe_options(num_experts=self.num_experts, k=self.k,
                      expert_hidden=self.expert_hidden,
                      capacity_factor=self.capacity_factor,
                      routing_gradient=self.routing_gradient,
                      block_sizes=self.block_sizes,
                      gumbel_temperature=self.gumbel_temperature)
    if x.ndim < 2:
      raise ValueError(
          f"MoE expects x of rank >= 2 ([tokens, d_model] or [..., d_model]);"
          f" got rank {x.ndim} with shape {x.shape}.")
    lead_shape, d_model = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(math.prod(lead_shape), d_model)

    e, h = self.num_experts, self.expert_hidden
    w_gate = self.param("w_gate", nn.initializers.zeros, (d_model, e))
    w_noise = self.param("w_noise", nn.initializers.zeros, (d_model, e))
    params = dispatch.ExpertParams(
        w1=self.param("w1", expert_kernel_init(in_axis=1, out_axis=2),
                      (e, d_model, h)),
        b1=self.param("b1", nn.initializers.zeros, (e, h)),
        # W2 stored transposed, [E, D, H] (see moe/dispatch.py): fan-in H.
        w2t=self.param("w2t", expert_kernel_init(in_axis=2, out_axis=1),
                       (e, d_model, h)),
        b2=self.param("b2", nn.initializers.zeros, (e, d_model)),
    )
    needs_key = train and self.noise
    key = self.make_rng("gating") if needs_key else None
    g = gating.noisy_top_k(
        x2, w_gate, w_noise, key, k=self.k, train=train, noise=self.noise,
        routing_gradient=self.routing_gradient,
        gumbel_temperature=self.gumbel_temperature)
    if self.expert_mesh is not None:
      if self.capacity_factor is None:
        raise ValueError(
            "expert parallelism (expert_mesh set) needs a capacity_factor; "
            "got capacity_factor=None.")
      y, stats = parallel.expert_parallel_ffn(
          x2, g.expert_index, g.expert_weight, params, mesh=self.expert_mesh,
          capacity_factor=self.capacity_factor, axis_name=self.expert_axis)
    elif self.capacity_factor is None:
      y, stats = dispatch.dropless_ffn(x2, g.expert_index, g.expert_weight,
                                       params, block_sizes=self.block_sizes)
    else:
      y, stats = dispatch.capacity_ffn(x2, g.expert_index, g.expert_weight,
                                       params,
                                       capacity_factor=self.capacity_factor)
    aux = aux_statistics(g, stats.fraction_dropped,
                         w_importance=self.w_importance, w_load=self.w_load,
                         switch_alpha=self.switch_alpha, z_loss=self.z_loss)
    return y.reshape(x.shape), aux
