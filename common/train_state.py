"""The one train-state structure of every trainer.

A `TrainState` holds a learner's parameters, its optimizer state and its
step count, all as arrays; `apply_gradients(grads, tx)` is the optax update
every trainer makes (`tx.update`, then `optax.apply_updates`, then step + 1).

Flax's `flax.training.train_state.TrainState` does the same, but keeps the
optimizer and the apply function in the pytree as static metadata. Two
states built by separate calls (a checkpoint template and a run's state;
the final states of two runs compared for equality) then have different
tree structures, since optax makes new closures per call, and `jax.tree.map`
refuses to pair them. This structure holds data only, so any two states of
one model pair up, and the optimizer is passed where it is used.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from common import train_state
  >>> tx = optax.sgd(0.5)
  >>> state = train_state.create(params={"w": jnp.ones(2)}, tx=tx)
  >>> state = state.apply_gradients({"w": jnp.ones(2)}, tx)
  >>> state.params["w"].tolist(), int(state.step)
  ([0.5, 0.5], 1)
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  params: Any  # A pytree of arrays.
  opt_state: Any  # The optimizer's state for `params`.
  step: jax.Array  # [] int32: updates applied.

  def apply_gradients(self, grads: Any, tx: optax.GradientTransformation
                      ) -> "TrainState":
    """One optimizer step with `grads` (a pytree like `params`)."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return TrainState(params=optax.apply_updates(self.params, updates),
                      opt_state=opt_state, step=self.step + 1)


def create(*, params: Any, tx: optax.GradientTransformation) -> TrainState:
  """A fresh state: `tx` initialised on `params`, step int32 zero."""
  return TrainState(params=params, opt_state=tx.init(params),
                    step=jnp.zeros((), jnp.int32))
