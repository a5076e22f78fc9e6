"""Where a run ran: package versions, commit and machine.

`common.checkpointing` appends one `record()` to `WORKDIR/provenance.json`
(`append`) each time a trainer starts or resumes a run, and
`launch.study_report` lists the distinct records of a study's cells and
names the packages that differ between them. A record matters for
reproduction: the same seed gives other numbers under another version of a
simulator or compiler. For example, MuJoCo 3.17.0 and 4.0.0 differ in
HalfCheetah-v5 by round-off that the dynamics amplify to O(1) within 100
steps (docs/benchmarks.md, "SAC learning"), so per-seed SAC returns are
comparable run for run only under the same MuJoCo.

Example:
  >>> from common import provenance
  >>> rec = provenance.record()
  >>> sorted(rec)
  ['commit', 'devices', 'machine', 'packages', 'python', 'xla_flags']
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

from absl import logging
import jax

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


# The code and packages this process runs are (to within what it imports
# later) those of the moment it imported this module: a long process (a study
# running cell after cell) keeps running them after later commits or installs,
# so its records name them, not the checkout's state at each cell's start.
# The trainers' launchers import it at start-up (through
# `common.checkpointing`); `launch.ablate`, whose cells import their trainers
# later, imports it first of the project's modules.
PROCESS_COMMIT = git_commit()
PROCESS_PACKAGES = package_versions()


def cpu_model() -> str:
  """The CPU's model name (XLA's CPU code depends on its instruction set)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def record() -> dict[str, Any]:
  """Python, package versions, devices, XLA flags, commit and machine.

  The commit and package versions are those when this process imported
  `common.provenance` (`PROCESS_COMMIT`, `PROCESS_PACKAGES`).
  """
  devices = jax.devices()
  return {
      "python": platform.python_version(),
      "packages": dict(PROCESS_PACKAGES),
      "devices": f"{len(devices)} {devices[0].platform}",
      "xla_flags": os.environ.get("XLA_FLAGS"),  # None: unset.
      "commit": PROCESS_COMMIT,
      "machine": f"{platform.system()} {platform.machine()}, "
                 f"{os.cpu_count()} CPUs, {cpu_model()}",
  }


def software(rec: dict[str, Any]) -> dict[str, str | None]:
  """The fields of a record that can change results: python, the packages,
  the jax devices and XLA_FLAGS (a field the record lacks is None, so it
  differs from a record that has it)."""
  return {"python": rec.get("python"), **(rec.get("packages") or {}),
          "jax devices": rec.get("devices"), "XLA_FLAGS": rec.get("xla_flags")}


def describe(rec: dict[str, Any]) -> str:
  """The record's software on one line: "python 3.11.7; jax 0.10.2; ..."."""
  return "; ".join(f"{k} {v}" for k, v in software(rec).items()
                   if v is not None)


def differing(records: Sequence[dict[str, Any]]) -> list[str]:
  """Names of the software fields whose value differs between `records`."""
  fields = [software(r) for r in records]
  names = sorted({k for f in fields for k in f})
  return [k for k in names if len({f.get(k) for f in fields}) > 1]


def read(run_dir: str) -> list[dict[str, Any]]:
  """The records of a run directory, oldest first ([] if none).

  Raises:
    ValueError: the file is not a JSON list of records (naming the file).
  """
  path = os.path.join(run_dir, FILE)
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      records = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ValueError(f"{path} is unreadable: {err}") from err
  if not isinstance(records, list) or not all(
      isinstance(r, dict) for r in records):
    raise ValueError(f"{path} is not a JSON list of records.")
  return records


def append(run_dir: str) -> None:
  """Adds this process's `record()` to the run directory's list (atomically).

  An unreadable list is moved aside to `provenance.json.unreadable` (with a
  warning) and a new one started: a damaged record never stops a run.
  """
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, FILE)
  try:
    records = read(run_dir)
  except ValueError as err:
    logging.warning("%s; moved to %s.unreadable.", err, path)
    os.replace(path, path + ".unreadable")
    records = []
  atomic_files.write_json(path, records + [record()], sort_keys=True)
