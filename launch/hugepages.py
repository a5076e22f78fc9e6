"""Huge pages for glibc's malloc, on by default for the MoE programs.

A MoE step writes fresh [E, d, h] expert gradients on every call; with
glibc's default allocator those large buffers come back from the kernel as
fresh 4 KiB pages each step, and the step is bound by page faults. glibc
2.35 added the tunable `glibc.malloc.hugetlb=1`, which makes malloc ask for
transparent huge pages (madvise(MADV_HUGEPAGE)) on the memory it maps.

glibc reads `GLIBC_TUNABLES` once, when the process starts, so setting it
from Python is too late: `reexec_with_hugetlb` re-executes the program once
(same interpreter, same `sys.orig_argv`) with `glibc.malloc.hugetlb=1`
appended to any `GLIBC_TUNABLES` the user already set. It does nothing
when:
  - the environment has `STOCHGRAD_HUGETLB=0` (the opt-out);
  - `GLIBC_TUNABLES` already sets `glibc.malloc.hugetlb` (to any value: the
    user's choice wins, and this is also what stops a second re-exec);
  - the C library is not glibc >= 2.35 (the tunable does not exist there).

Used by `launch.train_moe`, `benchmarks.moe_throughput` and
`benchmarks.moe_breakdown`.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT_VARIABLE = "STOCHGRAD_HUGETLB"
MIN_GLIBC = (2, 35)


def glibc_version() -> Optional[tuple[int, int]]:
  """Returns glibc's (major, minor), or None when the C library is not glibc."""
  try:
    name = os.confstr("CS_GNU_LIBC_VERSION")  # e.g. "glibc 2.36"
  except (AttributeError, ValueError, OSError):
    return None
  if not name or not name.startswith("glibc "):
    return None
  major, minor = name.split()[1].split(".")[:2]
  return int(major), int(minor)


def tunables_with_hugetlb(environ: Mapping[str, str]) -> Optional[str]:
  """The GLIBC_TUNABLES value to re-execute with, or None to leave things be."""
  if environ.get(OPT_OUT_VARIABLE) == "0":
    return None
  version = glibc_version()
  if version is None or version < MIN_GLIBC:
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  if any(item.split("=")[0] == TUNABLE for item in current.split(":")):
    return None
  return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def reexec_with_hugetlb() -> None:
  """Re-executes this program once with `glibc.malloc.hugetlb=1` (see above).

  Call first thing under `if __name__ == "__main__":`, before JAX is
  imported, so the replaced process has done no work worth repeating.
  Returns normally when there is nothing to do.
  """
  tunables = tunables_with_hugetlb(os.environ)
  if tunables is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv,
            dict(os.environ, GLIBC_TUNABLES=tunables))


def describe() -> str:
  """One line for a start banner: are malloc huge pages on, and why."""
  current = os.environ.get("GLIBC_TUNABLES", "")
  if f"{TUNABLE}=1" in current.split(":"):
    return (f"malloc huge pages on (GLIBC_TUNABLES={current}; "
            f"{OPT_OUT_VARIABLE}=0 turns them off)")
  if os.environ.get(OPT_OUT_VARIABLE) == "0":
    return f"malloc huge pages off ({OPT_OUT_VARIABLE}=0)"
  return (f"malloc huge pages off (C library: "
          f"{glibc_version() or 'not glibc'}, "
          f"GLIBC_TUNABLES={current or '(unset)'})")
