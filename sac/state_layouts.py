"""Earlier structures of the SACState, so that their checkpoints still load.

`PER_ARRAY_ADAM`: until commit b9a170d (2026-12-04), the actor's and the
critics' Adam moments were trees like their parameters, one array per
parameter array (`optax.adam`). Since then Adam runs over one flat vector
per network (`optax.flatten(optax.adam(...))`), whose moments are those
trees' leaves, raveled and concatenated in `jax.tree.leaves` order. The
conversion does exactly that. Adam's updates are elementwise and
`optax.flatten` only rearranges them, so on one device a run of several
seeds goes on with the arithmetic it had, bit for bit; a single seed, or
seeds sharded over devices, goes on with the flat layout's rounding, which
differs in the last bits (docs/sac.md, "Resume").

Example:
  >>> import jax
  >>> from launch.configs import sac as sac_config
  >>> from sac import learner, state_layouts, train
  >>> agent = train.build_agent(sac_config.get_config("test"), 3, 1)
  >>> state = learner.init_state(agent, seed=0, buffer_size=8)
  >>> old = state_layouts.PER_ARRAY_ADAM.template(state)
  >>> jax.tree.structure(old.actor.params) == jax.tree.structure(
  ...     old.actor.opt_state[0].mu)
  True
  >>> new = state_layouts.PER_ARRAY_ADAM.convert(old)
  >>> jax.tree.structure(new) == jax.tree.structure(state)
  True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common import checkpointing
from common import train_state
from sac import learner


def _per_array(state: train_state.TrainState) -> train_state.TrainState:
  """A TrainState whose flat Adam moments are trees like its parameters."""
  adam, *rest = state.opt_state
  return state.replace(opt_state=(
      adam._replace(mu=state.params, nu=state.params), *rest))


def _ravel(tree, leading: int) -> jax.Array:
  """The leaves raveled past `leading` axes and concatenated, in tree order
  (`optax.flatten`'s order)."""
  leaves = jax.tree.leaves(tree)
  return jnp.concatenate(
      [jnp.reshape(x, x.shape[:leading] + (-1,)) for x in leaves], axis=-1)


def _flat(state: train_state.TrainState) -> train_state.TrainState:
  adam, *rest = state.opt_state
  leading = jnp.ndim(adam.count)  # The seed axis of a stacked state, if any.
  return state.replace(opt_state=(
      adam._replace(mu=_ravel(adam.mu, leading), nu=_ravel(adam.nu, leading)),
      *rest))


def _template(state: learner.SACState) -> learner.SACState:
  return state.replace(actor=_per_array(state.actor),
                       critic=_per_array(state.critic))


def _convert(state: learner.SACState) -> learner.SACState:
  return state.replace(actor=_flat(state.actor), critic=_flat(state.critic))


# Adam's moments as trees like the parameters (checkpoints before b9a170d).
PER_ARRAY_ADAM = checkpointing.Layout(
    name="Adam per parameter array", template=_template, convert=_convert)

# Every earlier layout a SAC checkpoint may hold, oldest last.
LAYOUTS = (PER_ARRAY_ADAM,)
