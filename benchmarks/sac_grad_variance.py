r"""Variance of SAC's actor-gradient estimators at frozen critics.

  python -m benchmarks.sac_grad_variance --workdir=RUN_DIR \
      --steps=20000,50000,100000 --out=DIR
  python -m benchmarks.sac_grad_variance --out=DIR --report_only

For each requested checkpoint of a SAC run (keep them with
--config.keep_checkpoint_steps) and each seed of the run, the state is
restored and everything but the action noise is frozen: the actor, the
critics, alpha, and --num_batches replay batches drawn from the state's own
buffer with a fixed key. On each batch, `common.estimators.grad_moments`
draws --num_repeats actor-gradient estimates per arm with the same keys for
every arm (common random numbers):

  pathwise            reparameterised gradient, 1 action per state
                      (Haarnoja et al. 2018, Eq. 12);
  pathwise_8          the same, averaged over 8 actions per state (equal
                      samples with score_function_8);
  score_function_1    score function, 1 action per state, no baseline
                      (Williams 1992, Eq. 9);
  score_function_2/8  score function, 2 or 8 actions per state with the
                      leave-one-out baseline (Kool et al. 2019, Eq. 8).

All five estimate the gradient of the same objective (Eq. 7), so they differ
only in variance. Reported per seed, checkpoint and arm:

  total variance      sum over the actor parameters of the per-coordinate
                      variance of one estimate (the trace of its covariance),
                      averaged over the batches; `ratio` divides by pathwise's.
  cosine              cosine similarity of the arm's mean gradient with
                      pathwise's (all batches' coordinates concatenated).
                      Both means are noisy: `mean rel. SE`, sqrt(sum of
                      variances / R) / |pathwise mean|, is the noise-to-
                      signal ratio of an arm's mean; when it is large, a low
                      cosine says nothing about bias (the z-test does).
  z-test              per coordinate, the paired difference d = g_arm -
                      g_pathwise over the same keys: z = mean(d) / (std(d) /
                      sqrt(R)). Unbiased estimators give z ~ t(R-1): about 5% of
                      |z| > 1.96, 0.1% of |z| > 3.29, mean z^2 near 1.
                      Coordinates with std(d) = 0 are left out.

Cost per update: the time of one actor-gradient evaluation and of one full
`sac.learner.gradient_step` (critic, actor, temperature, targets) per arm, on
batch 0 of the first checkpoint's first seed, as ratios to pathwise
measured in this process with --timing_rounds interleaved rounds: the ratio
of the arms' median times and the ratio of their minimum times.

Across seeds, per checkpoint and arm: the IQM of the per-seed variance
ratios with a 95% percentile bootstrap CI over the seeds (Agarwal et al.
2021, Secs. 4.1 and 4.3; `common.seed_statistics`, seeded by the checkpoint
and arm), their range, the lowest cosine and the mean z-test figures.

Outputs in --out, each written atomically: grad_variance.md (tables),
grad_variance.json (all numbers, and the `common.provenance` record of the
measuring process) and grad_variance.png (IQM variance ratio vs checkpoint
with its CI, per-seed ratios as dots, log scale). `--report_only` rewrites
the .md and .png from an existing grad_variance.json, leaving it as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import time
import zlib
from typing import Any, Sequence

from absl import flags
import gymnasium as gym
import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

from benchmarks import command_line
from common import atomic_files
from common import checkpointing
from common import estimators
from common import provenance
from common import seed_statistics
from sac import learner
from sac import replay
from sac import state_layouts
from sac import train as sac_train

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

PATHWISE = "pathwise"
# Arm name -> (actor_grad, actions per state).
ARMS = {PATHWISE: (learner.PATHWISE, 1),
        "pathwise_8": (learner.PATHWISE, 8),
        "score_function_1": (learner.SCORE_FUNCTION, 1),
        "score_function_2": (learner.SCORE_FUNCTION, 2),
        "score_function_8": (learner.SCORE_FUNCTION, 8)}


# --------------------------------------------------------------------------
# The run: config, agents and the restored state.
# --------------------------------------------------------------------------


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"{workdir!r} is not a SAC run directory: no config.json.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def space_dims(env_id: str) -> tuple[int, int]:
  """(observation dimension, action dimension) of a Box-space environment."""
  env = gym.make(env_id)
  dims = env.observation_space.shape[0], env.action_space.shape[0]
  env.close()
  return dims


def arm_agents(config, obs_dim: int, action_dim: int,
               arms: Sequence[str] = tuple(ARMS)) -> dict[str, learner.Agent]:
  """One agent per arm: the run's agent with the arm's actor gradient."""
  unknown = [a for a in arms if a not in ARMS]
  if unknown or PATHWISE not in arms:
    raise ValueError(f"arms must be among {tuple(ARMS)} and include "
                     f"{PATHWISE!r}; got {tuple(arms)!r}.")
  agents = {}
  for name in arms:
    actor_grad, samples = ARMS[name]
    arm_config = ml_collections.ConfigDict(config.to_dict())
    arm_config.actor_grad = actor_grad
    if actor_grad == learner.PATHWISE:
      arm_config.pathwise_samples = samples
    else:
      arm_config.score_function_samples = samples
    agents[name] = sac_train.build_agent(arm_config, obs_dim, action_dim)
  return agents


def restore_state(workdir: str, config, agent: learner.Agent,
                  step: int) -> learner.SACState:
  """The run's SACState [S, ...] at checkpoint `step` (the one place that
  knows the checkpoint layout; the state template is built as sac/train.py
  builds it)."""
  seeds = [config.seed + i for i in range(config.num_seeds)]
  state_like = sac_train.init_states(agent, config, seeds)
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    available = checkpointer.all_steps()
    if step not in available:
      raise ValueError(
          f"no checkpoint at step {step} in {workdir!r}; available: "
          f"{available} (keep steps with --config.keep_checkpoint_steps).")
    state, _, _ = checkpointer.restore(step, state_like,
                                       layouts=state_layouts.layouts(
                                           config.buffer_size))
  finally:
    checkpointer.close()
  return state


def state_of_seed(state: learner.SACState, index: int) -> learner.SACState:
  """The state of the run's `index`-th seed (states are stacked over seeds)."""
  return jax.tree.map(lambda x: x[index], state)


def replay_batches(state: learner.SACState, key: jax.Array, num_batches: int,
                   batch_size: int) -> replay.Transition:
  """[K, B, ...] batches from one seed's buffer, the same for every arm."""
  keys = jax.random.split(key, num_batches)
  return jax.vmap(lambda k: replay.sample(state.buffer, k, batch_size))(keys)


# --------------------------------------------------------------------------
# Moments with common random numbers.
# --------------------------------------------------------------------------


def _flat(tree) -> jax.Array:
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def make_moment_fns(agents: dict[str, learner.Agent], *, num_repeats: int,
                    map_batch: int | None = None) -> dict[str, Any]:
  """Per arm, a compiled (state, obs [B, O], key) -> moments of the estimate.

  Each is one `grad_moments` call; for the score-function arms the estimate
  is paired with its difference from pathwise's on the same key, so the
  moments of the difference come from common random numbers.

  Args:
    agents: arm name -> agent (must include "pathwise").
    num_repeats: R >= 2 estimates per arm.
    map_batch: evaluate this many repeats at a time (memory bound).
  """
  def estimate(agent, state, obs, k):
    grad = learner.actor_gradient(
        agent, state.actor_params, state.critic_params, state.log_alpha, obs, k)
    return _flat(grad)

  def moments(agent, state, obs, key):
    def one(k):
      g = estimate(agent, state, obs, k)
      if agent is agents[PATHWISE]:
        return g, jnp.zeros_like(g)
      return g, g - estimate(agents[PATHWISE], state, obs, k)
    return estimators.grad_moments(one, key, num_repeats=num_repeats,
                                   batch_size=map_batch)

  return {name: jax.jit(functools.partial(moments, agent))
          for name, agent in agents.items()}


def gradient_moments(moment_fns: dict[str, Any], state: learner.SACState,
                     obs: jax.Array, key: jax.Array) -> dict[str, Any]:
  """Per-arm mean and variance of the actor gradient on one batch.

  Every arm is called with the same `key` (common random numbers).

  Args:
    moment_fns: from `make_moment_fns`.
    state: one seed's state (critics, actor, log alpha are read; the buffer
      is not).
    obs: [B, O] states of the batch.
    key: PRNG key.

  Returns:
    {"mean": {arm: [P]}, "variance": {arm: [P]}, "diff_mean": {arm: [P]},
    "diff_variance": {arm: [P]}} as float64 numpy arrays over the P actor
    parameters (diff: the arm minus pathwise, paired; zero for pathwise).
  """
  core = state.replace(buffer=None)
  out = {"mean": {}, "variance": {}, "diff_mean": {}, "diff_variance": {}}
  for name, fn in moment_fns.items():
    m = jax.device_get(fn(core, obs, key))
    out["mean"][name], out["diff_mean"][name] = (
        np.asarray(x, np.float64) for x in m.mean)
    out["variance"][name], out["diff_variance"][name] = (
        np.asarray(x, np.float64) for x in m.variance)
  return out


def summarize(per_batch: Sequence[dict[str, Any]], num_repeats: int
              ) -> dict[str, dict[str, float]]:
  """Per-arm total variance, ratio, cosine and z-test over the batches."""
  out = {}
  path_tv = np.array([m["variance"][PATHWISE].sum() for m in per_batch])
  path_mean = np.concatenate([m["mean"][PATHWISE] for m in per_batch])
  for arm in per_batch[0]["mean"]:
    tv = np.array([m["variance"][arm].sum() for m in per_batch])
    mean = np.concatenate([m["mean"][arm] for m in per_batch])
    cosine = float(mean @ path_mean / (np.linalg.norm(mean)
                                       * np.linalg.norm(path_mean)))
    row = {"total_variance": float(tv.mean()),
           "ratio": float(tv.mean() / path_tv.mean()),
           "ratio_min_batch": float((tv / path_tv).min()),
           "ratio_max_batch": float((tv / path_tv).max()),
           "cosine": cosine,
           "mean_rel_se": float(np.sqrt(sum(m["variance"][arm].sum()
                                            for m in per_batch) / num_repeats)
                                / np.linalg.norm(path_mean))}
    if arm != PATHWISE:   # Paired difference to pathwise, per coordinate.
      d_mean = np.concatenate([m["diff_mean"][arm] for m in per_batch])
      d_var = np.concatenate([m["diff_variance"][arm] for m in per_batch])
      ok = d_var > 0
      z = d_mean[ok] / np.sqrt(d_var[ok] / num_repeats)
      row.update(z_coords=int(ok.sum()),
                 z_frac_1_96=float(np.mean(np.abs(z) > 1.96)),
                 z_frac_3_29=float(np.mean(np.abs(z) > 3.29)),
                 z_mean_square=float(np.mean(z ** 2)),
                 z_max_abs=float(np.abs(z).max()))
    out[arm] = row
  return out


# --------------------------------------------------------------------------
# Cost per update.
# --------------------------------------------------------------------------


def _time_calls(fn, args, calls: int) -> float:
  start = time.perf_counter()
  for _ in range(calls):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / calls


def update_costs(agents: dict[str, learner.Agent], state: learner.SACState,
                 batch: replay.Transition, key: jax.Array, *, rounds: int,
                 calls: int) -> dict[str, dict[str, float]]:
  """Seconds per actor gradient and per gradient_step, arms interleaved.

  Returns arm -> {actor_grad_s, gradient_step_s (medians over rounds),
  actor_grad_ratio_median/min, gradient_step_ratio_median/min (to pathwise)}.
  """
  core = state.replace(buffer=None)
  fns = {}
  for name, agent in agents.items():
    fns[name] = {
        "actor_grad": (
            jax.jit(functools.partial(learner.actor_gradient, agent)),
            (core.actor_params, core.critic_params, core.log_alpha,
             batch.obs, key)),
        "gradient_step": (
            jax.jit(functools.partial(learner.gradient_step, agent)),
            (core, batch))}
  times = {name: {kind: [] for kind in fn} for name, fn in fns.items()}
  for name, per_kind in fns.items():   # Compile and warm up.
    for kind, (fn, args) in per_kind.items():
      jax.block_until_ready(fn(*args))
  for _ in range(rounds):
    for name, per_kind in fns.items():
      for kind, (fn, args) in per_kind.items():
        times[name][kind].append(_time_calls(fn, args, calls))
  out = {}
  for name, per_kind in times.items():
    row = {}
    for kind, ts in per_kind.items():
      ref = times[PATHWISE][kind]
      row[f"{kind}_s"] = float(np.median(ts))
      row[f"{kind}_ratio_median"] = float(np.median(ts) / np.median(ref))
      row[f"{kind}_ratio_min"] = float(np.min(ts) / np.min(ref))
    out[name] = row
  return out


# --------------------------------------------------------------------------
# The study and its report.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
  num_repeats: int = 400     # Estimates per arm and batch (R).
  num_batches: int = 4       # Replay batches per checkpoint and seed (K).
  batch_size: int | None = None  # States per batch; None: the run's.
  seed: int = 0              # Key of the batches and of the action noise.
  map_batch: int | None = 50  # Repeats evaluated at a time (memory).
  timing_rounds: int = 20    # Interleaved timing rounds.
  timing_calls: int = 5      # Calls per arm per round.
  arms: tuple[str, ...] = tuple(ARMS)  # Arms to measure (with pathwise).


def run(workdir: str, steps: Sequence[int], out: str,
        options: Options = Options()) -> dict[str, Any]:
  """Measures every (checkpoint, seed, arm); writes the report to `out`."""
  config = load_run_config(workdir)
  obs_dim, action_dim = space_dims(config.env_id)
  agents = arm_agents(config, obs_dim, action_dim, options.arms)
  batch_size = options.batch_size or config.batch_size
  key = jax.random.PRNGKey(options.seed)
  batch_key, noise_key, timing_key = jax.random.split(key, 3)
  results = new_results(
      env_id=config.env_id, actor_grad=config.actor_grad, workdir=workdir,
      options=dataclasses.asdict(options) | {"batch_size": batch_size})
  moment_fns = make_moment_fns(agents, num_repeats=options.num_repeats,
                               map_batch=options.map_batch)
  for step in steps:
    state = restore_state(workdir, config, agents[PATHWISE], step)
    for index in range(config.num_seeds):
      one = state_of_seed(state, index)
      batches = replay_batches(one, batch_key, options.num_batches, batch_size)
      per_batch = [gradient_moments(moment_fns, one, batches.obs[b],
                                    jax.random.fold_in(noise_key, b))
                   for b in range(options.num_batches)]
      record_variance(results, step, config.seed + index, per_batch,
                      options.num_repeats)
      if results["cost"] is None:
        results["cost"] = update_costs(
            agents, one, jax.tree.map(lambda x: x[0], batches), timing_key,
            rounds=options.timing_rounds, calls=options.timing_calls)
  write_report(results, out)
  return results


def new_results(*, env_id: str, actor_grad: str, workdir: str,
                options: dict[str, Any]) -> dict[str, Any]:
  """The grad_variance.json record of a run, before any measurement.

  Keys: env_id, actor_grad (the run's), workdir, options, variance (one
  entry per checkpoint and seed, `record_variance`), cost (`update_costs`,
  None until measured) and provenance (of the measuring process).
  """
  return {"env_id": env_id, "actor_grad": actor_grad,
          "workdir": os.path.abspath(workdir), "options": options,
          "variance": [], "cost": None, "provenance": provenance.record()}


def record_variance(results: dict[str, Any], step: int, seed: int,
                    per_batch: Sequence[dict[str, Any]],
                    num_repeats: int) -> None:
  """Appends {step, seed, arms: `summarize(per_batch)`} to the record."""
  results["variance"].append({"step": int(step), "seed": int(seed),
                              "arms": summarize(per_batch, num_repeats)})


def across_seeds(results: dict[str, Any]) -> list[dict[str, Any]]:
  """Per (checkpoint, arm other than pathwise): the seeds' ratios summarised.

  Returns rows with step, arm, seeds, iqm, ci (None below 2 seeds), the
  min and max ratio, the lowest cosine and the mean of each z-test figure
  over the seeds.
  """
  rows = []
  steps = sorted({e["step"] for e in results["variance"]})
  arms = [a for a in results["variance"][0]["arms"] if a != PATHWISE]
  for step in steps:
    entries = [e for e in results["variance"] if e["step"] == step]
    for arm in arms:
      per_seed = [e["arms"][arm] for e in entries]
      ratios = np.array([r["ratio"] for r in per_seed])
      ci = None
      if len(ratios) >= 2:
        low, high = seed_statistics.stratified_bootstrap_ci(
            [ratios], seed=zlib.crc32(f"{step}/{arm}".encode()))
        ci = (float(low), float(high))
      rows.append({
          "step": step, "arm": arm, "seeds": [e["seed"] for e in entries],
          "iqm": float(seed_statistics.iqm(ratios)), "ci": ci,
          "min": float(ratios.min()), "max": float(ratios.max()),
          "cosine_min": min(r["cosine"] for r in per_seed),
          **{k: float(np.mean([r[k] for r in per_seed]))
             for k in ("z_frac_1_96", "z_frac_3_29", "z_mean_square")}})
  return rows


def write_report(results: dict[str, Any], out: str, *,
                 with_json: bool = True) -> None:
  """Writes grad_variance.{json,md,png} into `out` (each atomically)."""
  os.makedirs(out, exist_ok=True)
  if with_json:
    atomic_files.write_json(os.path.join(out, "grad_variance.json"), results)
  atomic_files.write_text(os.path.join(out, "grad_variance.md"),
                          markdown(results))
  plot(results, os.path.join(out, "grad_variance.png"))


def markdown(results: dict[str, Any]) -> str:
  o = results["options"]
  lines = [
      f"# Actor-gradient variance: {results['env_id']} "
      f"({results['actor_grad']} run)", "",
      f"Frozen critics; {o['num_batches']} replay batches of "
      f"{o['batch_size']} states per checkpoint and seed; {o['num_repeats']} "
      "estimates per arm and batch, same keys for every arm. Ratio: total "
      "variance / pathwise's (min-max over batches). z-test: paired "
      "difference to pathwise per coordinate (unbiased: ~0.05, ~0.001, ~1).",
      "",
      "Across seeds: IQM of the per-seed ratios with a 95% bootstrap CI "
      "over the seeds (common/seed_statistics.py), their range, the lowest "
      "cosine and the z-test figures averaged over the seeds.", "",
      "| step | arm | seeds | ratio IQM [95% CI] | ratio range | lowest "
      "cosine | frac abs(z)>1.96 | frac abs(z)>3.29 | mean z^2 |",
      "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
  for row in across_seeds(results):
    ci = (f" [{row['ci'][0]:.3g}, {row['ci'][1]:.3g}]" if row["ci"]
          else "")
    lines.append(
        f"| {row['step']} | {row['arm']} | {len(row['seeds'])} | "
        f"{row['iqm']:.3g}{ci} | {row['min']:.3g}-{row['max']:.3g} | "
        f"{row['cosine_min']:.4f} | {row['z_frac_1_96']:.3f} | "
        f"{row['z_frac_3_29']:.4f} | {row['z_mean_square']:.2f} |")
  lines += [
      "", "Per seed:", "",
      "| step | seed | arm | total variance | ratio | ratio range | cosine "
      "| mean rel. SE | frac abs(z)>1.96 | frac abs(z)>3.29 | mean z^2 |",
      "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for entry in results["variance"]:
    for arm, r in entry["arms"].items():
      z = (("-",) * 3 if arm == PATHWISE else
           (f"{r['z_frac_1_96']:.3f}", f"{r['z_frac_3_29']:.4f}",
            f"{r['z_mean_square']:.2f}"))
      lines.append(
          f"| {entry['step']} | {entry['seed']} | {arm} | "
          f"{r['total_variance']:.4g} | {r['ratio']:.2f} | "
          f"{r['ratio_min_batch']:.2f}-{r['ratio_max_batch']:.2f} | "
          f"{r['cosine']:.4f} | {r['mean_rel_se']:.3g} | " + " | ".join(z)
          + " |")
  if results["cost"] is not None:
    lines += _cost_lines(results["cost"], o["timing_rounds"])
  if "provenance" in results:
    rec = results["provenance"]
    lines += ["", f"Software: {provenance.describe(rec)}. "
              f"Commit: {rec.get('commit')}. "
              f"Machine: {rec.get('machine')}."]
  return "\n".join(lines) + "\n"


def _cost_lines(cost: dict[str, dict[str, float]], rounds: int) -> list[str]:
  lines = ["", f"Cost per update ({rounds} interleaved rounds; ratio to "
           "pathwise: of median times, of minimum times):", "",
           "| arm | actor gradient (ms) | ratio | gradient_step (ms) | ratio |",
           "|---|---:|---:|---:|---:|"]
  for arm, c in cost.items():
    lines.append(
        f"| {arm} | {1e3 * c['actor_grad_s']:.2f} | "
        f"{c['actor_grad_ratio_median']:.2f}, "
        f"{c['actor_grad_ratio_min']:.2f} | "
        f"{1e3 * c['gradient_step_s']:.2f} | "
        f"{c['gradient_step_ratio_median']:.2f}, "
        f"{c['gradient_step_ratio_min']:.2f} |")
  return lines


def plot(results: dict[str, Any], path: str) -> None:
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  steps = sorted({e["step"] for e in results["variance"]})
  ax.axhline(1.0, color="k", ls="--", lw=1, label=PATHWISE)
  summary = across_seeds(results)
  for arm in dict.fromkeys(r["arm"] for r in summary):
    rows = [r for r in summary if r["arm"] == arm]
    line, = ax.plot(steps, [r["iqm"] for r in rows], "-o", label=arm)
    if all(r["ci"] for r in rows):
      ax.fill_between(steps, [r["ci"][0] for r in rows],
                      [r["ci"][1] for r in rows], color=line.get_color(),
                      alpha=0.2, lw=0)
    for s in steps:
      r = [e["arms"][arm]["ratio"] for e in results["variance"]
           if e["step"] == s]
      if len(r) > 1:
        ax.plot([s] * len(r), r, ".", color=line.get_color(), alpha=0.5)
  ax.set_yscale("log")
  ax.set_xlabel("checkpoint (env steps)")
  ax.set_ylabel("total variance / pathwise (IQM over seeds)")
  ax.set_title(f"Actor-gradient variance, {results['env_id']}")
  ax.legend(fontsize=8)
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=120, metadata={"Software": None})
  plt.close(fig)
  atomic_files.write_bytes(path, png.getvalue())


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string("workdir", None, "SAC run directory.",
                               flag_values=FLAGS)
_STEPS = command_line.define_integer_list(
    "steps", None, "Checkpoint steps, e.g. 20000,50000.", FLAGS)
_OUT = flags.DEFINE_string("out", None, "Output directory for the report.",
                           flag_values=FLAGS, required=True)
_NUM_REPEATS = flags.DEFINE_integer(
    "num_repeats", Options.num_repeats, "Estimates per arm and batch.",
    lower_bound=2, flag_values=FLAGS)
_NUM_BATCHES = flags.DEFINE_integer(
    "num_batches", Options.num_batches,
    "Replay batches per checkpoint and seed.", lower_bound=1,
    flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "States per batch; default: the run's.",
    lower_bound=1, flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", Options.seed,
                             "Key of batches and noise.", flag_values=FLAGS)
_TIMING_ROUNDS = flags.DEFINE_integer(
    "timing_rounds", Options.timing_rounds, "Interleaved timing rounds.",
    lower_bound=1, flag_values=FLAGS)
_ARMS = flags.DEFINE_list("arms", list(ARMS),
                          "Arms to measure (with pathwise).",
                          flag_values=FLAGS)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False,
    "Rewrite the .md and .png from --out's grad_variance.json; measure "
    "nothing.", flag_values=FLAGS)


def main(argv=None) -> None:
  command_line.parse(FLAGS, argv, doc=__doc__)
  out = _OUT.value
  if _REPORT_ONLY.value:
    path = os.path.join(out, "grad_variance.json")
    if not os.path.exists(path):
      raise SystemExit(f"--report_only: {path!r} does not exist; run the "
                       "measurement first.")
    with open(path) as f:
      results = json.load(f)
    write_report(results, out, with_json=False)
    print(markdown(results))
    return
  if not _WORKDIR.value or not _STEPS.value:
    command_line.usage_error(
        f"need --workdir and --steps (or --report_only); got "
        f"--workdir={_WORKDIR.value!r}, --steps={_STEPS.value!r}.")
  options = Options(num_repeats=_NUM_REPEATS.value,
                    num_batches=_NUM_BATCHES.value,
                    batch_size=_BATCH_SIZE.value, seed=_SEED.value,
                    timing_rounds=_TIMING_ROUNDS.value,
                    arms=tuple(_ARMS.value))
  run(_WORKDIR.value, _STEPS.value, out, options)
  with open(os.path.join(out, "grad_variance.json")) as f:
    print(markdown(json.load(f)))


if __name__ == "__main__":
  main()
