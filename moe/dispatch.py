"""Token dispatch to expert FFNs: dropless (block-grouped) and capacity-limited.

Both dispatchers take the routing of `moe.gating.noisy_top_k` (each of the
T tokens sent to K experts with a combine weight) and the stacked expert
parameters, and return y[t] = sum_j w[t, j] * FFN_{e[t, j]}(x[t]), with
FFN_e(x) = relu(x W1_e + b1_e) W2_e + b2_e (Shazeer et al. 2017, Eq. 1 with
ReLU experts). W2 is stored transposed, as `w2t` = W2^T of shape [E, D, H]:
then both weight gradients are computed in the [D, B] x [B, H] orientation,
which on the CPUs we measured runs at ~120-125 GFLOP/s against ~100 for
[H, B] x [B, D] (dispatch + experts at E = 64: 251 -> 234 ms,
benchmarks/moe_throughput.py with hugetlb).

Dropless (`dropless_ffn`): the T*K token-slots are sorted by expert
(stably, first choices first) into one contiguous row buffer, so each
expert's slots form one group of rows with no padding between groups.
`expert_blocks_ffn` covers each group with full blocks of the largest block
size plus a short tail for the remainder that ends at the group's end
(`block_plan`; one block with the default sizes). The tail recomputes fewer
than block_sizes[-1] rows it does not own and writes only its own rows. The
tails run level-major (one loop per block size over all experts), then the
full blocks expert by expert with the weights sliced once per expert (see
`expert_blocks_ffn`). Every block is one [B, D] x [D, H] matmul of a few
static shapes, inside `lax.fori_loop`s with dynamic trip counts, with a
hand-written VJP that writes each expert's weight gradient once (the tail's,
then the full blocks' accumulated locally). No weights are gathered per
block, no one-hot dispatch tensor is formed, and the token <-> row
permutations are gathers in both directions (custom VJPs), so the work is
the FLOP-matched dense FFN's plus fewer than block_sizes[-1] rows per expert.

Capacity-limited (`capacity_ffn`): each expert takes at most
C = ceil(capacity_factor * T * K / E) slots, first choices before second
choices (GShard priority, Lepikhin et al. 2021, Sec. 2.2); overflow slots are
dropped (their contribution is zero) and counted. Tokens are gathered into
an [E, C, D] buffer and the experts run as one batched matmul.

Shapes: T tokens, D model width, H expert hidden width, E experts, K slots
per token, S = T * K slots, B block size, R rows of the row buffer.
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
  """Stacked parameters of E ReLU expert FFNs, relu(x W1 + b1) W2 + b2."""
  w1: Array  # [E, D, H]
  b1: Array  # [E, H]
  w2t: Array  # [E, D, H], W2 transposed (W2_e = w2t[e].T is [H, D]).
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
  chex.assert_rank([params.w1, params.b1, params.w2t, params.b2], [3, 2, 3, 2])
  chex.assert_equal_shape([params.w1, params.w2t])
  if params.w1.shape[1] != x.shape[1]:
    raise ValueError(f"x has {x.shape[1]} features; the experts expect "
                     f"{params.w1.shape[1]}.")


def expert_ffn(x: Array, params: ExpertParams, expert: int) -> Array:
  """One expert, relu(x W1 + b1) W2 + b2, for x [..., D] (reference)."""
  h = jax.nn.relu(x @ params.w1[expert] + params.b1[expert])
  return h @ params.w2t[expert].T + params.b2[expert]


# --------------------------------------------------------------------------
# Expert-major loop over row blocks with end-aligned tail blocks (custom VJP).
# --------------------------------------------------------------------------


def _expert_weights(params, e):
  take = lambda a: jax.lax.dynamic_index_in_dim(a, e, keepdims=False)
  return take(params.w1), take(params.b1), take(params.w2t), take(params.b2)


class BlockPlan(NamedTuple):
  """How each expert's contiguous group of rows is covered by blocks."""
  num_full: Array  # [E] blocks of block_sizes[0] from the group start.
  remainder: Array  # [E] rows left after them, 0 <= r < block_sizes[0].
  tail_count: Array  # [L, E] tail blocks of block_sizes[l].
  tail_start: Array  # [L, E] first row of the level-l tail blocks.


def block_plan(group_start: Array, count: Array,
               block_sizes: tuple[int, ...]) -> BlockPlan:
  """Full blocks of the largest size, then a short tail for the remainder.

  The remainder r = count mod B_0 is covered greedily from the largest size
  b down: one block ends the tail if it holds what is left with fewer than
  b_min (the smallest size) rows to spare; otherwise (what is left) // b
  blocks of b are taken, and the smallest size rounds up. So the tail
  recomputes fewer than b_min rows. With sizes (256, 248, ..., 8) the tail
  is one block; with (256, 128, 64, 32, 16) it is the binary decomposition of
  r rounded up to 16. The tail blocks are laid end to end so that the last
  one ends at the group's end. The tail covers r' >= r rows, so its first
  block starts r' - r < b_min rows before the remainder, over rows that are
  not its own: earlier rows of the same expert, rows of lower experts, or
  the front padding; see `expert_blocks_ffn`.
  """
  b0, b_min = block_sizes[0], block_sizes[-1]
  num_full = count // b0
  remainder = count - num_full * b0
  rem = remainder
  counts = []
  for level, b in enumerate(block_sizes):
    if level == len(block_sizes) - 1:
      n = (rem + b - 1) // b
    else:
      ends_here = (rem <= b) & (b - rem < b_min)
      n = jnp.where(ends_here, 1, rem // b)
    n = jnp.where(rem > 0, n, 0)
    counts.append(n)
    rem = rem - n * b
  tail_count = jnp.stack(counts)
  rows = jnp.asarray(block_sizes, count.dtype)[:, None] * tail_count
  tail_start = (group_start + count - jnp.sum(rows, axis=0)
                + jnp.cumsum(rows, axis=0) - rows)
  return BlockPlan(num_full, remainder, tail_count, tail_start)


def _tail_is_one_block(block_sizes: tuple[int, ...]) -> bool:
  """Whether `block_plan` covers every remainder with a single tail block."""
  with jax.ensure_compile_time_eval():
    r = jnp.arange(block_sizes[0], dtype=jnp.int32)
    plan = block_plan(jnp.zeros_like(r), r, block_sizes)
    return bool(jnp.all(jnp.sum(plan.tail_count, axis=0) <= 1))


def _for_tail_blocks(plan, block_sizes, block_fn, carry):
  """carry = block_fn(e, start, size, carry) for every tail block.

  Level-major: one `fori_loop` per block size, whose trip count is the
  number of tail blocks of that size over all experts (block i of level l
  belongs to the expert e with cumsum(tail_count[l])[e - 1] <= i <
  cumsum(tail_count[l])[e]). So the tails cost len(block_sizes) loops, not
  len(block_sizes) loops per expert, most of them with zero trips.
  """
  for level, size in enumerate(block_sizes):
    per_expert = plan.tail_count[level]
    end = jnp.cumsum(per_expert)

    def step(i, c, level=level, size=size, per_expert=per_expert, end=end):
      e = jnp.searchsorted(end, i, side="right").astype(jnp.int32)
      j = i - (end[e] - per_expert[e])
      return block_fn(e, plan.tail_start[level, e] + j * size, size, c)

    carry = jax.lax.fori_loop(0, end[-1], step, carry)
  return carry


def _for_experts_with_full_blocks(plan, expert_fn, carry):
  """carry = expert_fn(e, carry) for every expert with a full block."""
  has_full = plan.num_full > 0
  experts = jnp.nonzero(has_full, size=has_full.shape[0], fill_value=0)[0]
  return jax.lax.fori_loop(0, jnp.sum(has_full),
                           lambda i, c: expert_fn(experts[i], c), carry)


def _own_rows(start, size, own_from):
  """[size, 1] mask of the block's rows at or after `own_from`."""
  return (start + jnp.arange(size) >= own_from)[:, None]


def _write_rows(buf, block, start, own=None):
  """Writes block into buf from row `start`; with `own`, only those rows."""
  if own is not None:
    block = jnp.where(own, block,
                      jax.lax.dynamic_slice_in_dim(buf, start, block.shape[0]))
  return jax.lax.dynamic_update_slice_in_dim(buf, block, start, 0)


def _expert_blocks_forward(block_sizes, x_rows, group_start, count, params):
  b0 = block_sizes[0]
  plan = block_plan(group_start, count, block_sizes)
  own_start = group_start + count - plan.remainder  # Tail rows it owns.

  def run_block(start, size, weights, own_from, carry):
    w1, b1, w2t, b2 = weights
    y, h_all = carry
    hb = jax.nn.relu(jax.lax.dynamic_slice_in_dim(x_rows, start, size) @ w1
                     + b1)
    yb = jnp.einsum("bh,dh->bd", hb, w2t) + b2
    # A full block (own_from None) owns all its rows.
    own = None if own_from is None else _own_rows(start, size, own_from)
    return _write_rows(y, yb, start, own), _write_rows(h_all, hb, start, own)

  def tail_block(e, start, size, carry):
    return run_block(start, size, _expert_weights(params, e), own_start[e],
                     carry)

  def full_blocks(e, carry):
    weights = _expert_weights(params, e)  # Sliced once for all its blocks.
    return jax.lax.fori_loop(
        0, plan.num_full[e],
        lambda j, c: run_block(group_start[e] + j * b0, b0, weights, None, c),
        carry)

  rows = x_rows.shape[0]
  carry = (jnp.zeros((rows, params.w2t.shape[1]), x_rows.dtype),
           jnp.zeros((rows, params.w1.shape[-1]), x_rows.dtype))
  carry = _for_tail_blocks(plan, block_sizes, tail_block, carry)
  return _for_experts_with_full_blocks(plan, full_blocks, carry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _expert_blocks_ffn(block_sizes, x_rows, group_start, count, params):
  y, _ = _expert_blocks_forward(block_sizes, x_rows, group_start, count,
                                params)
  return y


def _expert_blocks_ffn_fwd(block_sizes, x_rows, group_start, count, params):
  y, h_all = _expert_blocks_forward(block_sizes, x_rows, group_start, count,
                                    params)
  return y, (x_rows, group_start, count, params, h_all)


def _expert_blocks_ffn_bwd(block_sizes, res, dy):
  x_rows, group_start, count, params, h_all = res
  b0 = block_sizes[0]
  plan = block_plan(group_start, count, block_sizes)
  own_start = group_start + count - plan.remainder

  def block_grads(start, size, own_from, w1, w2t, dx):
    """Backward of one block: (dx, its weight-gradient contributions)."""
    xb = jax.lax.dynamic_slice_in_dim(x_rows, start, size)
    hb = jax.lax.dynamic_slice_in_dim(h_all, start, size)
    dyb = jax.lax.dynamic_slice_in_dim(dy, start, size)
    own = None if own_from is None else _own_rows(start, size, own_from)
    if own is not None:  # Rows it does not own add no gradient.
      dyb = jnp.where(own, dyb, 0.0)
    dpre = (dyb @ w2t) * (hb > 0).astype(dyb.dtype)
    dx = _write_rows(dx, jnp.einsum("bh,dh->bd", dpre, w1), start, own)
    return dx, (jnp.einsum("bd,bh->dh", xb, dpre), jnp.sum(dpre, axis=0),
                jnp.einsum("bd,bh->dh", dyb, hb), jnp.sum(dyb, axis=0))

  # With one tail block per expert (the default sizes) and the tails run
  # first, the tail's gradient is the expert's first contribution: it is
  # written, not added to the zeros (no read of the [E, ...] gradients).
  tail_sets = _tail_is_one_block(block_sizes)

  def tail_block(e, start, size, carry):
    dx, grads = carry
    w1, _, w2t, _ = _expert_weights(params, e)
    dx, contrib = block_grads(start, size, own_start[e], w1, w2t, dx)
    if not tail_sets:
      contrib = tuple(c + jax.lax.dynamic_index_in_dim(g, e, keepdims=False)
                      for c, g in zip(contrib, grads))
    return dx, tuple(jax.lax.dynamic_update_index_in_dim(g, c, e, 0)
                     for g, c in zip(grads, contrib))

  def full_blocks(e, carry):
    dx, grads = carry
    w1, _, w2t, _ = _expert_weights(params, e)
    # The expert's gradient (its tail's, or zeros) accumulates locally over
    # its full blocks and is written once.
    local = tuple(jax.lax.dynamic_index_in_dim(g, e, keepdims=False)
                  for g in grads)

    def step(j, c):
      dx, local = c
      dx, contrib = block_grads(group_start[e] + j * b0, b0, None, w1, w2t,
                                dx)
      return dx, tuple(a + b for a, b in zip(local, contrib))

    dx, local = jax.lax.fori_loop(0, plan.num_full[e], step, (dx, local))
    return dx, tuple(jax.lax.dynamic_update_index_in_dim(g, l, e, 0)
                     for g, l in zip(grads, local))

  carry = (jnp.zeros_like(x_rows), tuple(jnp.zeros_like(p) for p in params))
  carry = _for_tail_blocks(plan, block_sizes, tail_block, carry)
  dx, grads = _for_experts_with_full_blocks(plan, full_blocks, carry)
  return dx, None, None, ExpertParams(*grads)


_expert_blocks_ffn.defvjp(_expert_blocks_ffn_fwd, _expert_blocks_ffn_bwd)


def expert_blocks_ffn(x_rows: Array, group_start: Array, count: Array,
                      params: ExpertParams, *,
                      block_sizes: tuple[int, ...]) -> Array:
  """Runs each expert on its contiguous group of rows, block by block.

  Expert e owns rows [group_start[e], group_start[e] + count[e]) of
  `x_rows`; groups are disjoint and in expert order. A group is covered by
  `count // B_0` full blocks of B_0 = block_sizes[0] rows from its start and,
  for the remainder r > 0, a short tail of blocks (`block_plan`: one block
  of the smallest size that holds r with the default sizes) that ends at the
  group's end. The tail's first r' - r rows are not its own: it recomputes
  rows of its expert's last full block, or, when the group is shorter than
  the tail, runs over rows of lower experts (or the front padding). No row
  buffer is padded per expert and every matmul has one of a few static
  shapes, so the wasted work is r' - r rows per expert.

  Order and overlap: the tails run first, level-major (one loop per block
  size over all experts' tails of that size: len(block_sizes) loops in all,
  not one per size and expert), then each expert with full blocks runs them
  with its weights sliced once. A tail writes only its own rows (masked
  writes of y, the saved activations and dx), and its cotangent is masked to
  its own rows, so every row is computed by its own expert and weight
  gradients count every row once, in any order. With one tail block per
  expert (the default sizes) the tail's weight gradient is written, not
  added, since it is the expert's first contribution.

  Requires group_start[0] >= block_sizes[0] rows of front padding (the
  tail of the first group may start that early; dropless_ffn pads by
  block_sizes[0]). Rows outside every group are zero in the output and in
  the input gradient.

  Args:
    x_rows: float [R, D].
    group_start: int [E], first row of each expert's group.
    count: int [E], rows in each group.
    params: ExpertParams.
    block_sizes: static decreasing tuple of block row counts.

  Returns:
    y_rows, float [R, D].
  """
  chex.assert_rank([x_rows, group_start, count], [2, 1, 1])
  return _expert_blocks_ffn(check_block_sizes(block_sizes), x_rows,
                            group_start.astype(jnp.int32),
                            count.astype(jnp.int32), params)


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


# Full blocks of 256 rows and one-block tails in steps of 8 rows: at most 7
# wasted rows per expert (~2.6% of the rows at E = 64, T*K = 8192, against
# ~5.7% with steps of 16, which ran ~3 ms slower per fwd + bwd at E = 32 and
# 64), and 256-row matmuls run at the dense matmul's speed on the CPUs we
# measured (benchmarks/moe_throughput.py). Each size is one more loop to
# compile (~1 s more for the layer's gradient than steps of 16).
DEFAULT_BLOCK_SIZES = tuple(range(256, 0, -8))


def dropless_ffn(x: Array, expert_index: Array, expert_weight: Array,
                 params: ExpertParams, *, block_sizes=DEFAULT_BLOCK_SIZES
                 ) -> tuple[Array, DispatchStats]:
  """Dropless MoE FFN: every slot is computed (block-grouped dispatch).

  Args:
    x: float [T, D].
    expert_index: int [T, K].
    expert_weight: float [T, K], combine weights.
    params: ExpertParams with E experts.
    block_sizes: rows per block (static), an int or a decreasing tuple:
      each expert's group is covered by blocks of block_sizes[0] and a short
      tail (`block_plan`), so the extra work is fewer than block_sizes[-1]
      rows per expert.

  Returns:
    (y [T, D], DispatchStats with fraction_dropped == 0).
  """
  _check_routing(x, expert_index, expert_weight, params)
  block_sizes = check_block_sizes(block_sizes)
  num_tokens, k = expert_index.shape
  num_experts = params.w1.shape[0]
  num_slots = num_tokens * k
  # Row r = pad + i holds sorted slot i; the front padding keeps every tail
  # block (which may reach back up to block_sizes[0] - 1 rows) in bounds.
  pad = block_sizes[0]
  s = sort_slots(expert_index, num_experts)
  layout = slot_layout(s, pad + jnp.arange(num_slots, dtype=jnp.int32),
                       num_tokens=num_tokens, k=k, rows=pad + num_slots)
  x_rows = dispatch_rows(x, layout.source_token, layout.row_of_slot)
  group_start = pad + jnp.cumsum(s.count) - s.count
  y_rows = expert_blocks_ffn(x_rows, group_start, s.count, params,
                             block_sizes=block_sizes)
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
  return jnp.einsum("ech,edh->ecd", h, params.w2t) + params.b2[:, None, :]


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
