"""VAE run figures: the learning curve and the grid of digits."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from common.csv_logs import read_csv


def plot_learning_curve(eval_csv: str, png_path: str, *,
                        columns: Sequence[str], title: str) -> None:
  """One panel per column of eval.csv against the step."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = read_csv(eval_csv)
  if not rows:
    return
  steps = [int(r["step"]) for r in rows]
  fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.5),
                           squeeze=False)
  for ax, column in zip(axes[0], columns):
    ax.plot(steps, [float(r[column]) for r in rows], marker="o", ms=3)
    ax.set_xlabel("training step")
    ax.set_ylabel(column)
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
  """[n, 784] -> one image of rows of `columns` 28x28 digits (1px gaps)."""
  n = images.shape[0]
  rows = -(-n // columns)
  canvas = np.ones((rows * 29 + 1, columns * 29 + 1))
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    canvas[1 + 29 * r:29 * (r + 1), 1 + 29 * c:29 * (c + 1)] = (
        image.reshape(28, 28))
  return canvas


def plot_digit_grid(png_path: str, *, test_digits: np.ndarray,
                    reconstructions: np.ndarray,
                    prior_samples: Optional[np.ndarray] = None,
                    title: str = "") -> None:
  """Test digits beside their reconstructions (and prior samples).

  Args:
    test_digits, reconstructions: [n, 784] in [0, 1] (pixel probabilities
      for reconstructions); shown in pairs of rows.
    prior_samples: [m, 784] decoder means at prior draws, or None.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  columns = 10
  panels = [("test digits (top) / reconstructions (bottom)",
             _interleave_rows(np.asarray(test_digits),
                              np.asarray(reconstructions), columns))]
  if prior_samples is not None:
    panels.append(("samples from the prior (decoder means)",
                   np.asarray(prior_samples)))
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4),
                           squeeze=False)
  for ax, (label, images) in zip(axes[0], panels):
    ax.imshow(_tile(images, columns), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(label, fontsize=9)
    ax.axis("off")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)


def _interleave_rows(a: np.ndarray, b: np.ndarray, columns: int) -> np.ndarray:
  """Rows of `columns` digits: a row of a, the matching row of b, ..."""
  out = []
  for start in range(0, a.shape[0], columns):
    out.append(a[start:start + columns])
    out.append(b[start:start + columns])
  return np.concatenate(out)
