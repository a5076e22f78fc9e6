"""`.ci/run` builds its environment in a copy of the checkout, never `./.venv`.

The script is run on a throwaway git repository whose README's test command
is a trivial shell line that records where it ran, what it could see, and
creates a `.venv` of its own, as the real command does.
"""

import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]

FAKE_README = """# fake

<!-- quickstart:test -->
```bash
pwd > "$CI_PROBE" && ls setup.py untracked.txt >> "$CI_PROBE" && \
mkdir -p .venv && touch .venv/made_by_ci
```
"""


def _fake_checkout(tmp_path):
  repo = tmp_path / "repo"
  (repo / ".ci").mkdir(parents=True)
  shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
  (repo / "README.md").write_text(FAKE_README, encoding="utf-8")
  (repo / "setup.py").write_text("", encoding="utf-8")
  (repo / ".gitignore").write_text(".venv/\n", encoding="utf-8")
  subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
  subprocess.run(["git", "add", "."], cwd=repo, check=True)
  (repo / "untracked.txt").write_text("", encoding="utf-8")
  (repo / ".venv" / "bin").mkdir(parents=True)
  (repo / ".venv" / "bin" / "python").write_text("user's venv",
                                                  encoding="utf-8")
  return repo


def test_ci_leaves_the_users_venv_alone_and_cleans_up(tmp_path):
  repo = _fake_checkout(tmp_path)
  probe = tmp_path / "probe.txt"
  run = subprocess.run(["bash", ".ci/run"], cwd=repo, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin",
                                       "CI_PROBE": str(probe),
                                       "TMPDIR": str(tmp_path)})
  assert run.returncode == 0, run.stderr
  ran_in, *listed = probe.read_text(encoding="utf-8").split()
  # The README's command ran elsewhere, on a copy holding the tracked and
  # untracked (not ignored) files.
  assert pathlib.Path(ran_in) != repo
  assert listed == ["setup.py", "untracked.txt"]
  # The user's virtual environment is untouched; CI's own is gone.
  assert (sorted(p.name for p in (repo / ".venv").rglob("*"))
          == ["bin", "python"])
  assert (repo / ".venv" / "bin" / "python").read_text() == "user's venv"
  assert not pathlib.Path(ran_in).exists()


def test_ci_reports_the_commands_exit_code(tmp_path):
  repo = _fake_checkout(tmp_path)
  readme = repo / "README.md"
  readme.write_text(FAKE_README.replace(
      'pwd > "$CI_PROBE" && ', "exit 3 && "), encoding="utf-8")
  run = subprocess.run(["bash", ".ci/run"], cwd=repo, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin",
                                       "TMPDIR": str(tmp_path)})
  assert run.returncode == 3
  assert "exit code 3" in run.stdout
