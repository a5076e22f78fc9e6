"""Deterministic evaluation (tanh of mean) on separate eval envs, per seed."""

from __future__ import annotations

from typing import Callable, Sequence

import gymnasium as gym
import jax
import numpy as np

from sac import envs

# The columns of a SAC run's eval.csv: one row per evaluation and seed, the
# mean and std of the deterministic return over the evaluation episodes.
EVAL_COLUMNS = ("step", "seed", "return_mean", "return_std", "episodes")


def evaluate(eval_env: gym.vector.VectorEnv, policy_fn: Callable, actor_params,
             seeds: Sequence[int], episodes: int, round_index: int,
             scaler: envs.ActionScaler) -> tuple[np.ndarray, np.ndarray]:
  """Runs `episodes` episodes per seed with the deterministic policy.

  The eval env has len(seeds) * episodes sub-envs (seed-major); sub-env
  (s, e) is reset with a seed derived from (seeds[s], eval stream,
  round_index, e), so an evaluation depends only on the parameters and the
  round, never on training env state (exact resume holds). Each sub-env
  contributes its first episode.

  Args:
    eval_env: vector env from `envs.make_vec_env(env_id, S * episodes)`.
    policy_fn: (actor_params [S, ...], obs [S, n, O]) -> actions [S, n, A].
    actor_params: stacked over S seeds.
    seeds: the S seeds.
    episodes: episodes per seed.
    round_index: which evaluation this is (changes the reset seeds).
    scaler: policy-to-env action map.

  Returns:
    (returns [S, episodes], lengths [S, episodes]).
  """
  num_seeds = len(seeds)
  obs, _ = eval_env.reset(
      seed=envs.env_seeds(seeds, episodes, stream=1, round_index=round_index))
  total = num_seeds * episodes
  returns = np.zeros(total)
  lengths = np.zeros(total, np.int64)
  running = np.ones(total, bool)
  while running.any():
    action = policy_fn(
        actor_params,
        np.asarray(obs, np.float32).reshape(num_seeds, episodes, -1))
    action = np.asarray(jax.device_get(action)).reshape(total, -1)
    obs, reward, terminated, truncated, _ = eval_env.step(scaler.to_env(action))
    returns += np.where(running, reward, 0.0)
    lengths += running
    running &= ~(np.asarray(terminated) | np.asarray(truncated))
  return (returns.reshape(num_seeds, episodes),
          lengths.reshape(num_seeds, episodes))
