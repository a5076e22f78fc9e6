r"""Forward+backward throughput of the MoE layer against same-process baselines.

  python -m benchmarks.moe_throughput                  # E = 32 and 64
  python -m benchmarks.moe_throughput --experts=32 --repeats=10 --ragged

One MoE FFN layer, T = 4096 tokens, d_model 256, expert hidden 1024, k = 2,
gradient of sum(y^2) + aux loss with respect to the input and every parameter
(one jitted call). Compared, in the same process, with interleaved repeats:

  dense:    a dense ReLU FFN with the same active FLOPs (hidden k * 1024);
  einsum:   GShard-style one-hot einsum dispatch (Lepikhin et al. 2021),
            capacity factor 1.25, with the same noisy top-k gating;
  ragged:   `jax.lax.ragged_dot` grouped matmul, dropless (--ragged; slow);
  moe:      `moe.layer.MoE`, dropless (block-grouped dispatch);
  moe_cap:  `moe.layer.MoE`, capacity factor 1.25;
and, to split the layer's cost, its dropless dispatch + experts with the
routing fixed, and its gating + auxiliary losses alone (differentiated with
respect to W_g and W_noise only). A last row, "floor", is the dense FFN plus
the least memory traffic any MoE layer with these experts must add: it reads
every expert parameter once and writes its gradient once (E times the dense
FFN's parameters at k = 2, E = 64: 128 MB each way). Its "vs dense" bounds what
any implementation can reach here before paying for gating and dispatch.

Throughput is tokens / (minimum wall time over the repeats); each timed call
follows an untimed call of the same case, so no case pays for the memory
left behind by the previous one. The ratios (same process, interleaved) are
what to compare. Peak
memory is XLA's compiled estimate (arguments + outputs + temporaries).

Page faults: XLA:CPU allocates each call's large buffers afresh, and glibc
serves allocations above 32 MB with mmap, so every call first-touches (page
faults on) most of its memory. On our VMs that costs tens of ms per call and
varies from run to run; it hits the MoE (2x the dense FFN's memory) harder.
The "page faults/call" column shows it (median minor faults per timed call).
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` makes glibc back those buffers with
transparent huge pages (glibc >= 2.35, THP "madvise" or "always"), with far
fewer faults (docs/benchmarks.md, "MoE throughput"). As the MoE launcher
does, this benchmark re-executes itself once with
that setting on glibc >= 2.35 (`launch.hugepages`); to measure glibc's
defaults instead:
  STOCHGRAD_HUGETLB=0 python -m benchmarks.moe_throughput
The header line prints the GLIBC_TUNABLES the run used.
"""

from __future__ import annotations

import math
import os
import resource
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import command_line
from launch import hugepages
from moe import dispatch
from moe import gating
from moe import layer as moe_layer

TOKENS, D_MODEL, HIDDEN, K = 4096, 256, 1024, 2
CAPACITY_FACTOR = 1.25

FLAGS = flags.FlagValues()
_EXPERTS = command_line.define_integer_list(
    "experts", [32, 64], "Numbers of experts E to time.", FLAGS)
_REPEATS = flags.DEFINE_integer("repeats", 7, "Interleaved timed repeats.",
                                flag_values=FLAGS)
_BLOCK_SIZES = command_line.define_integer_list(
    "block_sizes", None, "Dropless block sizes (default: the layer's).",
    FLAGS)
_RAGGED = flags.DEFINE_bool(
    "ragged", False, "Also time lax.ragged_dot (slow on CPU).",
    flag_values=FLAGS)


def _gate(params, x, key):
  g = gating.noisy_top_k(x, params["w_gate"], params["w_noise"], key, k=K,
                         train=True)
  return g


def _experts(params):
  return dispatch.ExpertParams(params["w1"], params["b1"], params["w2t"],
                               params["b2"])


def gshard_einsum_layer(params, x, key):
  """Noisy top-k gating + GShard one-hot einsum dispatch (baseline)."""
  g = _gate(params, x, key)
  num_experts = params["w_gate"].shape[1]
  capacity = dispatch.expert_capacity(TOKENS, K, num_experts, CAPACITY_FACTOR)
  combine = jnp.zeros((x.shape[0], num_experts, capacity), x.dtype)
  filled = jnp.zeros((num_experts,), jnp.int32)
  for j in range(K):  # First choices have priority.
    onehot = jax.nn.one_hot(g.expert_index[:, j], num_experts, dtype=jnp.int32)
    position = jnp.cumsum(onehot, axis=0) - 1 + filled[None, :]
    filled = filled + jnp.sum(onehot, axis=0)
    slot = jnp.sum(position * onehot, axis=1)  # [T]
    keep = slot < capacity
    combine = combine + (g.expert_weight[:, j] * keep)[:, None, None] * (
        onehot[:, :, None] * jax.nn.one_hot(slot, capacity, dtype=x.dtype)[
            :, None, :])
  mask = (combine > 0).astype(x.dtype)
  x_e = jnp.einsum("tec,td->ecd", mask, x)
  h = jax.nn.relu(jnp.einsum("ecd,edh->ech", x_e, params["w1"])
                  + params["b1"][:, None])
  y_e = jnp.einsum("ech,edh->ecd", h, params["w2t"]) + params["b2"][:, None]
  y = jnp.einsum("tec,ecd->td", combine, y_e)
  aux = moe_layer.aux_statistics(g, jnp.zeros(()), w_importance=0.1,
                                 w_load=0.1, switch_alpha=0.0, z_loss=0.0)
  return y, aux.loss


def ragged_dot_layer(params, x, key):
  """Noisy top-k gating + sorted tokens + `lax.ragged_dot` (baseline)."""
  g = _gate(params, x, key)
  num_experts = params["w_gate"].shape[1]
  flat_expert = g.expert_index.reshape(-1)
  order = jnp.argsort(flat_expert, stable=True)
  rows = x[order // K]
  group_sizes = jnp.zeros((num_experts,), jnp.int32).at[flat_expert].add(1)
  b1 = params["b1"][flat_expert[order]]
  b2 = params["b2"][flat_expert[order]]
  h = jax.nn.relu(jax.lax.ragged_dot(rows, params["w1"], group_sizes) + b1)
  w2 = jnp.swapaxes(params["w2t"], 1, 2)  # ragged_dot wants [E, H, D].
  y_rows = jax.lax.ragged_dot(h, w2, group_sizes) + b2
  y_slot = jnp.zeros_like(y_rows).at[order].set(y_rows).reshape(
      x.shape[0], K, -1)
  y = jnp.einsum("tk,tkd->td", g.expert_weight, y_slot)
  aux = moe_layer.aux_statistics(g, jnp.zeros(()), w_importance=0.1,
                                 w_load=0.1, switch_alpha=0.0, z_loss=0.0)
  return y, aux.loss


def _fixed_routing_fn(params, x, key, ffn):
  """Routing computed once outside the timed step: dispatch + experts only."""
  g = jax.jit(_gate)(params, x, key)
  index, weight = g.expert_index, g.expert_weight

  def fn(params, x, key):
    del key
    y, _ = ffn(x, index, weight, _experts(params))
    return y, jnp.zeros(())

  return fn


def gating_only(params, x, key):
  """Noisy top-k gating and the auxiliary losses, no experts."""
  g = _gate(params, x, key)
  aux = moe_layer.aux_statistics(g, jnp.zeros(()), w_importance=0.1,
                                 w_load=0.1, switch_alpha=0.0, z_loss=0.0)
  return g.expert_weight, aux.loss


def dense_plus_expert_traffic(params, x, key):
  """The dense FFN, plus one read of each expert parameter and its gradient.

  The gradient of 1e-30 * sum(w) is a freshly written constant array of w's
  shape, so the backward pass writes every expert gradient once, as any MoE
  layer must; the forward sum reads every expert parameter once (an MoE
  reads them at least once). No FLOPs beyond the dense FFN's and O(params)
  adds.
  """
  y, _ = dense_ffn(params["dense"], x, key)
  touch = sum(jnp.sum(w) for w in jax.tree.leaves(params["experts"]))
  return y, 1e-30 * touch


def dense_ffn(params, x, key):
  del key
  h = jax.nn.relu(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"], jnp.zeros(())


def _moe_fn(capacity_factor, num_experts, block_sizes=None):
  extra = {} if block_sizes is None else {"block_sizes": tuple(block_sizes)}
  layer = moe_layer.MoE(num_experts=num_experts, k=K, expert_hidden=HIDDEN,
                        capacity_factor=capacity_factor, **extra)

  def fn(params, x, key):
    y, aux = layer.apply({"params": params}, x, train=True,
                         rngs={"gating": key})
    return y, aux.loss

  return fn, layer


def _grad_step(fn):
  def loss(params, x, key):
    y, aux_loss = fn(params, x, key)
    return jnp.sum(jnp.square(y)) / y.shape[0] + aux_loss
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _peak_bytes(compiled) -> float:
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return float(m.argument_size_in_bytes + m.output_size_in_bytes
               + m.temp_size_in_bytes)


def _case_keys():
  """Fixed keys: the input, the MoE init, gating, the dense FFN, W_g."""
  return jax.random.split(jax.random.key(0), 5)


def moe_dropless_case(num_experts: int, block_sizes=None):
  """(loss fn, params, x, gating key) of the "moe dropless" row."""
  k_x, k_init, k_gate, _, k_w = _case_keys()
  x = jax.random.normal(k_x, (TOKENS, D_MODEL))
  moe_fn, layer = _moe_fn(None, num_experts, block_sizes)
  moe_params = jax.jit(layer.init, static_argnames="train")(
      k_init, x, train=False)["params"]
  # Non-zero gates so the routing is not the trivial all-ties one.
  moe_params = dict(moe_params)
  moe_params["w_gate"] = 0.05 * jax.random.normal(
      k_w, moe_params["w_gate"].shape)
  return moe_fn, moe_params, x, k_gate


def run(num_experts: int, repeats: int, ragged: bool,
        block_sizes=None) -> list[dict]:
  moe_fn, moe_params, x, k_gate = moe_dropless_case(num_experts, block_sizes)
  kd1, kd2 = jax.random.split(_case_keys()[3])
  dense_params = {
      "w1": jax.random.normal(kd1, (D_MODEL, K * HIDDEN)) / math.sqrt(D_MODEL),
      "b1": jnp.zeros((K * HIDDEN,)),
      "w2": jax.random.normal(kd2, (K * HIDDEN, D_MODEL)) / math.sqrt(
          K * HIDDEN),
      "b2": jnp.zeros((D_MODEL,)),
  }
  cases = {
      "dense (hidden k*1024)": (dense_ffn, dense_params),
      "einsum (GShard, cf 1.25)": (gshard_einsum_layer, moe_params),
      "moe dropless": (moe_fn, moe_params),
      "moe capacity 1.25": (_moe_fn(CAPACITY_FACTOR, num_experts)[0],
                            moe_params),
  }
  dropless = dispatch.dropless_ffn if block_sizes is None else (
      lambda *a: dispatch.dropless_ffn(*a, block_sizes=tuple(block_sizes)))
  cases["  dropless dispatch+experts only"] = (_fixed_routing_fn(
      moe_params, x, k_gate, dropless), moe_params)
  cases["  gating + aux losses only"] = (gating_only, {
      n: moe_params[n] for n in ("w_gate", "w_noise")})
  cases["floor: dense + expert param read/write"] = (
      dense_plus_expert_traffic, {
          "dense": dense_params,
          "experts": {n: moe_params[n] for n in ("w1", "b1", "w2t", "b2")}})
  if ragged:
    cases["ragged_dot (dropless)"] = (ragged_dot_layer, moe_params)
  steps, memory = {}, {}
  for name, (fn, params) in cases.items():
    step = _grad_step(fn)
    compiled = step.lower(params, x, k_gate).compile()
    memory[name] = _peak_bytes(compiled)
    jax.block_until_ready(compiled(params, x, k_gate))  # Warm up.
    steps[name] = (compiled, params)
  times = {name: [] for name in cases}
  faults = {name: [] for name in cases}
  for _ in range(repeats):  # Interleaved, so load changes hit all cases.
    for name, (compiled, params) in steps.items():
      # One untimed call first: the call right after another case (above all
      # after the 1 GB einsum case) pays ~50 ms of memory re-allocation that
      # belongs to the switch, not to the case.
      jax.block_until_ready(compiled(params, x, k_gate))
      minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      start = time.perf_counter()
      jax.block_until_ready(compiled(params, x, k_gate))
      times[name].append(time.perf_counter() - start)
      faults[name].append(
          resource.getrusage(resource.RUSAGE_SELF).ru_minflt - minflt)
  best = {name: min(t) for name, t in times.items()}
  rows = []
  for name in cases:
    rows.append({
        "experts": num_experts, "case": name,
        "ms": 1e3 * best[name], "median_ms": 1e3 * float(np.median(
            times[name])),
        "tokens_per_s": TOKENS / best[name],
        "vs_dense": best["dense (hidden k*1024)"] / best[name],
        "vs_einsum": best["einsum (GShard, cf 1.25)"] / best[name],
        "peak_mb": memory[name] / 2**20,
        "faults": int(np.median(faults[name])),
    })
  return rows


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  block_sizes = _BLOCK_SIZES.value
  print(f"jax {jax.__version__}, devices {jax.devices()}, T={TOKENS}, "
        f"d_model={D_MODEL}, hidden={HIDDEN}, k={K}, repeats={_REPEATS.value}, "
        f"block_sizes={block_sizes or moe_layer.MoE.block_sizes}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
  print("| E | case | best ms | median ms | tokens/s | vs dense | vs einsum |"
        " peak MB | page faults/call |")
  print("|---|---|---|---|---|---|---|---|---|")
  for e in _EXPERTS.value:
    for r in run(e, _REPEATS.value, _RAGGED.value, block_sizes):
      print(f"| {r['experts']} | {r['case']} | {r['ms']:.0f} | "
            f"{r['median_ms']:.0f} | {r['tokens_per_s']:.0f} | "
            f"{r['vs_dense']:.2f}x | {r['vs_einsum']:.2f}x | "
            f"{r['peak_mb']:.0f} | {r['faults']} |", flush=True)


if __name__ == "__main__":
  hugepages.reexec_with_hugetlb()
  main()
