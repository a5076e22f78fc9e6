"""SAC checkpoints written with Adam per parameter array load and continue.

Oracle: a state trained with the earlier optimizer layout (`optax.adam` over
the parameter trees), saved and restored into the current layout
(`optax.flatten`), holds the same parameters and the same moments, raveled
in tree order; and further gradient steps from it give, bit for bit, the
parameters the earlier layout gives from the state it saved (two seeds,
stacked as a run stacks them).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import checkpointing
from sac import learner
from sac import replay
from sac import state_layouts

# After a failed restore, orbax's worker threads can leave an event-loop
# callback behind; pytest reports it as an unraisable exception.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

OBS, ACT, BATCH = 3, 2, 8


def _agents():
  agent = learner.make_agent(
      obs_dim=OBS, action_dim=ACT, hidden_sizes=(16, 16), num_critics=2,
      actor_lr=1e-2, critic_lr=1e-2, alpha_lr=1e-2, gamma=0.99, tau=0.005,
      batch_size=BATCH, alpha=None, target_entropy=None,
      actor_grad=learner.PATHWISE, score_function_samples=8)
  old = dataclasses.replace(agent, actor_optimizer=optax.adam(1e-2),
                            critic_optimizer=optax.adam(1e-2))
  return agent, old


def _stacked(agent, seeds=(0, 1)):
  states = [learner.init_state(agent, s, buffer_size=4) for s in seeds]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def _steps(agent, state, n):
  """`n` gradient steps per seed on fixed random batches."""
  keys = jax.random.split(jax.random.PRNGKey(7), n)
  step = jax.jit(jax.vmap(lambda s, b: learner.gradient_step(agent, s, b)[0]))
  for k in keys:
    ko, ka, kr, kn = jax.random.split(k, 4)
    batch = replay.Transition(
        obs=jax.random.normal(ko, (2, BATCH, OBS)),
        action=jax.random.uniform(ka, (2, BATCH, ACT), minval=-1, maxval=1),
        reward=jax.random.normal(kr, (2, BATCH)),
        next_obs=jax.random.normal(kn, (2, BATCH, OBS)),
        terminated=jnp.zeros((2, BATCH)))
    state = step(state, batch)
  return state


def test_earlier_checkpoint_restores_converted_and_continues_alike(tmp_path):
  agent, old_agent = _agents()
  old_state = _steps(old_agent, _stacked(old_agent), 3)
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(3, old_state, None, {"step": 3}, config={})
  like = _stacked(agent)
  with pytest.raises(Exception):   # The current layout alone cannot.
    checkpointer.restore(3, like, with_host=False)
  state, _, _ = checkpointer.restore(3, like, with_host=False,
                                     layouts=state_layouts.LAYOUTS)
  checkpointer.close()
  assert jax.tree.structure(state) == jax.tree.structure(like)
  for name in ("actor", "critic"):
    old_adam, new_adam = (getattr(s, name).opt_state[0]
                          for s in (old_state, state))
    for moment in ("mu", "nu"):
      leaves = jax.tree.leaves(getattr(old_adam, moment))
      expected = np.concatenate([np.reshape(x, (2, -1)) for x in leaves], 1)
      np.testing.assert_array_equal(getattr(new_adam, moment), expected)
    np.testing.assert_array_equal(new_adam.count, [3, 3])
  jax.tree.map(np.testing.assert_array_equal,
               (old_state.actor.params, old_state.critic.params),
               (state.actor.params, state.critic.params))
  # Two more steps: both layouts apply the same elementwise Adam.
  after_old = _steps(old_agent, old_state, 2)
  after_new = _steps(agent, state, 2)
  jax.tree.map(np.testing.assert_array_equal,
               (after_old.actor.params, after_old.critic.params),
               (after_new.actor.params, after_new.critic.params))


def test_the_layout_converts_a_single_unstacked_state():
  agent, old_agent = _agents()
  old = _steps(old_agent, _stacked(old_agent), 1)
  single = jax.tree.map(lambda x: x[0], old)
  new = state_layouts.PER_ARRAY_ADAM.convert(single)
  like = learner.init_state(agent, 0, buffer_size=4)
  assert jax.tree.structure(new) == jax.tree.structure(like)
  mu = new.critic.opt_state[0].mu
  assert mu.shape == (sum(x.size for x in jax.tree.leaves(like.critic.params)),)
  np.testing.assert_array_equal(
      mu[:single.critic.opt_state[0].mu["VmapCritic_0"]["MLP_0"]["Dense_0"][
          "bias"].size],
      np.ravel(single.critic.opt_state[0].mu["VmapCritic_0"]["MLP_0"][
          "Dense_0"]["bias"]))
