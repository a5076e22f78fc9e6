"""SAC checkpoints written with Adam per parameter array load and continue.

Oracles: a state in the earlier optimizer layout (`optax.adam` over the
parameter trees, distinct values in every moment), saved and restored into
the current layout (`optax.flatten`), holds the same arrays, with each
moment raveled and concatenated in tree order (two seeds, stacked as a run
stacks them; and one unstacked state). A run written with the earlier
layout and resumed with the current agent writes, byte for byte, the
eval.csv that the earlier layout writes without a break.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import checkpointing
from launch.configs import sac as sac_config
from sac import learner
from sac import state_layouts
from sac import train as sac_train

# After a failed restore, orbax's worker threads can leave an event-loop
# callback behind; pytest reports it as an unraisable exception.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

OBS, ACT = 3, 2


def _per_array_adam_build(build):
  """`sac.train.build_agent` as it was before the flat layout."""
  def old_build(config, obs_dim, action_dim):
    return dataclasses.replace(
        build(config, obs_dim, action_dim),
        actor_optimizer=optax.adam(config.actor_lr),
        critic_optimizer=optax.adam(config.critic_lr))
  return old_build


def _agents():
  """The test preset's agent, and the same agent with per-array Adam."""
  config = sac_config.get_config("test")
  return (sac_train.build_agent(config, OBS, ACT),
          _per_array_adam_build(sac_train.build_agent)(config, OBS, ACT))


def _stacked(agent, seeds=(0, 1)):
  states = [learner.init_state(agent, s, buffer_size=4) for s in seeds]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def _with_distinct_moments(state):
  """`state` with distinct values in every Adam moment (leaf i holds
  1000 i, 1000 i + 1, ...) and a count of 7."""
  leaves, treedef = jax.tree.flatten((state.actor.opt_state,
                                      state.critic.opt_state))
  leaves = [np.full(x.shape, 7, x.dtype) if x.dtype == jnp.int32
            else (1000.0 * i + np.arange(x.size).reshape(x.shape)).astype(
                x.dtype) for i, x in enumerate(leaves)]
  actor_opt, critic_opt = jax.tree.unflatten(treedef, leaves)
  return state.replace(actor=state.actor.replace(opt_state=actor_opt),
                       critic=state.critic.replace(opt_state=critic_opt))


def _expected_flat(tree, leading):
  return np.concatenate([np.reshape(x, x.shape[:leading] + (-1,))
                         for x in jax.tree.leaves(tree)], axis=-1)


def test_earlier_checkpoint_restores_with_its_moments_raveled(tmp_path):
  agent, old_agent = _agents()
  old_state = _with_distinct_moments(_stacked(old_agent))
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(3, old_state, None, {"step": 3}, config={})
  like = _stacked(agent)
  with pytest.raises(Exception):   # The current layout alone cannot.
    checkpointer.restore(3, like, with_host=False)
  state, _, _ = checkpointer.restore(3, like, with_host=False,
                                     layouts=state_layouts.layouts(4))
  checkpointer.close()
  assert jax.tree.structure(state) == jax.tree.structure(like)
  for name in ("actor", "critic"):
    old_adam, new_adam = (getattr(s, name).opt_state[0]
                          for s in (old_state, state))
    for moment in ("mu", "nu"):
      np.testing.assert_array_equal(
          getattr(new_adam, moment), _expected_flat(getattr(old_adam, moment),
                                                    leading=1))
    np.testing.assert_array_equal(new_adam.count, old_adam.count)
  # Everything else is as saved.
  jax.tree.map(np.testing.assert_array_equal,
               old_state.replace(actor=None, critic=None),
               state.replace(actor=None, critic=None))
  jax.tree.map(np.testing.assert_array_equal,
               (old_state.actor.params, old_state.critic.params),
               (state.actor.params, state.critic.params))


def test_an_earlier_checkpoint_with_a_smaller_buffer_restores_grown(
    tmp_path):
  """Adam per parameter array and a 4-row buffer (3 transitions in it, one
  pending: step 4), restored into the current layout with 8 rows."""
  agent, old_agent = _agents()
  old_state = _with_distinct_moments(_stacked(old_agent))
  data = np.arange(2 * 4 * old_state.buffer.data.shape[-1], dtype=np.float32
                   ).reshape(old_state.buffer.data.shape)
  old_state = old_state.replace(buffer=old_state.buffer.replace(
      data=jnp.asarray(data), insert_index=jnp.array([3, 3], jnp.int32),
      size=jnp.array([3, 3], jnp.int32)))
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(4, old_state, None, {"step": 4},
                    config={"buffer_size": 4, "num_envs": 1})
  like = jax.tree.map(lambda *xs: jnp.stack(xs), *[
      learner.init_state(agent, s, buffer_size=8) for s in (0, 1)])
  state, _, _ = checkpointer.restore(4, like, with_host=False,
                                     layouts=state_layouts.layouts(8))
  checkpointer.close()
  assert jax.tree.structure(state) == jax.tree.structure(like)
  np.testing.assert_array_equal(state.buffer.data[:, :4], data)
  np.testing.assert_array_equal(state.buffer.data[:, 4:], 0.0)
  np.testing.assert_array_equal(state.buffer.insert_index, [3, 3])
  np.testing.assert_array_equal(
      state.critic.opt_state[0].mu,
      _expected_flat(old_state.critic.opt_state[0].mu, leading=1))


def test_the_layout_converts_a_single_unstacked_state():
  agent, old_agent = _agents()
  old = _with_distinct_moments(learner.init_state(old_agent, 0, buffer_size=4))
  new = state_layouts.PER_ARRAY_ADAM.convert(old, None)
  like = learner.init_state(agent, 0, buffer_size=4)
  assert jax.tree.structure(new) == jax.tree.structure(like)
  for name in ("actor", "critic"):
    np.testing.assert_array_equal(
        getattr(new, name).opt_state[0].nu,
        _expected_flat(getattr(old, name).opt_state[0].nu, leading=0))


def test_a_run_written_before_the_flat_layout_resumes_as_it_would_go_on(
    tmp_path, monkeypatch):
  """Pendulum-v1, test preset, 2 seeds, updates from step 100: 200 steps
  with per-array Adam, then resumed to 400 with the current agent, against
  400 uninterrupted steps with per-array Adam."""
  config = sac_config.get_config("test")
  config.num_seeds, config.learning_starts, config.num_steps = 2, 100, 400
  new_build = sac_train.build_agent
  monkeypatch.setattr(sac_train, "build_agent",
                      _per_array_adam_build(new_build))
  sac_train.train(config, str(tmp_path / "old"))
  config.num_steps = 200
  sac_train.train(config, str(tmp_path / "resumed"))
  monkeypatch.setattr(sac_train, "build_agent", new_build)
  config.num_steps = 400
  sac_train.train(config, str(tmp_path / "resumed"))
  old, resumed = ((tmp_path / name / "eval.csv").read_text()
                  for name in ("old", "resumed"))
  assert resumed == old
  assert [line.split(",")[0] for line in old.splitlines()[1:]] == [
      "200", "200", "400", "400"]
