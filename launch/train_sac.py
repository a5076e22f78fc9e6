r"""Trains SAC on a Gymnasium continuous-control task.

  python -m launch.train_sac --config=launch/configs/sac.py --workdir=/tmp/sac
  python -m launch.train_sac --config=launch/configs/sac.py:HalfCheetah-v5 \
      --workdir=/tmp/sac_hc --config.seed=3 --config.num_seeds=4

Re-running the same command with the same --workdir resumes from the latest
checkpoint. Outputs: config.json, eval.csv, train.csv, TensorBoard events,
learning_curve.png, checkpoints/.

Terminal: a start line, the progress bar and a final summary; the libraries'
logs are shown with absl's `--verbosity=0` (INFO) or `--verbosity=1` (DEBUG).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import terminal
from sac import train

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, logs, figures; rerunning "
    "the same command in it resumes the run.")
config_flags.DEFINE_config_file(
    "config", None, "Config file and preset: launch/configs/sac.py[:preset].",
    lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  terminal.quiet_logs_unless_verbosity_given()
  config = flags.FLAGS.config
  terminal.announce(
      f"SAC ({config.actor_grad}) on {config.env_id}: {config.num_seeds} "
      f"seed(s) from seed {config.seed}, {config.num_steps} steps each",
      _WORKDIR.value)
  logging.info("Config:\n%s", config)
  result = train.train(config, _WORKDIR.value)
  logging.info("Final deterministic eval return per seed: %s",
               result["eval_returns"])
  print(f"final eval return per seed: {result['eval_returns']}")
  print(terminal.list_outputs(_WORKDIR.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
