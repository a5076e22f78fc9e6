"""Resume-safe CSV logs with a `step` column (eval.csv, train.csv)."""

from __future__ import annotations

import csv
import io
import os
from typing import Sequence

from common import atomic_files


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

  def start(self, resume_step: int | None) -> list[dict]:
    """Rewrites the file with the rows kept for `resume_step`; returns them."""
    kept = []
    if resume_step is not None and os.path.exists(self.path):
      with open(self.path, newline="") as f:
        kept = [row for row in csv.DictReader(f)
                if int(row["step"]) <= resume_step]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=self.columns)
    writer.writeheader()
    writer.writerows(kept)
    atomic_files.write_text(self.path, text.getvalue(), newline="")
    return kept

  def write(self, rows: Sequence[dict]) -> None:
    with open(self.path, "a", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=self.columns)
      writer.writerows(rows)
      f.flush()


def read_csv(path: str) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))
