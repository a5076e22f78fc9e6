r"""Trains a small noisy top-k MoE model on the mixture-of-domains task.

  python -m launch.train_moe --config=launch/configs/moe.py --workdir=/tmp/moe
  python -m launch.train_moe --config=launch/configs/moe.py \
      --workdir=/tmp/moe_noaux --config.w_importance=0 --config.w_load=0

Writes `eval.csv` (loss, Bayes loss, Table 6 columns per evaluation),
`config.json`, checkpoints and TensorBoard events to --workdir; rerunning
the same command resumes from the latest checkpoint. All logic lives in
`moe.train`.

Terminal: a start line, the progress bar and a final summary; the libraries'
logs are shown with absl's `--verbosity=0` (INFO) or `--verbosity=1` (DEBUG).

Huge pages: on Linux with glibc >= 2.35 the launcher re-executes itself once
with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (appended to any value already
set), because MoE steps are bound by page faults on the fresh expert
gradients (`launch.hugepages`). Set `STOCHGRAD_HUGETLB=0` in the environment
to run with glibc's default allocator instead.
"""

from launch import hugepages

if __name__ == "__main__":
  # glibc reads GLIBC_TUNABLES at process start; re-execute before JAX loads.
  hugepages.reexec_with_hugetlb()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import terminal
from moe import train as moe_train

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, logs, figures; rerunning "
    "the same command in it resumes the run.")
config_flags.DEFINE_config_file(
    "config", None, "Config file and preset: launch/configs/moe.py[:preset].",
    lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  terminal.quiet_logs_unless_verbosity_given()
  config = flags.FLAGS.config
  terminal.announce(
      f"MoE: {config.num_experts} experts, top-{config.k}, "
      f"{config.num_steps} steps; {hugepages.describe()}", _WORKDIR.value)
  logging.info("Config:\n%s", config)
  final = moe_train.train(config, _WORKDIR.value)
  logging.info("Final evaluation: %s", final)
  print(", ".join(f"{k}={v:.4g}" for k, v in final.items()))
  print(terminal.list_outputs(_WORKDIR.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
