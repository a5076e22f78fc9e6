"""SAC's environment interaction: the step of the training loop, and the
host state saved with each checkpoint (`common.training_loop.HostState`).

One call of `Collector.step` is one iteration: every seed's E
sub-environments step once (S seeds x E envs = num_envs steps per seed).

  1. act:    the actions for the current observations (compiled);
  2. update: the previous iteration's transitions are inserted into the
             replay buffer and the K gradient steps they call for run
             (compiled, dispatched asynchronously);
  3. the host steps the environments with the actions while the update
     runs; their transitions wait for the next iteration's update.

So the environment step overlaps the update instead of waiting for it. The
updates are the same as in the sequential order (insert, update, act): the
same number, at the same environment steps, on a buffer holding every
transition observed so far. The price is a one-iteration policy lag: the
actions of iteration t are drawn from the parameters before the updates
that iteration t - 1's transitions trigger (K gradient steps older than in
the sequential order). The pending transitions are part of the checkpoint,
so a resume continues exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from sac import envs
from sac import learner
from sac import replay
from sac import seed_sharding

_TRANSITION_FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


class Collector:
  """The environments, the pending transitions and the loop's counters."""

  def __init__(self, config, agent: learner.Agent, env, scaler,
               seeds: Sequence[int], sharding):
    self.config, self.agent, self.env, self.scaler = config, agent, env, scaler
    self.seeds, self.sharding = list(seeds), sharding
    self.num_envs = config.num_envs
    self.shape = (len(self.seeds), self.num_envs)
    self.step_count = 0  # Environment steps per seed.
    self.iteration = 0
    self.eval_round = 0  # Scheduled evaluations done (seeds the episodes).
    self.obs = None  # [S, E, O]: what the next actions act on.
    self.pending = None  # replay.Transition of the last iteration, or None.
    self.episode_return = np.zeros(self.shape).reshape(-1)
    self.last_return = np.full(len(self.seeds), np.nan)
    self._act_fns, self._update_fns = {}, {}

  # --- HostState -------------------------------------------------------------

  def start(self, state: Any) -> Any:
    """Resets the environments with the seeds' env seeds."""
    obs, _ = self.env.reset(seed=envs.env_seeds(self.seeds, self.num_envs))
    self.obs = self._reshape(obs)
    return state

  def arrays(self) -> dict[str, np.ndarray]:
    out = {"env": np.frombuffer(envs.snapshot(self.env), np.uint8).copy(),
           "obs": np.asarray(self.obs),
           "episode_return": self.episode_return,
           "last_return": self.last_return,
           "counters": np.array([self.step_count, self.iteration,
                                 self.eval_round], np.int64),
           "has_pending": np.array(self.pending is not None)}
    if self.pending is not None:
      out.update({f"pending_{name}": np.asarray(getattr(self.pending, name))
                  for name in _TRANSITION_FIELDS})
    return out

  def load(self, arrays: dict[str, np.ndarray]) -> None:
    envs.restore(self.env, arrays["env"].tobytes())
    self.obs = arrays["obs"]
    self.episode_return = arrays["episode_return"]
    self.last_return = arrays["last_return"]
    self.step_count, self.iteration, self.eval_round = (
        int(c) for c in arrays["counters"])
    self.pending = (replay.Transition(**{
        name: arrays[f"pending_{name}"] for name in _TRANSITION_FIELDS})
                    if bool(arrays["has_pending"]) else None)

  # --- The loop's step -------------------------------------------------------

  def step(self, state: learner.SACState
           ) -> tuple[learner.SACState, dict | None]:
    """One iteration (see the module doc); returns (state, update metrics
    [S] by name, or None when no gradient step ran)."""
    config = self.config
    random = self.step_count < config.learning_starts
    state, action = self._act_fn(random)(
        state, seed_sharding.place(self.obs, self.sharding))
    action = np.asarray(jax.device_get(action))
    metrics = None
    if self.pending is not None:
      train_now = (self.step_count >= config.learning_starts
                   and self.iteration % config.train_every == 0)
      num_updates = (config.updates_per_step * self.num_envs
                     * config.train_every if train_now else 0)
      state, metrics = self._update_fn(num_updates)(
          state, seed_sharding.place(self.pending, self.sharding))
      metrics = metrics or None
    self.pending = self._env_step(action)  # Runs while the update does.
    self.step_count += self.num_envs
    self.iteration += 1
    if metrics is not None:
      metrics = jax.device_get(metrics)
    return state, metrics

  def _env_step(self, action: np.ndarray) -> replay.Transition:
    """Steps every sub-environment; returns the transitions observed."""
    flat = action.reshape(-1, self.agent.action_dim)
    next_obs_act, reward, terminated, truncated, next_obs = envs.step(
        self.env, self.scaler.to_env(flat))
    self.episode_return += reward
    for i in np.flatnonzero(terminated | truncated):
      self.last_return[i // self.num_envs] = self.episode_return[i]
      self.episode_return[i] = 0.0
    transition = replay.Transition(
        obs=self.obs, action=action,
        reward=reward.astype(np.float32).reshape(self.shape),
        next_obs=self._reshape(next_obs),
        terminated=terminated.astype(np.float32).reshape(self.shape))
    self.obs = self._reshape(next_obs_act)
    return transition

  def _reshape(self, obs) -> np.ndarray:
    return np.asarray(obs, np.float32).reshape(self.shape + (-1,))

  def _act_fn(self, random: bool):
    if random not in self._act_fns:
      self._act_fns[random] = learner.make_act_fn(self.agent, random=random)
    return self._act_fns[random]

  def _update_fn(self, num_updates: int):
    if num_updates not in self._update_fns:
      self._update_fns[num_updates] = learner.make_update_fn(
          self.agent, num_updates=num_updates)
    return self._update_fns[num_updates]
