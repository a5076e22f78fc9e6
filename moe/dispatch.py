"""Token dispatch to expert FFNs: dropless (block-grouped) and capacity-limited.

Both dispatchers take the routing of `moe.gating.noisy_top_k` (each of the
T tokens sent to K experts with a combine weight) and the stacked expert
parameters, and return y[t] = sum_j w[t, j] * FFN_{e[t, j]}(x[t]), with
FFN_e(x) = relu(x W1_e + b1_e) W2_e + b2_e (Shazeer et al. 2017, Eq. 1 with
ReLU experts).

Dropless (`dropless_ffn`): the T*K token-slots are sorted by expert; each
expert's group is padded to a multiple of `block_size` rows, so the padded
buffer is a sequence of fixed-size blocks each owned by one expert. The
buffer has a static upper bound of ceil(T*K / B) + E blocks (memory only);
`grouped_ffn` runs a `lax.while_loop` over just the blocks in use (a dynamic
count), one [B, D] x [D, H] matmul per block with that expert's weights, and
has a hand-written VJP that accumulates each block's weight gradient into its
expert's slice in place. No weights are gathered per block and no one-hot
dispatch tensor is formed, so the work is the FLOP-matched dense FFN's plus
the padding (< B rows per expert).

Capacity-limited (`capacity_ffn`): each expert takes at most
C = ceil(capacity_factor * T * K / E) slots, first choices before second
choices (GShard priority, Lepikhin et al. 2021, Sec. 2.2); overflow slots are
dropped (their contribution is zero) and counted. Tokens are gathered into
an [E, C, D] buffer and the experts run as one batched matmul.

Shapes: T tokens, D model width, H expert hidden width, E experts, K slots
per token, S = T * K slots, B block size, R padded rows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = chex.Array


class ExpertParams(NamedTuple):
  """Stacked parameters of E ReLU expert FFNs."""
  w1: Array  # [E, D, H]
  b1: Array  # [E, H]
  w2: Array  # [E, H, D]
  b2: Array  # [E, D]


class DispatchStats(NamedTuple):
  """Per-call dispatch statistics."""
  count: Array  # [E] slots routed to each expert (before any dropping).
  fraction_dropped: Array  # scalar, dropped slots / (T * K).


def _check_routing(x: Array, expert_index: Array, expert_weight: Array,
                   params: ExpertParams) -> None:
  chex.assert_rank([x, expert_index, expert_weight], 2)
  chex.assert_equal_shape([expert_index, expert_weight])
  chex.assert_equal_shape_prefix([x, expert_index], 1)
  chex.assert_rank([params.w1, params.b1, params.w2, params.b2], [3, 2, 3, 2])
  if params.w1.shape[1] != x.shape[1]:
    raise ValueError(f"x has {x.shape[1]} features; the experts expect "
                     f"{params.w1.shape[1]}.")


def expert_ffn(x: Array, params: ExpertParams, expert: int) -> Array:
  """One expert, relu(x W1 + b1) W2 + b2, for x [..., D] (reference)."""
  h = jax.nn.relu(x @ params.w1[expert] + params.b1[expert])
  return h @ params.w2[expert] + params.b2[expert]


# --------------------------------------------------------------------------
# Grouped FFN over expert-owned row blocks (custom VJP, dynamic block count).
# --------------------------------------------------------------------------


def _block_forward(x_rows, owner, num_blocks, params, block_size):
  rows, d_model = x_rows.shape
  hidden = params.w1.shape[-1]

  def body(b, carry):
    y, h_all = carry
    e = owner[b]
    start = b * block_size
    xb = jax.lax.dynamic_slice_in_dim(x_rows, start, block_size)
    hb = jax.nn.relu(xb @ params.w1[e] + params.b1[e])
    yb = hb @ params.w2[e] + params.b2[e]
    y = jax.lax.dynamic_update_slice_in_dim(y, yb, start, 0)
    h_all = jax.lax.dynamic_update_slice_in_dim(h_all, hb, start, 0)
    return y, h_all

  init = (jnp.zeros((rows, d_model), x_rows.dtype),
          jnp.zeros((rows, hidden), x_rows.dtype))
  return jax.lax.fori_loop(0, num_blocks, body, init)


@jax.custom_vjp
def _grouped_ffn(x_rows, owner, num_blocks, params, block_size_arr):
  block_size = block_size_arr.shape[0]
  y, _ = _block_forward(x_rows, owner, num_blocks, params, block_size)
  return y


def _grouped_ffn_fwd(x_rows, owner, num_blocks, params, block_size_arr):
  block_size = block_size_arr.shape[0]
  y, h_all = _block_forward(x_rows, owner, num_blocks, params, block_size)
  return y, (x_rows, owner, num_blocks, params, h_all, block_size_arr)


def _grouped_ffn_bwd(res, dy):
  x_rows, owner, num_blocks, params, h_all, block_size_arr = res
  block_size = block_size_arr.shape[0]

  def body(b, carry):
    dx, dw1, db1, dw2, db2 = carry
    e = owner[b]
    start = b * block_size
    xb = jax.lax.dynamic_slice_in_dim(x_rows, start, block_size)
    hb = jax.lax.dynamic_slice_in_dim(h_all, start, block_size)
    dyb = jax.lax.dynamic_slice_in_dim(dy, start, block_size)
    dw2 = dw2.at[e].add(hb.T @ dyb)
    db2 = db2.at[e].add(jnp.sum(dyb, axis=0))
    dpre = (dyb @ params.w2[e].T) * (hb > 0).astype(dyb.dtype)
    dw1 = dw1.at[e].add(xb.T @ dpre)
    db1 = db1.at[e].add(jnp.sum(dpre, axis=0))
    dx = jax.lax.dynamic_update_slice_in_dim(dx, dpre @ params.w1[e].T,
                                             start, 0)
    return dx, dw1, db1, dw2, db2

  init = (jnp.zeros_like(x_rows),) + tuple(
      jnp.zeros_like(p) for p in (params.w1, params.b1, params.w2, params.b2))
  dx, dw1, db1, dw2, db2 = jax.lax.fori_loop(0, num_blocks, body, init)
  return (dx, None, None, ExpertParams(dw1, db1, dw2, db2),
          None)


_grouped_ffn.defvjp(_grouped_ffn_fwd, _grouped_ffn_bwd)


def grouped_ffn(x_rows: Array, block_owner: Array, num_blocks: Array,
                params: ExpertParams, *, block_size: int) -> Array:
  """Runs expert `block_owner[b]` on rows [b*B, (b+1)*B) for b < num_blocks.

  Args:
    x_rows: float [R, D], R a multiple of `block_size`.
    block_owner: int32 [R // B], the expert of each block.
    num_blocks: int32 scalar (may be traced), blocks in use; rows past
      num_blocks * B are left zero in the output and get zero gradient.
    params: ExpertParams.
    block_size: B (static).

  Returns:
    y_rows, float [R, D].
  """
  chex.assert_rank([x_rows, block_owner], [2, 1])
  if x_rows.shape[0] != block_owner.shape[0] * block_size:
    raise ValueError(
        f"x_rows has {x_rows.shape[0]} rows; expected "
        f"{block_owner.shape[0]} blocks of {block_size}.")
  # The block size rides along as the shape of a dummy array so that the
  # custom VJP sees it as static.
  return _grouped_ffn(x_rows, block_owner.astype(jnp.int32),
                      jnp.asarray(num_blocks, jnp.int32), params,
                      jnp.zeros((block_size,), jnp.int8))


# --------------------------------------------------------------------------
# Sorting slots by expert.
# --------------------------------------------------------------------------


class _SortedSlots(NamedTuple):
  order: Array  # [S] slot ids (slot-major: s = j * T + t) sorted by expert.
  sorted_expert: Array  # [S]
  count: Array  # [E]
  group_start: Array  # [E] first sorted position of each expert.
  rank: Array  # [S] position of each sorted slot within its expert group.


def _sort_slots(expert_index: Array, num_experts: int) -> _SortedSlots:
  """Stable sort of the slots by expert, first choices first (priority)."""
  flat_expert = expert_index.T.reshape(-1)  # slot-major order.
  order = jnp.argsort(flat_expert, stable=True).astype(jnp.int32)
  sorted_expert = flat_expert[order]
  count = jnp.zeros((num_experts,), jnp.int32).at[flat_expert].add(1)
  group_start = jnp.cumsum(count) - count
  rank = jnp.arange(flat_expert.shape[0], dtype=jnp.int32) - group_start[
      sorted_expert]
  return _SortedSlots(order, sorted_expert, count, group_start, rank)


def _combine(y_rows: Array, row_of_slot: Array, expert_weight: Array) -> Array:
  """y[t] = sum_j w[t, j] y_rows[row(t, j)]; out-of-range rows give zero."""
  num_tokens, k = expert_weight.shape
  y_slot = jnp.take(y_rows, row_of_slot, axis=0, mode="fill", fill_value=0)
  y_slot = y_slot.reshape(k, num_tokens, -1)  # slot-major.
  return jnp.einsum("kt,ktd->td", expert_weight.T, y_slot)


def max_blocks(num_slots: int, num_experts: int, block_size: int) -> int:
  """Static bound on the blocks a dropless dispatch can use."""
  return math.ceil(num_slots / block_size) + num_experts


def dropless_ffn(x: Array, expert_index: Array, expert_weight: Array,
                 params: ExpertParams, *, block_size: int = 128
                 ) -> tuple[Array, DispatchStats]:
  """Dropless MoE FFN: every slot is computed (block-grouped dispatch).

  Args:
    x: float [T, D].
    expert_index: int [T, K].
    expert_weight: float [T, K], combine weights.
    params: ExpertParams with E experts.
    block_size: B, rows per block (static); padding < B rows per expert.

  Returns:
    (y [T, D], DispatchStats with fraction_dropped == 0).
  """
  _check_routing(x, expert_index, expert_weight, params)
  if isinstance(block_size, bool) or not isinstance(block_size, int) or (
      block_size < 1):
    raise ValueError(f"block_size must be an int >= 1; got {block_size!r}.")
  num_tokens, k = expert_index.shape
  num_experts = params.w1.shape[0]
  num_slots = num_tokens * k
  nb_max = max_blocks(num_slots, num_experts, block_size)
  rows = nb_max * block_size

  s = _sort_slots(expert_index, num_experts)
  blocks_per_expert = (s.count + block_size - 1) // block_size
  block_end = jnp.cumsum(blocks_per_expert)
  padded_start = (block_end - blocks_per_expert) * block_size
  num_blocks = block_end[-1]
  block_owner = jnp.minimum(
      jnp.searchsorted(block_end, jnp.arange(nb_max), side="right",
                       method="compare_all"),
      num_experts - 1).astype(jnp.int32)

  row_of_sorted = padded_start[s.sorted_expert] + s.rank
  # Inverse maps: padded row -> source token; slot -> padded row.
  source_slot = jnp.full((rows,), num_slots, jnp.int32).at[row_of_sorted].set(
      s.order)
  source_token = jnp.where(source_slot < num_slots, source_slot % num_tokens,
                           num_tokens)
  row_of_slot = jnp.zeros((num_slots,), jnp.int32).at[s.order].set(
      row_of_sorted)

  x_rows = jnp.take(x, source_token, axis=0, mode="fill", fill_value=0)
  y_rows = grouped_ffn(x_rows, block_owner, num_blocks, params,
                       block_size=block_size)
  y = _combine(y_rows, row_of_slot, expert_weight)
  return y, DispatchStats(count=s.count,
                          fraction_dropped=jnp.zeros((), x.dtype))


def expert_capacity(num_tokens: int, k: int, num_experts: int,
                    capacity_factor: float) -> int:
  """C = ceil(capacity_factor * T * K / E), at least 1."""
  if not capacity_factor > 0:
    raise ValueError(
        f"capacity_factor must be > 0 (or None for dropless); got "
        f"capacity_factor={capacity_factor!r}.")
  return max(1, math.ceil(capacity_factor * num_tokens * k / num_experts))


def capacity_ffn(x: Array, expert_index: Array, expert_weight: Array,
                 params: ExpertParams, *, capacity_factor: float
                 ) -> tuple[Array, DispatchStats]:
  """Capacity-limited MoE FFN; overflow slots are dropped and counted.

  Args:
    x: float [T, D].
    expert_index: int [T, K].
    expert_weight: float [T, K].
    params: ExpertParams with E experts.
    capacity_factor: > 0; C = ceil(capacity_factor * T * K / E).

  Returns:
    (y [T, D], DispatchStats); dropped slots contribute zero to y.
  """
  _check_routing(x, expert_index, expert_weight, params)
  num_tokens, k = expert_index.shape
  num_experts = params.w1.shape[0]
  num_slots = num_tokens * k
  capacity = expert_capacity(num_tokens, k, num_experts, capacity_factor)

  s = _sort_slots(expert_index, num_experts)
  kept = s.rank < capacity
  row_of_sorted = jnp.where(kept, s.sorted_expert * capacity + s.rank,
                            num_experts * capacity)
  rows = num_experts * capacity
  source_slot = jnp.full((rows + 1,), num_slots, jnp.int32).at[
      row_of_sorted].set(s.order)[:rows]
  source_token = jnp.where(source_slot < num_slots, source_slot % num_tokens,
                           num_tokens)
  row_of_slot = jnp.zeros((num_slots,), jnp.int32).at[s.order].set(
      row_of_sorted)

  x_buf = jnp.take(x, source_token, axis=0, mode="fill", fill_value=0)
  x_buf = x_buf.reshape(num_experts, capacity, -1)
  h = jax.nn.relu(jnp.einsum("ecd,edh->ech", x_buf, params.w1)
                  + params.b1[:, None, :])
  y_buf = jnp.einsum("ech,ehd->ecd", h, params.w2) + params.b2[:, None, :]
  y = _combine(y_buf.reshape(rows, -1), row_of_slot, expert_weight)
  dropped = num_slots - jnp.sum(kept)
  return y, DispatchStats(count=s.count,
                          fraction_dropped=dropped.astype(x.dtype) / num_slots)
