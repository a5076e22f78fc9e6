"""Autoreset bookkeeping, env snapshots and bad-input errors (sac/envs.py).

How SAC's environment handling is tested:
- Autoreset. The vector envs run in Gymnasium's SAME_STEP autoreset mode. A
  scripted env (observation = [episode tag, t]) checks that each `step`
  yields s' = the true final observation when an episode ends
  (`info["final_obs"]`) and that the next action is chosen for the reset
  observation; after a short training run, the replay buffer holds no
  transition whose s and s' come from different episodes.
- Snapshots. `snapshot`/`restore` round-trip the training environments'
  state (wrapper counters, `np_random` generators, MuJoCo data, the vector
  env's buffers and autoreset flags): a restored env steps exactly as the
  original.
- Action rescaling maps the unit box to the env's bounds.
- Errors. Out-of-range config values and unusable envs (discrete or non-Box
  action space, non-Box observation space, unknown id) raise `ValueError`
  naming the value.
"""

import json
import os
import pickle

import gymnasium as gym
import jax
import numpy as np
import pytest

from launch.configs import sac as sac_config
from common import checkpointing
from sac import envs
from sac import replay
from sac import train as sac_train

SCRIPTED_ID = "StochgradScriptedCounter-v0"
DICT_OBS_ID = "StochgradDictObs-v0"


class ScriptedCounter(gym.Env):
  """obs = [episode tag, t]; reward = t after the step.

  Even episodes terminate at t = 3; odd ones run into the TimeLimit (5 steps)
  and are truncated. The tag is seed * 100 + episode count, so transitions of
  different episodes and sub-envs are recognisable in the replay buffer.
  """
  observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
  action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

  def __init__(self):
    self.base, self.episode, self.t = 0, -1, 0

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    if seed is not None:
      self.base, self.episode = (seed % 1000) * 100, -1
    self.episode += 1
    self.t = 0
    return self._obs(), {}

  def _obs(self):
    return np.array([self.base + self.episode, self.t], np.float32)

  def step(self, action):
    self.t += 1
    terminated = self.episode % 2 == 0 and self.t == 3
    return self._obs(), float(self.t), terminated, False, {}


class DictObs(gym.Env):
  observation_space = gym.spaces.Dict(
      {"x": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
  action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


if SCRIPTED_ID not in gym.registry:
  gym.register(SCRIPTED_ID, entry_point=ScriptedCounter, max_episode_steps=5)
if DICT_OBS_ID not in gym.registry:
  gym.register(DICT_OBS_ID, entry_point=DictObs)


def test_step_returns_final_obs_as_next_obs_and_reset_obs_to_act_on():
  env = envs.make_vec_env(SCRIPTED_ID, 1)
  obs, _ = env.reset(seed=[7])
  seen = []
  for _ in range(12):
    act_obs, reward, terminated, truncated, next_obs = envs.step(
        env, np.zeros((1, 1)))
    # s' continues the episode of s: same tag, t + 1.
    assert next_obs[0, 0] == obs[0, 0] and next_obs[0, 1] == obs[0, 1] + 1
    assert reward[0] == next_obs[0, 1]
    if terminated[0] or truncated[0]:
      assert act_obs[0, 0] == obs[0, 0] + 1 and act_obs[0, 1] == 0  # reset obs
    else:
      np.testing.assert_array_equal(act_obs, next_obs)
    seen.append((int(next_obs[0, 0]) % 100, int(next_obs[0, 1]),
                 bool(terminated[0]), bool(truncated[0])))
    obs = act_obs
  # Episode 0 terminates at t=3; episode 1 is truncated at t=5; episode 2
  # terminates at t=3 again.
  assert seen[2] == (0, 3, True, False)
  assert seen[7] == (1, 5, False, True)
  assert seen[10] == (2, 3, True, False)
  assert sum(s[2] for s in seen) == 2 and sum(s[3] for s in seen) == 1


def test_replay_buffer_after_training_has_no_cross_episode_transitions(
    tmp_path):
  config = sac_config.get_config("test")
  config.env_id = SCRIPTED_ID
  config.num_envs = 2
  config.num_steps = 60
  config.learning_starts = 30
  config.batch_size = 8
  config.buffer_size = 100
  config.eval_every = 60
  config.checkpoint_every = 60
  sac_train.train(config, str(tmp_path))
  template = sac_train.init_states(
      sac_train.build_agent(config, 2, 1), config, [config.seed])
  state, _, _ = checkpointing.Checkpointer(str(tmp_path)).restore(60, template)
  size = int(state.buffer.size[0])
  # The last iteration's transitions (one per env) wait for the next update
  # in the checkpoint's host state (sac.collector); the buffer has the rest.
  assert size == 60 - config.num_envs
  buf = jax.tree.map(np.asarray, replay.unpack(
      state.buffer, state.buffer.data[0, :size]))
  obs, next_obs, terminated = buf.obs, buf.next_obs, buf.terminated
  np.testing.assert_array_equal(next_obs[:, 0], obs[:, 0])       # same episode
  np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1] + 1)   # consecutive
  np.testing.assert_array_equal(buf.reward, next_obs[:, 1])
  episode = next_obs[:, 0] % 100
  expected_terminal = (episode % 2 == 0) & (next_obs[:, 1] == 3)
  np.testing.assert_array_equal(terminated,
                                expected_terminal.astype(np.float32))
  # Truncated transitions (odd episodes, t = 5) are stored and bootstrap.
  assert np.any((episode % 2 == 1) & (next_obs[:, 1] == 5))
  # The two sub-envs (different reset seeds) both appear.
  assert len(np.unique(obs[:, 0] // 100)) == 2


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "HalfCheetah-v5"])
def test_snapshot_restore_round_trips_env_state(env_id):
  rng = np.random.default_rng(0)
  env = envs.make_vec_env(env_id, 2)
  env.reset(seed=[1, 2])
  for _ in range(150):
    envs.step(env, rng.uniform(-1, 1, (2,) + env.single_action_space.shape))
  blob = envs.snapshot(env)
  copy = envs.make_vec_env(env_id, 2)
  copy.reset(seed=[5, 6])
  envs.restore(copy, blob)
  ended = 0
  for _ in range(1100):
    action = rng.uniform(-1, 1, (2,) + env.single_action_space.shape)
    a, b = envs.step(env, action), envs.step(copy, action)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    ended += int(np.sum(a[2] | a[3]))
  assert ended >= 2   # the comparison crossed episode ends (TimeLimit state).


class _Payload:
  """Unpickling this runs a shell command that creates `path`."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f"touch {self.path}",))


def test_restore_refuses_a_pickle_and_runs_nothing(tmp_path):
  live = tmp_path / "pickle_ran"
  pickle.loads(pickle.dumps(_Payload(live)))   # The payload is live...
  assert live.exists()
  target = tmp_path / "restore_ran"
  env = envs.make_vec_env("Pendulum-v1", 1)
  with pytest.raises(ValueError, match="not JSON; refusing to load it"):
    envs.restore(env, pickle.dumps({"subenvs": [_Payload(target)]}))
  assert not target.exists()                  # ...but restore never runs it.


def _tampered(blob, edit):
  saved = json.loads(blob)
  edit(saved["subenvs"][0][-1])   # The base env's attributes.
  return json.dumps(saved).encode()


@pytest.mark.parametrize("edit,match", [
    (lambda base: base.update(state={"type": "os.system", "items": ["ls"]}),
     r"names type 'os.system'; only \('tuple', 'dict', 'ndarray'"),
    (lambda base: base["_np_random"].update(bit_generator="Evil"),
     "names bit generator 'Evil'"),
    (lambda base: base["state"].update(dtype="|O"),
     "array of dtype object; only bool and numeric"),
    (lambda base: base["state"].pop("data"), "snapshot is malformed"),
])
def test_restore_refuses_snapshots_naming_other_types(edit, match):
  env = envs.make_vec_env("Pendulum-v1", 1)
  env.reset(seed=[0])
  blob = envs.snapshot(env)
  before = envs.snapshot(env)
  with pytest.raises(ValueError, match=match):
    envs.restore(env, _tampered(blob, edit))
  assert envs.snapshot(env) == before   # Refused before the env is touched.


def test_action_scaler_maps_unit_box_to_bounds():
  scaler = envs.ActionScaler(gym.spaces.Box(
      np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)))
  np.testing.assert_allclose(scaler.to_env(np.array([[-1.0, 1.0], [0.0, 0.0]])),
                             [[-2.0, 10.0], [0.0, 5.0]])


@pytest.mark.parametrize("field,value,match", [
    ("actor_lr", -1e-3, "config.actor_lr"),
    ("critic_lr", 0.0, "config.critic_lr"),
    ("batch_size", 2000,
     "batch_size=2000 is larger than config.buffer_size=1000"),
    ("actor_grad", "finite_difference", "actor_grad"),
    ("temperature_loss", "beta", "config.temperature_loss must be one of"),
    ("gamma", 1.5, "config.gamma"),
    ("num_seeds", 0, "config.num_seeds"),
])
def test_bad_config_values_name_the_value(tmp_path, field, value, match):
  config = sac_config.get_config("test")
  config[field] = value
  with pytest.raises(ValueError, match=match):
    sac_train.train(config, str(tmp_path))


@pytest.mark.parametrize("env_id,match", [
    ("NoSuchEnv-v0", "unknown env_id 'NoSuchEnv-v0'"),
    ("CartPole-v1", "Discrete.*continuous gymnasium.spaces.Box action space"),
    (DICT_OBS_ID, "Dict.*Box observation space"),
])
def test_bad_env_names_the_problem(tmp_path, env_id, match):
  config = sac_config.get_config("test")
  config.env_id = env_id
  with pytest.raises(ValueError, match=match):
    sac_train.train(config, str(tmp_path))
