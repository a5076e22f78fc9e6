r"""SAC learning benchmarks: final deterministic eval return per seed.

  # Pendulum-v1, 5 seeds vmapped in one process, 20k steps.
  python -m benchmarks.sac_learning --suite=pendulum --num_seeds=5

  # Actor-gradient ablation: same, with the score-function estimator.
  python -m benchmarks.sac_learning --suite=pendulum \
      --num_seeds=5 --actor_grad=score_function

  # HalfCheetah-v5, 100k steps, ours vs sbx with the same seeds (needs sbx).
  .venv-bench/bin/python -m benchmarks.sac_learning --suite=halfcheetah \
      --num_seeds=5 --with_sbx
  # ... or the two libraries in two processes (2 cores: about 95 min wall):
  python -m benchmarks.sac_learning --suite=halfcheetah --num_seeds=5 \
      --out=ours.json
  .venv-bench/bin/python -m benchmarks.sac_learning --suite=halfcheetah \
      --num_seeds=5 --norun_ours --with_sbx --out=sbx.json
  # More seeds: add --first_seed=5 (seeds 5..9) to both.
  # Temperature-loss ablation (Eq. 18 as written; the default and sbx use
  # the log-alpha form):
  python -m benchmarks.sac_learning --suite=halfcheetah --num_seeds=5 \
      --temperature_loss=alpha

Evaluation protocol for both libraries: deterministic policy (tanh of the
mean; sbx `predict(deterministic=True)`), `--eval_episodes` episodes on eval
envs reset with the seeds of `sac.envs.env_seeds(seeds, n, stream=1)`.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags
import numpy as np

from benchmarks import command_line
from common import atomic_files
from common import seed_statistics
from launch.configs import sac as sac_config
from sac import envs
from sac import train as sac_train

FLAGS = flags.FlagValues()
_SUITE = flags.DEFINE_enum("suite", "pendulum", ["pendulum", "halfcheetah"],
                           "Which benchmark.", flag_values=FLAGS)
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 5, "How many seeds.",
                                  flag_values=FLAGS)
_FIRST_SEED = flags.DEFINE_integer(
    "first_seed", 0, "Seeds first_seed .. first_seed + num_seeds - 1.",
    flag_values=FLAGS)
_ACTOR_GRAD = flags.DEFINE_string("actor_grad", "pathwise", "Actor gradient.",
                                  flag_values=FLAGS)
_TEMPERATURE_LOSS = flags.DEFINE_string(
    "temperature_loss", None,
    "Temperature loss: log_alpha or alpha (Eq. 18); default: the config's.",
    flag_values=FLAGS)
_NUM_STEPS = flags.DEFINE_integer("num_steps", None,
                                  "Override the budget.", flag_values=FLAGS)
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 10,
                                      "Final eval episodes.",
                                      flag_values=FLAGS)
_WITH_SBX = flags.DEFINE_bool("with_sbx", False, "Also train sbx SAC.",
                              flag_values=FLAGS)
_RUN_OURS = flags.DEFINE_bool(
    "run_ours", True, "Train our agent (--norun_ours --with_sbx runs only sbx, "
    "e.g. in a second process).", flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/sac_learning",
                               "Run directories.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.",
                           flag_values=FLAGS)


def _config():
  if _SUITE.value == "pendulum":
    config = sac_config.get_config()
    config.num_steps = _NUM_STEPS.value or 20_000
    config.eval_every = 5_000
  else:
    config = sac_config.get_config("HalfCheetah-v5")
    config.num_steps = _NUM_STEPS.value or 100_000
    config.eval_every = 20_000
  config.eval_episodes = _EVAL_EPISODES.value
  config.num_seeds = _NUM_SEEDS.value
  config.seed = _FIRST_SEED.value
  config.actor_grad = _ACTOR_GRAD.value
  if _TEMPERATURE_LOSS.value is not None:
    config.temperature_loss = _TEMPERATURE_LOSS.value
  config.progress_bar = False
  return config


def run_sbx(config, progress_file: str | None = None) -> list[float]:
  """sbx SAC with the same hyperparameters, evaluated with our protocol.

  Seeds run one after another; each final return is appended to
  `progress_file` (JSON lines) as soon as it is known.
  """
  import gymnasium as gym
  import sbx

  finals = []
  for seed in range(config.seed, config.seed + config.num_seeds):
    model = sbx.SAC(
        "MlpPolicy", gym.make(config.env_id), learning_rate=config.actor_lr,
        buffer_size=config.buffer_size, learning_starts=config.learning_starts,
        batch_size=config.batch_size, tau=config.tau, gamma=config.gamma,
        train_freq=1, gradient_steps=config.updates_per_step,
        policy_kwargs=dict(net_arch=list(config.hidden_sizes)), seed=seed,
        verbose=0)
    model.learn(total_timesteps=config.num_steps)
    eval_env = gym.make(config.env_id)
    returns = []
    # Our evaluation for seed s at the final round uses these reset seeds.
    num_rounds = -(-config.num_steps // config.eval_every)  # ceil: + final eval
    for episode_seed in envs.env_seeds([seed], config.eval_episodes, stream=1,
                                       round_index=num_rounds - 1):
      obs, _ = eval_env.reset(seed=episode_seed)
      done, total = False, 0.0
      while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = eval_env.step(action)
        total += reward
        done = terminated or truncated
      returns.append(total)
    finals.append(float(np.mean(returns)))
    if progress_file:
      with open(progress_file, "a") as f:
        f.write(json.dumps({"library": "sbx", "seed": seed,
                            "final_eval": finals[-1]}) + "\n")
  return finals


def _sample_std(values) -> float | None:
  """The sample std (ddof = 1) over seeds; None for a single seed."""
  return seed_statistics.sample_std(values) if len(values) > 1 else None


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  config = _config()
  workdir = os.path.join(
      _WORKDIR.value, f"{config.env_id}_{config.actor_grad}_seeds{config.seed}"
      f"-{config.seed + config.num_seeds - 1}_{config.num_steps}"
      f"_{config.temperature_loss}")
  seeds = list(range(config.seed, config.seed + config.num_seeds))
  out = {"env_id": config.env_id, "num_steps": config.num_steps,
         "actor_grad": config.actor_grad,
         "temperature_loss": config.temperature_loss, "seeds": seeds}
  if _RUN_OURS.value:
    start = time.time()
    result = sac_train.train(config, workdir)
    ours = [float(x) for x in result["eval_returns"]]
    out.update(ours_final_eval=ours, ours_mean=float(np.mean(ours)),
               ours_sample_std=_sample_std(ours),
               ours_wall_s=time.time() - start, workdir=workdir)
  if _WITH_SBX.value:
    start = time.time()
    progress = _OUT.value + ".sbx.jsonl" if _OUT.value else None
    theirs = run_sbx(config, progress)
    out.update(sbx_final_eval=theirs, sbx_mean=float(np.mean(theirs)),
               sbx_sample_std=_sample_std(theirs),
               sbx_wall_s=time.time() - start)
  print(json.dumps(out, indent=2))
  if _OUT.value:
    atomic_files.write_json(_OUT.value, out)


if __name__ == "__main__":
  main()
