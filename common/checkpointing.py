"""Runs that can be trusted: atomic orbax checkpoints, resume checks, recovery.

A trainer opens its workdir with `open_run` and keeps it open for the whole
run:

  with checkpointing.open_run(workdir, config,
                              allowed_changes=RESUME_ALLOWED) as run:
    state = ...                                   # fresh state (template)
    restored = run.restore_latest(state)          # None on a fresh run
    ...
    run.save(step, state, meta={"step": step})

`open_run` takes the workdir's lock (`common.workdir_lock`: one writer per
workdir; a second process stops at once naming the pid holding it), then
opens `workdir/checkpoints`. Once `restore_latest` has accepted the config
(a fresh run or a resume), it writes `workdir/config.json` and appends the
process's package versions, commit and machine to `workdir/provenance.json`
(`common.provenance`: one record per start or resume).

Checkpoints. Each holds four items and `checksums.json` (below), written
together by one `orbax.checkpoint.CheckpointManager.save` (orbax writes into
a temporary directory and renames it when complete, so a SIGKILL mid-save
leaves the previous checkpoint as the latest one):

  "state":  the training-state pytree (SAC: the SACState stacked over seeds,
            with networks, optimizer states, target critics, log alpha, raw
            RNG keys, counters and the replay buffer; MoE: parameters,
            optimizer state and step);
  "host":   numpy arrays owned by the host loop (SAC: the environment
            snapshot, a JSON document stored as uint8, the observation to act
            on, the pending action; absent for MoE);
  "meta":   JSON: the host loop's counters;
  "config": JSON: the run's full config. The resume check reads it from the
            checkpoint itself, so it cannot drift from the state it
            describes; `workdir/config.json` is a copy for people to read.

Loading never executes code from the checkpoint: orbax restores arrays and
JSON, and the SAC environment snapshot is JSON too (`sac.envs.restore`).
Saving is synchronous: the state's buffers are donated to the next update, so
an asynchronous save could read freed memory.

Resume checks (`Run.restore_latest`, `check_resume_config`). Every config
field must equal the checkpoint's, except the trainer's documented
`allowed_changes` (fields that cannot change the trajectory: the step budget,
the progress bar, log output). Otherwise a ValueError names each changed field
with its saved and new value, and nothing in the workdir is modified.

Checksums. Each checkpoint directory holds `checksums.json`, the size and
SHA-256 of every file in it but itself and the two files orbax writes while
committing (`_CHECKPOINT_METADATA`, rewritten with the commit time, and
`commit_success.txt`; orbax reads them for bookkeeping only, and a restore
with them garbled gives the same values). It is written into orbax's
temporary directory just before the rename that commits the checkpoint
(`CheckpointManagerOptions.temporary_path_class`), so every committed
checkpoint has one, and a SIGKILL before the rename leaves the previous
checkpoint the latest, as for any interrupted save. `Checkpointer.restore`
and `restore_config` check the files first: a changed, missing or unlisted
file, or an unreadable manifest, raises `ChecksumError` naming the files.
This catches damage that still decodes (changed bytes of an array, an item
rewritten with other values) as well as damage that does not.

A checkpoint without `checksums.json` was written before checkpoints carried
checksums (a committed checkpoint always has one). It is used unverified,
with a warning naming it: treating it as damaged would set aside every
checkpoint of a run started before checksums and stop that run
(`CheckpointsDamagedError`), although they are as trustworthy as they were
when written; such a run's next save carries checksums.

Damaged checkpoints. If the latest checkpoint fails its checksums or does
not restore (a truncated or garbled file from a full disk or a bad copy, a
file changed in place), an absl warning names it and the reason (for
checksums: the files that differ), it is renamed aside to
`checkpoints/<step>.damaged-<n>` for inspection, and the run resumes from
the newest checkpoint that verifies and restores; trainers then trim their
CSV logs to that step (`common.csv_logs.CsvLog`). If no checkpoint
restores, `CheckpointsDamagedError` lists each one with its reason, and
nothing is renamed or overwritten. The last good checkpoint named in
trainers' error messages, `Run.latest_step()`, is the newest checkpoint
that matches its checksums (or has none): one saved or verified by this
process, or else verified then.

Earlier layouts. When a trainer changes its state's structure (SAC's Adam
moments became one flat vector per network), checkpoints written before the
change no longer match the fresh state; nor does a checkpoint whose shapes
follow a config field that a resume may change (SAC's replay buffer, which
may grow). A trainer lists such structures as `Layout`s: a template in the
checkpoint's structure, built from the current one and the checkpoint's
step and config (`Source`), and a conversion of a state restored with it
into the current structure. `Checkpointer.restore` tries the current
structure first (after any layout whose `holds` finds the checkpoint's
config names it) and then each layout in turn; a checkpoint none of them
restores raises the current structure's error. The conversion only
rearranges restored arrays, so loading still executes nothing from the
checkpoint.

Growing fields and kept checkpoints. `may_grow` names config fields a
resume may increase but not decrease (SAC's buffer size, which an extended
run enlarges). A run keeps its latest `max_to_keep` checkpoints and,
permanently, those whose steps are in `keep_steps`. When a resume changes
that list (an extended run keeps other fractions of its new budget), no
checkpoint kept so far is deleted: a resume also keeps every checkpoint
older than the newest `max_to_keep` (only a kept one survives that long),
and the steps listed in the config field `keep_steps_field` of the newest
`max_to_keep`.

A full disk. If a save fails with ENOSPC, `CheckpointDiskFullError` (an
OSError) says so with the checkpoint directory; the partial temporary
directory is removed and the previous checkpoint stays the latest, intact.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from common import atomic_files
from common import provenance
from common import workdir_lock

_ITEMS = ("state", "host", "meta", "config")
# How long a failed save waits for its other writer threads to end.
_SAVE_THREAD_TIMEOUT_S = 60.0
_ABSENT = "<absent>"
# The manifest of a checkpoint's files, in its step directory.
MANIFEST = "checksums.json"
# Files orbax writes at the top of a step directory while it commits it,
# after the manifest: the step metadata (rewritten with the commit time) and
# the commit marker. They are not in the manifest.
_WRITTEN_AT_COMMIT = ("_CHECKPOINT_METADATA", "commit_success.txt")
# How many differing files a ChecksumError names.
_FILES_NAMED = 5


class CheckpointsDamagedError(RuntimeError):
  """No checkpoint in the workdir restores; nothing was changed."""


class CheckpointDiskFullError(OSError):
  """A save ran out of disk space; the previous checkpoint is intact."""


class ChecksumError(ValueError):
  """A checkpoint's files differ from its manifest (`MANIFEST`)."""


class LayoutRefused(ValueError):
  """A `Layout` matches the checkpoint but cannot convert it; raised as is
  (not taken for damage)."""


class Source(NamedTuple):
  """The checkpoint a `Layout` reads: its step and its stored config."""
  step: int
  config: dict[str, Any]


class Layout(NamedTuple):
  """Another structure of a trainer's state, and how to convert it.

  Attributes:
    name: what the layout was, for messages.
    template: (current state_like, `Source`) -> a state_like in the
      checkpoint's structure; raises if the layout does not apply to it, and
      `LayoutRefused` if it applies but cannot convert the checkpoint.
    convert: (a state restored with `template`'s structure, `Source`) -> the
      state in the current structure.
    holds: optional `Source` -> whether the checkpoint is known (from its
      config) to hold this layout; such a layout is tried before the current
      structure, which would fail (and leave orbax's reader threads to
      report errors).
  """
  name: str
  template: Callable[[Any, Source], Any]
  convert: Callable[[Any, Source], Any]
  holds: Callable[[Source], bool] | None = None


class Restored(NamedTuple):
  """A restored checkpoint."""
  step: int
  state: Any
  host: dict[str, np.ndarray] | None
  meta: dict[str, Any]
  config: dict[str, Any]


def config_to_dict(config) -> dict[str, Any]:
  """The config as plain JSON data (tuples become lists)."""
  if hasattr(config, "to_json"):
    return json.loads(config.to_json())
  return json.loads(json.dumps(dict(config)))


def _checksummed_files(step_dir: str) -> list[str]:
  """Paths (relative, '/'-separated) of the files the manifest covers."""
  paths = []
  for root, dirs, files in os.walk(step_dir):
    dirs.sort()
    rel_root = os.path.relpath(root, step_dir)
    for name in sorted(files):
      if rel_root == "." and (name == MANIFEST or name in _WRITTEN_AT_COMMIT):
        continue
      rel = name if rel_root == "." else os.path.join(rel_root, name)
      paths.append(rel.replace(os.sep, "/"))
  return paths


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(step_dir: str) -> None:
  """Writes `step_dir/MANIFEST`: the size and SHA-256 of each file in it.

  Covers every file but the manifest and orbax's commit files
  (`_WRITTEN_AT_COMMIT`), as {"algorithm": "sha256", "files": {path:
  {"size": bytes, "sha256": hex digest}}}.
  """
  files = {}
  for rel in _checksummed_files(step_dir):
    path = os.path.join(step_dir, *rel.split("/"))
    files[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
  atomic_files.write_json(os.path.join(step_dir, MANIFEST),
                          {"algorithm": "sha256", "files": files})


def verify_manifest(step_dir: str) -> bool:
  """Checks every file of `step_dir` against its manifest.

  Returns:
    True if the files match the manifest; False if there is no manifest (a
    checkpoint written before checkpoints carried one).

  Raises:
    ChecksumError: naming the files that changed, are missing or are not
      listed, or saying why the manifest is unreadable.
  """
  try:
    with open(os.path.join(step_dir, MANIFEST), "rb") as f:
      manifest = json.loads(f.read())
    listed = manifest["files"]
    if manifest["algorithm"] != "sha256" or not isinstance(listed, dict):
      raise ValueError(f"unknown format {str(manifest)[:80]!r}")
  except FileNotFoundError:
    return False
  except (OSError, ValueError, KeyError, TypeError) as err:
    raise ChecksumError(f"{MANIFEST} is unreadable ({type(err).__name__}: "
                        f"{err})") from err
  problems = []
  present = _checksummed_files(step_dir)
  for rel in sorted(set(listed) | set(present)):
    if rel not in present:
      problems.append(f"{rel} is missing")
    elif rel not in listed:
      problems.append(f"{rel} is not listed")
    else:
      problem = _file_problem(os.path.join(step_dir, *rel.split("/")),
                              listed[rel])
      if problem:
        problems.append(f"{rel} {problem}")
  if problems:
    more = len(problems) - _FILES_NAMED
    raise ChecksumError(
        f"{len(problems)} file(s) differ from {MANIFEST}: "
        + "; ".join(problems[:_FILES_NAMED])
        + (f"; and {more} more" if more > 0 else ""))
  return True


def _file_problem(path: str, entry: dict[str, Any]) -> str | None:
  """How the file at `path` differs from its manifest entry, or None."""
  if not (isinstance(entry, dict) and isinstance(entry.get("size"), int)
          and isinstance(entry.get("sha256"), str)):
    return f"has an unreadable entry {str(entry)[:80]!r}"
  try:
    size = os.path.getsize(path)
    if size != entry["size"]:
      return f"has {size} bytes, listed {entry['size']}"
    digest = _sha256(path)
  except OSError as err:
    return f"is unreadable ({err})"
  if digest != entry["sha256"]:
    return (f"changed (sha256 {digest[:12]}..., listed "
            f"{entry['sha256'][:12]}...)")
  return None


class _ChecksummedRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
  """orbax's atomic rename, writing the manifest into a checkpoint's
  temporary directory just before the rename that commits it.

  orbax finalizes each item's directory (inside the step's temporary
  directory) with this class too; those get no manifest of their own.
  """

  async def finalize(self, *args, **kwargs):
    parent = self.get_final().parent.name
    if ocp.path.atomicity_types.TMP_DIR_SUFFIX not in parent:  # A step.
      await asyncio.to_thread(write_manifest, os.fspath(self.get()))
    await super().finalize(*args, **kwargs)


class Checkpointer:
  """Save/restore of (state, host arrays, metadata, config) in checkpoints/."""

  def __init__(self, workdir: str, max_to_keep: int = 2,
               keep_steps: Sequence[int] = ()):
    """Keeps the latest `max_to_keep` checkpoints and, permanently, any whose
    step is in `keep_steps` (orbax's LatestN and CustomSteps policies)."""
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.max_to_keep = max_to_keep
    self.keep_steps = frozenset(int(s) for s in keep_steps)
    self.manager = self._manager()
    # Steps known to match their manifests (or, written before manifests,
    # to have none): saved or verified by this object.
    self._verified: set[int] = set()

  def _manager(self) -> ocp.CheckpointManager:
    policies = ocp.checkpoint_managers
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(n=self.max_to_keep),
                policies.CustomSteps(steps=tuple(sorted(self.keep_steps)))]),
            enable_async_checkpointing=False, create=True,
            temporary_path_class=_ChecksummedRename),
        item_names=_ITEMS)

  def keep(self, steps: Sequence[int]) -> None:
    """Also keeps the checkpoints of `steps` permanently (from the next save
    on, when orbax applies its policies)."""
    more = frozenset(int(s) for s in steps) - self.keep_steps
    if more:
      self.keep_steps |= more
      self.manager.close()
      self.manager = self._manager()

  def latest_step(self) -> int | None:
    """The newest checkpoint that matches its manifest; None if none does.

    A checkpoint without a manifest (written before checkpoints carried
    one) counts. Checkpoints this object has not saved or verified yet are
    verified here, newest first; a damaged one is skipped, not moved.
    """
    for step in reversed(self.all_steps()):
      try:
        self.verify(step)
      except ChecksumError:
        continue
      return step
    return None

  def verify(self, step: int) -> None:
    """Checks checkpoint `step`'s files against its manifest.

    A checkpoint without a manifest (written before checkpoints carried
    one) passes, with a warning: it cannot be checked, and setting aside
    every checkpoint of such a run would stop it (see the module doc).

    Raises:
      ChecksumError: a file changed, is missing or is not listed, or the
        manifest is unreadable.
    """
    if step in self._verified:
      return
    step_dir = os.path.join(self.directory, str(step))
    if not verify_manifest(step_dir):
      logging.warning("Checkpoint %s has no %s (written before checkpoints "
                      "carried checksums); it is used unverified.", step_dir,
                      MANIFEST)
    self._verified.add(step)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, host: dict[str, np.ndarray] | None,
           meta: dict[str, Any], *, config: dict[str, Any]) -> None:
    """Saves checkpoint `step`; `host=None` for runs with no host arrays.

    Raises CheckpointDiskFullError if the disk fills (the previous
    checkpoint stays the latest).
    """
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave(meta),
             "config": ocp.args.JsonSave(config)}
    if host is not None:
      items["host"] = ocp.args.StandardSave(host)
    threads_before = set(threading.enumerate())
    try:
      self.manager.save(step, args=ocp.args.Composite(**items), force=True)
      self.manager.wait_until_finished()
      self._verified.add(step)  # Its manifest was just written from it.
    except Exception as err:  # Re-raised below, with the path.
      if not _is_disk_full(err):
        err.add_note(f"while saving checkpoint {step} to {self.directory}")
        raise
      # orbax raises on the first failed item while the threads writing the
      # other items may still run; let them end before deleting their files.
      for thread in set(threading.enumerate()) - threads_before:
        _join(thread, _SAVE_THREAD_TIMEOUT_S)
      self._remove_partial(step)
      self.manager.reload()
      raise CheckpointDiskFullError(
          errno.ENOSPC,
          f"disk full: no space left on the device while saving checkpoint "
          f"{step} to {self.directory}; the previous checkpoint "
          f"({self.latest_step()}) is intact and a rerun resumes from "
          "it once space is freed.") from err

  def _remove_partial(self, step: int) -> None:
    """Deletes orbax's unfinished temporary directory of `step`."""
    for name in os.listdir(self.directory):
      if re.fullmatch(rf"{step}\.orbax-checkpoint-tmp.*", name):
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def restore_config(self, step: int) -> dict[str, Any]:
    """The config stored in checkpoint `step` (verified first: `verify`)."""
    self.verify(step)
    restored = self.manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return dict(restored["config"])

  def restore(self, step: int, state_like: Any, *, with_host: bool = True,
              layouts: Sequence[Layout] = ()):
    """Restores checkpoint `step` as (state, host or None, meta).

    `state_like` gives the state's structure; `with_host=False` for
    checkpoints saved with `host=None`. The files are checked against the
    checkpoint's manifest first (`verify`: ChecksumError if they differ).
    A checkpoint in none of the current structure and the other `layouts`
    raises the current structure's error (module doc, "Earlier layouts").
    """
    self.verify(step)
    source = Source(step, self.restore_config(step)) if layouts else None
    known = [layout for layout in layouts
             if layout.holds is not None and layout.holds(source)]
    current_error = None
    # None: the current structure, first unless a layout is known to hold.
    for layout in known + [None] + [x for x in layouts if x not in known]:
      try:
        if layout is None:
          return self._restore(step, state_like, with_host)
        state, host, meta = self._restore(
            step, layout.template(state_like, source), with_host)
      except LayoutRefused:
        raise
      except Exception as err:  # Not this structure; raised if none restores.
        _raise_if_out_of_memory(err)
        if layout is None:
          current_error = err
        continue
      logging.info("Checkpoint %d is in the layout %r; converted.",
                   step, layout.name)
      return (_placed_like(layout.convert(state, source), state_like), host,
              meta)
    if layouts:
      current_error.add_note(
          f"checkpoint {step} is not in the other layouts either: "
          f"{[layout.name for layout in layouts]}")
    raise current_error

  def _restore(self, step: int, state_like: Any, with_host: bool):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    items = {"state": ocp.args.StandardRestore(abstract),
             "meta": ocp.args.JsonRestore()}
    if with_host:
      items["host"] = ocp.args.StandardRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    host = ({k: np.asarray(v) for k, v in restored["host"].items()}
            if with_host else None)
    return restored["state"], host, dict(restored["meta"])

  def set_aside(self, step: int) -> str:
    """Renames checkpoint `step` to `<step>.damaged-<n>`; returns that path."""
    n = 1
    while os.path.exists(os.path.join(self.directory, f"{step}.damaged-{n}")):
      n += 1
    target = os.path.join(self.directory, f"{step}.damaged-{n}")
    os.rename(os.path.join(self.directory, str(step)), target)
    self._verified.discard(step)
    self.manager.reload()
    return target

  def close(self) -> None:
    self.manager.close()


def _placed_like(state: Any, state_like: Any) -> Any:
  """`state` with each array on the devices and sharding of `state_like`'s
  (a restore in the current structure gets them from the template)."""
  return jax.tree.map(
      lambda x, like: (jax.device_put(x, like.sharding)
                       if isinstance(like, jax.Array) else x),
      state, state_like)


def _join(thread: threading.Thread, timeout: float) -> None:
  """Waits up to `timeout` s for `thread` (started, perhaps not yet running).

  Calls the base `Thread.join`: orbax's override re-raises the thread's
  error. A thread that `threading.enumerate` lists may not have begun to run
  yet, and joining it then raises RuntimeError: wait for it to begin.
  """
  deadline = time.monotonic() + timeout
  while True:
    try:
      threading.Thread.join(thread,
                            timeout=max(0.0, deadline - time.monotonic()))
      return
    except RuntimeError:  # Not yet running.
      if time.monotonic() >= deadline:
        return
      time.sleep(0.001)


def _is_disk_full(err: BaseException) -> bool:
  """True if `err` or its causes report ENOSPC.

  orbax writes arrays through tensorstore, whose errors are ValueErrors
  that quote the OS message rather than OSErrors with an errno.
  """
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
      return True
    if os.strerror(errno.ENOSPC) in str(err):
      return True
    err = err.__cause__ or err.__context__
  return False


def _raise_if_out_of_memory(err: BaseException) -> None:
  """Re-raises `err` if it reports exhausted memory, not a bad checkpoint.

  Restoring a large state (SAC's replay buffer) can fail for lack of memory;
  setting that checkpoint aside and resuming from an older one would throw
  away good work, so the error stops the run instead. XLA and tensorstore
  report it as RESOURCE_EXHAUSTED (a full disk, reported the same way, does
  not occur while reading).
  """
  if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err):
    raise err


def check_resume_config(saved: dict[str, Any], config,
                        allowed_changes: Sequence[str], *,
                        may_grow: Sequence[str] = (),
                        workdir: str = "") -> None:
  """Raises ValueError naming every field that differs from the saved config.

  Fields in `allowed_changes` may differ; numeric fields in `may_grow` may
  increase. A field present on one side only counts as changed (shown as
  <absent>).

  Args:
    saved: the config stored in the checkpoint (JSON data).
    config: the config of the run being resumed (ConfigDict or dict).
    allowed_changes: names of the fields that cannot change the trajectory.
    may_grow: names of the fields that may grow (module doc).
    workdir: named in the error.
  """
  current = config_to_dict(config)
  changed = [k for k in sorted(set(saved) | set(current))
             if k not in allowed_changes
             and saved.get(k, _ABSENT) != current.get(k, _ABSENT)
             and not (k in may_grow and k in saved and k in current
                      and current[k] > saved[k])]
  if changed:
    grow = (f", and {tuple(may_grow)} may grow" if may_grow else "")
    raise ValueError(
        f"cannot resume the run in workdir {workdir!r}: its checkpoint was "
        "written with different "
        + ", ".join(f"{k} (saved {saved.get(k, _ABSENT)!r}, now "
                    f"{current.get(k, _ABSENT)!r})" for k in changed)
        + f". Only {tuple(allowed_changes)} may change on resume{grow}; use "
        "the saved values or a new workdir.")


def write_run_config(workdir: str, config) -> None:
  """Writes `workdir/config.json` (for people; resumes check the checkpoint).

  Atomic (temporary file + rename): a kill mid-write leaves the previous file.
  """
  atomic_files.write_json(os.path.join(workdir, "config.json"),
                          config_to_dict(config))


class Run:
  """An open workdir: its lock, its checkpoints and the run's config.

  Made by `open_run`; close it (or use it as a context manager) to release
  the lock.
  """

  def __init__(self, workdir: str, config, *,
               allowed_changes: Sequence[str], may_grow: Sequence[str] = (),
               max_to_keep: int = 2, keep_steps: Sequence[int] = (),
               keep_steps_field: str | None = None):
    self.workdir = workdir
    self.config = config_to_dict(config)
    self.allowed_changes = tuple(allowed_changes)
    self.may_grow = tuple(may_grow)
    self.keep_steps_field = keep_steps_field
    fields = (*self.allowed_changes, *self.may_grow,
              *([keep_steps_field] if keep_steps_field else []))
    unknown = set(fields) - set(self.config)
    if unknown:
      raise ValueError(f"open_run names fields {sorted(unknown)} that the "
                       "config does not have.")
    self.lock = workdir_lock.acquire(workdir)
    try:
      self.checkpointer = Checkpointer(workdir, max_to_keep, keep_steps)
    except BaseException:
      self.lock.release()
      raise

  def latest_step(self) -> int | None:
    """The last good checkpoint: the newest that matches its manifest."""
    return self.checkpointer.latest_step()

  def restore_latest(
      self, state_like: Any, *, with_host: bool = False,
      restore_host: Callable[[dict[str, np.ndarray]], None] | None = None,
      layouts: Sequence[Layout] = (),
  ) -> Restored | None:
    """Restores the newest checkpoint that restores; None if there is none.

    Checks the config against that checkpoint's (ValueError if a field outside
    `allowed_changes` differs), sets newer damaged checkpoints aside with a
    warning, writes `workdir/config.json` and appends a `common.provenance`
    record to `workdir/provenance.json`.

    Args:
      state_like: the state's structure (a fresh state).
      with_host: the checkpoints hold host arrays.
      restore_host: called with the host arrays; an error it raises marks the
        checkpoint as damaged too (SAC restores its environments here).
      layouts: earlier structures of the state that checkpoints may hold
        (module doc, "Earlier layouts").

    Raises:
      ValueError: the config differs from the checkpoint's.
      CheckpointsDamagedError: there are checkpoints but none restores.
    """
    damaged: list[tuple[int, str]] = []
    restored = None
    for step in reversed(self.checkpointer.all_steps()):
      try:
        saved_config = self.checkpointer.restore_config(step)
      except Exception as err:  # A failure to read means damage...
        _raise_if_out_of_memory(err)  # ...unless the machine ran out.
        damaged.append(self._damage(step, err))
        continue
      check_resume_config(saved_config, self.config, self.allowed_changes,
                          may_grow=self.may_grow, workdir=self.workdir)
      try:
        state, host, meta = self.checkpointer.restore(
            step, state_like, with_host=with_host, layouts=layouts)
        if restore_host is not None:
          restore_host(host)
      except LayoutRefused:
        raise
      except Exception as err:  # A failure to restore means damage...
        _raise_if_out_of_memory(err)  # ...unless the machine ran out.
        damaged.append(self._damage(step, err))
        continue
      restored = Restored(step, state, host, meta, saved_config)
      break
    if damaged and restored is None:
      raise CheckpointsDamagedError(
          f"no checkpoint in {self.checkpointer.directory} restores: "
          + "; ".join(f"checkpoint {s}: {why}" for s, why in damaged)
          + ". Nothing was renamed or overwritten; move the checkpoints "
          "directory aside (or use a new workdir) to start over.")
    for step, _ in damaged:
      target = self.checkpointer.set_aside(step)
      logging.warning("Moved damaged checkpoint %d to %s; resuming from "
                      "checkpoint %d.", step, target, restored.step)
    write_run_config(self.workdir, self.config)
    provenance.append(self.workdir)
    if restored is not None:
      self._keep_kept()
      logging.info("Resumed from checkpoint %d.", restored.step)
    return restored

  def _keep_kept(self) -> None:
    """Keeps what the run kept before (module doc, "Growing fields")."""
    steps = self.checkpointer.all_steps()
    kept = set(steps[:-self.checkpointer.max_to_keep]
               if self.checkpointer.max_to_keep else steps)
    if self.keep_steps_field:
      # The older checkpoints are kept already. A newer one was kept if the
      # run that wrote it, or a later one, listed it; each such run stored
      # its list in that checkpoint or a newer one, all among the newest.
      for step in steps[len(kept):]:
        try:
          config = self.checkpointer.restore_config(step)
        except Exception as err:  # Unreadable: kept, as it may be kept.
          _raise_if_out_of_memory(err)
          kept.add(step)
          continue
        kept |= set(config.get(self.keep_steps_field) or ())
    self.checkpointer.keep(sorted(kept))

  def _damage(self, step: int, err: Exception) -> tuple[int, str]:
    why = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    logging.warning("Checkpoint %s is damaged (%s).",
                    os.path.join(self.checkpointer.directory, str(step)), why)
    return step, why

  def save(self, step: int, state: Any, *,
           host: dict[str, np.ndarray] | None = None,
           meta: dict[str, Any]) -> None:
    """Saves checkpoint `step` with the run's config."""
    self.checkpointer.save(step, state, host, meta, config=self.config)

  def close(self) -> None:
    """Closes the checkpoints and releases the workdir lock."""
    try:
      self.checkpointer.close()
    finally:
      self.lock.release()

  def __enter__(self) -> "Run":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def open_run(workdir: str, config, *, allowed_changes: Sequence[str],
             may_grow: Sequence[str] = (), max_to_keep: int = 2,
             keep_steps: Sequence[int] = (),
             keep_steps_field: str | None = None) -> Run:
  """Locks `workdir` (creating it) and opens its checkpoints; see module doc.

  The latest `max_to_keep` checkpoints are kept, and permanently those whose
  step is in `keep_steps`; a resume also keeps those the run kept before
  (module doc, "Growing fields and kept checkpoints": `keep_steps_field`
  names the config field that lists `keep_steps`). `may_grow` names config
  fields a resume may increase.

  Raises `workdir_lock.WorkdirLockedError` if another process holds it.
  """
  return Run(workdir, config, allowed_changes=allowed_changes,
             may_grow=may_grow, max_to_keep=max_to_keep,
             keep_steps=keep_steps, keep_steps_field=keep_steps_field)
