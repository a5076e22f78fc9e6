"""`launch.hugepages`: the MoE programs re-execute once with malloc huge pages.

Each case runs a tiny program in a subprocess that prints "start", calls
`reexec_with_hugetlb()` and prints its final GLIBC_TUNABLES. Two "start"
lines mean exactly one re-execution; one means none. The launcher itself is
checked end to end in tests/test_terminal.py (its start line reports the
setting).
"""

import os
import pathlib
import subprocess
import sys

import pytest

from launch import hugepages

ROOT = pathlib.Path(__file__).resolve().parents[1]

_PROGRAM = """
print("start", flush=True)
from launch import hugepages
hugepages.reexec_with_hugetlb()
import os
print(os.environ.get("GLIBC_TUNABLES", "(unset)"))
"""

needs_glibc_235 = pytest.mark.skipif(
    (hugepages.glibc_version() or (0, 0)) < (2, 35),
    reason="glibc.malloc.hugetlb needs glibc >= 2.35")


def _run(**env_overrides):
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "STOCHGRAD_HUGETLB")}
  env.update(env_overrides, PYTHONPATH=str(ROOT))
  out = subprocess.run([sys.executable, "-c", _PROGRAM], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True).stdout
  lines = out.split()
  return lines.count("start"), lines[-1]


@needs_glibc_235
def test_default_reexecutes_once_with_hugetlb():
  assert _run() == (2, "glibc.malloc.hugetlb=1")


@needs_glibc_235
def test_existing_tunables_are_kept_and_extended():
  assert _run(GLIBC_TUNABLES="glibc.malloc.tcache_count=0") == (
      2, "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1")


def test_opt_out_leaves_the_environment_alone():
  assert _run(STOCHGRAD_HUGETLB="0") == (1, "(unset)")


def test_an_explicit_hugetlb_setting_wins():
  assert _run(GLIBC_TUNABLES="glibc.malloc.hugetlb=0") == (
      1, "glibc.malloc.hugetlb=0")


def test_no_reexec_without_glibc_235(monkeypatch):
  monkeypatch.setattr(hugepages, "glibc_version", lambda: (2, 34))
  assert hugepages.tunables_with_hugetlb({}) is None
  monkeypatch.setattr(hugepages, "glibc_version", lambda: None)
  assert hugepages.tunables_with_hugetlb({}) is None
  monkeypatch.setattr(hugepages, "glibc_version", lambda: (2, 35))
  assert hugepages.tunables_with_hugetlb({}) == "glibc.malloc.hugetlb=1"
