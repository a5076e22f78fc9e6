"""The one training loop of every trainer: periodic actions, sinks, resume.

A trainer (`sac.train`, `moe.train`, `vae.train`) describes one step of its
work as a `Program` and calls `run`. The loop, written once, does the rest,
in the manner of big_vision's `train.py` (`u.itstime`) and clu's
`PeriodicAction`:

  resume from the newest checkpoint that restores (or start afresh)
  truncate the CSV logs to that checkpoint
  until the step budget:
    one call of `program.step` (one compiled update; it advances `stride`
      steps, e.g. one `lax.scan` chunk of updates, or one environment step
      of every sub-environment and its gradient steps; a `pipelined` step
      may dispatch the next call's work early, and is told to settle
      before an evaluation, a checkpoint or the end)
    stop with a FloatingPointError if a loss is non-finite
    log:        train rows (means since the last log)  -> train.csv
    evaluate:   evaluation rows                        -> eval.csv
    checkpoint: state, host arrays and counters        (atomic, orbax)
  (each periodic action due by one trigger rule, `Every`; within a step the
  logs are written before the checkpoint, so after a kill in between the
  resume drops the rows past its checkpoint and writes them again)

`Sinks` owns the outputs: the CSV logs, TensorBoard and the progress bar.
A `HostState` holds what lives on the host between steps (SAC's
environments, the observation to act on and the pending action); it is saved
with each checkpoint and restored through the same `checkpointing.Run`, so an
error restoring it marks the checkpoint as damaged like any other.

`scan_chunk` builds the compiled body of chunked trainers: `length` updates
in one `lax.scan`, returning the metrics of the first step whose losses are
non-finite (or of the last step), so the loop can name the step that failed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from common import checkpointing
from common import csv_logs

Rows = list[dict[str, Any]]


def crossed(step: int, stride: int, every: int) -> bool:
  """True if the steps (step - stride, step] contain a multiple of `every`."""
  return step // every > (step - stride) // every


@dataclasses.dataclass(frozen=True)
class Every:
  """When a periodic action runs: the one trigger rule of every trainer.

  After a call of `Program.step` moved the step from `step - stride` to
  `step`, the action is scheduled if that interval contains a multiple of
  `period` (stride-aware: a period that is not a multiple of the stride still
  fires once per period) or `step` is one of `on_steps`; it is due if it is
  scheduled or, with `at_end`, the run reached its budget.
  """
  period: int | None  # Steps between runs; None: only on_steps and the end.
  on_steps: tuple[int, ...] = ()  # Steps at which it also runs.
  at_end: bool = True  # Also at the last step of the run.

  def scheduled(self, step: int, stride: int) -> bool:
    return ((self.period is not None and crossed(step, stride, self.period))
            or step in self.on_steps)

  def due(self, step: int, stride: int, num_steps: int) -> bool:
    return self.scheduled(step, stride) or (self.at_end and step >= num_steps)


class HostState(Protocol):
  """What a trainer keeps on the host between steps (see the module doc)."""

  def start(self, state: Any) -> Any:
    """Begins a fresh run (e.g. resets environments); returns the state."""

  def arrays(self) -> dict[str, np.ndarray]:
    """The host state as numpy arrays, saved with each checkpoint."""

  def load(self, arrays: dict[str, np.ndarray]) -> None:
    """Restores `arrays()` of a checkpoint; an error marks it as damaged."""


@dataclasses.dataclass(frozen=True)
class Program:
  """What a trainer supplies to `run`: its step, its evaluations, its logs.

  Rows are dicts by column name; `step` (and for SAC `seed`) columns are
  part of them. Metrics are dicts by name of arrays: scalars, or [S] with a
  leading seed axis when `seeds` is given.
  """
  stride: int  # Steps advanced by one call of `step`.
  step: Callable[..., tuple[Any, dict | None]]
  # state -> (state, metrics, or None if the call made no update); with
  # `pipelined`, (state, *, settle) -> the same. Metrics by name, as device
  # arrays or as numpy arrays a step already fetched.
  evaluate: Callable[[Any, int, bool, dict | None], Rows]
  # (state, step, scheduled, metrics of the last call) -> eval.csv rows.
  eval_columns: Sequence[str]
  loss_names: Sequence[str]  # Metrics that must stay finite.
  evaluate_every: Every
  checkpoint_every: Every
  log: Callable[[dict, int, float], Rows] | None = None
  # (means since the last log, step, steps per second) -> train.csv rows.
  # A "seconds" column of either log gets the training wall-clock seconds.
  log_columns: Sequence[str] = ()
  log_every: Every | None = None
  host: HostState | None = None
  seeds: Sequence[int] | None = None  # Names the seed of a non-finite loss.
  postfix: Callable[[Rows], dict[str, str]] | None = None  # Progress bar.
  desc: str = "train"  # Progress-bar label.
  layouts: Sequence[checkpointing.Layout] = ()
  # Earlier structures of the state that the run's checkpoints may hold.
  pipelined: bool = False
  # True: `step` may dispatch the next call's work before it returns, to
  # overlap it with the loop's host work. The loop passes settle=True when
  # an evaluation, a checkpoint or the end of the run follows the step;
  # the step must then return the state at its boundary, with nothing in
  # flight (see `sac.collector`).


class Sinks:
  """The owner of a run's outputs: CSV logs, TensorBoard, progress bar.

  `logs` maps a log's name to its columns; log NAME is `workdir/NAME.csv`,
  truncated on resume to the checkpoint's step (`csv_logs.CsvLog`), and its
  numeric columns other than step and seed go to TensorBoard as
  `NAME/column` (the mean over the rows of one write, i.e. over seeds).
  """

  def __init__(self, workdir: str, logs: Mapping[str, Sequence[str]], *,
               resume_step: int | None, step: int, num_steps: int,
               tensorboard: bool, progress_bar: bool, desc: str):
    self._logs = {name: csv_logs.CsvLog(os.path.join(workdir, f"{name}.csv"),
                                        columns)
                  for name, columns in logs.items()}
    self.kept = {name: log.start(resume_step)
                 for name, log in self._logs.items()}
    self._writer = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # Optional at runtime.
      self._writer = SummaryWriter(
          os.path.join(workdir, "tensorboard"),
          purge_step=None if resume_step is None else resume_step + 1)
    self._bar = None
    if progress_bar:
      import tqdm
      self._bar = tqdm.tqdm(total=num_steps, initial=step, desc=desc,
                            unit="step", dynamic_ncols=True)

  def write(self, name: str, rows: Rows, step: int) -> None:
    """Appends `rows` to log `name` and their means to TensorBoard."""
    self._logs[name].write(rows)
    if self._writer is None or not rows:
      return
    for column in rows[0]:
      if column not in ("step", "seed"):
        self._writer.add_scalar(
            f"{name}/{column}",
            float(np.mean([float(r[column]) for r in rows])), step)

  def advance(self, steps: int, postfix: dict[str, str] | None) -> None:
    if self._bar is not None:
      self._bar.update(steps)
      if postfix:
        self._bar.set_postfix(**postfix, refresh=False)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
    if self._bar is not None:
      self._bar.close()


def last_rows(rows: Sequence[dict]) -> Rows:
  """The rows of a log's last step, with numbers parsed (from CSV strings)."""
  if not rows:
    return []
  last = max(int(r["step"]) for r in rows)
  parsed = [{k: float(v) for k, v in r.items()} for r in rows
            if int(r["step"]) == last]
  for row in parsed:
    row["step"] = int(row["step"])
    if "seed" in row:
      row["seed"] = int(row["seed"])
  return parsed


def check_finite(metrics: dict, step: int, loss_names: Sequence[str],
                 seeds: Sequence[int] | None,
                 last_good: Callable[[], int | None]) -> None:
  """Raises FloatingPointError naming the loss, seed and step that failed.

  `metrics` are those of one call of `Program.step` (for a `scan_chunk`,
  those of its first failing update); `step` is the step that update made;
  `last_good()` names the newest checkpoint that verifies (only called on
  failure).
  """
  for name in loss_names:
    values = np.asarray(metrics[name])
    if np.isfinite(values).all():
      continue
    values = np.atleast_1d(values)
    bad = np.flatnonzero(~np.isfinite(values))
    where = "" if seeds is None else f" for seed {seeds[bad[0]]}"
    raise FloatingPointError(
        f"non-finite {name}={values[bad[0]]}{where} at step {step}; "
        f"training stopped, the last good checkpoint is step "
        f"{last_good()}.")


def _failed_step(metrics: dict, step: int, stride: int) -> int:
  """The step of the update whose metrics were returned (see scan_chunk)."""
  index = metrics.get("non_finite_index")
  if index is None:
    return step
  index = int(np.max(np.asarray(index)))
  return step - stride + index + 1 if index >= 0 else step


def _to_host(metrics: dict) -> dict:
  """`metrics` with device arrays fetched; numpy values are kept as they are
  (`jax.device_get` would try, and fail, an asynchronous host copy of every
  numpy leaf, every step)."""
  if any(isinstance(x, jax.Array) for x in jax.tree.leaves(metrics)):
    return jax.device_get(metrics)
  return metrics


def _mean(window: list[dict]) -> dict:
  return {name: np.mean([np.asarray(m[name]) for m in window], axis=0)
          for name in window[0]}


def run(checkpoints: checkpointing.Run, state: Any, program: Program, *,
        workdir: str, num_steps: int, tensorboard: bool, progress_bar: bool
        ) -> tuple[Any, Rows]:
  """Resumes `state` from `checkpoints` and trains it to `num_steps`.

  Args:
    checkpoints: the open (locked) workdir, from `checkpointing.open_run`.
    state: the fresh training state: the template a checkpoint restores
      into, and the start of a fresh run.
    program: the trainer's step, evaluations and schedules.
    workdir: the run's directory (eval.csv, train.csv, tensorboard/).
    num_steps: the step to train to.
    tensorboard: write TensorBoard events to workdir/tensorboard.
    progress_bar: show a tqdm progress bar.

  Returns:
    (state, rows): the final state and the last evaluation's eval.csv rows
    (for a run already complete, the rows kept in eval.csv at its last step).
  """
  host = program.host
  restored = checkpoints.restore_latest(
      state, with_host=host is not None,
      restore_host=None if host is None else host.load,
      layouts=program.layouts)
  if restored is None:
    step, seconds_before, resume_step = 0, 0.0, None
    if host is not None:
      state = host.start(state)
  else:
    state, resume_step = restored.state, restored.step
    step, seconds_before = restored.meta["step"], restored.meta["seconds"]

  logs = {"eval": program.eval_columns}
  if program.log is not None:
    logs["train"] = program.log_columns
  sinks = Sinks(workdir, logs, resume_step=resume_step, step=step,
                num_steps=num_steps, tensorboard=tensorboard,
                progress_bar=progress_bar, desc=program.desc)
  rows = last_rows(sinks.kept["eval"])
  stride = program.stride
  window: list[dict] = []
  start = time.perf_counter()
  interval_start, interval_step = start, step
  try:
    while step < num_steps:
      step += stride
      # Decided before the step, so a pipelined step settles exactly where
      # the state is evaluated, checkpointed or returned.
      evaluate_now = program.evaluate_every.due(step, stride, num_steps)
      checkpoint_now = program.checkpoint_every.due(step, stride, num_steps)
      if program.pipelined:
        state, metrics = program.step(
            state, settle=evaluate_now or checkpoint_now or step >= num_steps)
      else:
        state, metrics = program.step(state)
      if metrics is not None:
        metrics = _to_host(metrics)
        check_finite(metrics, _failed_step(metrics, step, stride),
                     program.loss_names, program.seeds,
                     checkpoints.latest_step)
        metrics = {k: v for k, v in metrics.items()
                   if k != "non_finite_index"}
        window.append(metrics)
      seconds = seconds_before + time.perf_counter() - start
      postfix = None
      if (program.log_every is not None and window
          and program.log_every.due(step, stride, num_steps)):
        now = time.perf_counter()
        per_second = (step - interval_step) / max(now - interval_start, 1e-9)
        interval_start, interval_step = now, step
        rows_logged = program.log(_mean(window), step, per_second)
        if "seconds" in program.log_columns:
          for row in rows_logged:
            row["seconds"] = seconds
        sinks.write("train", rows_logged, step)
        window = []
      if evaluate_now:
        rows = program.evaluate(
            state, step, program.evaluate_every.scheduled(step, stride),
            metrics)
        if "seconds" in program.eval_columns:
          for row in rows:
            row["seconds"] = seconds
        sinks.write("eval", rows, step)
        if program.postfix is not None:
          postfix = program.postfix(rows)
      if checkpoint_now:
        checkpoints.save(
            step, state, host=None if host is None else host.arrays(),
            meta={"step": step, "seconds": seconds})
      sinks.advance(stride, postfix)
  finally:
    sinks.close()
  return state, rows


def scan_chunk(update: Callable[[Any], tuple[Any, dict]], length: int,
               loss_names: Sequence[str]) -> Callable[[Any], tuple[Any, dict]]:
  """`length` calls of `update` in one `lax.scan`, for `Program.step`.

  Args:
    update: state -> (state, metrics), one update; metrics scalars by name.
    length: updates per chunk.
    loss_names: the metrics that must be finite.

  Returns:
    state -> (state, metrics): the metrics of the first update whose losses
    are not all finite, or of the last update, plus "non_finite_index" (that
    update's index in the chunk, or -1), which `run` reads to name the step.
  """

  def chunk(state):
    state, metrics = jax.lax.scan(lambda s, _: update(s), state, None,
                                  length=length)
    finite = jnp.all(jnp.stack([jnp.isfinite(metrics[n])
                                for n in loss_names]), axis=0)
    index = jnp.where(jnp.all(finite), length - 1, jnp.argmin(finite))
    picked = jax.tree.map(lambda m: m[index], metrics)
    picked["non_finite_index"] = jnp.where(jnp.all(finite), -1, index)
    return state, picked

  return chunk
