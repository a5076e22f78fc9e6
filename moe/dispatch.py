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
on its blocks (memory only). `expert_blocks_ffn` loops over experts (weights
sliced once per expert) and, inside, over just that expert's blocks (a
dynamic count, `lax.fori_loop`), one [B, D] x [D, H] matmul per block, with a
hand-written VJP that accumulates each expert's weight gradient locally and
writes it once. No weights are
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

import functools
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
# Expert-major loop over row blocks of several sizes (custom VJP).
# --------------------------------------------------------------------------


def _expert_weights(params, e):
  take = lambda a: jax.lax.dynamic_index_in_dim(a, e, keepdims=False)
  return take(params.w1), take(params.b1), take(params.w2), take(params.b2)


def _expert_blocks_forward(levels, x_rows, first_block, block_count, params):
  num_experts = params.w1.shape[0]
  rows = x_rows.shape[0]

  def expert_body(e, carry):
    w1, b1, w2, b2 = _expert_weights(params, e)  # Sliced once per expert.
    for level, (offset, size) in enumerate(levels):
      def block_body(j, carry, level=level, offset=offset, size=size):
        y, h_all = carry
        start = offset + (first_block[level, e] + j) * size
        xb = jax.lax.dynamic_slice_in_dim(x_rows, start, size)
        hb = jax.nn.relu(xb @ w1 + b1)
        y = jax.lax.dynamic_update_slice_in_dim(y, hb @ w2 + b2, start, 0)
        h_all = jax.lax.dynamic_update_slice_in_dim(h_all, hb, start, 0)
        return y, h_all
      carry = jax.lax.fori_loop(0, block_count[level, e], block_body, carry)
    return carry

  init = (jnp.zeros((rows, params.w2.shape[-1]), x_rows.dtype),
          jnp.zeros((rows, params.w1.shape[-1]), x_rows.dtype))
  return jax.lax.fori_loop(0, num_experts, expert_body, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _expert_blocks_ffn(levels, x_rows, first_block, block_count, params):
  y, _ = _expert_blocks_forward(levels, x_rows, first_block, block_count,
                                params)
  return y


def _expert_blocks_ffn_fwd(levels, x_rows, first_block, block_count, params):
  y, h_all = _expert_blocks_forward(levels, x_rows, first_block, block_count,
                                    params)
  return y, (x_rows, first_block, block_count, params, h_all)


def _expert_blocks_ffn_bwd(levels, res, dy):
  x_rows, first_block, block_count, params, h_all = res
  num_experts = params.w1.shape[0]

  def expert_body(e, carry):
    dx, grads = carry
    w1, _, w2, _ = _expert_weights(params, e)
    # This expert's weight gradients accumulate locally, then are written
    # once: no per-block read-modify-write of the [E, ...] arrays.
    local = tuple(jnp.zeros(a.shape[1:], a.dtype) for a in params)
    for level, (offset, size) in enumerate(levels):
      def block_body(j, carry, level=level, offset=offset, size=size):
        dx, (dw1, db1, dw2, db2) = carry
        start = offset + (first_block[level, e] + j) * size
        xb = jax.lax.dynamic_slice_in_dim(x_rows, start, size)
        hb = jax.lax.dynamic_slice_in_dim(h_all, start, size)
        dyb = jax.lax.dynamic_slice_in_dim(dy, start, size)
        dw2 = dw2 + jnp.einsum("bh,bd->hd", hb, dyb)
        db2 = db2 + jnp.sum(dyb, axis=0)
        dpre = jnp.einsum("bd,hd->bh", dyb, w2) * (hb > 0).astype(dyb.dtype)
        dw1 = dw1 + jnp.einsum("bd,bh->dh", xb, dpre)
        db1 = db1 + jnp.sum(dpre, axis=0)
        dx = jax.lax.dynamic_update_slice_in_dim(
            dx, jnp.einsum("bh,dh->bd", dpre, w1), start, 0)
        return dx, (dw1, db1, dw2, db2)
      dx, local = jax.lax.fori_loop(0, block_count[level, e], block_body,
                                    (dx, local))
    grads = tuple(jax.lax.dynamic_update_index_in_dim(g, l, e, 0)
                  for g, l in zip(grads, local))
    return dx, grads

  init = (jnp.zeros_like(x_rows), tuple(jnp.zeros_like(p) for p in params))
  dx, grads = jax.lax.fori_loop(0, num_experts, expert_body, init)
  return dx, None, None, ExpertParams(*grads)


_expert_blocks_ffn.defvjp(_expert_blocks_ffn_fwd, _expert_blocks_ffn_bwd)


def expert_blocks_ffn(x_rows: Array, first_block: Array, block_count: Array,
                      params: ExpertParams, *,
                      levels: tuple[tuple[int, int], ...]) -> Array:
  """Runs each expert on its row blocks, expert by expert, block by block.

  Level l is a region of the row buffer starting at row `levels[l][0]` made
  of blocks of `levels[l][1]` rows; expert e owns blocks
  [first_block[l, e], first_block[l, e] + block_count[l, e]) of it. The outer
  loop is over experts (weights sliced once per expert), the inner loops over
  that expert's blocks (dynamic trip counts), one [B, D] x [D, H] matmul
  each. Rows not in any block are zero in the output and get no gradient.

  Args:
    x_rows: float [R, D].
    first_block: int [L, E].
    block_count: int [L, E] (may be traced).
    params: ExpertParams.
    levels: static ((row offset, block size), ...) per level.

  Returns:
    y_rows, float [R, D].
  """
  chex.assert_rank([x_rows, first_block, block_count], [2, 2, 2])
  return _expert_blocks_ffn(tuple(levels), x_rows,
                            first_block.astype(jnp.int32),
                            block_count.astype(jnp.int32), params)


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
                 params: ExpertParams, *, block_sizes=(256, 64, 16)
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
    first_row = region_start + (block_end - n) * b  # [E]
    r_in = s.rank - covered[s.sorted_expert]
    here = (r_in >= 0) & (r_in < (n * b)[s.sorted_expert])
    row_of_sorted = jnp.where(here, first_row[s.sorted_expert] + r_in,
                              row_of_sorted)
    levels.append((block_end - n, n, region_start, b))
    covered = covered + n * b
    remaining = remaining - n * b
    region_start += nb_max * b

  layout = slot_layout(s, row_of_sorted, num_tokens=num_tokens, k=k,
                       rows=region_start)
  x_rows = dispatch_rows(x, layout.source_token, layout.row_of_slot)
  y_rows = expert_blocks_ffn(
      x_rows, jnp.stack([lv[0] for lv in levels]),
      jnp.stack([lv[1] for lv in levels]), params,
      levels=tuple((lv[2], lv[3]) for lv in levels))
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


class CapacityPacking(NamedTuple):
  """Slots packed into a per-expert capacity buffer (GShard priority)."""
  x_buf: Array  # [E, C, D], zero rows where an expert has fewer than C slots.
  layout: SlotLayout
  num_kept: Array  # scalar int, slots that fit (the rest are dropped).
  count: Array  # [E] slots routed to each expert, before dropping.


def pack_capacity(x: Array, expert_index: Array, num_experts: int,
                  capacity_factor: float) -> CapacityPacking:
  """Packs the T*K slots into [E, C, D], C = ceil(capacity_factor*T*K/E).

  Slots are taken in `sort_slots` order (first choices first, Lepikhin et al.
  2021, Sec. 2.2); an expert's slots beyond C are dropped. Used by
  `capacity_ffn` and, per device, by `moe.parallel`.
  """
  num_tokens, k = expert_index.shape
  capacity = expert_capacity(num_tokens, k, num_experts, capacity_factor)
  rows = num_experts * capacity
  s = sort_slots(expert_index, num_experts)
  kept = s.rank < capacity
  row_of_sorted = jnp.where(kept, s.sorted_expert * capacity + s.rank, rows)
  layout = slot_layout(s, row_of_sorted, num_tokens=num_tokens, k=k, rows=rows)
  x_buf = dispatch_rows(x, layout.source_token, layout.row_of_slot)
  return CapacityPacking(x_buf=x_buf.reshape(num_experts, capacity, -1),
                         layout=layout, num_kept=jnp.sum(kept), count=s.count)


def batched_expert_ffn(x_buf: Array, params: ExpertParams) -> Array:
  """relu(x W1_e + b1_e) W2_e + b2_e for every expert e at once: [E, C, D]."""
  h = jax.nn.relu(jnp.einsum("ecd,edh->ech", x_buf, params.w1)
                  + params.b1[:, None, :])
  return jnp.einsum("ech,ehd->ecd", h, params.w2) + params.b2[:, None, :]


def combine_capacity(y_buf: Array, expert_weight: Array,
                     layout: SlotLayout) -> Array:
  """y[t] = sum_j w[t, j] * y_buf row of slot (t, j) (0 if dropped); [T, D]."""
  return combine_rows(y_buf.reshape(-1, y_buf.shape[-1]), expert_weight,
                      layout.row_of_slot, layout.source_token, layout.source_k)


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
  num_slots = expert_index.size
  packed = pack_capacity(x, expert_index, params.w1.shape[0], capacity_factor)
  y_buf = batched_expert_ffn(packed.x_buf, params)
  y = combine_capacity(y_buf, expert_weight, packed.layout)
  dropped = num_slots - packed.num_kept
  return y, DispatchStats(count=packed.count,
                          fraction_dropped=dropped.astype(x.dtype) / num_slots)
