"""Token dispatch to expert FFNs: dropless (block-grouped) and capacity-limited.

Both dispatchers take the routing of `moe.gating.noisy_top_k` (each of the
T tokens sent to K experts with a combine weight) and the stacked expert
parameters, and return y[t] = sum_j w[t, j] * FFN_{e[t, j]}(x[t]), with
FFN_e(x) = relu(x W1_e + b1_e) W2_e + b2_e (Shazeer et al. 2017, Eq. 1 with
ReLU experts).

Dropless (`dropless_ffn`): the T*K token-slots are sorted by expert; each
expert's group is cut into fixed-size row blocks, each owned by one expert:
as many blocks of the largest size B_0 as fit, then blocks of the next sizes
for the remainder (the last size rounding up), so most rows run in large
matmuls while the padding stays below the smallest block size per expert.
Each block size has its own region of a row buffer with a static upper bound
on its blocks (memory only); `grouped_ffn` runs a `lax.while_loop` over just
the blocks in use (a dynamic count), one [B, D] x [D, H] matmul per block
with that expert's weights, with a hand-written VJP that accumulates each
block's weight gradient into its expert's slice in place. No weights are
gathered per block, no one-hot dispatch tensor is formed, and the token <->
row permutations are gathers in both directions (custom VJPs), so the work is
the FLOP-matched dense FFN's plus the padding.

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

  def accumulate(total, e, value):
    # In-place add into expert e's slice (a scatter would be much slower).
    current = jax.lax.dynamic_index_in_dim(total, e, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(total, current + value, e, 0)

  def body(b, carry):
    dx, dw1, db1, dw2, db2 = carry
    e = owner[b]
    start = b * block_size
    xb = jax.lax.dynamic_slice_in_dim(x_rows, start, block_size)
    hb = jax.lax.dynamic_slice_in_dim(h_all, start, block_size)
    dyb = jax.lax.dynamic_slice_in_dim(dy, start, block_size)
    w1 = jax.lax.dynamic_index_in_dim(params.w1, e, keepdims=False)
    w2 = jax.lax.dynamic_index_in_dim(params.w2, e, keepdims=False)
    dw2 = accumulate(dw2, e, jnp.einsum("bh,bd->hd", hb, dyb))
    db2 = accumulate(db2, e, jnp.sum(dyb, axis=0))
    dpre = jnp.einsum("bd,hd->bh", dyb, w2) * (hb > 0).astype(dyb.dtype)
    dw1 = accumulate(dw1, e, jnp.einsum("bd,bh->dh", xb, dpre))
    db1 = accumulate(db1, e, jnp.sum(dpre, axis=0))
    dx = jax.lax.dynamic_update_slice_in_dim(
        dx, jnp.einsum("bh,dh->bd", dpre, w1), start, 0)
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


class SortedSlots(NamedTuple):
  order: Array  # [S] slot ids (slot-major: s = j * T + t) sorted by expert.
  sorted_expert: Array  # [S]
  count: Array  # [E]
  rank: Array  # [S] position of each sorted slot within its expert group.


def sort_slots(expert_index: Array, num_experts: int) -> SortedSlots:
  """Stable sort of the slots by expert, first choices first (priority)."""
  flat_expert = expert_index.T.reshape(-1)  # slot-major order.
  order = jnp.argsort(flat_expert, stable=True).astype(jnp.int32)
  sorted_expert = flat_expert[order]
  count = jnp.zeros((num_experts,), jnp.int32).at[flat_expert].add(1)
  group_start = jnp.cumsum(count) - count
  rank = jnp.arange(flat_expert.shape[0], dtype=jnp.int32) - group_start[
      sorted_expert]
  return SortedSlots(order, sorted_expert, count, rank)


class SlotLayout(NamedTuple):
  """Where every slot goes in a row buffer of R rows, and back."""
  source_token: Array  # [R] token of each row; T for padding rows.
  source_k: Array  # [R] which of the token's K slots; 0 for padding.
  row_of_slot: Array  # [T, K] row of each slot; R if dropped.


def slot_layout(s: SortedSlots, row_of_sorted: Array, *, num_tokens: int,
                k: int, rows: int) -> SlotLayout:
  """Inverse maps between slots and the R rows of a buffer.

  Args:
    s: from `sort_slots`.
    row_of_sorted: int [S], the row of each sorted slot (R = dropped).
    num_tokens: T.
    k: K.
    rows: R.
  """
  num_slots = num_tokens * k
  source_slot = jnp.full((rows + 1,), num_slots, jnp.int32).at[
      row_of_sorted].set(s.order)[:rows]
  valid = source_slot < num_slots
  row_of_slot = jnp.zeros((num_slots,), jnp.int32).at[s.order].set(
      row_of_sorted)
  return SlotLayout(
      source_token=jnp.where(valid, source_slot % num_tokens, num_tokens),
      source_k=jnp.where(valid, source_slot // num_tokens, 0),
      row_of_slot=row_of_slot.reshape(k, num_tokens).T)


# Gathers in both directions: the transpose of "rows from tokens" is "tokens
# from rows" (each kept slot owns exactly one row), so no scatter-add is
# needed; XLA's CPU scatter is far slower than its gather.


@jax.custom_vjp
def dispatch_rows(x, source_token, row_of_slot):
  """rows[r] = x[source_token[r]] (0 for padding); the VJP is a gather too."""
  return jnp.take(x, source_token, axis=0, mode="fill", fill_value=0)


def _dispatch_rows_fwd(x, source_token, row_of_slot):
  return dispatch_rows(x, source_token, row_of_slot), row_of_slot


def _dispatch_rows_bwd(row_of_slot, d_rows):
  dx = jnp.take(d_rows, row_of_slot, axis=0, mode="fill", fill_value=0)
  return jnp.sum(dx, axis=1), None, None


dispatch_rows.defvjp(_dispatch_rows_fwd, _dispatch_rows_bwd)


@jax.custom_vjp
def combine_rows(y_rows, weight, row_of_slot, source_token, source_k):
  """y[t] = sum_j weight[t, j] y_rows[row_of_slot[t, j]] (gather-only VJP)."""
  y_slot = jnp.take(y_rows, row_of_slot, axis=0, mode="fill", fill_value=0)
  return jnp.einsum("tk,tkd->td", weight, y_slot)


def _combine_rows_fwd(y_rows, weight, row_of_slot, source_token, source_k):
  y_slot = jnp.take(y_rows, row_of_slot, axis=0, mode="fill", fill_value=0)
  y = jnp.einsum("tk,tkd->td", weight, y_slot)
  return y, (y_slot, weight, source_token, source_k)


def _combine_rows_bwd(res, dy):
  y_slot, weight, source_token, source_k = res
  d_weight = jnp.einsum("td,tkd->tk", dy, y_slot)
  num_tokens = weight.shape[0]
  valid = source_token < num_tokens
  token = jnp.where(valid, source_token, 0)
  w_row = jnp.where(valid, weight[token, source_k], 0.0)
  d_rows = jnp.take(dy, source_token, axis=0, mode="fill", fill_value=0)
  return d_rows * w_row[:, None], d_weight, None, None, None


combine_rows.defvjp(_combine_rows_fwd, _combine_rows_bwd)


def check_block_sizes(block_sizes) -> tuple[int, ...]:
  if isinstance(block_sizes, int) and not isinstance(block_sizes, bool):
    block_sizes = (block_sizes,)
  block_sizes = tuple(block_sizes)
  if not block_sizes or any(
      isinstance(b, bool) or not isinstance(b, int) or b < 1
      for b in block_sizes) or list(block_sizes) != sorted(
          block_sizes, reverse=True):
    raise ValueError(
        "block_sizes must be an int >= 1 or a non-empty decreasing tuple of "
        f"them; got block_sizes={block_sizes!r}.")
  return block_sizes


def max_blocks(num_slots: int, num_experts: int,
               block_sizes: tuple[int, ...]) -> tuple[int, ...]:
  """Static bound on the blocks of each size a dropless dispatch can use.

  Each expert's group of c slots is cut greedily into c // B_0 blocks of the
  largest size, then blocks of the next size for the remainder, the last
  size rounding up. So level 0 has at most S // B_0 blocks, a middle level l
  at most (B_{l-1} - 1) // B_l per expert, and the last level at most
  ceil(S / B) + E blocks in all.
  """
  bounds = []
  for level, b in enumerate(block_sizes):
    last = level == len(block_sizes) - 1
    total = math.ceil(num_slots / b) + num_experts if last else num_slots // b
    if level > 0:
      prev = block_sizes[level - 1]
      per_expert = math.ceil((prev - 1) / b) if last else (prev - 1) // b
      total = min(total, num_experts * per_expert)
    bounds.append(max(total, 1))
  return tuple(bounds)


def dropless_ffn(x: Array, expert_index: Array, expert_weight: Array,
                 params: ExpertParams, *, block_sizes=(256, 32)
                 ) -> tuple[Array, DispatchStats]:
  """Dropless MoE FFN: every slot is computed (block-grouped dispatch).

  Args:
    x: float [T, D].
    expert_index: int [T, K].
    expert_weight: float [T, K], combine weights.
    params: ExpertParams with E experts.
    block_sizes: rows per block (static), an int or a decreasing tuple;
      each expert's group is covered by blocks of the largest size, then the
      next sizes, so the padding is < block_sizes[-1] rows per expert while
      most rows run in large blocks.

  Returns:
    (y [T, D], DispatchStats with fraction_dropped == 0).
  """
  _check_routing(x, expert_index, expert_weight, params)
  block_sizes = check_block_sizes(block_sizes)
  num_tokens, k = expert_index.shape
  num_experts = params.w1.shape[0]
  num_slots = num_tokens * k
  bounds = max_blocks(num_slots, num_experts, block_sizes)

  s = sort_slots(expert_index, num_experts)
  remaining = s.count
  covered = jnp.zeros_like(s.count)  # Ranks covered by earlier levels.
  region_start = 0
  row_of_sorted = jnp.zeros_like(s.rank)
  levels = []
  for level, (b, nb_max) in enumerate(zip(block_sizes, bounds)):
    last = level == len(block_sizes) - 1
    n = (remaining + b - 1) // b if last else remaining // b
    block_end = jnp.cumsum(n)
    owner = jnp.minimum(
        jnp.searchsorted(block_end, jnp.arange(nb_max), side="right",
                         method="compare_all"),
        num_experts - 1).astype(jnp.int32)
    first_row = region_start + (block_end - n) * b  # [E]
    r_in = s.rank - covered[s.sorted_expert]
    here = (r_in >= 0) & (r_in < (n * b)[s.sorted_expert])
    row_of_sorted = jnp.where(here, first_row[s.sorted_expert] + r_in,
                              row_of_sorted)
    levels.append((region_start, b, nb_max, owner, block_end[-1]))
    covered = covered + n * b
    remaining = remaining - n * b
    region_start += nb_max * b

  layout = slot_layout(s, row_of_sorted, num_tokens=num_tokens, k=k,
                   rows=region_start)
  x_rows = dispatch_rows(x, layout.source_token, layout.row_of_slot)
  y_parts = []
  for start, b, nb_max, owner, num_blocks in levels:
    y_parts.append(grouped_ffn(x_rows[start:start + nb_max * b], owner,
                               num_blocks, params, block_size=b))
  y_rows = jnp.concatenate(y_parts, axis=0) if len(y_parts) > 1 else y_parts[0]
  y = combine_rows(y_rows, expert_weight, layout.row_of_slot,
                    layout.source_token, layout.source_k)
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
  rows = num_experts * capacity

  s = sort_slots(expert_index, num_experts)
  kept = s.rank < capacity
  row_of_sorted = jnp.where(kept, s.sorted_expert * capacity + s.rank, rows)
  layout = slot_layout(s, row_of_sorted, num_tokens=num_tokens, k=k, rows=rows)
  x_buf = dispatch_rows(x, layout.source_token, layout.row_of_slot)
  x_buf = x_buf.reshape(num_experts, capacity, -1)
  h = jax.nn.relu(jnp.einsum("ecd,edh->ech", x_buf, params.w1)
                  + params.b1[:, None, :])
  y_buf = jnp.einsum("ech,ehd->ecd", h, params.w2) + params.b2[:, None, :]
  y = combine_rows(y_buf.reshape(rows, -1), expert_weight,
                    layout.row_of_slot, layout.source_token, layout.source_k)
  dropped = num_slots - jnp.sum(kept)
  return y, DispatchStats(count=s.count,
                          fraction_dropped=dropped.astype(x.dtype) / num_slots)
