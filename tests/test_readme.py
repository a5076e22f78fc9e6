"""The README Quickstart stays true: two commands, pointing at real files."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quickstart_commands():
  text = (ROOT / "README.md").read_text(encoding="utf-8")
  section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quickstart_has_exactly_two_one_line_commands():
  commands = quickstart_commands()
  assert len(commands) == 2, commands
  assert all("\n" not in c for c in commands), commands
  main, tests = commands
  assert "pip install" in main and "pip install" in tests
  assert "-m pytest" in tests


def test_quickstart_main_command_points_at_real_modules_and_configs():
  main = quickstart_commands()[0]
  module = re.search(r"-m (launch\.\w+)", main).group(1)
  assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
  for config in re.findall(r"--config=(\S+\.py)", main):
    assert (ROOT / config).is_file(), config


def test_ci_runs_the_readme_test_command():
  """.ci/run extracts the same line the README shows as the test command."""
  printed = subprocess.run(["bash", ".ci/run", "--print-command"], cwd=ROOT,
                           capture_output=True, text=True, check=True)
  assert printed.stdout.strip() == quickstart_commands()[1]
