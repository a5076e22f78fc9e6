"""Where a run ran: package versions, commit and machine.

`common.checkpointing` appends one `record()` to `WORKDIR/provenance.json`
(`append`) each time a trainer starts or resumes a run, and
`launch.study_report` lists the distinct records of a study's cells and
names the packages that differ between them. A record matters for
reproduction: the same seed gives other numbers under another version of a
simulator or compiler. For example, MuJoCo 3.17.0 and 4.0.0 simulate
HalfCheetah-v5 differently from the first step (docs/benchmarks.md, "SAC
learning"), so per-seed SAC returns are comparable run for run only under
the same MuJoCo.

Example:
  >>> from common import provenance
  >>> rec = provenance.record()
  >>> sorted(rec)
  ['commit', 'machine', 'packages', 'python']
  >>> rec["packages"]["numpy"] is not None
  True
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from typing import Any, Sequence

from common import atomic_files

FILE = "provenance.json"

# The distributions whose version can change a cell's numbers.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "distrax", "numpy",
            "scipy", "gymnasium", "mujoco", "orbax-checkpoint", "mlxtend")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  """Installed version of each distribution (None: not installed)."""
  out = {}
  for name in names:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def git_commit(root: str = _ROOT) -> str | None:
  """The checkout's commit, with "+dirty" if tracked files changed.

  None when `root` is not a git checkout (an installed package) or git is
  missing.
  """
  def git(*args):
    return subprocess.run(["git", "-C", root, *args], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()
  try:
    commit = git("rev-parse", "--short=7", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "")


def record() -> dict[str, Any]:
  """Python, package versions, commit and machine of this process."""
  return {
      "python": platform.python_version(),
      "packages": package_versions(),
      "commit": git_commit(),
      "machine": f"{platform.system()} {platform.machine()}, "
                 f"{os.cpu_count()} CPUs",
  }


def software(rec: dict[str, Any]) -> dict[str, str | None]:
  """The fields of a record that can change results: python and packages."""
  return {"python": rec.get("python"), **rec.get("packages", {})}


def differing(records: Sequence[dict[str, Any]]) -> list[str]:
  """Names of the software fields whose value differs between `records`."""
  fields = sorted({k for r in records for k in software(r)})
  return [k for k in fields
          if len({software(r).get(k) for r in records}) > 1]


def read(run_dir: str) -> list[dict[str, Any]]:
  """The records of a run directory, oldest first ([] if none)."""
  path = os.path.join(run_dir, FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def append(run_dir: str) -> None:
  """Adds this process's `record()` to the run directory's list (atomically)."""
  os.makedirs(run_dir, exist_ok=True)
  atomic_files.write_json(os.path.join(run_dir, FILE),
                          read(run_dir) + [record()], sort_keys=True)
