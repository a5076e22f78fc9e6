"""Run outputs: eval.csv / train.csv (resume-safe), TensorBoard, the curve PNG."""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

EVAL_COLUMNS = ("step", "seed", "return_mean", "return_std", "episodes")


class CsvLog:
  """Append-only CSV with a `step` column, truncated to a checkpoint on resume.

  `start(resume_step)` keeps the rows with step <= resume_step (everything
  logged before that checkpoint was written) and drops later ones (logged by
  the killed run after its last checkpoint; the resumed run logs them again),
  so the file never duplicates nor loses a row. `resume_step=None` starts an
  empty file. The rewrite goes through a temporary file and os.replace.
  """

  def __init__(self, path: str, columns: Sequence[str]):
    self.path = path
    self.columns = tuple(columns)

  def start(self, resume_step: int | None) -> None:
    kept = []
    if resume_step is not None and os.path.exists(self.path):
      with open(self.path, newline="") as f:
        kept = [row for row in csv.DictReader(f)
                if int(row["step"]) <= resume_step]
    tmp = self.path + ".tmp"
    with open(tmp, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=self.columns)
      writer.writeheader()
      writer.writerows(kept)
    os.replace(tmp, self.path)

  def write(self, rows: Sequence[dict]) -> None:
    with open(self.path, "a", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=self.columns)
      writer.writerows(rows)
      f.flush()


def read_csv(path: str) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def plot_learning_curve(eval_csv: str, png_path: str, title: str) -> None:
  """Return vs step, one line per seed, plus the mean over seeds."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = read_csv(eval_csv)
  if not rows:
    return
  steps = np.array([int(r["step"]) for r in rows])
  seeds = np.array([int(r["seed"]) for r in rows])
  values = np.array([float(r["return_mean"]) for r in rows])
  fig, ax = plt.subplots(figsize=(6, 4))
  for seed in np.unique(seeds):
    mask = seeds == seed
    ax.plot(steps[mask], values[mask], alpha=0.4, lw=1, label=f"seed {seed}")
  unique_steps = np.unique(steps)
  ax.plot(unique_steps, [values[steps == s].mean() for s in unique_steps],
          color="k", lw=2, label="mean")
  ax.set_xlabel("environment steps (per seed)")
  ax.set_ylabel("deterministic eval return")
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
