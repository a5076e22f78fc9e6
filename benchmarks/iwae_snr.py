"""Signal-to-noise ratio of the IWAE gradients against K, on a trained VAE.

Reproduces the measurement of Rainforth et al. 2018 (Sec. 3 and 5) and
Tucker et al. 2019 (Sec. 6) on the Gaussian VAE of `vae/`. It trains one
Gaussian VAE in the trainers' loop (`vae.train`, the `gaussian` preset, or
the tiny `test` one with --tiny; by default on the ELBO, K = 1), keeping its
checkpoints at --checkpoint_steps (0 = the initial parameters). At each
checkpoint, for each K in --ks and each estimator in --estimators ("iwae",
"stl", "dreg"), it draws --num_repeats estimates of the gradient of the
batch-mean -L_K (`vae.iwae.gaussian_iwae_grads`, one K-sample bound per
digit) on one fixed batch of --batch_size training digits, and reports for
the encoder and for the decoder the signal-to-noise ratio of each parameter
(Rainforth et al. 2018, Sec. 3),

    SNR_j = |E[g_j]| / std[g_j],

mean and median over the network's parameters whose estimates vary (a dead
ReLU unit's gradient is exactly 0 on every draw and is left out). Every
estimator and K at a checkpoint uses the same keys (common random numbers:
the same draws across estimators; K draws per digit, so K changes the
draws). The decoder gradient does not depend on the estimator
(`vae.iwae`). The table also gives the least-squares slope of log SNR
against log K.

The theory (Rainforth et al. 2018, Theorem 1): with the standard IWAE
gradient the encoder's SNR falls as 1/sqrt(K) and the decoder's grows as
sqrt(K); DReG's encoder SNR does not fall (Tucker et al. 2019, Sec. 6, it
grows as sqrt(K)); STL's encoder gradient is biased for K > 1. The figure
plots SNR against K on log-log axes with the slopes 1/sqrt(K) and sqrt(K).

Writes `iwae_snr.json` (raw), `iwae_snr.md` (tables) and `iwae_snr.png` to
--out_dir (the training run in --out_dir/run: a rerun resumes it);
`--from_json=FILE` rewrites the tables and figure from a saved JSON.

Run (the Gaussian preset, 10,000 steps; checkpoints 0, 5,000, 10,000):
  python -m benchmarks.iwae_snr --num_repeats=200 --out_dir=OUT
  python -m benchmarks.iwae_snr --from_json=OUT/iwae_snr.json --out_dir=OUT
Tiny smoke run:
  python -m benchmarks.iwae_snr --tiny --num_steps=200 --eval_every=100 \
      --ks=1,4,16 --num_repeats=20 --out_dir=/tmp/iwae_snr
The learning comparison of "iwae" and "dreg" at K = 16 over 3 seeds is the
`iwae_estimators` study:
  python -m launch.ablate --study=iwae_estimators --workdir=OUT
"""

from __future__ import annotations

import functools
import io
import json
import os
import types

from absl import flags
import jax
import numpy as np

from benchmarks import command_line
from benchmarks import vae_estimators
from common import atomic_files
from common import estimators
from launch.configs import vae as vae_configs
from vae import data as vae_data
from vae import iwae
from vae import train as vae_train

NETWORKS = ("encoder", "decoder")


def snr_summary(mean, variance) -> dict:
  """Per-parameter SNR |mean| / sqrt(variance), summarised over a network.

  Parameters whose variance is 0 (the same gradient on every draw) are left
  out and counted.

  Example:
    >>> import numpy as np
    >>> s = snr_summary({"w": np.array([1.0, -2.0, 0.0]), "b": np.array(3.0)},
    ...                 {"w": np.array([1.0, 4.0, 0.0]), "b": np.array(9.0)})
    >>> s["mean"], s["median"], s["num_params"], s["num_constant"]
    (1.0, 1.0, 3, 1)
  """
  flat_mean = np.concatenate([np.ravel(np.asarray(m, np.float64))
                              for m in jax.tree.leaves(mean)])
  flat_variance = np.concatenate([np.ravel(np.asarray(v, np.float64))
                                  for v in jax.tree.leaves(variance)])
  varies = flat_variance > 0
  snr = np.abs(flat_mean[varies]) / np.sqrt(flat_variance[varies])
  return {"mean": float(np.mean(snr)), "median": float(np.median(snr)),
          "num_params": int(np.sum(varies)),
          "num_constant": int(np.sum(~varies))}


def log_log_slope(ks, values) -> float:
  """Least-squares slope of log(values) against log(ks).

  Example:
    >>> round(log_log_slope([1, 4, 16], [2.0, 1.0, 0.5]), 6)  # 2 / sqrt(K)
    -0.5
  """
  return float(np.polyfit(np.log(ks), np.log(values), 1)[0])


@functools.cache
def _moments_fn(model, num_importance_samples: int, estimator: str,
                num_repeats: int):
  """Jitted (params, x, key) -> GradMoments of the batch-mean -L_K gradient
  (one compilation per K and estimator, reused at every checkpoint)."""

  def moments(params, x, key):
    def grad_fn(k):
      grads, _ = iwae.gaussian_iwae_grads(
          model, params, x, k, num_importance_samples=num_importance_samples,
          num_samples=1, estimator=estimator)
      return grads
    return estimators.grad_moments(grad_fn, key, num_repeats=num_repeats,
                                   batch_size=10)

  return jax.jit(moments)


def gradient_snr(model, params, x, key, *, num_importance_samples: int,
                 estimator: str, num_repeats: int) -> dict:
  """{network: snr_summary} of the gradient of the batch-mean -L_K."""
  moments = _moments_fn(model, num_importance_samples, estimator,
                        num_repeats)(params, x, key)
  return {n: snr_summary(moments.mean[n], moments.variance[n])
          for n in NETWORKS}


def weight_diagnostics(model, params, x, key, *, num_samples: int) -> dict:
  """How far the K-sample bound is from its large-K regime, per digit.

  Rainforth et al. 2018 (Theorem 1) expand L_K in 1/K around log p(x): the
  bias is Var[w] / (2 K Z^2) + O(1/K^2), with w = p(x, z) / q(z|x) and
  Z = E[w] = p(x), so their SNR rates hold once K is large against the
  relative variance Var[w] / Z^2. Draws `num_samples` z per digit from q
  and returns, averaged over the digits of x, the sample std (ddof = 1) of
  log w and the effective sample size fraction
  ESS / S = (sum_s w_s)^2 / (S sum_s w_s^2) (Kong 1992), which estimates
  1 / (1 + Var[w] / Z^2) when S is large enough to see the weights' tail
  (and overestimates it otherwise).

  Example:
    >>> import jax
    >>> from vae import models
    >>> model = models.GaussianVAE(hidden=(8,), num_latents=2)
    >>> params = model.init(jax.random.key(0))
    >>> x = (jax.random.uniform(jax.random.key(1), (3, 784)) < 0.5) * 1.0
    >>> d = weight_diagnostics(model, params, x, jax.random.key(2),
    ...                        num_samples=50)
    >>> 0 < d["ess_fraction"] <= 1, d["log_weight_std"] > 0
    (True, True)
  """
  log_w = np.asarray(model.log_weights(params, x, key,
                                       num_samples=num_samples), np.float64)
  log_w = log_w - log_w.max(axis=-1, keepdims=True)
  w = np.exp(log_w)
  ess = w.sum(axis=-1) ** 2 / (w ** 2).sum(axis=-1)
  return {"num_samples": num_samples,
          "log_weight_std": float(np.mean(np.std(log_w, axis=-1, ddof=1))),
          "ess_fraction": float(np.mean(ess / num_samples))}


def make_config(args):
  """The trained model's config (benchmark sizes)."""
  config = vae_configs.get_config("test" if args.tiny else "gaussian")
  config.seed = args.seed
  config.num_steps = args.num_steps
  config.eval_every = args.eval_every
  config.num_importance_samples = args.train_num_importance_samples
  config.iwae_estimator = args.train_estimator
  if args.train_num_importance_samples > 1:
    config.num_samples = 1  # One K-sample bound per digit (Burda et al.).
  config.tensorboard = False
  config.progress_bar = False
  vae_train.check_config(config)
  return config


def _checked_args(args):
  """Usage errors for flags that are bad together; returns the steps."""
  if args.num_steps % args.eval_every:
    command_line.usage_error(
        f"--num_steps={args.num_steps} must be a multiple of "
        f"--eval_every={args.eval_every}.")
  steps = args.checkpoint_steps or [
      0, args.num_steps // 2 // args.eval_every * args.eval_every,
      args.num_steps]
  steps = sorted(set(steps))
  bad = [s for s in steps
         if s < 0 or s > args.num_steps or s % args.eval_every]
  if bad:
    command_line.usage_error(
        f"--checkpoint_steps {bad}: each must be 0 or a multiple of "
        f"--eval_every={args.eval_every} up to --num_steps="
        f"{args.num_steps}.")
  unknown = [e for e in args.estimators if e not in iwae.ESTIMATORS]
  if unknown:
    command_line.usage_error(f"unknown --estimators {unknown}; choose from "
                             f"{list(iwae.ESTIMATORS)}.")
  if any(k < 1 for k in args.ks):
    command_line.usage_error(f"--ks must be integers >= 1; got {args.ks}.")
  if args.num_repeats < 2:
    command_line.usage_error(
        f"--num_repeats must be >= 2 (a variance); got {args.num_repeats}.")
  return steps


def measure(args) -> dict:
  """Trains, then measures the SNR at every checkpoint; the results dict."""
  steps = _checked_args(args)
  config = make_config(args)
  digits = vae_data.load_mnist(seed=config.seed, num_train=config.num_train,
                               num_test=config.num_test)
  run = vae_estimators.Run(config, digits)
  initial = jax.tree.map(np.asarray, run.state.params)
  trained = [s for s in steps if s > 0]
  curve, saved = [], {}
  if trained:
    curve, saved = vae_estimators.train_run(
        run, trained, os.path.join(args.out_dir, "run"))
  params = {s: (initial if s == 0 else saved[s][0]) for s in steps}
  x = vae_data.sample_batch(jax.random.key(1234), digits.train,
                            batch_size=args.batch_size)
  key = jax.random.key(5678)
  snr, weights = {}, {}
  for step in steps:
    weights[step] = weight_diagnostics(
        run.model, params[step], x, jax.random.key(91011),
        num_samples=args.weight_samples)
    print(f"step {step} weights: {weights[step]}", flush=True)
    snr[step] = {}
    for estimator in args.estimators:
      snr[step][estimator] = {}
      for k in args.ks:
        snr[step][estimator][k] = gradient_snr(
            run.model, params[step], x, key, num_importance_samples=k,
            estimator=estimator, num_repeats=args.num_repeats)
        print(f"step {step} {estimator} K={k}: encoder "
              f"{snr[step][estimator][k]['encoder']['mean']:.4g}, decoder "
              f"{snr[step][estimator][k]['decoder']['mean']:.4g}",
              flush=True)
  return {"args": {n: getattr(args, n) for n in sorted(vars(args))},
          "checkpoint_steps": steps, "ks": list(args.ks),
          "estimators": list(args.estimators), "curve": curve, "snr": snr,
          "weights": weights}


def load_results(path: str) -> dict:
  """A saved JSON with its integer keys (steps, K) restored."""
  with open(path) as f:
    results = json.load(f)
  results["snr"] = {
      int(step): {e: {int(k): v for k, v in by_k.items()}
                  for e, by_k in by_estimator.items()}
      for step, by_estimator in results["snr"].items()}
  results["weights"] = {int(step): v
                        for step, v in results.get("weights", {}).items()}
  return results


def markdown_tables(results: dict) -> str:
  """One table per network: mean SNR per K, and the log-log slope."""
  ks = results["ks"]
  args = results["args"]
  lines = []
  for network in NETWORKS:
    lines += [f"{network.capitalize()} gradient SNR (mean over parameters; "
              "median in brackets):", "",
              "| step | estimator | " + " | ".join(f"K = {k}" for k in ks)
              + " | slope |",
              "|---:|---|" + "---:|" * (len(ks) + 1)]
    for step in results["checkpoint_steps"]:
      for estimator in results["estimators"]:
        by_k = results["snr"][step][estimator]
        means = [by_k[k][network]["mean"] for k in ks]
        cells = [f"{by_k[k][network]['mean']:.3g} "
                 f"({by_k[k][network]['median']:.3g})" for k in ks]
        slope = (f"{log_log_slope(ks, means):+.2f}" if len(ks) > 1
                 else "-")
        lines.append(f"| {step} | {estimator} | " + " | ".join(cells)
                     + f" | {slope} |")
    lines.append("")
  if results.get("weights"):
    lines += ["Importance weights w = p(x, z) / q(z|x) on the same digits "
              "(mean over digits):", "",
              "| step | std of log w (nats) | ESS / S | S |",
              "|---:|---:|---:|---:|"]
    for step in results["checkpoint_steps"]:
      d = results["weights"][step]
      lines.append(f"| {step} | {d['log_weight_std']:.3g} | "
                   f"{d['ess_fraction']:.3g} | {d['num_samples']} |")
    lines.append("")
  train_k = args["train_num_importance_samples"]
  trained_on = ("the ELBO (K = 1)" if train_k == 1 else
                f"the K = {train_k} bound ({args['train_estimator']})")
  lines.append(
      f"Gaussian VAE ({'test' if args['tiny'] else 'gaussian'} preset, seed "
      f"{args['seed']}) trained on {trained_on} for {args['num_steps']} "
      f"steps; SNR of the gradient of the batch-mean -L_K over "
      f"{args['num_repeats']} estimates on {args['batch_size']} fixed "
      "training digits, the same keys for every estimator (step 0: the "
      "initial parameters). Slope: least squares of log SNR on log K "
      "(theory: -0.5 for the iwae encoder, +0.5 for the decoder).")
  return "\n".join(lines) + "\n"


def plot(results: dict, png_path: str) -> None:
  """SNR against K, log-log, one panel per network, with sqrt(K) slopes."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ks = np.asarray(results["ks"], np.float64)
  steps = results["checkpoint_steps"]
  styles = ["-", "--", ":", "-."]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, network in zip(axes, NETWORKS):
    colors = {}
    for i, step in enumerate(steps):
      for estimator in results["estimators"]:
        if network == "decoder" and estimator != results["estimators"][0]:
          continue  # The same decoder gradient for every estimator.
        values = [results["snr"][step][estimator][int(k)][network]["mean"]
                  for k in ks]
        label = (f"step {step}" if network == "decoder"
                 else f"{estimator}, step {step}")
        line, = ax.plot(ks, values, marker="o", ms=4,
                        ls=styles[i % len(styles)],
                        color=colors.get(estimator), label=label)
        colors.setdefault(estimator, line.get_color())
    anchor = results["snr"][steps[-1]][results["estimators"][0]][
        int(ks[0])][network]["mean"]
    ax.plot(ks, anchor * np.sqrt(ks[0] / ks), color="gray", lw=1,
            ls=(0, (1, 3)), label="1/sqrt(K) slope")
    ax.plot(ks, anchor * np.sqrt(ks / ks[0]), color="gray", lw=1,
            ls=(0, (5, 3)), label="sqrt(K) slope")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ks, [str(int(k)) for k in ks])
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel("SNR, mean over parameters")
    ax.set_title(f"{network} gradient")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
  fig.suptitle("IWAE gradient SNR against K (Gaussian VAE)")
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
  plt.close(fig)
  atomic_files.write_bytes(png_path, png.getvalue())


def write_outputs(results: dict, out_dir: str) -> None:
  """`iwae_snr.md` and `iwae_snr.png` in out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  text = markdown_tables(results)
  atomic_files.write_text(os.path.join(out_dir, "iwae_snr.md"), text)
  plot(results, os.path.join(out_dir, "iwae_snr.png"))
  print(text)


FLAGS = flags.FlagValues()
flags.DEFINE_bool("tiny", False, "The tiny `test` preset (smoke run).",
                  flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the trained model.",
                     flag_values=FLAGS)
flags.DEFINE_integer("num_steps", 10_000, "Training steps.",
                     flag_values=FLAGS)
flags.DEFINE_integer("eval_every", 500, "Steps between evaluations.",
                     flag_values=FLAGS)
flags.DEFINE_integer("train_num_importance_samples", 1,
                     "K of the trained model's bound (1: the ELBO).",
                     flag_values=FLAGS)
flags.DEFINE_enum("train_estimator", "iwae", list(iwae.ESTIMATORS),
                  "The trained model's estimator (if K > 1).",
                  flag_values=FLAGS)
command_line.define_integer_list(
    "checkpoint_steps", None, "Steps measured (0: the initial parameters; "
    "default 0, half of --num_steps, --num_steps).", FLAGS)
command_line.define_integer_list("ks", [1, 4, 16, 64],
                                 "Numbers of importance samples K.", FLAGS)
flags.DEFINE_list("estimators", list(iwae.ESTIMATORS),
                  "Estimators measured.", flag_values=FLAGS)
flags.DEFINE_integer("num_repeats", 100,
                     "Gradient estimates per SNR measurement.",
                     flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 20, "Fixed training digits per gradient.",
                     flag_values=FLAGS)
flags.DEFINE_integer("weight_samples", 1000,
                     "Samples per digit for the importance-weight "
                     "diagnostics (ESS, std of log w).", lower_bound=2,
                     flag_values=FLAGS)
command_line.define_outputs(FLAGS, from_json=True)


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  args = types.SimpleNamespace(**FLAGS.flag_values_dict())
  if args.from_json:
    write_outputs(load_results(args.from_json), args.out_dir)
    return
  os.makedirs(args.out_dir, exist_ok=True)
  results = measure(args)
  atomic_files.write_json(os.path.join(args.out_dir, "iwae_snr.json"),
                          results)
  write_outputs(results, args.out_dir)


if __name__ == "__main__":
  main()
