r"""SAC training throughput: stochgrad vs sbx vs the update-only ceiling.

  .venv-bench/bin/python -m benchmarks.sac_throughput [--env_id=HalfCheetah-v5]
      [--out=throughput.json]
  python -m benchmarks.sac_throughput --from_json=throughput.json  # table

Everything is measured in this one process, so the ratios are what counts (the
CPU may be shared). Setting for all runs: one gradient step per env step,
256x256 MLPs, batch 256, 1M buffer, learning_starts 1000, Adam 3e-4, two
critics, learned temperature, one env. Env steps/s are measured over
[--warmup, --warmup + --measure] steps, i.e. after compilation.

  ours        the real `sac.train.train` loop (per env step, two compiled
              calls, the action and the buffer insert + update, dispatched
              one iteration ahead: `sac.collector`), read from train.csv's
              steps_per_sec rows (wall time between log rows).
  ours x4     num_seeds=4 in one process (aggregate = 4 x per-seed steps/s).
  ceiling     the same compiled update with no environment: `lax.scan` over
              200 gradient steps on a filled buffer (updates/s), the median
              of 5 timed calls.
  ceiling_best  the fastest of those 5 calls: steadier from round to
              round than their median where the VM's speed drifts within
              a round (docs/benchmarks.md, "On an AMD EPYC VM").
  calls       the loop's device work alone: per step, the compiled action
              call and the per-step update call (insert + 1 gradient step)
              dispatched back to back, no environment (steps/s). The loop
              cannot beat it; calls/ceiling is the price of those two calls
              per env step (the actions included) instead of one `lax.scan`
              iteration, and ours/calls what the host (environment, loop)
              adds. calls/sbx is about the most ours/sbx can reach while
              the loop makes these two calls per env step: their speed with
              the host's work taken to cost nothing.
  updates     the loop's per-step update call alone, back to back, with no
              action call and no environment (updates/s): the most a loop
              that makes this call once per env step can reach. Unlike the
              scan it is the loop's own program; where the scan runs slower
              than this call (the AMD EPYC VM, docs/benchmarks.md), the
              ceiling bounds nothing and ours/updates is the loop's share.
  sbx         sbx.SAC with the same hyperparameters (optional: `pip install
              torch==2.13.0 && pip install sbx-rl`), timed by a callback.
  floor       the gradient step's floating-point operations (XLA's cost
              analysis of the compiled one-step update, `step_flops`) at
              the rate this process reaches on one [256, 256] x [256, 256]
              float32 product (batch x width, `time_floor`): the updates/s
              of a step that did nothing but matrix products at that rate.
              ceiling/floor is the share of the step's time that such
              products would take; floor/sbx is the most ours/sbx could
              reach with such a step and a loop that cost nothing.
  compile     time to lower and compile the per-step update call.

The rounds alternate ceiling, floor, updates, calls, ours and sbx; every
ratio is taken within a round and reported as its median and minimum over
rounds (the absolute speeds of a shared VM drift between rounds).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import flags
import jax
import numpy as np

from benchmarks import command_line
from common import atomic_files
from common import csv_logs
from launch.configs import sac as sac_config
from sac import learner
from sac import replay
from sac import train as sac_train

FLAGS = flags.FlagValues()
_ENV_ID = flags.DEFINE_enum(
    "env_id", "HalfCheetah-v5", ("Pendulum-v1",) + sac_config.MUJOCO_ENVS,
    "Gymnasium env id, one with a preset in launch/configs/sac.py.",
    flag_values=FLAGS)
_WARMUP = flags.DEFINE_integer("warmup", 1500, "Steps before timing starts.",
                               flag_values=FLAGS)
_MEASURE = flags.DEFINE_integer("measure", 3000, "Timed steps.",
                                flag_values=FLAGS)
_SKIP_SBX = flags.DEFINE_bool("skip_sbx", False, "Do not run sbx.",
                              flag_values=FLAGS)
_SEEDS4 = flags.DEFINE_bool("seeds4", True, "Also time num_seeds=4.",
                            flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 5, "Alternating ceiling/calls/ours/sbx rounds (the CPU may be "
    "shared): ratios within each round, their median and minimum reported.",
    lower_bound=1, flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.",
                           flag_values=FLAGS)
_FROM_JSON = flags.DEFINE_string(
    "from_json", None, "Print the per-round table and ratios of this saved "
    "JSON (from --out) instead of measuring.", flag_values=FLAGS)

LEARNING_STARTS = 1000
LOG_EVERY = 500


def _config(num_seeds: int = 1):
  env_id = _ENV_ID.value
  config = sac_config.get_config(
      "pendulum" if env_id == "Pendulum-v1" else env_id)
  config.num_steps = _WARMUP.value + _MEASURE.value
  config.learning_starts = LEARNING_STARTS
  config.hidden_sizes = (256, 256)
  config.batch_size = 256
  config.buffer_size = 1_000_000
  config.updates_per_step = 1
  config.eval_every = 10 ** 9      # Only the final evaluation, after timing.
  config.eval_episodes = 1
  config.log_every = LOG_EVERY
  config.checkpoint_every = 10 ** 9  # Only the final checkpoint, after timing.
  config.num_seeds = num_seeds
  config.progress_bar = False
  return config


def time_ours(num_seeds: int = 1) -> float:
  """Per-seed env steps/s of the full training loop after warm-up."""
  with tempfile.TemporaryDirectory() as workdir:
    sac_train.train(_config(num_seeds), workdir)
    rows = csv_logs.read_csv(os.path.join(workdir, "train.csv"))
  rows = [r for r in rows if int(r["seed"]) == 0
          and int(r["step"]) > _WARMUP.value]
  seconds = sum(LOG_EVERY / float(r["steps_per_sec"]) for r in rows)
  return LOG_EVERY * len(rows) / seconds


def _filled():
  """(agent, one seed's state with 10k random transitions in its buffer,
  one transition [1, 1], one observation [1, 1, O])."""
  config = _config()
  obs_dim, action_dim = _dims()
  agent = sac_train.build_agent(config, obs_dim, action_dim)
  state = sac_train.init_states(agent, config, [0])
  rng = np.random.default_rng(0)
  fill = replay.Transition(
      obs=rng.normal(size=(1, 10_000, obs_dim)).astype(np.float32),
      action=rng.uniform(-1, 1, (1, 10_000, action_dim)).astype(np.float32),
      reward=rng.normal(size=(1, 10_000)).astype(np.float32),
      next_obs=rng.normal(size=(1, 10_000, obs_dim)).astype(np.float32),
      terminated=np.zeros((1, 10_000), np.float32))
  state = state.replace(buffer=jax.vmap(replay.add)(state.buffer, fill))
  one = jax.tree.map(lambda x: x[:, :1], fill)
  return agent, state, one, fill.obs[:, :1]


def time_ceiling_and_compile() -> tuple[float, float, float]:
  """Update-only updates/s (no env): the median and the fastest of 5 timed
  calls; and the compile time of the per-step call."""
  agent, state, one, _ = _filled()
  start = time.perf_counter()
  learner.make_update_fn(agent, num_updates=1).lower(state, one).compile()
  compile_seconds = time.perf_counter() - start
  num_updates = 200
  update = learner.make_update_only_fn(agent, num_updates=num_updates)
  state, _ = update(state)
  jax.block_until_ready(state)
  rates = []
  for _ in range(5):
    start = time.perf_counter()
    state, _ = update(state)
    jax.block_until_ready(state)
    rates.append(num_updates / (time.perf_counter() - start))
  return float(np.median(rates)), float(np.max(rates)), compile_seconds


def step_flops(agent: learner.Agent, state) -> float:
  """Floating-point operations of one gradient step (insert excluded):
  XLA's cost analysis of the compiled update-only call with K = 1.

  Matrix products count 2 M N K; elementwise operations one per element.
  """
  compiled = learner.make_update_only_fn(agent, num_updates=1).lower(
      state).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # One dict per program.
    analysis = analysis[0]
  return float(analysis["flops"])


def time_matmul(rows: int, width: int, count: int = 200) -> float:
  """FLOP/s of a [rows, width] x [width, width] float32 product in this
  process: `count` products in a `lax.scan`, each applied to the last one's
  result (so none is hoisted or skipped), median of 5 timings. The matrix
  is orthogonal, so the values neither overflow nor turn subnormal.
  """
  rng = np.random.default_rng(0)
  weight = np.linalg.qr(rng.normal(size=(width, width)))[0].astype(np.float32)
  x = rng.normal(size=(rows, width)).astype(np.float32)

  @jax.jit
  def products(x, weight):
    return jax.lax.scan(lambda h, _: (h @ weight, None), x, None,
                        length=count)[0]

  jax.block_until_ready(products(x, weight))  # Compiles.
  seconds = []
  for _ in range(5):
    start = time.perf_counter()
    jax.block_until_ready(products(x, weight))
    seconds.append(time.perf_counter() - start)
  return 2.0 * rows * width * width * count / float(np.median(seconds))


def time_floor(flops: float) -> float:
  """Updates/s of a gradient step of `flops` FLOPs that ran at the rate of
  the benchmark's [batch, H] x [H, H] product (H the hidden width)."""
  config = _config()
  return time_matmul(config.batch_size, config.hidden_sizes[0]) / flops


def time_calls(steps: int = 400, *, actions: bool = True) -> float:
  """Steps/s of the loop's device work alone: per step the compiled action
  call and the per-step update call (insert + 1 gradient step), dispatched
  back to back with no environment, as `sac.collector` issues them. With
  `actions=False`, the update call alone."""
  agent, state, one, obs = _filled()
  act = learner.make_act_fn(agent, random=False)
  update = learner.make_update_fn(agent, num_updates=1)

  def run(state):
    for _ in range(steps):
      if actions:
        state, _ = act(state, obs)
      state, _ = update(state, one)
    return jax.block_until_ready(state)

  state = run(state)  # Compiles.
  rates = []
  for _ in range(3):
    start = time.perf_counter()
    state = run(state)
    rates.append(steps / (time.perf_counter() - start))
  return float(np.median(rates))


def _dims():
  import gymnasium as gym
  env = gym.make(_ENV_ID.value)
  return env.observation_space.shape[0], env.action_space.shape[0]


def time_sbx() -> float | None:
  try:
    import sbx
    from stable_baselines3.common.callbacks import BaseCallback
  except ImportError:
    print("sbx not installed: skipped (pip install torch==2.13.0 sbx-rl).")
    return None
  import gymnasium as gym

  class StepTimes(BaseCallback):
    def __init__(self):
      super().__init__()
      self.times = {}

    def _on_step(self) -> bool:
      if self.num_timesteps in (_WARMUP.value,
                                _WARMUP.value + _MEASURE.value):
        self.times[self.num_timesteps] = time.perf_counter()
      return True

  model = sbx.SAC(
      "MlpPolicy", gym.make(_ENV_ID.value), learning_rate=3e-4,
      buffer_size=1_000_000, learning_starts=LEARNING_STARTS, batch_size=256,
      tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1,
      policy_kwargs=dict(net_arch=[256, 256]), seed=0, verbose=0)
  callback = StepTimes()
  model.learn(total_timesteps=_WARMUP.value + _MEASURE.value, callback=callback)
  t = callback.times
  return _MEASURE.value / (t[_WARMUP.value + _MEASURE.value] - t[_WARMUP.value])


def _round_ratios(name: str, numerators, denominators) -> dict:
  """Per-round ratios with their median and minimum over rounds.

  Example:
    >>> _round_ratios("a_over_b", [2.0, 3.0, 4.0], [1.0, 2.0, 2.0])
    {'a_over_b_rounds': [2.0, 1.5, 2.0], 'a_over_b': 2.0, 'a_over_b_min': 1.5}
  """
  ratios = [float(n / d) for n, d in zip(numerators, denominators)]
  return {f"{name}_rounds": ratios, name: float(np.median(ratios)),
          f"{name}_min": min(ratios)}


# (numerator, denominator) of the ratios, from the per-round speeds.
RATIOS = (("ours", "sbx"), ("ours", "ceiling"), ("ours", "ceiling_best"),
          ("ours", "updates"), ("ours", "calls"), ("calls", "ceiling"),
          ("calls", "ceiling_best"), ("calls", "updates"),
          ("updates", "ceiling"), ("ceiling", "sbx"), ("updates", "sbx"),
          ("calls", "sbx"), ("ceiling", "floor"), ("floor", "sbx"))


def add_ratios(results: dict) -> dict:
  """Adds every ratio of RATIOS whose two speeds were measured in all rounds
  (the machine's speed drifts between rounds, so each ratio is taken within
  a round, then its median and minimum over rounds).

  Example:
    >>> r = add_ratios({"ours_rounds": [2.0, 3.0], "ceiling_rounds": [4.0, 4.0],
    ...                 "sbx_rounds": []})
    >>> r["ours_over_ceiling_rounds"], "ours_over_sbx" in r
    ([0.5, 0.75], False)
  """
  for top, bottom in RATIOS:
    a, b = results.get(f"{top}_rounds"), results.get(f"{bottom}_rounds")
    if a and b and None not in a and None not in b and len(a) == len(b):
      results.update(_round_ratios(f"{top}_over_{bottom}", a, b))
  return results


# Rows of the per-round table: (label, key of the per-round list).
TABLE_ROWS = (
    ("update-only ceiling (updates/s)", "ceiling_rounds"),
    ("update-only ceiling, fastest of its 5 calls (updates/s)",
     "ceiling_best_rounds"),
    ("the loop's update call alone (updates/s)", "updates_rounds"),
    ("the loop's compiled calls alone (steps/s)", "calls_rounds"),
    ("stochgrad SAC, full loop (env steps/s)", "ours_rounds"),
    ("sbx SAC, same hyperparameters (env steps/s)", "sbx_rounds"),
    ("matrix-product floor (updates/s)", "floor_rounds"),
) + tuple((f"{top} / {bottom} (ratio)", f"{top}_over_{bottom}_rounds")
          for top, bottom in RATIOS)


def markdown_table(results: dict) -> str:
  """The per-round speeds and ratios of `results`, with each row's median
  (and, for ratios, minimum), as a markdown table; rows not measured are
  left out.

  Example:
    >>> print(markdown_table(add_ratios({"ours_rounds": [2.0, 3.0],
    ...                                  "ceiling_rounds": [4.0, 4.0]})))
    | measure | round 1 | round 2 | median | minimum |
    |---|---|---|---|---|
    | update-only ceiling (updates/s) | 4 | 4 | 4 | |
    | stochgrad SAC, full loop (env steps/s) | 2 | 3 | 2.5 | |
    | ours / ceiling (ratio) | 0.5 | 0.75 | 0.625 | 0.5 |
  """
  rounds = len(results["ours_rounds"])
  lines = ["| measure | " + " | ".join(f"round {i + 1}" for i in range(rounds))
           + " | median | minimum |",
           "|---" * (rounds + 3) + "|"]
  for label, key in TABLE_ROWS:
    values = results.get(key)
    if not values or None in values:
      continue
    ratio = "_over_" in key
    minimum = f" {min(values):.4g}" if ratio else ""
    lines.append(f"| {label} | " + " | ".join(f"{v:.4g}" for v in values)
                 + f" | {float(np.median(values)):.4g} |{minimum} |")
  return "\n".join(lines)


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  if _FROM_JSON.value:
    if not os.path.isfile(_FROM_JSON.value):
      command_line.usage_error(
          f"--from_json={_FROM_JSON.value!r} is not a file; expected the "
          "JSON written by --out.")
    with open(_FROM_JSON.value) as f:
      try:
        results = json.load(f)
      except json.JSONDecodeError as e:
        command_line.usage_error(
            f"--from_json={_FROM_JSON.value!r} is not JSON ({e}); expected "
            "the JSON written by --out.")
    if not isinstance(results, dict) or not results.get("ours_rounds"):
      command_line.usage_error(
          f"--from_json={_FROM_JSON.value!r} has no \"ours_rounds\" list; "
          "expected the JSON written by --out.")
    add_ratios(results)
    print(markdown_table(results))
    return
  results = {"env_id": _ENV_ID.value, "jax": jax.__version__,
             "devices": str(jax.devices())}
  flops = step_flops(*_filled()[:2])
  ceilings, bests, compiles, floors, updates, calls, ours_runs, sbx_runs = (
      [], [], [], [], [], [], [], [])
  for _ in range(_ROUNDS.value):
    ceiling, best, compile_seconds = time_ceiling_and_compile()
    ceilings.append(ceiling)
    bests.append(best)
    compiles.append(compile_seconds)
    floors.append(time_floor(flops))
    updates.append(time_calls(actions=False))
    calls.append(time_calls())
    ours_runs.append(time_ours(1))
    if not _SKIP_SBX.value:
      sbx_runs.append(time_sbx())
  results.update(ceiling_rounds=ceilings, ceiling_best_rounds=bests,
                 updates_rounds=updates, calls_rounds=calls,
                 ours_rounds=ours_runs, floor_rounds=floors,
                 step_gflops=flops / 1e9,
                 sbx_rounds=sbx_runs, compile_s=float(np.median(compiles)),
                 ceiling_updates_per_s=float(np.median(ceilings)),
                 calls_steps_per_s=float(np.median(calls)),
                 ours_steps_per_s=float(np.median(ours_runs)))
  if sbx_runs and None not in sbx_runs:
    results["sbx_steps_per_s"] = float(np.median(sbx_runs))
  if _SEEDS4.value:
    results["ours_4seeds_aggregate_steps_per_s"] = 4 * time_ours(4)
  add_ratios(results)
  print(json.dumps(results, indent=2))
  print(markdown_table(results))
  if _OUT.value:
    atomic_files.write_json(_OUT.value, results)


if __name__ == "__main__":
  main()
