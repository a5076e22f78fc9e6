"""Atomic file writes: a reader sees the old file or the new one, never half.

The text goes to a uniquely named temporary file in the target's directory
(created with `O_EXCL` under a random name, so concurrent writers, e.g.
shards of a study started at once, never share a temporary name) and then
`os.replace`s the target. A kill mid-write leaves the previous file and, at
worst, a stray temporary file named `.<name>.*.tmp`. The file gets the
permissions `open(path, "w")` would give it (0o666 less the umask), not
the owner-only ones of `tempfile.mkstemp`.

Example:
  >>> import os, tempfile
  >>> with tempfile.TemporaryDirectory() as d:
  ...   path = os.path.join(d, "a.json")
  ...   write_json(path, {"b": 1})
  ...   print(open(path).read().strip())
  ...   write_bytes(path, b"PNG")
  ...   print(open(path, "rb").read(), os.listdir(d))
  {
    "b": 1
  }
  b'PNG' ['a.json']
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any


def write_text(path: str, text: str, *, newline: str | None = None) -> None:
  """Writes `text` to `path` atomically (temporary file + `os.replace`)."""
  _write(path, "w", text, newline=newline)


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (a figure rendered to bytes, say)."""
  _write(path, "wb", data)


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
  """A new file `.<name>.<random>.tmp` in `directory`, opened for writing.

  Mode 0o666, so the umask applies as for any new file.
  """
  flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
  for _ in range(100):
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    try:
      return os.open(tmp, flags, 0o666), tmp
    except FileExistsError:
      continue
  raise FileExistsError(f"no free temporary name for {name!r} in "
                        f"{directory!r}")


def _write(path: str, mode: str, data, *, newline: str | None = None) -> None:
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp = _create_temporary(directory, name)
  try:
    with os.fdopen(fd, mode, newline=newline) as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any, *, sort_keys: bool = False) -> None:
  """Writes `obj` as indented JSON (with a final newline) atomically."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
