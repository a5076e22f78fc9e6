r"""SAC configuration, with presets chosen by the config-file argument.

  python -m launch.train_sac --config=launch/configs/sac.py \
      --workdir=/tmp/sac_pendulum
      Pendulum-v1, 20k steps (the SB3 RL-Zoo budget). Measured returns of
      this and the MuJoCo presets, with commands and commits: docs/sac.md,
      docs/benchmarks.md and docs/results.md.
  python -m launch.train_sac --config=launch/configs/sac.py:HalfCheetah-v5 \
      --workdir=...
      MuJoCo v5 preset (HalfCheetah, Hopper, Walker2d, Ant, Humanoid) with the
      hyperparameters of Haarnoja et al. 2018, Appendix D, Table 1.
  python -m launch.train_sac --config=launch/configs/sac.py:test --workdir=...
      Tiny CPU run for tests and CI (seconds).

Override any field: --config.seed=3 --config.actor_grad=score_function ...
Every field is checked in `sac.validation.check_config`.
"""

import ml_collections
from ml_collections import config_dict

MUJOCO_ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5",
               "Humanoid-v5")
PRESETS = ("pendulum", "test") + MUJOCO_ENVS


def get_config(preset: str = "pendulum") -> ml_collections.ConfigDict:
  """The config of `preset`: pendulum (default), test, or a MuJoCo id."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of "
                     f"{PRESETS}.")
  c = ml_collections.ConfigDict()
  # --- Environment -------------------------------------------------------
  # Gymnasium id; Box observation and action spaces.
  c.env_id = "Pendulum-v1"
  c.num_envs = 1  # Training sub-environments per seed.
  c.seed = 0  # Seed of the first agent; agent i uses seed + i.
  c.num_seeds = 1  # Independent agents run together (vmapped).
  # --- Budget --------------------------------------------------------------
  # Environment steps per seed (all num_envs sub-environments count).
  c.num_steps = 20_000
  # Uniform-random actions and no updates before this step.
  c.learning_starts = 1_000
  # --- Replay and updates ------------------------------------------------
  c.buffer_size = 1_000_000  # Replay capacity per seed (transitions).
  c.batch_size = 256  # Minibatch per gradient step.
  c.updates_per_step = 1  # Gradient steps per environment step (UTD ratio).
  # Run the updates every this many iterations, batched.
  c.train_every = 1
  # --- Networks ----------------------------------------------------------
  c.hidden_sizes = (256, 256)  # Hidden widths of actor and critics (ReLU).
  c.num_critics = 2  # Critic ensemble size; targets use the minimum.
  # --- Optimisation (Adam) -----------------------------------------------
  c.actor_lr = 1e-3  # Actor learning rate.
  c.critic_lr = 1e-3  # Critic learning rate.
  c.alpha_lr = 1e-3  # Temperature (log alpha) learning rate.
  c.gamma = 0.99  # Discount.
  c.tau = 0.005  # Polyak coefficient of the target critics.
  # --- Entropy -------------------------------------------------------------
  c.alpha = config_dict.placeholder(float)  # Fixed temperature; None: learned.
  c.init_alpha = 1.0  # Initial temperature when learned.
  # Target entropy; None = -|A| (Haarnoja et al. 2018, Sec. 5).
  c.target_entropy = config_dict.placeholder(float)
  # "log_alpha" (default): the authors' code and sbx, E[-log alpha (log pi +
  # target)], gradient (entropy - target) in log alpha; "alpha": Eq. 18 as
  # written, gradient alpha * (entropy - target). Compared in
  # docs/benchmarks.md (HalfCheetah).
  c.temperature_loss = "log_alpha"
  # --- Actor gradient estimator ----------------------------------------------
  # "pathwise" (reparameterised) or "score_function".
  c.actor_grad = "pathwise"
  c.score_function_samples = 8  # Actions per state for score_function (>= 2).
  # Reparameterized actions per state of the pathwise actor loss (Eq. 12
  # averaged over them); 1 is the paper's estimator.
  c.pathwise_samples = 1
  # --- Evaluation, logging, checkpoints ------------------------------------
  c.eval_every = 2_000  # Deterministic evaluation period (steps per seed).
  c.eval_episodes = 5  # Evaluation episodes per seed.
  c.log_every = 1_000  # train.csv / TensorBoard period (steps per seed).
  # Checkpoint period (steps per seed); also at the end.
  c.checkpoint_every = 10_000
  # Steps per seed whose checkpoints are also written and never deleted (the
  # latest 2 are kept as well), e.g. for benchmarks/sac_grad_variance.py:
  # --config.keep_checkpoint_steps=20000,50000,100000. Multiples of num_envs.
  c.keep_checkpoint_steps = ()
  c.progress_bar = True  # tqdm bar with steps/s and the latest return.

  if preset == "pendulum":
    pass
  elif preset == "test":
    c.num_steps = 600
    c.learning_starts = 200
    c.buffer_size = 1_000
    c.batch_size = 32
    c.hidden_sizes = (16, 16)
    c.eval_every = 200
    c.eval_episodes = 1
    c.log_every = 100
    c.checkpoint_every = 200
    c.progress_bar = False
  elif preset in MUJOCO_ENVS:
    # Haarnoja et al. 2018, Appendix D, Table 1.
    c.env_id = preset
    c.num_steps = 1_000_000 if preset != "Humanoid-v5" else 3_000_000
    c.learning_starts = 10_000
    c.actor_lr = c.critic_lr = c.alpha_lr = 3e-4
    c.eval_every = 10_000
    c.eval_episodes = 10
    c.log_every = 5_000
    c.checkpoint_every = 50_000
  return c
