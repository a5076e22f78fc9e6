"""One writer per workdir (common.workdir_lock), with two real processes.

A tiny Python subprocess takes the lock through the common function and
sleeps; in this process the lock function and both trainers must then stop
at once with an error naming the workdir and the holder's pid. After the
holder is SIGKILLed the kernel has dropped its flock and the lock can be
taken again.
"""

import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest

from common import workdir_lock
from launch.configs import moe as moe_config
from launch.configs import sac as sac_config
from moe import train as moe_train
from sac import train as sac_train

REPO = pathlib.Path(__file__).resolve().parents[1]
HOLDER = ("import sys, time\n"
          "from common import workdir_lock\n"
          "workdir_lock.acquire(sys.argv[1])\n"
          "print('locked', flush=True)\n"
          "time.sleep(600)\n")


@pytest.fixture
def holder(tmp_path):
  """A live process holding the lock on tmp_path/run; yields (workdir, proc)."""
  workdir = str(tmp_path / "run")
  proc = subprocess.Popen(
      [sys.executable, "-c", HOLDER, workdir], cwd=REPO,
      env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
      text=True)
  try:
    assert proc.stdout.readline() == "locked\n"
    yield workdir, proc
  finally:
    proc.kill()
    proc.wait()


def _busy(workdir, pid):
  return re.escape(f"workdir {workdir!r} is in use by another process "
                   f"(pid {pid} holds {os.path.join(workdir, 'run.lock')})")


def test_second_process_is_refused_naming_the_pid_until_the_holder_dies(
    holder):
  workdir, proc = holder
  with pytest.raises(workdir_lock.WorkdirLockedError,
                     match=_busy(workdir, proc.pid)):
    workdir_lock.acquire(workdir)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  with workdir_lock.hold(workdir) as lock:   # Freed by the kernel.
    with open(lock.path) as f:
      assert f.read() == f"{os.getpid()}\n"
  with workdir_lock.hold(workdir):           # And released by hold().
    pass


@pytest.mark.parametrize("train,config", [
    (sac_train.train, sac_config.get_config("test")),
    (moe_train.train, moe_config.get_config("test")),
], ids=["sac", "moe"])
def test_trainers_refuse_a_workdir_in_use_before_touching_it(
    holder, train, config):
  workdir, proc = holder
  with pytest.raises(workdir_lock.WorkdirLockedError,
                     match=_busy(workdir, proc.pid)):
    train(config, workdir)
  assert os.listdir(workdir) == ["run.lock"]
