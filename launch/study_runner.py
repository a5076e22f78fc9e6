"""Cells, shards, the study manifest and resumable run loop of `launch.ablate`.

Layout of a study directory DIR:

  DIR/study.json                 the manifest: study name, seeds, steps, quick
  DIR/cells/CONDITION/           a vmapped-seed cell (SAC): one trainer run dir
  DIR/cells/CONDITION/seed_S/    a one-seed cell (MoE, VAE): one trainer run dir
  .../cell_done.json             written after the trainer returns: the cell's
                                 config; a cell with it is not rerun unless
                                 a larger --steps extends it
  .../provenance.json            written by the trainer (common.checkpointing):
                                 software, commit, machine per start or resume
  DIR/report.md, DIR/figures/    written by `launch.study_report`

A cell is an ordinary run directory of its trainer, so an interrupted cell
resumes from its own checkpoints when the study is rerun.

Extending a study. Rerunning with a larger --steps than the manifest's
extends it (a budget set by the study's default or a preset never does;
with no budget in the manifest, --steps must exceed every cell's preset
budget): each finished cell (of the shard run) whose budget is smaller
resumes from its last checkpoint and trains to the new budget, and its
cell_done.json then records the new config. The trainers allow this resume
(num_steps, and SAC's buffer, which `launch.studies` sizes to the budget
and which grows exactly: `sac.state_layouts.grown_buffer`), so an extended
cell is the cell the larger budget would have trained from the start. A
finished cell is checked against the config of its own budget; one with a
larger budget than asked is skipped. The manifest keeps the settings the
study started with; a --steps below them is refused. The report takes each
cell's finals at its own budget and names the cells extended past the
manifest's (`launch.study_report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

from absl import logging
import ml_collections

from common import atomic_files
from launch import studies

MANIFEST = "study.json"
DONE = "cell_done.json"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What makes two invocations the same study run (kept in the manifest)."""
  num_seeds: int
  steps: int | None  # None: the study's default (or the quick preset's).
  quick: bool

  def as_json(self) -> dict:
    return {"seeds": self.num_seeds, "steps": self.steps, "quick": self.quick}


@dataclasses.dataclass(frozen=True)
class Cell:
  condition: studies.Condition
  seeds: tuple[int, ...]  # All seeds (vmapped system) or one.
  path: str               # Run directory relative to DIR.


def resolve_settings(study: studies.Study, *, seeds: int | None,
                     steps: int | None, quick: bool) -> Settings:
  """Flags -> Settings: --seeds and --steps default to the study's values.

  In quick mode the step budget defaults to the quick preset's.
  """
  for name, value in (("--seeds", seeds), ("--steps", steps)):
    if value is not None and (isinstance(value, bool) or
                              not isinstance(value, int) or value < 1):
      raise ValueError(f"{name} must be an int >= 1; got {value!r}.")
  default_steps = None if quick else study.steps
  return Settings(num_seeds=study.num_seeds if seeds is None else seeds,
                  steps=default_steps if steps is None else steps,
                  quick=bool(quick))


def study_cells(study: studies.Study, settings: Settings) -> list[Cell]:
  """Every cell of the study, in registry order (conditions, then seeds)."""
  seeds = tuple(range(settings.num_seeds))
  cells = []
  for condition in study.conditions:
    if study.system.vmapped_seeds:
      cells.append(
          Cell(condition, seeds, os.path.join("cells", condition.name)))
    else:
      cells.extend(Cell(condition, (s,), os.path.join(
          "cells", condition.name, f"seed_{s}")) for s in seeds)
  return cells


def parse_shard(text: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n; ValueError naming the value otherwise."""
  parts = text.split("/")
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
    raise ValueError(f"--shard must look like i/n (e.g. 0/4); got {text!r}.")
  index, count = int(parts[0]), int(parts[1])
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"--shard={text!r} is out of range: need n >= 1 and "
                     f"0 <= i < n.")
  return index, count


def shard_cells(cells: Sequence[Cell], index: int, count: int) -> list[Cell]:
  """Cell group `index` of `count`: cells index, index + count, ...

  Round-robin over the registry order, so the groups are disjoint, their
  union is the study and their sizes differ by at most one.
  """
  return list(cells[index::count])


def cell_config(study: studies.Study, cell: Cell, settings: Settings
                ) -> ml_collections.ConfigDict:
  """The trainer config of `cell` (locked: an unknown field is an error)."""
  config = study.system.make_config(cell.condition.preset, settings.quick,
                                    settings.steps)
  config.lock()
  for field, value in cell.condition.overrides:
    config[field] = value
  config.seed = cell.seeds[0]
  if study.system.vmapped_seeds:
    config.num_seeds = len(cell.seeds)
  return config


def _write_json(path: str, obj) -> None:
  atomic_files.write_json(path, obj, sort_keys=True)


def read_manifest(workdir: str) -> dict | None:
  path = os.path.join(workdir, MANIFEST)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_manifest(workdir: str, study: studies.Study,
                   settings: Settings | None, *, extend: bool = False
                   ) -> dict | None:
  """Refuses a workdir holding another study, or this one under other settings.

  `settings=None` checks only the study name. `extend` (--steps given)
  accepts a budget above the manifest's (module doc, "Extending a study").
  Returns the manifest (None if the directory has none yet and holds no
  cells).
  """
  manifest = read_manifest(workdir)
  if manifest is None:
    if os.path.isdir(os.path.join(workdir, "cells")):
      raise ValueError(
          f"workdir {workdir!r} holds cells/ but no {MANIFEST}: it is not a "
          f"study directory of launch.ablate; use a new workdir.")
    return None
  if manifest.get("study") != study.name:
    raise ValueError(
        f"workdir {workdir!r} holds study {manifest.get('study')!r}, not "
        f"{study.name!r}; use a new workdir for {study.name!r}.")
  if settings is not None:
    saved = {k: manifest.get(k) for k in settings.as_json()}
    changed = [f"{k} (saved {saved[k]!r}, now {v!r})"
               for k, v in settings.as_json().items()
               if saved[k] != v and not (
                   k == "steps" and extend
                   and _extends(study, settings, saved[k], v))]
    if changed:
      raise ValueError(
          f"workdir {workdir!r} holds study {study.name!r} run with other "
          f"settings: {', '.join(changed)}; rerun with the saved values (a "
          f"larger --steps extends the study) or use a new workdir.")
  return manifest


def _extends(study: studies.Study, settings: Settings, saved: int | None,
             steps: int | None) -> bool:
  """A --steps above the saved budget (None: above every cell's preset
  budget)."""
  if steps is None:
    return False
  if saved is None:
    preset = dataclasses.replace(settings, steps=None)
    saved = max(cell_config(study, c, preset).num_steps
                for c in study_cells(study, preset))
  return steps > saved


def manifest_settings(manifest: dict) -> Settings:
  return Settings(num_seeds=manifest["seeds"], steps=manifest["steps"],
                  quick=manifest["quick"])


def is_done(workdir: str, cell: Cell) -> bool:
  return os.path.exists(os.path.join(workdir, cell.path, DONE))


def done_config(workdir: str, cell: Cell) -> dict:
  """The config a finished cell ran (its cell_done.json)."""
  with open(os.path.join(workdir, cell.path, DONE)) as f:
    return json.load(f)["config"]


def cell_budget(workdir: str, cell: Cell) -> int:
  """The step budget a finished cell was trained to."""
  return int(done_config(workdir, cell)["num_steps"])


def run_study(study: studies.Study, workdir: str, settings: Settings, *,
              shard: tuple[int, int] = (0, 1), extend: bool = False,
              train: Callable | None = None) -> list[Cell]:
  """Runs the unfinished cells of shard `shard` of the study; returns them.

  Args:
    study: the study.
    workdir: the study directory (created; its manifest is written or checked).
    settings: seeds, steps and quick mode.
    shard: (i, n): run only cell group i of n.
    extend: --steps was given: a budget above the manifest's extends the
      finished cells (module doc, "Extending a study").
    train: the trainer to call instead of the system's (for tests).

  Raises:
    ValueError: another study (or other settings) in `workdir`.
    RuntimeError: after trying every cell, naming the cells that failed.
  """
  check_manifest(workdir, study, settings, extend=extend)
  cells = study_cells(study, settings)
  configs = [cell_config(study, c, settings) for c in cells]  # Fail early.
  os.makedirs(workdir, exist_ok=True)
  if read_manifest(workdir) is None:
    _write_json(os.path.join(workdir, MANIFEST),
                {"study": study.name, **settings.as_json()})
  train = train or study.system.train
  mine = set(id(c) for c in shard_cells(cells, *shard))
  ran, failed = [], []
  for number, (cell, config) in enumerate(zip(cells, configs), 1):
    if id(cell) not in mine:
      continue
    run_dir = os.path.join(workdir, cell.path)
    done = os.path.join(run_dir, DONE)
    verb = "training"
    if os.path.exists(done):
      budget = _check_done_config(workdir, study, cell, settings)
      if budget >= config.num_steps:
        print(f"[{number}/{len(cells)}] {cell.path}: finished earlier "
              f"({budget} steps), skipped.", flush=True)
        continue
      if not extend:
        raise ValueError(
            f"{done} records a finished run of {budget} steps; the study's "
            f"config asks {config.num_steps}. Rerun with "
            f"--steps={config.num_steps} to extend it, or use a new workdir.")
      verb = f"extending from {budget} to {config.num_steps} steps"
    print(f"[{number}/{len(cells)}] {cell.path}: {verb}.", flush=True)
    start = time.time()
    try:
      train(config, run_dir)
    except Exception as e:  # Reported below; the other cells still run.
      logging.exception("%s failed", cell.path)
      failed.append(f"{cell.path}: {type(e).__name__}: {e}")
      continue
    _write_json(done, {"config": json.loads(config.to_json())})
    print(f"[{number}/{len(cells)}] {cell.path}: done in "
          f"{time.time() - start:.0f} s.", flush=True)
    ran.append(cell)
  if failed:
    raise RuntimeError("cells failed (rerun the same command to retry them): "
                       + "; ".join(failed))
  return ran


def _check_done_config(workdir: str, study: studies.Study, cell: Cell,
                       settings: Settings) -> int:
  """A finished cell's budget; refuses one whose recorded config differs from
  the cell's config at that budget."""
  saved = done_config(workdir, cell)
  budget = int(saved["num_steps"])
  current = json.loads(cell_config(
      study, cell, dataclasses.replace(settings, steps=budget)).to_json())
  # Fields only one side has (a config field added or removed by a later
  # version of the code) are not compared: the run finished without them.
  changed = sorted(k for k in set(saved) & set(current)
                   if saved[k] != current[k])
  if changed:
    raise ValueError(
        f"{os.path.join(workdir, cell.path, DONE)} records a finished run "
        "with a different config: "
        + ", ".join(f"{k} (saved {saved[k]!r}, now {current[k]!r})"
                    for k in changed) + "; use a new workdir.")
  return budget
