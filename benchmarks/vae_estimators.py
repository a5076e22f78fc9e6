"""Every encoder-gradient estimator of a VAE preset, side by side.

For a preset (`gaussian`: pathwise vs score function; `categorical`:
Gumbel-softmax, straight-through Gumbel, score function, REBAR, RELAX) it
trains each estimator for the same number of steps on the same seeds (the
training loop of `vae.train`: same data, keys and evaluation), then reports:
  - the test bound: -ELBO on the fixed binarised test set (nats, `eval_samples`
    latent samples per digit) at the end, and the importance-weighted
    estimate of -log p(x) with `iw_samples` samples (Burda et al. 2016, Eq. 8);
  - the variance of the encoder gradient, measured with
    `common.estimators.grad_moments` (`num_repeats` estimates of the
    batch-mean gradient on one fixed batch of training digits, the same keys
    for every estimator: common random numbers) at three fixed checkpoints of
    the first estimator's seed-0 run: after the first evaluation (early), at
    half of the steps (middle) and at the end. REBAR and RELAX use their own
    control-variate parameters from the same step of their seed-0 run.
    Reported as the trace of the covariance (sum of the per-parameter
    variances over all encoder parameters) and the squared norm of the
    mean gradient;
  - the time per training step: jitted chunks of `timing_steps` updates, the
    estimators interleaved round by round in this process; the median over
    rounds and the median of the per-round ratio to the first estimator.
Below that table, a second one compares every estimator with the score
function (`--compare_to`): its test -ELBO minus the score function's per seed
(paired: the same seed gives both the same data and initialisation) and its
variance divided by the score function's at each checkpoint.
Writes `vae_estimators_PRESET.md` (tables), `vae_estimators_PRESET.png`
(learning curves and variance) and `vae_estimators_PRESET.json` (raw) to
--out_dir; `--from_json=FILE` rewrites the tables and figure from a saved
JSON without training.

Run (sizes used for docs/results.md):
  python -m benchmarks.vae_estimators --preset=gaussian --num_steps=6000 \
      --eval_every=500 --seeds=0,1 --num_repeats=100 --out_dir=OUT
  python -m benchmarks.vae_estimators --preset=categorical --num_steps=2000 \
      --eval_every=250 --seeds=0 --iw_samples=200 --num_repeats=64 \
      --out_dir=OUT
  python -m benchmarks.vae_estimators \
      --from_json=OUT/vae_estimators_categorical.json --out_dir=OUT
Tiny smoke run:
  python -m benchmarks.vae_estimators --preset=categorical --tiny \
      --out_dir=/tmp/vae_bench
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import command_line
from common import atomic_files
from common import checkpointing
from common import csv_logs
from common import estimators
from common import seed_statistics
from common import training_loop
from launch.configs import vae as vae_configs
from vae import data as vae_data
from vae import gradients
from vae import train as vae_train

ESTIMATORS = {"gaussian": ("encoder_grad", gradients.GAUSSIAN_ENCODER_GRADS),
              "categorical": ("estimator", gradients.CATEGORICAL_ESTIMATORS)}


def make_config(args, estimator: str, seed: int):
  """The preset's config for one estimator and seed (benchmark sizes)."""
  config = vae_configs.get_config("test" if args.tiny else args.preset)
  if args.tiny:
    config.model = args.preset
  field, _ = ESTIMATORS[args.preset]
  config[field] = estimator
  config.seed = seed
  config.num_steps = args.num_steps
  config.eval_every = args.eval_every
  config.iw_samples = args.iw_samples
  config.tensorboard = False
  config.progress_bar = False
  vae_train.check_config(config)
  return config


class Run:
  """One estimator's training parts, as `vae.train.train` builds them."""

  def __init__(self, config, digits):
    self.config = config
    self.digits = digits
    self.model = vae_train.make_model(config)
    rng = jax.random.key(config.seed)
    # The same key roles as vae.train.train.
    self.k_init, self.k_eval, self.k_train, self.k_final, _ = (
        jax.random.split(rng, 5))
    self.state = vae_train.init_state(self.model, config, self.k_init,
                                      *vae_train.make_optimizers(config))
    self.grad_fn = vae_train.make_grad_fn(self.model, config)


def train_run(run: Run, checkpoint_steps, workdir: str):
  """Trains to num_steps in the trainers' loop (`common.training_loop`),
  with checkpoints kept at `checkpoint_steps` in `workdir` (a rerun
  resumes); returns (curve rows, {step: (params, cv_params)})."""
  config = run.config
  program = dataclasses.replace(
      vae_train.make_program(run.model, config, run.digits, run.k_train,
                             run.k_eval),
      checkpoint_every=training_loop.Every(None,
                                           on_steps=tuple(checkpoint_steps)))
  template = run.state
  with checkpointing.open_run(workdir, config,
                              allowed_changes=vae_train.RESUME_ALLOWED,
                              keep_steps=checkpoint_steps) as checkpoints:
    run.state, _ = training_loop.run(
        checkpoints, template, program, workdir=workdir,
        num_steps=config.num_steps, tensorboard=False, progress_bar=False)
    saved = {}
    for step in checkpoint_steps:
      state, _, _ = checkpoints.checkpointer.restore(step, template,
                                                     with_host=False)
      saved[step] = jax.tree.map(np.asarray, (state.params, state.cv_params))
  rows = [{"step": int(r["step"]), "test_neg_elbo": float(r["test_neg_elbo"])}
          for r in csv_logs.read_csv(os.path.join(workdir, "eval.csv"))]
  return rows, saved


def encoder_variance(run: Run, params, cv_params, x, key, step, *,
                     num_repeats: int):
  """(trace of the covariance, squared norm of the mean) of the encoder
  gradient of the batch-mean -ELBO, over num_repeats keys."""
  step = jnp.asarray(step, jnp.int32)

  def grad_fn(k):
    grads, _, _ = run.grad_fn(params, cv_params, x, k, step)
    return grads["encoder"]

  moments = jax.jit(lambda k: estimators.grad_moments(
      grad_fn, k, num_repeats=num_repeats, batch_size=4))(key)
  trace = sum(float(jnp.sum(v)) for v in jax.tree.leaves(moments.variance))
  mean_sq = sum(float(jnp.sum(jnp.square(m)))
                for m in jax.tree.leaves(moments.mean))
  return trace, mean_sq


def time_steps(runs: dict, *, timing_steps: int, rounds: int):
  """Seconds per update of each run, interleaved; returns per-round lists."""
  chunks = {}
  for name, run in runs.items():
    chunks[name] = vae_train.make_train_chunk(
        run.model, run.config, run.k_train, run.digits.train,
        length=timing_steps)
    run.state, _ = chunks[name](run.state)
    jax.block_until_ready(run.state)  # Compiled and warm.
  seconds = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      run.state, _ = chunks[name](run.state)
      jax.block_until_ready(run.state)
      seconds[name].append((time.perf_counter() - start) / timing_steps)
  return seconds


FLAGS = flags.FlagValues()
flags.DEFINE_enum("preset", None, sorted(ESTIMATORS), "The VAE preset.",
                  flag_values=FLAGS)
flags.DEFINE_string("estimators", "", "Comma-separated subset (default: all).",
                    flag_values=FLAGS)
flags.DEFINE_string("seeds", "0", "Comma-separated seeds.", flag_values=FLAGS)
flags.DEFINE_integer("num_steps", 2000, "Training steps per run.",
                     flag_values=FLAGS)
flags.DEFINE_integer("eval_every", 250, "Steps between evaluations.",
                     flag_values=FLAGS)
flags.DEFINE_integer("iw_samples", 1000,
                     "Samples of the importance-weighted bound.",
                     flag_values=FLAGS)
flags.DEFINE_integer("num_repeats", 64,
                     "Gradient estimates per variance measurement.",
                     flag_values=FLAGS)
flags.DEFINE_integer("timing_steps", 20, "Updates per timed chunk.",
                     flag_values=FLAGS)
flags.DEFINE_integer("timing_rounds", 5, "Interleaved timing rounds.",
                     flag_values=FLAGS)
flags.DEFINE_bool("tiny", False, "Sizes of the `test` config (smoke run).",
                  flag_values=FLAGS)
flags.DEFINE_string("compare_to", "score_function",
                    "Estimator the comparison table divides by (no "
                    "comparison table when it was not run).",
                    flag_values=FLAGS)
command_line.define_outputs(FLAGS, from_json=True)


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  args = types.SimpleNamespace(**FLAGS.flag_values_dict())
  if args.from_json:
    training_flags = [f"--{name}" for name in ("preset", "estimators")
                      if getattr(args, name)]
    if training_flags:
      command_line.usage_error(
          f"--from_json takes the run's settings from the JSON; "
          f"drop {training_flags}.")
    results = load_results(args.from_json)
    if args.compare_to not in results["finals"]:
      command_line.usage_error(
          f"--compare_to={args.compare_to!r} is not among the "
          f"JSON's estimators {list(results['finals'])}.")
    write_outputs(results, args.out_dir, compare_to=args.compare_to)
    return
  if args.preset is None:
    command_line.usage_error("--preset is required (or --from_json).")
  if args.num_steps % (2 * args.eval_every):
    command_line.usage_error(
        "--num_steps must be a multiple of 2 * --eval_every.")
  field, all_names = ESTIMATORS[args.preset]
  names = tuple(args.estimators.split(",")) if args.estimators else all_names
  unknown = [n for n in names if n not in all_names]
  if unknown:
    command_line.usage_error(
        f"unknown estimators {unknown}; choose from {all_names}.")
  seeds = [int(s) for s in args.seeds.split(",")]
  os.makedirs(args.out_dir, exist_ok=True)
  checkpoint_steps = (args.eval_every, args.num_steps // 2, args.num_steps)

  curves = {n: {} for n in names}
  finals = {n: {} for n in names}
  saved = {}
  runs_seed0 = {}
  for seed in seeds:
    digits = vae_data.load_mnist(
        seed=seed, num_train=make_config(args, names[0], seed).num_train,
        num_test=make_config(args, names[0], seed).num_test)
    for name in names:
      run = Run(make_config(args, name, seed), digits)
      start = time.time()
      curves[name][seed], checkpoints = train_run(
          run, checkpoint_steps,
          os.path.join(args.out_dir, "runs", f"{name}_seed{seed}"))
      log_px = vae_train.importance_weighted_log_px(
          run.model, run.state.params, digits.test, run.k_final,
          num_samples=args.iw_samples, chunk=run.config.iw_batch)
      finals[name][seed] = {
          "test_neg_elbo": curves[name][seed][-1]["test_neg_elbo"],
          "test_neg_log_px_iw": -float(log_px),
          "train_seconds": time.time() - start}
      print(f"seed {seed} {name}: {finals[name][seed]}", flush=True)
      if seed == seeds[0]:
        saved[name] = checkpoints
        runs_seed0[name] = run

  # Variance at the reference run's checkpoints, common random numbers.
  reference = names[0]
  digits0 = runs_seed0[reference].digits
  x_fixed = vae_data.sample_batch(jax.random.key(1234), digits0.train,
                                  batch_size=runs_seed0[reference].config
                                  .batch_size)
  key_var = jax.random.key(5678)
  variance = {n: {} for n in names}
  for step in checkpoint_steps:
    params = saved[reference][step][0]
    for name in names:
      cv_params = saved[name][step][1]
      trace, mean_sq = encoder_variance(
          runs_seed0[name], params, cv_params, x_fixed, key_var, step,
          num_repeats=args.num_repeats)
      variance[name][step] = {"trace_variance": trace, "mean_sq_norm": mean_sq}
      print(f"variance step {step} {name}: {variance[name][step]}",
            flush=True)

  seconds = time_steps(runs_seed0, timing_steps=args.timing_steps,
                       rounds=args.timing_rounds)
  timing = {}
  for name in names:
    ratios = [s / r for s, r in zip(seconds[name], seconds[reference])]
    timing[name] = {"ms_per_step": 1e3 * statistics.median(seconds[name]),
                    "ratio": statistics.median(ratios)}
  print("timing", timing, flush=True)

  results = {"args": vars(args), "field": field, "curves": curves,
             "finals": finals, "variance": variance, "timing": timing,
             "checkpoint_steps": checkpoint_steps}
  stem = os.path.join(args.out_dir, f"vae_estimators_{args.preset}")
  atomic_files.write_text(stem + ".json",
                          json.dumps(results, indent=1, default=str))
  write_outputs(results, args.out_dir, compare_to=args.compare_to)


def load_results(path: str) -> dict:
  """A saved JSON with its integer keys (seeds, steps) restored."""
  with open(path) as f:
    results = json.load(f)
  int_keys = lambda d: {int(k): v for k, v in d.items()}
  for part in ("curves", "finals", "variance"):
    results[part] = {n: int_keys(d) for n, d in results[part].items()}
  results["checkpoint_steps"] = [int(s) for s in results["checkpoint_steps"]]
  return results


def write_outputs(results: dict, out_dir: str, *, compare_to: str) -> None:
  """`vae_estimators_PRESET.md` (both tables) and `.png` in out_dir."""
  names = list(results["finals"])
  seeds = sorted(results["finals"][names[0]])
  text = markdown_table(results, names, seeds)
  if compare_to in names:
    text += "\n" + comparison_table(results, names, seeds, compare_to)
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, f"vae_estimators_{results['args']['preset']}")
  atomic_files.write_text(stem + ".md", text)
  plot(results, names, seeds, stem + ".png")
  print(text)


def _mean_sd(values):
  values = list(values)
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{np.mean(values):.1f} ± {seed_statistics.sample_std(values):.1f}"


def markdown_table(results, names, seeds) -> str:
  steps = results["checkpoint_steps"]
  finals, variance, timing = (results["finals"], results["variance"],
                              results["timing"])
  seed_note = ("mean ± sd over seeds " + ",".join(map(str, seeds))
               if len(seeds) > 1 else f"seed {seeds[0]}")
  lines = [
      f"| {results['field']} | test -ELBO (nats) | test -log p(x), IW "
      f"k={results['args']['iw_samples']} | "
      + " | ".join(f"enc. grad variance @ {s}" for s in steps)
      + " | ms / step | time ratio |",
      "|" + "---|" * (5 + len(steps))]
  for name in names:
    lines.append(
        f"| {name} | "
        f"{_mean_sd(finals[name][s]['test_neg_elbo'] for s in seeds)}"
        f" | {_mean_sd(finals[name][s]['test_neg_log_px_iw'] for s in seeds)}"
        " | " + " | ".join(f"{variance[name][s]['trace_variance']:.3g}"
                           for s in steps)
        + f" | {timing[name]['ms_per_step']:.1f}"
        f" | {timing[name]['ratio']:.2f} |")
  lines.append("")
  lines.append(f"Test bounds: {seed_note}, after {results['args']['num_steps']}"
               " steps. Variance: trace of the covariance of the encoder "
               "gradient (batch of "
               "training digits fixed, common random numbers, "
               f"{results['args']['num_repeats']} repeats) at the checkpoints "
               f"of the {names[0]} run (seed {seeds[0]}). Time ratio: median "
               f"per-round ratio to {names[0]}, interleaved in one process.")
  return "\n".join(lines) + "\n"


def comparison_table(results, names, seeds, reference: str) -> str:
  """Each estimator against `reference`: paired -ELBO differences per seed
  and variance ratios per checkpoint.

  Example:
    >>> results = {
    ...     "checkpoint_steps": [10],
    ...     "finals": {"a": {0: {"test_neg_elbo": 100.0}},
    ...                "b": {0: {"test_neg_elbo": 110.5}}},
    ...     "variance": {"a": {10: {"trace_variance": 2.0}},
    ...                  "b": {10: {"trace_variance": 50.0}}}}
    >>> print(comparison_table(results, ["a", "b"], [0], "b"))
    | estimator | test -ELBO − b (nats), seed 0 | variance / b's @ 10 |
    |---|---|---|
    | a | -10.5 | 0.0400 |
    | b | 0.0 | 1.00 |
    <BLANKLINE>
  """
  steps = results["checkpoint_steps"]
  finals, variance = results["finals"], results["variance"]
  def difference(name, seed):
    value = (finals[name][seed]["test_neg_elbo"]
             - finals[reference][seed]["test_neg_elbo"])
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text

  def ratio(name, step):
    value = (variance[name][step]["trace_variance"]
             / variance[reference][step]["trace_variance"])
    return f"{value:#.3g}"

  seed_text = ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(
      map(str, seeds))
  lines = [f"| estimator | test -ELBO − {reference} (nats), {seed_text} | "
           + " | ".join(f"variance / {reference}'s @ {s}" for s in steps)
           + " |", "|" + "---|" * (2 + len(steps))]
  for name in names:
    diffs = ", ".join(difference(name, s) for s in seeds)
    ratios = " | ".join(ratio(name, s) for s in steps)
    lines.append(f"| {name} | {diffs} | {ratios} |")
  return "\n".join(lines) + "\n"


def plot(results, names, seeds, png_path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_curve, ax_var) = plt.subplots(1, 2, figsize=(11, 4))
  for name in names:
    steps = [r["step"] for r in results["curves"][name][seeds[0]]]
    values = np.mean([[r["test_neg_elbo"] for r in results["curves"][name][s]]
                      for s in seeds], axis=0)
    ax_curve.plot(steps, values, marker="o", ms=3, label=name)
    var_steps = results["checkpoint_steps"]
    ax_var.plot(var_steps, [results["variance"][name][s]["trace_variance"]
                            for s in var_steps], marker="o", label=name)
  ax_curve.set_xlabel("training step")
  ax_curve.set_ylabel("test -ELBO (nats)"
                      + (f", mean of {len(seeds)} seeds" if len(seeds) > 1
                         else ""))
  low = min(min(r["test_neg_elbo"] for r in results["curves"][n][seeds[0]])
            for n in names)
  ax_curve.set_ylim(low - 5, low + 60)
  ax_curve.grid(alpha=0.3)
  ax_curve.legend(fontsize=8)
  ax_var.set_yscale("log")
  ax_var.set_xlabel(f"checkpoint step ({names[0]} run)")
  ax_var.set_ylabel("encoder gradient variance (trace)")
  ax_var.grid(alpha=0.3, which="both")
  ax_var.legend(fontsize=8)
  fig.suptitle(f"VAE estimators: {results['args']['preset']} preset")
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)


if __name__ == "__main__":
  main()
