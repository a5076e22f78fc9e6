"""The shared loop's contract with a pipelined step (`training_loop.run`).

A `pipelined` program's step is told to settle exactly when the loop
evaluates, checkpoints or ends after it, so nothing is in flight when the
state is read. Oracle: the schedules below, by hand (stride 2, budget 14,
evaluations every 4 steps, checkpoints every 6 and at step 10, and both at
the end).
"""

import jax.numpy as jnp
import ml_collections
import numpy as np

from common import checkpointing
from common import training_loop


class FakePipelinedStep:
  """Counts in the state; records each call's settle flag, and whether the
  state was read (evaluated) while work was in flight."""

  def __init__(self):
    self.settles, self.in_flight, self.read_in_flight = [], False, False

  def step(self, state, *, settle):
    self.settles.append(settle)
    self.in_flight = not settle
    return {"count": state["count"] + 1}, {"loss": jnp.float32(0.5)}

  def evaluate(self, state, step, scheduled, metrics):
    self.read_in_flight |= self.in_flight
    return [{"step": step, "count": int(state["count"])}]


def test_a_pipelined_step_settles_before_every_evaluation_checkpoint_and_end(
    tmp_path):
  fake = FakePipelinedStep()
  program = training_loop.Program(
      stride=2, step=fake.step, evaluate=fake.evaluate,
      eval_columns=("step", "count"), loss_names=("loss",),
      evaluate_every=training_loop.Every(4),
      checkpoint_every=training_loop.Every(6, on_steps=(10,)),
      pipelined=True)
  config = ml_collections.ConfigDict({"num_steps": 14})
  with checkpointing.open_run(str(tmp_path), config,
                              allowed_changes=("num_steps",)) as run:
    state, rows = training_loop.run(
        run, {"count": jnp.int32(0)}, program, workdir=str(tmp_path),
        num_steps=14, tensorboard=False, progress_bar=False)
  steps = list(range(2, 15, 2))
  # Evaluations at 4, 8, 12, 14; checkpoints at 6, 10 (on_steps), 12, 14.
  expected = [s in (4, 6, 8, 10, 12, 14) for s in steps]
  assert fake.settles == expected
  assert not fake.read_in_flight
  assert int(state["count"]) == 7 and rows == [{"step": 14, "count": 7}]


def test_an_unpipelined_step_is_called_with_the_state_alone(tmp_path):
  calls = []

  def step(state):
    calls.append(state)
    return state, None

  program = training_loop.Program(
      stride=1, step=step, evaluate=lambda *a: [], eval_columns=("step",),
      loss_names=(), evaluate_every=training_loop.Every(None),
      checkpoint_every=training_loop.Every(None))
  config = ml_collections.ConfigDict({"num_steps": 3})
  with checkpointing.open_run(str(tmp_path), config,
                              allowed_changes=()) as run:
    training_loop.run(run, {"x": np.zeros(1)}, program,
                      workdir=str(tmp_path), num_steps=3, tensorboard=False,
                      progress_bar=False)
  assert len(calls) == 3
