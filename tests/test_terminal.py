"""`launch.terminal`: a launcher's terminal holds a start line, the progress
bar and a summary; absl's `--verbosity=0` brings the libraries' logs back.

Runs the MoE launcher's `test` preset twice on one workdir: a fresh run with
default settings, then a resume (nothing left to train) with `--verbosity=0`
and the huge-pages opt-out.
"""

import os
import pathlib
import re
import subprocess
import sys

from launch import hugepages

ROOT = pathlib.Path(__file__).resolve().parents[1]
ABSL_INFO = re.compile(r"^I\d{4} ", flags=re.M)  # absl's INFO line prefix.


def _launch(workdir, *flags, **env_overrides):
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "STOCHGRAD_HUGETLB")}
  env.update(env_overrides, PYTHONPATH=str(ROOT))
  return subprocess.run(
      [sys.executable, "-m", "launch.train_moe",
       "--config=launch/configs/moe.py:test", f"--workdir={workdir}", *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, check=True)


def test_moe_launcher_terminal_is_quiet_by_default_and_verbose_on_request(
    tmp_path):
  workdir = tmp_path / "moe"
  quiet = _launch(workdir)
  assert not ABSL_INFO.search(quiet.stderr), quiet.stderr
  assert ("orbax" not in quiet.stderr
          and "checkpoint_manager" not in quiet.stderr)
  start, where, *_, summary = quiet.stdout.splitlines()
  assert start.startswith("MoE: 4 experts, top-2, 40 steps")
  glibc_ok = (hugepages.glibc_version() or (0, 0)) >= (2, 35)
  assert ("malloc huge pages on" in start) == glibc_ok, start
  assert where.startswith(f"outputs: {workdir} ")
  assert summary == (f"outputs in {workdir}: "
                     + ", ".join(sorted(n + "/" if (workdir / n).is_dir() else n
                                        for n in os.listdir(workdir)
                                        if not n.startswith("."))))
  assert "eval.csv" in summary and "checkpoints/" in summary

  verbose = _launch(workdir, "--verbosity=0", STOCHGRAD_HUGETLB="0")
  assert ABSL_INFO.search(verbose.stderr), verbose.stderr
  assert "checkpoint_manager.py" in verbose.stderr
  assert "malloc huge pages off (STOCHGRAD_HUGETLB=0)" in verbose.stdout
