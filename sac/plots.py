"""The learning-curve PNG of a SAC run, drawn from its eval.csv."""

from __future__ import annotations

import numpy as np

from common import csv_logs


def plot_learning_curve(eval_csv: str, png_path: str, title: str) -> None:
  """Return vs step, one line per seed, plus the mean over seeds."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = csv_logs.read_csv(eval_csv)
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
