r"""Where the dropless MoE layer's time goes, vs. the FLOP-matched dense FFN.

  python -m benchmarks.moe_breakdown --experts=32,64
  STOCHGRAD_HUGETLB=0 python -m benchmarks.moe_breakdown   # glibc defaults
  python -m benchmarks.moe_breakdown --experts=64 --ops    # per-op profile

Like `benchmarks.moe_throughput`, it re-executes itself once with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` on glibc >= 2.35 (`launch.hugepages`)
unless `STOCHGRAD_HUGETLB=0` is set.

Same sizes as `benchmarks/moe_throughput.py` (T = 4096, d_model 256, expert
hidden 1024, k = 2). The routing is computed once with the noisy top-k gate
and then held fixed, so the MoE rows time `dispatch.dropless_ffn` (sort,
gathers, expert blocks, combine) alone; the gating row times the gate and its
auxiliary losses alone. Each loss is sum(y^2); "fwd + bwd" is the gradient
with respect to the input and every weight. Times are the minimum over
interleaved repeats in one process, each after an untimed call of the same
case.

--ops profiles the whole layer's gradient step (gating, dispatch, experts,
aux losses; the `moe dropless` row of `benchmarks.moe_throughput`) with
`jax.profiler` and prints the time of its XLA ops per call, grouped by op
(fusion) kind and output shape, largest first. The thunk executor runs
independent ops concurrently on the CPU's threads, so the rows can add up to
more than the wall time.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import math
import os
import re
import tempfile
import time

from absl import flags
import jax
import jax.numpy as jnp

from benchmarks import command_line
from benchmarks import moe_throughput
from benchmarks.moe_throughput import D_MODEL, HIDDEN, K, TOKENS
from launch import hugepages
from moe import dispatch
from moe import gating

FLAGS = flags.FlagValues()
_EXPERTS = command_line.define_integer_list(
    "experts", [32, 64], "Numbers of experts E to time.", FLAGS)
_REPEATS = flags.DEFINE_integer("repeats", 7, "Interleaved timed repeats.",
                                flag_values=FLAGS)
_BLOCK_SIZES = command_line.define_integer_list(
    "block_sizes", dispatch.DEFAULT_BLOCK_SIZES, "Dropless block sizes.",
    FLAGS)
_OPS = flags.DEFINE_bool(
    "ops", False, "Per-op profile of the layer's gradient step.",
    flag_values=FLAGS)
_TOP = flags.DEFINE_integer("top", 20, "Rows printed by --ops.",
                            flag_values=FLAGS)


def _sum_sq(y):
  return jnp.sum(jnp.square(y))


def cases(num_experts: int, block_sizes):
  keys = jax.random.split(jax.random.key(num_experts), 6)
  x = jax.random.normal(keys[0], (TOKENS, D_MODEL))
  experts = dispatch.ExpertParams(
      jax.random.normal(keys[1], (num_experts, D_MODEL, HIDDEN))
      / math.sqrt(D_MODEL),
      jnp.zeros((num_experts, HIDDEN)),
      jax.random.normal(keys[2], (num_experts, D_MODEL, HIDDEN))
      / math.sqrt(HIDDEN),
      jnp.zeros((num_experts, D_MODEL)))
  dense = {"w1": jax.random.normal(keys[1], (D_MODEL, K * HIDDEN))
                 / math.sqrt(D_MODEL),
           "b1": jnp.zeros((K * HIDDEN,)),
           "w2": jax.random.normal(keys[2], (K * HIDDEN, D_MODEL))
                 / math.sqrt(K * HIDDEN),
           "b2": jnp.zeros((D_MODEL,))}
  gate = {"w_gate": 0.05 * jax.random.normal(keys[3], (D_MODEL, num_experts)),
          "w_noise": jnp.zeros((D_MODEL, num_experts))}
  g = gating.noisy_top_k(x, gate["w_gate"], gate["w_noise"], keys[4], k=K,
                         train=True)
  index, weight = g.expert_index, g.expert_weight

  def dense_ffn(x, p):
    return moe_throughput.dense_ffn(p, x, None)[0]

  def moe_ffn(x, p):
    return dispatch.dropless_ffn(x, index, weight, p,
                                 block_sizes=block_sizes)[0]

  def gate_loss(x, p):
    expert_weight, aux_loss = moe_throughput.gating_only(p, x, keys[4])
    return _sum_sq(expert_weight) + aux_loss

  grad = lambda f: jax.grad(lambda x, p: _sum_sq(f(x, p)), argnums=(0, 1))
  grad_x = lambda f: jax.grad(lambda x, p: _sum_sq(f(x, p)))
  return {
      "dense forward": (dense_ffn, (x, dense)),
      "moe forward": (moe_ffn, (x, experts)),
      "dense fwd + bwd": (grad(dense_ffn), (x, dense)),
      "moe fwd + bwd": (grad(moe_ffn), (x, experts)),
      "dense fwd + bwd, input gradient only": (grad_x(dense_ffn), (x, dense)),
      "gating + aux losses fwd + bwd": (
          jax.grad(gate_loss, argnums=(0, 1)), (x, gate)),
  }


def run(num_experts: int, repeats: int, block_sizes) -> dict[str, float]:
  compiled = {}
  for name, (fn, args) in cases(num_experts, block_sizes).items():
    step = jax.jit(fn)
    jax.block_until_ready(step(*args))
    compiled[name] = (step, args)
  times = {name: [] for name in compiled}
  for _ in range(repeats):
    for name, (step, args) in compiled.items():
      jax.block_until_ready(step(*args))  # Untimed: memory of the last case.
      start = time.perf_counter()
      jax.block_until_ready(step(*args))
      times[name].append(time.perf_counter() - start)
  return {name: 1e3 * min(t) for name, t in times.items()}


_HLO_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(", re.MULTILINE)
_CONTAINERS = ("while", "conditional", "call")


def op_profile(num_experts: int, calls: int) -> tuple[float, list]:
  """Wall ms per call and [(ms per call, ops per call, kind, shape)]."""
  fn, params, x, key = moe_throughput.moe_dropless_case(num_experts)
  step = moe_throughput._grad_step(fn)  # pylint: disable=protected-access
  hlo = step.lower(params, x, key).compile().as_text()
  ops = {name: (shape, opcode)
         for name, shape, opcode in _HLO_INSTRUCTION.findall(hlo)}
  for _ in range(2):
    jax.block_until_ready(step(params, x, key))
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    start = time.perf_counter()
    for _ in range(calls):
      jax.block_until_ready(step(params, x, key))
    wall = (time.perf_counter() - start) / calls
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"),
                        recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  total, count = collections.Counter(), collections.Counter()
  for event in events:
    name = event.get("name")
    if event.get("ph") != "X" or name not in ops:
      continue
    shape, opcode = ops[name]
    if opcode in _CONTAINERS:
      continue
    kind = re.sub(r"\.\d+$", "", name) if opcode == "fusion" else opcode
    shape = re.sub(r"\{.*", "", shape)
    if kind.startswith(("ynn_fusion", "xnn_fusion", "dot")):
      kind, shape = "matmuls (with fused epilogues)", "all"
    group = (kind, shape)
    total[group] += event.get("dur", 0.0)
    count[group] += 1
  rows = [(us / 1e3 / calls, count[g] / calls) + g
          for g, us in total.most_common()]
  return 1e3 * wall, rows


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  block_sizes = tuple(_BLOCK_SIZES.value)
  if _OPS.value:
    print(f"jax {jax.__version__}, T={TOKENS}, d_model={D_MODEL}, "
          f"hidden={HIDDEN}, k={K}, calls={_REPEATS.value}, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
    for e in _EXPERTS.value:
      wall, rows = op_profile(e, _REPEATS.value)
      print(f"\nE={e}: {wall:.1f} ms per call (wall, while profiling)")
      print("| ms per call | ops per call | op kind | output shape |")
      print("|---|---|---|---|")
      for ms, n, kind, shape in rows[:_TOP.value]:
        print(f"| {ms:.2f} | {n:g} | {kind} | {shape} |", flush=True)
    return
  print(f"jax {jax.__version__}, T={TOKENS}, d_model={D_MODEL}, "
        f"hidden={HIDDEN}, k={K}, repeats={_REPEATS.value}, "
        f"block_sizes={block_sizes}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
  print("| E | case | best ms |")
  print("|---|---|---|")
  for e in _EXPERTS.value:
    for name, ms in run(e, _REPEATS.value, block_sizes).items():
      print(f"| {e} | {name} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
  hugepages.reexec_with_hugetlb()
  main()
