"""A damaged checkpoint that still decodes, end to end (the MoE trainer).

The tiny MoE config trains 40 steps and checkpoints at steps 20 and 40.
Checkpoint 40's state is then restored with orbax, its largest float array
is scaled by 1e30, and the state is saved back in place: the checkpoint
still decodes, so only its checksums show the damage. Rerun to 60 steps,
the trainer must warn naming checkpoint 40 and the files that differ, set it
aside as `40.damaged-1`, resume from checkpoint 20 and, a resume being exact
(tests/test_moe_train.py), log the same row at step 40 as the first run.
"""

import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from common import csv_logs
from launch.configs import moe as moe_config
from moe import train as moe_train

# After a failed restore, orbax's worker threads can leave an event-loop
# callback behind; pytest reports it as an unraisable exception.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


def _scale_largest_array(item_dir):
  """Scales the largest float array of an orbax pytree item by 1e30 in
  place (restored and saved back with orbax, so it still decodes)."""
  with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as orbax_io:
    tree = orbax_io.restore(item_dir)
    leaves, treedef = jax.tree.flatten(tree)
    floats = [i for i, x in enumerate(leaves)
              if np.issubdtype(np.asarray(x).dtype, np.floating)]
    largest = max(floats, key=lambda i: np.asarray(leaves[i]).size)
    leaves[largest] = np.asarray(leaves[largest]) * 1e30
    orbax_io.save(item_dir, args=ocp.args.StandardSave(
        jax.tree.unflatten(treedef, leaves)), force=True)


def _rows_without_time(workdir):
  return [{k: v for k, v in row.items() if k != "seconds"}
          for row in csv_logs.read_csv(os.path.join(workdir, "eval.csv"))]


def test_resume_sets_aside_a_checkpoint_that_decodes_to_wrong_values(
    tmp_path, caplog):
  workdir = str(tmp_path)
  checkpoints = os.path.join(workdir, "checkpoints")
  config = moe_config.get_config("test")  # 40 steps, checkpoints 20 and 40.
  moe_train.train(config, workdir)
  first_rows = _rows_without_time(workdir)
  assert [r["step"] for r in first_rows] == ["20", "40"]
  _scale_largest_array(os.path.join(checkpoints, "40", "state"))

  config.num_steps = 60
  with caplog.at_level(logging.WARNING):
    final = moe_train.train(config, workdir)

  assert final["step"] == 60 and np.isfinite(final["eval_loss"])
  assert sorted(os.listdir(checkpoints)) == ["40", "40.damaged-1", "60"]
  assert os.path.isdir(os.path.join(checkpoints, "40.damaged-1", "state"))
  rows = _rows_without_time(workdir)
  assert [r["step"] for r in rows] == ["20", "40", "60"]
  assert rows[:2] == first_rows   # Resumed from 20: step 40 again, exactly.
  warnings = " ".join(r.getMessage() for r in caplog.records
                      if r.levelno == logging.WARNING)
  assert os.path.join(checkpoints, "40") + " is damaged (" in warnings
  assert "state/" in warnings     # Names a file of the state item.
  assert ("Moved damaged checkpoint 40 to "
          + os.path.join(checkpoints, "40.damaged-1")
          + "; resuming from checkpoint 20") in warnings
