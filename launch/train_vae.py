r"""Trains a Gaussian, categorical, Bernoulli, Gamma or VQ-VAE on MNIST.

  python -m launch.train_vae --config=launch/configs/vae.py:gaussian \
      --workdir=/tmp/vae_gauss
  python -m launch.train_vae --config=launch/configs/vae.py:categorical \
      --workdir=/tmp/vae_cat --config.estimator=rebar
  python -m launch.train_vae --config=launch/configs/vae.py:bernoulli \
      --workdir=/tmp/vae_bernoulli --config.estimator=disarm \
      --config.architecture=nonlinear
  python -m launch.train_vae --config=launch/configs/vae.py:gamma \
      --workdir=/tmp/vae_gamma --config.encoder_grad=rejection

Writes `eval.csv`, `final.json` (importance-weighted test log p(x)),
`learning_curve.png`, `digits.png`, `config.json`, checkpoints and
TensorBoard events to --workdir; rerunning the same command resumes from the
latest checkpoint. The terminal shows a start line, the progress bar and a
summary (`launch.terminal`; `--verbosity=0` shows the libraries' logs). All
logic lives in `vae.train`.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import terminal
from vae import train as vae_train

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, logs, figures; rerunning "
    "the same command in it resumes the run.")
config_flags.DEFINE_config_file(
    "config", None, "Config file and preset: launch/configs/vae.py[:preset].",
    lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  terminal.quiet_logs_unless_verbosity_given()
  config = flags.FLAGS.config
  terminal.announce(f"VAE ({config.model}) on MNIST, {config.num_steps} steps",
                    _WORKDIR.value)
  logging.info("Config:\n%s", config)
  final = vae_train.train(config, _WORKDIR.value)
  logging.info("Final evaluation: %s", final)
  print(", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in final.items()))
  print(terminal.list_outputs(_WORKDIR.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
