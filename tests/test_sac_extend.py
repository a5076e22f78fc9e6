"""A SAC run extended with a larger budget and buffer is the longer run.

Oracles:
- a run trained to 200 steps with a 199-row buffer, then resumed with
  num_steps = buffer_size = 400, writes byte for byte the eval.csv and ends
  in the state of a run given 400 steps and 400 rows from the start (at the
  200-step checkpoint the buffer has received 199 transitions, one is
  pending: it is exactly full and never wrapped, the boundary of
  `sac.state_layouts.grown_buffer`);
- the checkpoint the first budget kept (step 100) is still there after the
  extension, which keeps other steps;
- `benchmarks.sac_grad_variance` restores the extended run's 200-step
  checkpoint (199 rows) as the longer run's;
- a buffer that wrapped cannot grow (the resume names both sizes), and a
  buffer cannot shrink.
"""

import gc

import jax
import numpy as np
import pytest

from benchmarks import sac_grad_variance
from common import checkpointing
from launch.configs import sac as sac_config
from sac import learner
from sac import train as sac_train

# A refused restore (the wrapped buffer) can leave orbax's reader threads'
# callbacks behind, which pytest reports as unraisable exceptions; they are
# collected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_orbax_leftovers():
  yield
  gc.collect()


def _config(steps: int, buffer_size: int, keep: tuple[int, ...]):
  config = sac_config.get_config("test")
  config.num_seeds, config.learning_starts = 2, 100
  config.num_steps, config.buffer_size = steps, buffer_size
  config.eval_every = config.checkpoint_every = 100
  config.keep_checkpoint_steps = keep
  return config


def _final_state(workdir, config):
  agent = sac_train.build_agent(config, 3, 1)  # Pendulum-v1.
  like = sac_train.init_states(agent, config, [0, 1])
  checkpointer = checkpointing.Checkpointer(str(workdir))
  try:
    state, _, _ = checkpointer.restore(config.num_steps, like)
  finally:
    checkpointer.close()
  return state


def test_an_extended_run_is_the_run_given_the_budget_from_the_start(
    tmp_path):
  long = _config(400, 400, keep=(200,))
  sac_train.train(long, str(tmp_path / "long"))
  sac_train.train(_config(200, 199, keep=(100,)), str(tmp_path / "extended"))
  sac_train.train(long, str(tmp_path / "extended"))
  long_csv, extended_csv = ((tmp_path / name / "eval.csv").read_text()
                            for name in ("long", "extended"))
  assert extended_csv == long_csv
  assert [line.split(",")[0] for line in long_csv.splitlines()[1:]] == [
      step for step in ("100", "200", "300", "400") for _ in range(2)]
  a, b = (_final_state(tmp_path / name, long) for name in ("long", "extended"))
  assert isinstance(b, learner.SACState) and b.buffer.capacity == 400
  jax.tree.map(np.testing.assert_array_equal, a, b)
  checkpoints = sorted(int(p.name) for p in
                       (tmp_path / "extended" / "checkpoints").iterdir())
  assert checkpoints == [100, 200, 300, 400]  # 100: kept by the first budget.
  # The variance tool reads the extended run's 200-step checkpoint (199
  # rows) as the longer run's (400 rows) under the run's config.json.
  config = sac_grad_variance.load_run_config(str(tmp_path / "extended"))
  agent = sac_train.build_agent(config, 3, 1)
  a, b = (sac_grad_variance.restore_state(str(tmp_path / name), config,
                                          agent, 200)
          for name in ("long", "extended"))
  assert b.buffer.capacity == 400
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_wrapped_buffer_cannot_grow_and_no_buffer_shrinks(tmp_path):
  workdir = str(tmp_path / "run")
  sac_train.train(_config(200, 198, keep=()), workdir)  # 199 into 198 rows.
  with pytest.raises(checkpointing.LayoutRefused,
                     match=r"cannot grow the replay buffer of checkpoint 200 "
                     r"from 198 to 300 rows: it had received 199 transitions "
                     r"per seed, more than its 198 rows, so it wrapped .* "
                     r"resume with buffer_size=198"):
    sac_train.train(_config(400, 300, keep=()), workdir)
  with pytest.raises(ValueError, match=r"buffer_size \(saved 198, now 50\)"
                     r".* \('buffer_size',\) may grow"):
    sac_train.train(_config(400, 50, keep=()), workdir)
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()
                ) == ["100", "200"]  # Nothing was set aside.
