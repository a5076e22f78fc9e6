"""SAC's seed-axis sharding: the rule, and 2 forced CPU devices == 1 device."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from common import csv_logs
from sac import seed_sharding

REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs the `test` preset with 2 seeds in two parts (300 steps, then a resume to
# 400, so a sharded state is checkpointed and restored), records how the state
# returned by every compiled step is laid out, and saves the final parameters.
_RUN = r"""
import json, sys
import jax, numpy as np
from common import checkpointing
from launch.configs import sac as sac_config
from sac import learner, seed_sharding, train

workdir = sys.argv[1]
layouts = set()
make_update_fn = learner.make_update_fn

def recording_make_update_fn(*args, **kwargs):
  step_fn = make_update_fn(*args, **kwargs)
  def step(state, *inputs):
    out = step_fn(state, *inputs)
    layouts.update((len(x.sharding.device_set),
                    x.addressable_shards[0].data.shape[0])
                   for x in jax.tree.leaves(out[0]))
    return out
  return step

learner.make_update_fn = recording_make_update_fn
config = sac_config.get_config("test")
config.num_seeds = 2
config.num_steps = 300
train.train(config, workdir)
config.num_steps = 400
train.train(config, workdir)
template = seed_sharding.place(
    train.init_states(train.build_agent(config, 3, 1), config, [0, 1]),
    seed_sharding.seed_sharding(2))
ckpt = checkpointing.Checkpointer(workdir)
state, _, _ = ckpt.restore(ckpt.latest_step(), template)
restored = {len(x.sharding.device_set) for x in jax.tree.leaves(state)}
leaves = jax.tree.leaves((state.actor_params, state.critic_params))
np.savez(workdir + "/final.npz", *[np.asarray(x) for x in leaves])
print(json.dumps({"devices": len(jax.local_devices()),
                  "step_layouts": sorted(layouts),
                  "restored": sorted(restored)}))
"""


@pytest.mark.parametrize("num_seeds,num_devices,expected", [
    (2, 2, 2), (4, 2, 2), (6, 4, 3), (5, 4, 1), (2, 8, 2), (1, 2, 1),
    (3, 1, 1)])
def test_num_seed_devices_is_largest_divisor_at_most_device_count(
    num_seeds, num_devices, expected):
  assert seed_sharding.num_seed_devices(num_seeds, num_devices) == expected


def test_one_device_means_no_sharding():
  assert seed_sharding.seed_sharding(4, devices=[object()]) is None
  with pytest.raises(ValueError, match="num_seeds=0"):
    seed_sharding.num_seed_devices(0, 2)


def _start(workdir, num_devices):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  return subprocess.Popen([sys.executable, "-c", _RUN, str(workdir)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def test_two_forced_cpu_devices_shard_seeds_and_match_one_device(tmp_path):
  runs = {n: tmp_path / f"devices{n}" for n in (1, 2)}
  procs = {n: _start(d, n) for n, d in runs.items()}
  info = {n: _finish(p) for n, p in procs.items()}
  # Two devices: every leaf of the trained and the restored state is split
  # over both, one seed per device; one device: nothing is split.
  assert info[2]["devices"] == 2
  assert info[2]["step_layouts"] == [[2, 1]]
  assert info[2]["restored"] == [2]
  assert info[1]["step_layouts"] == [[1, 2]]
  assert info[1]["restored"] == [1]
  one, two = (csv_logs.read_csv(str(runs[n] / "eval.csv")) for n in (1, 2))
  assert [(r["step"], r["seed"]) for r in one] == [
      (r["step"], r["seed"]) for r in two]
  assert len(one) == 6   # Evaluated at steps 200, 300 (end of part 1), 400.
  # Not bitwise: XLA compiles the vmapped update for 2 seeds on one device and
  # for 1 seed per device differently (fusion, vectorisation); the returns
  # differ by ~1e-7 relative.
  np.testing.assert_allclose([float(r["return_mean"]) for r in one],
                             [float(r["return_mean"]) for r in two], rtol=1e-5)
  # The parameters after 200 updates: the round-off grows through the
  # environment (actions differ in the last bits, then the observations),
  # so the difference is measured relative to each array's norm.
  final = {n: np.load(runs[n] / "final.npz") for n in (1, 2)}
  for name in final[1].files:
    a, b = final[1][name], final[2][name]
    assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b), (
        name, np.linalg.norm(a - b) / np.linalg.norm(b))
