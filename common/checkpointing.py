"""Atomic orbax checkpoints of a run's state, and the resume config check.

A checkpoint holds three items, written together by one
`orbax.checkpoint.CheckpointManager.save` (orbax writes into a temporary
directory and renames it when complete, so a SIGKILL mid-save leaves the
previous checkpoint as the latest one):

  "state": the training-state pytree (SAC: the SACState stacked over seeds,
           with networks, optimizer states, target critics, log alpha, raw
           RNG keys, counters and the replay buffer; MoE: parameters,
           optimizer state and step);
  "host":  numpy arrays owned by the host loop (SAC: the pickled environment
           snapshot as uint8, the observation to act on, the pending action;
           MoE saves none);
  "meta":  JSON: the host loop's counters.

Saving is synchronous: the state's buffers are donated to the next update, so
an asynchronous save could read freed memory.

`write_run_config` writes `workdir/config.json` atomically. Used by
`sac.train` and `moe.train`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """Save/restore of (state, host arrays, metadata) under DIR/checkpoints."""

  def __init__(self, workdir: str, max_to_keep: int = 2,
               keep_steps: Sequence[int] = ()):
    """Keeps the latest `max_to_keep` checkpoints and, permanently, any whose
    step is in `keep_steps` (orbax's LatestN and CustomSteps policies)."""
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    policies = ocp.checkpoint_managers
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(n=max_to_keep),
                policies.CustomSteps(steps=tuple(keep_steps))]),
            enable_async_checkpointing=False, create=True),
        item_names=("state", "host", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, host: dict[str, np.ndarray] | None,
           meta: dict[str, Any]) -> None:
    """Saves checkpoint `step`; `host=None` for runs with no host arrays."""
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave(meta)}
    if host is not None:
      items["host"] = ocp.args.StandardSave(host)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, state_like: Any, *, with_host: bool = True):
    """Restores checkpoint `step` as (state, host or None, meta).

    `state_like` gives the state's structure; `with_host=False` for
    checkpoints saved with `host=None`.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    items = {"state": ocp.args.StandardRestore(abstract),
             "meta": ocp.args.JsonRestore()}
    if with_host:
      items["host"] = ocp.args.StandardRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    host = ({k: np.asarray(v) for k, v in restored["host"].items()}
            if with_host else None)
    return restored["state"], host, dict(restored["meta"])

  def close(self) -> None:
    self.manager.close()


def check_resume_config(workdir: str, config,
                        invariant: Sequence[str]) -> None:
  """Raises ValueError if `workdir/config.json` differs on `invariant` keys.

  Resuming a checkpoint under a config that changes these fields (seed,
  sizes, schedule...) would not continue the same run.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  current = json.loads(config.to_json())
  changed = [k for k in invariant if saved.get(k) != current.get(k)]
  if changed:
    raise ValueError(
        f"workdir {workdir!r} holds a checkpoint of a run with different "
        + ", ".join(f"{k} (saved {saved.get(k)!r}, now {current.get(k)!r})"
                    for k in changed)
        + "; use a new workdir or the saved values.")


def write_run_config(workdir: str, config) -> None:
  """Writes `workdir/config.json` atomically (temporary file + rename).

  Call it after `check_resume_config` on resume: a kill mid-write leaves the
  previous file, which later resumes are checked against.
  """
  path = os.path.join(workdir, "config.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json(indent=2))
  os.replace(tmp, path)
