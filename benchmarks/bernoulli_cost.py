"""Cost per training step of each Bernoulli-VAE estimator, in seconds and FLOPs.

For each architecture of the `bernoulli` preset, every estimator with the
settings of the `bernoulli_estimators` study (`launch.studies`: two samples,
one antithetic pair, one REBAR/RELAX draw, K = 2) gets its jitted chunk of
`timing_steps` updates from the training code itself
(`vae.train.make_train_chunk`), compiled and run once to warm it. Then
`timing_rounds` rounds each time one chunk of every estimator, the
estimators interleaved within a round so that a change of machine load
falls on all of them alike. Reported per estimator:
  - ms per step: the median over rounds;
  - the ratio to `--reference` (the score function by default): the median
    over rounds of the ratio of the two times in the same round;
  - GFLOP per step: XLA's cost analysis of one compiled update (a count
    that does not depend on the machine or its load);
  - the decoder evaluations per digit that the estimator's definition
    makes (stated in vae/bernoulli.py and docs/vae.md, not measured).
Writes `bernoulli_cost.md` (tables) and `bernoulli_cost.json` (raw) to
--out_dir.

Run:
  python -m benchmarks.bernoulli_cost --out_dir=/tmp/bernoulli_cost
Tiny smoke run:
  python -m benchmarks.bernoulli_cost --tiny --timing_rounds=2 \
      --out_dir=/tmp/bernoulli_cost_tiny
"""

from __future__ import annotations

import json
import os
import statistics
import time

from absl import flags
import jax

from benchmarks import command_line
from common import atomic_files
from launch import studies
from vae import bernoulli
from vae import data as vae_data
from vae import train as vae_train

# Evaluations of the decoder per digit and step at the study's settings
# (S = 2 samples; one REBAR/RELAX draw): (encoder estimate, decoder and
# prior gradient), as vae/bernoulli.py describes them.
DECODER_EVALUATIONS = {
    "score_function": ("2 forward", "the same 2, backward"),
    "arm": ("2 forward (1 pair)", "1 forward and backward"),
    "disarm": ("2 forward (1 pair)", "1 forward and backward"),
    "rebar": (("1 forward at b; forward and backward at z and z~; "
               "variance gradient"), "1 forward and backward"),
    "relax": (("1 forward at b; forward and backward at z and z~; "
               "variance gradient"), "1 forward and backward"),
    "vimco": ("2 forward and backward", "the same"),
    "gumbel_softmax": ("2 forward and backward (relaxed)", "the same"),
    "st_gumbel_softmax": ("2 forward and backward (relaxed)", "the same"),
}

FLAGS = flags.FlagValues()
flags.DEFINE_list("architectures", ["linear", "nonlinear"],
                  "Architectures (comma-separated).", flag_values=FLAGS)
flags.DEFINE_list("estimators", list(bernoulli.ESTIMATORS),
                  "Estimators (comma-separated).", flag_values=FLAGS)
flags.DEFINE_string("reference", "score_function",
                    "The estimator the ratios divide by.", flag_values=FLAGS)
flags.DEFINE_integer("timing_steps", 50, "Updates per timed chunk.",
                     flag_values=FLAGS)
flags.DEFINE_integer("timing_rounds", 9, "Interleaved timing rounds.",
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the data, initialisation, noise.",
                     flag_values=FLAGS)
flags.DEFINE_bool("tiny", False, "Sizes of the `test` config (smoke run).",
                  flag_values=FLAGS)
command_line.define_outputs(FLAGS, from_json=False)


def make_config(architecture: str, estimator: str, *, tiny: bool, seed: int):
  """The study cell's config (its overrides on the preset, or on `test`)."""
  study = studies.BERNOULLI_ESTIMATORS
  config = study.system.make_config("bernoulli", tiny, None)
  condition = study.condition(f"{architecture}_{estimator}")
  for field, value in condition.overrides:
    config[field] = value
  config.seed = seed
  return config


def compiled_chunks(architecture: str, names, *, timing_steps: int,
                    tiny: bool, seed: int):
  """{estimator: (compiled chunk, warm state, FLOPs per step)}."""
  out = {}
  for name in names:
    config = make_config(architecture, name, tiny=tiny, seed=seed)
    vae_train.check_config(config)
    digits = vae_data.load_mnist(seed=seed, num_train=config.num_train,
                                 num_test=config.num_test)
    model = vae_train.make_model(config)
    k_init, k_train = jax.random.split(jax.random.key(seed))
    state = vae_train.init_state(model, config, k_init,
                                 *vae_train.make_optimizers(config))
    chunk = vae_train.make_train_chunk(model, config, k_train, digits.train,
                                       length=timing_steps)
    compiled = chunk.lower(state).compile()
    # XLA counts a loop body once, so the FLOPs are those of one update
    # compiled alone (the chunk is lax.scan of the same update).
    update = jax.jit(vae_train.make_update(model, config, k_train,
                                           digits.train))
    flops = _flops(update.lower(state).compile())
    state = jax.block_until_ready(compiled(state))[0]  # Warm.
    out[name] = [compiled, state, flops]
  return out


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # Older JAX: one dict per computation.
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan")))


def time_rounds(chunks: dict, *, rounds: int, timing_steps: int) -> dict:
  """Seconds per step of every estimator, one list entry per round."""
  seconds = {name: [] for name in chunks}
  for _ in range(rounds):
    for name, entry in chunks.items():
      start = time.perf_counter()
      entry[1] = jax.block_until_ready(entry[0](entry[1]))[0]
      seconds[name].append((time.perf_counter() - start) / timing_steps)
  return seconds


def summarise(seconds: dict, flops: dict, reference: str) -> dict:
  return {name: {
      "ms_per_step": 1e3 * statistics.median(values),
      "ratio": statistics.median(
          [s / r for s, r in zip(values, seconds[reference])]),
      "gflop_per_step": flops[name] / 1e9,
      "seconds": values} for name, values in seconds.items()}


def markdown(results: dict, reference: str) -> str:
  lines = []
  for architecture, table in results["architectures"].items():
    header = (f"| estimator | ms per step (median) | ratio to {reference} "
              f"(median per round) | GFLOP per step | decoder evaluations "
              f"per digit: encoder | decoder and prior |")
    lines += [f"### {architecture}", "", header, "|---|---|---|---|---|---|"]
    for name, row in table.items():
      encoder, decoder = DECODER_EVALUATIONS[name]
      lines.append(f"| {name} | {row['ms_per_step']:.3g} | "
                   f"{row['ratio']:.3g} | {row['gflop_per_step']:.3g} | "
                   f"{encoder} | {decoder} |")
    lines.append("")
  settings = results["settings"]
  lines.append(
      f"{settings['timing_rounds']} interleaved rounds of chunks of "
      f"{settings['timing_steps']} steps, seed {settings['seed']}"
      f"{', tiny sizes' if settings['tiny'] else ''}.")
  return "\n".join(lines) + "\n"


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  names = list(FLAGS.estimators)
  unknown = [n for n in names if n not in bernoulli.ESTIMATORS]
  if unknown:
    command_line.usage_error(f"unknown estimators {unknown}; choose from "
                             f"{bernoulli.ESTIMATORS}.")
  if FLAGS.reference not in names:
    command_line.usage_error(f"--reference={FLAGS.reference!r} is not among "
                             f"--estimators={','.join(names)}.")
  bad = [a for a in FLAGS.architectures if a not in bernoulli.ARCHITECTURES]
  if bad:
    command_line.usage_error(f"unknown architectures {bad}; choose from "
                             f"{bernoulli.ARCHITECTURES}.")
  for name in ("timing_steps", "timing_rounds"):
    if FLAGS[name].value < 1:
      command_line.usage_error(f"--{name} must be >= 1; got "
                               f"{FLAGS[name].value}.")
  results = {"settings": {k: FLAGS[k].value for k in (
      "architectures", "estimators", "reference", "timing_steps",
      "timing_rounds", "seed", "tiny")}, "architectures": {}}
  for architecture in FLAGS.architectures:
    chunks = compiled_chunks(architecture, names,
                             timing_steps=FLAGS.timing_steps,
                             tiny=FLAGS.tiny, seed=FLAGS.seed)
    seconds = time_rounds(chunks, rounds=FLAGS.timing_rounds,
                          timing_steps=FLAGS.timing_steps)
    table = summarise(seconds, {n: c[2] for n, c in chunks.items()},
                      FLAGS.reference)
    results["architectures"][architecture] = table
    for name, row in table.items():
      print(f"{architecture} {name}: {row['ms_per_step']:.3g} ms/step, "
            f"ratio {row['ratio']:.3g}, {row['gflop_per_step']:.3g} GFLOP",
            flush=True)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  stem = os.path.join(FLAGS.out_dir, "bernoulli_cost")
  atomic_files.write_text(stem + ".json", json.dumps(results, indent=1))
  atomic_files.write_text(stem + ".md", markdown(results, FLAGS.reference))
  print(f"Wrote {stem}.md and {stem}.json")


if __name__ == "__main__":
  main()
