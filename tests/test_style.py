"""Style that a tool keeps: ruff, configured in `ruff.toml` (80 columns,
pycodestyle and pyflakes), finds nothing in the repository."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
  result = subprocess.run(
      [sys.executable, "-m", "ruff", "check", "--no-cache",
       "--output-format=concise", "."],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
