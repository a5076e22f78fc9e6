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
  {
    "b": 1
  }
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_text(path: str, text: str, *, newline: str | None = None) -> None:
  """Writes `text` to `path` atomically (temporary file + `os.replace`)."""
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "w", newline=newline) as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any, *, sort_keys: bool = False) -> None:
  """Writes `obj` as indented JSON (with a final newline) atomically."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
