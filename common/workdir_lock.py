"""One writer per workdir: an exclusive `fcntl.flock` on `workdir/run.lock`.

A run holds the lock from before it reads its checkpoints until it ends, so
a second `train` on the same workdir (a re-run in another terminal, a
scheduler retrying a job that is still alive) stops at once with
`WorkdirLockedError`, naming the workdir and the pid holding it, instead of
appending to the same logs and saving checkpoints over the first run's.

The kernel releases a flock when its last file descriptor closes, which
includes the process dying by SIGKILL: a stale `run.lock` file (it stays in
the workdir and holds the last holder's pid) never blocks a later run. The
lock is advisory and local: it excludes processes that take it, on one
machine (flock is not reliable across NFS clients). The descriptor is not
inherited by exec'd children; a forked child that never execs (e.g. a
multiprocessing worker) would keep the lock alive until it exits.

Example:
  >>> import tempfile
  >>> with tempfile.TemporaryDirectory() as workdir:
  ...   with hold(workdir):
  ...     pass  # the whole run
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Iterator

LOCK_NAME = "run.lock"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir's lock."""


class WorkdirLock:
  """An acquired lock on a workdir; `release()` (or process exit) frees it."""

  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    # No O_TRUNC: the file holds the current holder's pid until we own it.
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
      os.close(fd)
      if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirLockedError(
          f"workdir {workdir!r} is in use by another process (pid "
          f"{_holder_pid(self.path)} holds {self.path}); wait for it to "
          "finish or stop it, or use another workdir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    self._fd: int | None = fd

  def release(self) -> None:
    """Unlocks (idempotent). The file stays; it is harmless once unlocked."""
    if self._fd is not None:
      os.close(self._fd)   # Closing the last descriptor drops the flock.
      self._fd = None


def _holder_pid(path: str) -> str:
  """The pid written by the holder, or 'unknown' if not written yet."""
  try:
    with open(path) as f:
      return f.read().strip() or "unknown"
  except OSError:
    return "unknown"


def acquire(workdir: str) -> WorkdirLock:
  """Takes workdir's lock (creating workdir) or raises WorkdirLockedError."""
  return WorkdirLock(workdir)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[WorkdirLock]:
  """Context manager holding the workdir's lock for its body."""
  lock = acquire(workdir)
  try:
    yield lock
  finally:
    lock.release()
