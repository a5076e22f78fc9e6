"""Other structures of the SACState, so that their checkpoints still load.

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

`grown_buffer(capacity)`: a run resumed with a larger `buffer_size` (an
extended run: `launch.studies` sizes a cell's buffer to its step budget)
restores a checkpoint whose replay buffer has fewer rows. The loop's step
counts each seed's transitions, and at a checkpoint the last iteration's
`num_envs` are pending, outside the buffer (`sac.collector`), so the buffer
has received step - num_envs. If that is at most its capacity it never
wrapped: its rows are padded with zeros up to `capacity` and the next row to
write is the number stored. `replay.add` and `replay.sample`
then act on the padded buffer exactly as on a buffer of `capacity` rows
given from the start, so the extended run is the run that the larger budget
would have trained. A buffer that wrapped has lost its oldest transitions,
so no larger buffer reproduces it; its resume is refused
(`checkpointing.LayoutRefused`).

`layouts(capacity)` lists every layout a SAC checkpoint may hold, the two
together included (a run written before b9a170d, extended).

Example:
  >>> import jax
  >>> from common import checkpointing
  >>> from launch.configs import sac as sac_config
  >>> from sac import learner, state_layouts, train
  >>> agent = train.build_agent(sac_config.get_config("test"), 3, 1)
  >>> state = learner.init_state(agent, seed=0, buffer_size=8)
  >>> source = checkpointing.Source(step=5, config={"buffer_size": 4,
  ...                                             "num_envs": 1})
  >>> old = state_layouts.PER_ARRAY_ADAM.template(state, source)
  >>> jax.tree.structure(old.actor.params) == jax.tree.structure(
  ...     old.actor.opt_state[0].mu)
  True
  >>> new = state_layouts.PER_ARRAY_ADAM.convert(old, source)
  >>> jax.tree.structure(new) == jax.tree.structure(state)
  True
  >>> grow = state_layouts.grown_buffer(8)
  >>> small = grow.template(state, source)
  >>> small.buffer.capacity
  4
  >>> grown = grow.convert(small.replace(buffer=small.buffer.replace(
  ...     size=small.buffer.size + 4)), source)
  >>> grown.buffer.capacity, int(grown.buffer.insert_index)
  (8, 4)
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


def _template(state: learner.SACState, _) -> learner.SACState:
  return state.replace(actor=_per_array(state.actor),
                       critic=_per_array(state.critic))


def _convert(state: learner.SACState, _) -> learner.SACState:
  return state.replace(actor=_flat(state.actor), critic=_flat(state.critic))


# Adam's moments as trees like the parameters (checkpoints before b9a170d).
PER_ARRAY_ADAM = checkpointing.Layout(
    name="Adam per parameter array", template=_template, convert=_convert)


def _saved_capacity(state: learner.SACState,
                    source: checkpointing.Source) -> int:
  """The checkpoint's buffer capacity; raises unless the layout applies."""
  saved = source.config.get("buffer_size")
  if saved is None or saved >= state.buffer.capacity:
    raise ValueError(f"checkpoint {source.step}'s buffer ({saved} rows) is "
                     f"not smaller than {state.buffer.capacity}.")
  received = source.step - source.config.get("num_envs", 0)
  if received > saved:
    raise checkpointing.LayoutRefused(
        f"cannot grow the replay buffer of checkpoint {source.step} from "
        f"{saved} to {state.buffer.capacity} rows: it had received "
        f"{received} transitions per seed, more than its {saved} rows, so it "
        f"wrapped and lost its oldest; resume with buffer_size={saved}.")
  return saved


def grown_buffer(capacity: int) -> checkpointing.Layout:
  """A checkpoint whose unwrapped buffer has fewer than `capacity` rows
  (module doc)."""

  def template(state: learner.SACState, source) -> learner.SACState:
    saved = _saved_capacity(state, source)
    buffer = state.buffer
    return state.replace(buffer=buffer.replace(
        data=buffer.data[..., :saved, :]))

  def convert(state: learner.SACState, _) -> learner.SACState:
    buffer = state.buffer
    pad = [(0, 0)] * buffer.data.ndim
    pad[-2] = (0, capacity - buffer.capacity)
    return state.replace(buffer=buffer.replace(
        data=jnp.pad(buffer.data, pad),
        insert_index=jnp.copy(buffer.size)))  # Own array: both are donated.

  def holds(source) -> bool:
    return source.config.get("buffer_size", capacity) < capacity

  return checkpointing.Layout(name=f"a replay buffer of fewer than "
                              f"{capacity} rows", template=template,
                              convert=convert, holds=holds)


def _both(grown: checkpointing.Layout) -> checkpointing.Layout:
  """Adam per parameter array and a smaller buffer, together."""
  return checkpointing.Layout(
      name=f"{PER_ARRAY_ADAM.name} and {grown.name}",
      template=lambda like, source: _template(grown.template(like, source),
                                              source),
      convert=lambda state, source: grown.convert(_convert(state, source),
                                                  source),
      holds=grown.holds)


def layouts(capacity: int) -> tuple[checkpointing.Layout, ...]:
  """Every other layout a SAC checkpoint may hold, for a run whose buffer
  has `capacity` rows."""
  grown = grown_buffer(capacity)
  return (PER_ARRAY_ADAM, grown, _both(grown))
