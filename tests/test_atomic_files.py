"""common/atomic_files.py: a write replaces the file whole or not at all.

Oracles: the file's bytes after a write, the directory listing (no
temporary file left), and the previous contents after a write that fails
part-way (a value `write` cannot encode raises inside the temporary file).
"""

import os

import pytest

from common import atomic_files


def test_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "report.md"
  path.write_text("old\n")
  atomic_files.write_text(str(path), "new\nline\n")
  assert path.read_text() == "new\nline\n"
  atomic_files.write_text(str(path), "a\nb\n", newline="\r\n")
  assert path.read_bytes() == b"a\r\nb\r\n"
  assert os.listdir(tmp_path) == ["report.md"]


def test_failed_write_keeps_the_previous_file(tmp_path):
  path = tmp_path / "results.json"
  atomic_files.write_json(str(path), {"a": 1})
  before = path.read_bytes()
  with pytest.raises(TypeError):
    atomic_files.write_text(str(path), b"bytes are not text")
  with pytest.raises(TypeError):
    atomic_files.write_json(str(path), {"a": object()})
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["results.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_permissions_are_those_of_a_new_file_under_the_umask(tmp_path, umask):
  """0o666 less the umask, as `open(path, "w")` gives (not mkstemp's 0o600)."""
  previous = os.umask(umask)
  try:
    atomic_files.write_text(str(tmp_path / "a.md"), "text")
    atomic_files.write_bytes(str(tmp_path / "b.png"), b"PNG")
    with open(tmp_path / "c.txt", "w") as f:
      f.write("reference")
  finally:
    os.umask(previous)
  expected = 0o666 & ~umask
  for name in ("a.md", "b.png", "c.txt"):
    assert os.stat(tmp_path / name).st_mode & 0o777 == expected, name
