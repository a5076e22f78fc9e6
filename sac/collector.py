"""SAC's environment interaction: the step of the training loop, and the
host state saved with each checkpoint (`common.training_loop.HostState`).

One call of `Collector.step` is one iteration: every seed's E
sub-environments step once (S seeds x E envs = num_envs steps per seed).
Its device work is two compiled calls: the actions for the current
observations, then the update, which inserts the previous iteration's
transitions into the replay buffer and runs the K gradient steps they call
for. The host work is the environment step with those actions.

The two overlap: the calls are dispatched asynchronously, one iteration
ahead. The end of iteration t dispatches iteration t + 1's calls, so the
device runs them while the host does the loop's bookkeeping (logs, the
finite-loss check) and, in iteration t + 1, the environment step:

  host:    fetch a_t | step envs with a_t | dispatch act_{t+1}, update_{t+1}
           | bookkeeping | fetch a_{t+1} | step envs with a_{t+1} | ...
  device:  act_t, update_t ......... | act_{t+1}, update_{t+1} .........

(update_t inserts the transitions of iteration t - 1.) When the loop needs
the state at the iteration's boundary, because an evaluation, a checkpoint
or the end of the run follows, it passes `settle=True` and iteration
t + 1's calls wait for its own start; the state evaluated and checkpointed
is then the state after iteration t's calls, with nothing dispatched
ahead. With `settle=True` at every iteration the calls are issued as the
loop issued them before it dispatched ahead (act, update, environment step
within each iteration).

The updates are those of the sequential order (insert, update, act): the
same number, at the same environment steps, on a buffer holding every
transition observed so far. The price is a one-iteration policy lag: the
actions of iteration t are drawn from the parameters before the updates
that iteration t - 1's transitions trigger (K gradient steps older than in
the sequential order). The order of the device calls, and so every random
key and every result, does not depend on `settle`: a run's trajectory is
the same whatever its evaluation and checkpoint schedule. The pending
transitions are part of the checkpoint, so a resume continues exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

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
    self._in_flight = None  # (actions, update metrics) dispatched, or None.
    self.episode_return = np.zeros(self.shape).reshape(-1)
    self.last_return = np.full(len(self.seeds), np.nan)
    self._act_fns, self._update_fns = {}, {}

  # --- HostState -------------------------------------------------------------

  def start(self, state: Any) -> Any:
    """Resets the environments with the seeds' env seeds."""
    obs, _ = self.env.reset(seed=envs.env_seeds(self.seeds, self.num_envs))
    self.obs = self._reshape(obs)
    self._in_flight = None
    return state

  def arrays(self) -> dict[str, np.ndarray]:
    if self._in_flight is not None:
      raise RuntimeError(
          "Collector.arrays() with an iteration's calls in flight: the "
          "loop saves only after a step made with settle=True.")
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
    self._in_flight = None
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

  def step(self, state: learner.SACState, *, settle: bool
           ) -> tuple[learner.SACState, dict | None]:
    """One iteration (see the module doc).

    Args:
      state: the SAC state; iteration t's calls may already be dispatched.
      settle: leave the state at the iteration's boundary (do not dispatch
        the next iteration's calls).

    Returns:
      (state, this iteration's update metrics [S] by name as numpy arrays,
      or None when no gradient step ran).
    """
    if self._in_flight is None:
      state = self._dispatch(state)
    action, metrics = self._in_flight
    self._in_flight = None
    action = np.asarray(action)
    self.pending = self._env_step(action)  # Runs while the update does.
    self.step_count += self.num_envs
    self.iteration += 1
    if not settle:
      state = self._dispatch(state)
    if metrics is None:
      return state, None
    # One transfer; waits for this iteration's update (the next iteration's
    # calls are already queued behind it).
    return state, dict(zip(learner.METRIC_NAMES, np.asarray(metrics).T))

  def _dispatch(self, state: learner.SACState) -> learner.SACState:
    """Dispatches this iteration's actions and update; returns the state."""
    config = self.config
    random = self.step_count < config.learning_starts
    state, action = self._act_fn(random)(
        state, seed_sharding.place(self.obs, self.sharding))
    metrics = None
    if self.pending is not None:
      train_now = (self.step_count >= config.learning_starts
                   and self.iteration % config.train_every == 0)
      num_updates = (config.updates_per_step * self.num_envs
                     * config.train_every if train_now else 0)
      state, metrics = self._update_fn(num_updates)(
          state, seed_sharding.place(self.pending, self.sharding))
      self.pending = None  # In the buffer once the update has run.
    self._in_flight = (action, metrics)
    return state

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
