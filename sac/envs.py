"""Gymnasium vector environments for SAC: creation, checks, stepping, snapshots.

Autoreset semantics. The vector envs run in Gymnasium 1.x SAME_STEP autoreset
mode: when a sub-environment terminates or is truncated, `step` resets it in
the same call, returns the *reset* observation in `obs`, and puts the true
final observation in `info["final_obs"]` (mask `info["_final_obs"]`). So
every `step` yields one valid transition per sub-env:

    s' = final_obs where the episode ended, else obs;
    terminated stored as is (cuts the bootstrap); truncated is not stored
    (bootstraps from s');
    the next action is chosen for `obs` (the reset observation),

and nothing from an episode leaks into the next (tests/test_sac_envs.py).

Snapshots. The vector env made by `gym.make_vec` does not pickle (it holds a
local closure) and MuJoCo envs pickle only their constructor arguments
(EzPickle), so `snapshot` copies the state of every layer of every
sub-environment itself: the attributes of each wrapper (TimeLimit's elapsed
steps, OrderEnforcing's flag, ...) and of the base env (its `np_random`
generator, classic-control `state`, the whole `MjData` of MuJoCo envs, which
pickles with its derived quantities such as xpos), plus the SyncVectorEnv's
own buffers and autoreset flags. `restore` writes them back into a freshly
made vector env of the same id.
"""

from __future__ import annotations

import pickle
from typing import Sequence

import gymnasium as gym
import numpy as np

# Attributes not copied by snapshots: the wrapped env (walked separately) and
# MuJoCo's compiled model (constant, rebuilt by make).
_NOT_SNAPSHOT = frozenset({"env", "model", "_ezpickle_args", "_ezpickle_kwargs",
                           "mujoco_renderer", "render_mode", "metadata"})
_VECTOR_FIELDS = ("_autoreset_envs", "_env_obs", "_observations", "_rewards",
                  "_terminations", "_truncations")


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
  """The registered spec of `env_id`, or a ValueError naming it."""
  try:
    return gym.spec(env_id)
  except gym.error.Error as err:
    raise ValueError(
        f"unknown env_id {env_id!r}: not registered with Gymnasium ({err}). "
        "Expected an id such as 'Pendulum-v1' or 'HalfCheetah-v5'.") from err


def check_spaces(env_id: str, observation_space: gym.Space,
                 action_space: gym.Space) -> None:
  """SAC needs a flat Box observation and a bounded Box action space."""
  if not isinstance(action_space, gym.spaces.Box):
    raise ValueError(
        f"env {env_id!r} has action space {action_space}; SAC needs a "
        "continuous gymnasium.spaces.Box action space (discrete and other "
        "spaces are not supported).")
  if not isinstance(observation_space, gym.spaces.Box):
    raise ValueError(
        f"env {env_id!r} has observation space {observation_space}; SAC needs "
        "a gymnasium.spaces.Box observation space.")
  if len(observation_space.shape) != 1 or len(action_space.shape) != 1:
    raise ValueError(
        f"env {env_id!r}: expected 1-D Box spaces; got observation shape "
        f"{observation_space.shape} and action shape {action_space.shape}.")
  if not (np.all(np.isfinite(action_space.low))
          and np.all(np.isfinite(action_space.high))):
    raise ValueError(
        f"env {env_id!r}: the action bounds must be finite to rescale tanh "
        f"actions; got low={action_space.low}, high={action_space.high}.")


def make_vec_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
  """Synchronous vector env in SAME_STEP autoreset mode, spaces checked."""
  check_env_id(env_id)
  env = gym.make_vec(
      env_id, num_envs=num_envs, vectorization_mode="sync",
      vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
  check_spaces(env_id, env.single_observation_space, env.single_action_space)
  return env


def env_seeds(seeds: Sequence[int], num_envs: int, stream: int = 0,
              round_index: int = 0) -> list[int]:
  """Reset seeds for sub-envs [seed-major, env-minor], from (seed, stream, round, env).

  A seed's environments depend on that seed only, so agent i of a run with
  num_seeds > 1 sees the same episodes as a single-seed run with its seed.
  stream 0 is training, 1 evaluation.
  """
  return [int(np.random.SeedSequence([int(s), stream, round_index, e])
              .generate_state(1)[0])
          for s in seeds for e in range(num_envs)]


class ActionScaler:
  """Maps policy actions in [-1, 1]^A to the env's Box [low, high] (affine)."""

  def __init__(self, action_space: gym.spaces.Box):
    self.low = np.asarray(action_space.low, np.float64)
    self.high = np.asarray(action_space.high, np.float64)

  def to_env(self, action: np.ndarray) -> np.ndarray:
    action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
    return self.low + 0.5 * (action + 1.0) * (self.high - self.low)


def step(env: gym.vector.VectorEnv, env_action: np.ndarray):
  """One vector step; returns (obs, reward, terminated, truncated, next_obs).

  `obs` is what to act on next (reset observation where an episode ended);
  `next_obs` is the true s' of the transition (final observation there).
  """
  obs, reward, terminated, truncated, info = env.step(env_action)
  next_obs = np.array(obs, copy=True)
  if "_final_obs" in info:
    ended = np.asarray(info["_final_obs"], bool)
    for i in np.flatnonzero(ended):
      next_obs[i] = info["final_obs"][i]
  return (obs, np.asarray(reward), np.asarray(terminated, bool),
          np.asarray(truncated, bool), next_obs)


def _layers(env: gym.Env) -> list:
  layers = [env]
  while hasattr(env, "env"):
    env = env.env
    layers.append(env)
  return layers


def snapshot(env: gym.vector.SyncVectorEnv) -> bytes:
  """Pickled state of a SyncVectorEnv and all its sub-envs (see module doc)."""
  if not isinstance(env, gym.vector.SyncVectorEnv):
    raise TypeError(f"snapshot needs a SyncVectorEnv; got {type(env).__name__}.")
  subenvs = [[{k: v for k, v in vars(layer).items() if k not in _NOT_SNAPSHOT}
              for layer in _layers(sub)] for sub in env.envs]
  vector = {k: getattr(env, k) for k in _VECTOR_FIELDS if hasattr(env, k)}
  return pickle.dumps({"subenvs": subenvs, "vector": vector})


def restore(env: gym.vector.SyncVectorEnv, blob: bytes) -> None:
  """Writes a `snapshot` back into a freshly made vector env of the same id."""
  saved = pickle.loads(blob)
  if len(saved["subenvs"]) != len(env.envs):
    raise ValueError(
        f"snapshot has {len(saved['subenvs'])} sub-envs; the env has "
        f"{len(env.envs)} (num_envs/num_seeds changed since the checkpoint?).")
  for sub, layer_states in zip(env.envs, saved["subenvs"]):
    layers = _layers(sub)
    if len(layers) != len(layer_states):
      raise ValueError("snapshot's wrapper stack differs from the env's.")
    for layer, state in zip(layers, layer_states):
      layer.__dict__.update(state)
  for k, v in saved["vector"].items():
    setattr(env, k, v)
