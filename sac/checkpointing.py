"""Atomic orbax checkpoints of the full run state.

A checkpoint holds three items, written together by one
`orbax.checkpoint.CheckpointManager.save` (orbax writes into a temporary
directory and renames it when complete, so a SIGKILL mid-save leaves the
previous checkpoint as the latest one):

  "state": the SACState pytree stacked over seeds (networks, optimizer states,
           target critics, log alpha, raw RNG keys, counters, replay buffer);
  "host":  numpy arrays owned by the host loop: the pickled environment
           snapshot (uint8), the observation to act on and the pending action;
  "meta":  JSON: env step, iteration and evaluation counters.

Saving is synchronous: the state's buffers are donated to the next update, so
an asynchronous save could read freed memory.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """Save/restore of (state, host arrays, metadata) under DIR/checkpoints."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False,
            create=True),
        item_names=("state", "host", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, host: dict[str, np.ndarray],
           meta: dict[str, Any]) -> None:
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            host=ocp.args.StandardSave(host),
            meta=ocp.args.JsonSave(meta)),
        force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, state_like: Any):
    """Restores checkpoint `step`; `state_like` gives the state's structure."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            host=ocp.args.StandardRestore(),
            meta=ocp.args.JsonRestore()))
    host = {k: np.asarray(v) for k, v in restored["host"].items()}
    return restored["state"], host, dict(restored["meta"])

  def close(self) -> None:
    self.manager.close()
