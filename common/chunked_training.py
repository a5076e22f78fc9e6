"""The resumable train-then-evaluate loop of trainers that run in chunks.

A trainer compiles `chunk_steps` updates into one jitted call (a `lax.scan`)
and evaluates after each call. `run_chunks` holds what happens around those
calls, the same for every such trainer: resume from the latest checkpoint of
the open `checkpointing.Run`, truncate eval.csv to that checkpoint, then per
chunk train, check the losses are finite (a FloatingPointError names the
first bad step and the non-finite losses), evaluate, log a row to eval.csv,
checkpoint, and write TensorBoard scalars and the progress bar. The trainer
keeps what is its own: the model, the jitted chunk and evaluation, the names
of its losses, the progress-bar postfix and anything done after the last
chunk.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Sequence

from common import checkpointing
from common import csv_logs


def _restore(run: checkpointing.Run, state: Any
             ) -> tuple[Any, int | None, float]:
  """(state, checkpoint step or None, training seconds before it)."""
  restored = run.restore_latest(state)
  if restored is None:
    return state, None, 0.0
  return restored.state, restored.step, float(restored.meta["seconds"])


def _start_log(eval_log: csv_logs.CsvLog, resume_step: int | None
               ) -> dict[str, float]:
  """Truncates eval.csv to the checkpoint; returns its last kept row or {}."""
  kept = eval_log.start(resume_step)
  if not kept:
    return {}
  row = {k: float(v) for k, v in kept[-1].items()}
  row["step"] = int(row["step"])
  return row


def _open_writer(workdir: str, resume_step: int | None):
  """A TensorBoard writer that drops events logged after the checkpoint."""
  from tensorboardX import SummaryWriter  # Optional dependency at runtime.
  return SummaryWriter(
      os.path.join(workdir, "tensorboard"),
      purge_step=None if resume_step is None else resume_step + 1)


def _check_finite(metrics: dict, first_step: int, run: checkpointing.Run,
                  loss_names: Sequence[str]) -> None:
  """Raises FloatingPointError naming the step and losses of a bad chunk."""
  index = int(metrics["first_non_finite"])
  if index < 0:
    return
  bad = [n for n in loss_names if not math.isfinite(float(metrics[n]))]
  values = ", ".join(f"{n}={float(metrics[n])}" for n in bad)
  raise FloatingPointError(
      f"non-finite training loss at step {first_step + index + 1} "
      f"(last step of the chunk: {values or 'finite again'}); training "
      f"stopped, the last good checkpoint is step {run.latest_step()}.")


def run_chunks(run: checkpointing.Run, state: Any, *, workdir: str,
               columns: Sequence[str], num_steps: int, chunk_steps: int,
               train_chunk: Callable[[Any], tuple[Any, dict]],
               evaluate: Callable[[Any], dict],
               loss_names: Sequence[str],
               postfix: Callable[[dict], dict[str, str]], desc: str,
               tensorboard: bool, progress_bar: bool
               ) -> tuple[Any, dict[str, float]]:
  """Resumes `state` from `run` and trains it to `num_steps`, chunk by chunk.

  Per chunk: `state, metrics = train_chunk(state)`; a FloatingPointError if
  a loss was non-finite (naming the first bad step and the `loss_names` that
  are non-finite at the chunk's end); `evaluate(state)`; the row {**metrics, **evaluation, "step",
  "seconds"} is appended to `workdir/eval.csv`, then `state` is checkpointed
  with meta {"step", "seconds"} (log first, then checkpoint: after a kill in
  between, the resume drops the rows past its checkpoint and logs them
  again); TensorBoard scalars (every column but step) and the progress bar
  follow. "seconds" is the training wall time, summed over resumes.

  Args:
    run: the open (locked) workdir, from `checkpointing.open_run`.
    state: the initial training state, a pytree with an int `step` field;
      also the template the latest checkpoint is restored into.
    workdir: the run's directory (eval.csv, tensorboard/).
    columns: eval.csv's columns: "step", every key of the metrics and of the
      evaluation, and "seconds".
    num_steps: the step to train to (a multiple of chunk_steps).
    chunk_steps: the number of updates in one `train_chunk` call.
    train_chunk: state -> (state, metrics); metrics are scalars, including
      "first_non_finite" (the index in the chunk of the first non-finite
      loss, or -1), which is checked and not logged.
    evaluate: state -> dict of scalar evaluation metrics.
    loss_names: the metrics that are training losses, named in the error.
    postfix: row -> {name: formatted value} shown after the progress bar.
    desc: the progress bar's label.
    tensorboard: whether to write TensorBoard events to workdir/tensorboard.
    progress_bar: whether to show a tqdm progress bar.

  Returns:
    (state, row): the final state and the last eval.csv row (with "step" an
    int); for a run already complete, the restored state and the last row
    kept in eval.csv; {} if nothing was evaluated.
  """
  state, resume_step, seconds_before = _restore(run, state)
  eval_log = csv_logs.CsvLog(os.path.join(workdir, "eval.csv"), columns)
  row = _start_log(eval_log, resume_step)
  writer = _open_writer(workdir, resume_step) if tensorboard else None
  step = int(state.step)
  progress = None
  if progress_bar:
    import tqdm
    progress = tqdm.tqdm(total=num_steps, initial=step, desc=desc,
                         unit="step")

  start = time.time()
  try:
    while step < num_steps:
      state, train_metrics = train_chunk(state)
      _check_finite(train_metrics, step, run, loss_names)
      train_metrics.pop("first_non_finite")
      eval_metrics = evaluate(state)
      row = {name: float(v) for name, v in {**train_metrics,
                                            **eval_metrics}.items()}
      step = int(state.step)
      row["step"] = step
      row["seconds"] = seconds_before + time.time() - start
      # Log first, then checkpoint: after a kill in between, the resume drops
      # the rows past its checkpoint (CsvLog) and logs them again.
      eval_log.write([row])
      run.save(step, state, meta={"step": step, "seconds": row["seconds"]})
      if writer is not None:
        for name, value in row.items():
          if name != "step":
            writer.add_scalar(name, value, step)
      if progress is not None:
        progress.update(chunk_steps)
        progress.set_postfix(**postfix(row))
  finally:
    if writer is not None:
      writer.close()
    if progress is not None:
      progress.close()
  return state, row
