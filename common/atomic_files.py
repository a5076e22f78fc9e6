"""Atomic file writes: a reader sees the old file or the new one, never half.

The text goes to a uniquely named temporary file in the target's directory
(`tempfile.mkstemp`, so concurrent writers, e.g. shards of a study started
at once, never share a temporary name) and then `os.replace`s the target. A
kill mid-write leaves the previous file and, at worst, a stray temporary
file named `.<name>.*.tmp`.

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
import tempfile
from typing import Any


def write_text(path: str, text: str, *, newline: str | None = None) -> None:
  """Writes `text` to `path` atomically (temporary file + `os.replace`)."""
  _write(path, "w", text, newline=newline)


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (a figure rendered to bytes, say)."""
  _write(path, "wb", data)


def _write(path: str, mode: str, data, *, newline: str | None = None) -> None:
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp",
                             dir=directory)
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
