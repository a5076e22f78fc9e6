"""Expert parallelism: experts sharded over a mesh axis, tokens sent all-to-all.

With N devices on mesh axis `axis_name`, device n holds experts
[n * E/N, (n+1) * E/N) and a 1/N shard of the tokens. Inside `jax.shard_map`
each device

  1. sorts its local token-slots by expert and packs them into a capacity
     buffer [E, C, D] (C = ceil(capacity_factor * T_local * K / E); overflow
     dropped and counted, first choices first), with the same gather-only
     permutations as `moe.dispatch.capacity_ffn`;
  2. `lax.all_to_all` sends block [n * E/N, (n+1) * E/N) of that buffer to
     device n, which receives [N, E/N, C, D]: every device's slots for its
     own experts;
  3. runs its E/N experts as one batched matmul over N * C rows each;
  4. a second all-to-all returns the outputs, which are combined with the
     gates locally.

Gating runs outside the shard_map on the global (sharded) arrays, so the
gate noise, the importance/load sums and the auxiliary losses are exactly
those of the single-device layer; when nothing overflows, the output equals
the single-device layer's (tested with forced host devices).

Multi-host: call `jax.distributed.initialize()` on every host first (it reads
the coordinator address, process count and id from the cluster environment,
or take them as arguments), then build the mesh over all global devices,
e.g. `jax.make_mesh((jax.device_count(),), ("expert",))`; each host feeds its
own token shard (`jax.make_array_from_process_local_data`). The same code
then runs the all-to-all across hosts. Expert parallelism here is
capacity-limited: a dropless all-to-all needs ragged (data-dependent)
message sizes, which this module does not implement.

References:
  Lepikhin et al. 2021, "GShard", Sec. 2.2-3 (expert sharding, all-to-all).
  Fedus et al. 2021, "Switch Transformers", Sec. 2.2 and Fig. 9.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from moe import dispatch

Array = chex.Array


def _local_expert_parallel_ffn(x, expert_index, expert_weight, params, *,
                               num_experts, capacity_factor, axis_name):
  """Per-device body (inside shard_map). Local shapes: x [T_l, D]."""
  num_devices = jax.lax.axis_size(axis_name)
  local_experts = params.w1.shape[0]
  num_tokens, k = expert_index.shape
  packed = dispatch.pack_capacity(x, expert_index, num_experts,
                                  capacity_factor)
  capacity = packed.x_buf.shape[1]
  x_buf = packed.x_buf.reshape(num_devices, local_experts, capacity, -1)
  # Send expert group n to device n; receive every device's slots for ours.
  x_recv = jax.lax.all_to_all(x_buf, axis_name, 0, 0)  # [N, E_l, C, D]
  x_local = jnp.swapaxes(x_recv, 0, 1).reshape(
      local_experts, num_devices * capacity, -1)
  y_local = dispatch.batched_expert_ffn(x_local, params)
  y_send = jnp.swapaxes(
      y_local.reshape(local_experts, num_devices, capacity, -1), 0, 1)
  y_buf = jax.lax.all_to_all(y_send, axis_name, 0, 0)  # [N, E_l, C, D]
  y = dispatch.combine_capacity(y_buf, expert_weight, packed.layout)
  dropped = jax.lax.psum(num_tokens * k - packed.num_kept, axis_name)
  fraction = dropped.astype(x.dtype) / (num_devices * num_tokens * k)
  return y, fraction


def expert_parallel_ffn(x: Array, expert_index: Array, expert_weight: Array,
                        params: dispatch.ExpertParams, *, mesh: Mesh,
                        capacity_factor: float, axis_name: str = "expert"
                        ) -> tuple[Array, dispatch.DispatchStats]:
  """Capacity-limited MoE FFN with experts sharded over `mesh[axis_name]`.

  Args:
    x: float [T, D], T divisible by the axis size (sharded over it).
    expert_index: int [T, K] (from `gating.noisy_top_k`).
    expert_weight: float [T, K].
    params: ExpertParams with E experts, E divisible by the axis size.
    mesh: a `jax.sharding.Mesh` with axis `axis_name`.
    capacity_factor: > 0; per device and expert C = ceil(cf * (T/N) * K / E).
    axis_name: the mesh axis sharding experts and tokens.

  Returns:
    (y [T, D], DispatchStats).
  """
  chex.assert_rank([x, expert_index, expert_weight], 2)
  if axis_name not in mesh.shape:
    raise ValueError(f"mesh has no axis {axis_name!r}; axes: "
                     f"{tuple(mesh.shape)}.")
  num_devices = mesh.shape[axis_name]
  num_experts = params.w1.shape[0]
  if num_experts % num_devices:
    raise ValueError(
        f"num_experts={num_experts} must be divisible by the {axis_name!r} "
        f"axis size {num_devices}.")
  if x.shape[0] % num_devices:
    raise ValueError(
        f"the number of tokens ({x.shape[0]}) must be divisible by the "
        f"{axis_name!r} axis size {num_devices}.")
  dispatch.expert_capacity(x.shape[0] // num_devices, expert_index.shape[1],
                           num_experts, capacity_factor)  # Checks cf > 0.
  body = functools.partial(_local_expert_parallel_ffn,
                           num_experts=num_experts,
                           capacity_factor=capacity_factor,
                           axis_name=axis_name)
  tokens = P(axis_name)
  experts = dispatch.ExpertParams(P(axis_name), P(axis_name), P(axis_name),
                                  P(axis_name))
  # Use the mesh's devices with automatic (GSPMD) axis types, so callers may
  # pass a `jax.make_mesh` default (Explicit) mesh and unsharded arrays.
  mesh = Mesh(mesh.devices, mesh.axis_names,
              axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))
  place = lambda a, spec: jax.lax.with_sharding_constraint(
      a, jax.NamedSharding(mesh, spec))
  x, expert_index, expert_weight = (
      place(a, tokens) for a in (x, expert_index, expert_weight))
  params = jax.tree.map(place, params, experts)
  y, fraction = jax.shard_map(
      body, mesh=mesh, in_specs=(tokens, tokens, tokens, experts),
      out_specs=(tokens, P()))(x, expert_index, expert_weight, params)
  count = jnp.zeros((num_experts,), jnp.int32).at[
      expert_index.reshape(-1)].add(1)
  return y, dispatch.DispatchStats(count=count, fraction_dropped=fraction)
