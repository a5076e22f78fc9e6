"""Every code example in the documentation runs.

What is checked:
- Docstring examples. Every module of every package at the repository root
  (each directory with an `__init__.py`, except `tests/`) is found by walking
  the source tree, so a new package or module is covered without editing
  this file. Each docstring's `>>>` lines run as doctests (ELLIPSIS and
  NORMALIZE_WHITESPACE), with the module's own globals; a shown output must
  match. A docstring section headed `Example:`, `Examples:` or `Usage:` must
  be written as `>>>` lines, so an example that doctest would not run cannot
  be added.
- Python blocks in README.md and docs/*.md. Each fenced python block is
  executed as a script in a fresh namespace, from a temporary directory (so a
  block that writes files leaves nothing behind) with the repository root on
  sys.path, its printed output captured (comments such as `# mean ~ (2, 2)`
  are for the reader and are not compared; the estimators' exact values are
  tested in tests/test_estimators.py).
- Commands in README.md and docs/*.md. Every `python -m <module>` in a bash
  block names a module of the repository, every `--config=<file>[:preset]`
  names a config file that exists with a preset that its `get_config`
  accepts, and every `--config.<field>=` override on the same line names a
  field of that config.
  Every flag of a `python -m benchmarks.NAME` command is a flag of that
  benchmark (`benchmarks/__init__.py`: absl flags in the module's `FLAGS`),
  spelt `--name=value` unless it is a boolean.
- Links in README.md and docs/*.md. Every relative link names a file of
  the repository, and its #anchor a heading of that file (GitHub's anchor
  rules).
- Seed statistics in README.md and docs/*.md tables. Every "mean ± sample
  std" cell equals numpy's mean and std (ddof=1) of the per-seed values it
  summarises, to the precision shown: either the "per seed" cell of the same
  row, or the numbers above it in its column when the row is labelled
  "mean ± sample std". Per-seed values shown rounded (a study report's 4
  significant digits) widen the tolerance by their rounding: rounding each
  of n values by at most h moves the mean by at most h and the sample std by
  at most h sqrt(n / (n - 1)).
"""

import ast
import contextlib
import doctest
import importlib
import importlib.util
import io
import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKDOWN = [README] + sorted((ROOT / "docs").glob("*.md"))
MEAN_STD = "mean ± sample std"
EXAMPLE_HEADERS = re.compile(r"^\s*(Example|Examples|Usage):\s*$")
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


# ---------------------------------------------------------------------------
# Discovery.
# ---------------------------------------------------------------------------


def package_dirs():
  return sorted(p for p in ROOT.iterdir()
                if (p / "__init__.py").is_file() and p.name != "tests")


def module_files():
  return sorted(f for package in package_dirs() for f in package.rglob("*.py"))


def module_name(path):
  parts = path.relative_to(ROOT).with_suffix("").parts
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def docstrings(path):
  """(name, docstring) of the module and of every class and function in it."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  found = [("<module>", ast.get_docstring(tree, clean=True))]
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      found.append((node.name, ast.get_docstring(node, clean=True)))
  return [(name, doc) for name, doc in found if doc]


def example_sections(doc):
  """The lines of each `Example:`/`Usage:` section (up to the next header)."""
  lines = doc.splitlines()
  sections = []
  for i, line in enumerate(lines):
    if EXAMPLE_HEADERS.match(line):
      indent = len(line) - len(line.lstrip())
      body = []
      for nxt in lines[i + 1:]:
        if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
          break
        body.append(nxt)
      sections.append((line.strip(), body))
  return sections


def modules_with_doctests():
  return [module_name(f) for f in module_files()
          if any(">>>" in doc for _, doc in docstrings(f))]


# ---------------------------------------------------------------------------
# Docstring examples.
# ---------------------------------------------------------------------------


def test_discovery_finds_the_project_packages():
  names = {p.name for p in package_dirs()}
  assert {"common", "sac", "moe", "launch"} <= names, names
  assert "common.estimators" in modules_with_doctests()


@pytest.mark.parametrize("path", module_files(),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_example_sections_are_doctests(path):
  bad = []
  for name, doc in docstrings(path):
    for header, body in example_sections(doc):
      code = [line for line in body if line.strip()]
      if not code or not code[0].lstrip().startswith(">>>"):
        bad.append(f"{name}: {header!r} section does not start with '>>>'")
  assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


@pytest.mark.parametrize("name", modules_with_doctests())
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
  tests = [t for t in finder.find(module, name) if t.examples]
  assert tests, f"{name}: no doctest found although its source has '>>>'"
  report = io.StringIO()
  for test in tests:
    runner.run(test, out=report.write)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, report.getvalue()


# ---------------------------------------------------------------------------
# Markdown: python blocks and commands.
# ---------------------------------------------------------------------------


def fenced_blocks(language, paths=(README,)):
  blocks = []
  for path in paths:
    text = path.read_text(encoding="utf-8")
    blocks += re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)
  return blocks


def python_blocks():
  """(file name, index in that file, code) of every python block."""
  return [(str(path.relative_to(ROOT)), i, code) for path in MARKDOWN
          for i, code in enumerate(fenced_blocks("python", (path,)))]


def test_python_blocks_are_found_in_the_readme_and_docs():
  files = {name for name, _, _ in python_blocks()}
  assert {"README.md", "docs/moe.md"} <= files, files


@pytest.mark.parametrize("name,index,code", python_blocks(),
                         ids=[f"{n}-{i}" for n, i, _ in python_blocks()])
def test_markdown_python_block_runs(name, index, code, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(ROOT))
  namespace = {"__name__": "__markdown__"}
  with contextlib.redirect_stdout(io.StringIO()):
    exec(compile(code, f"{name} python block {index}", "exec"), namespace)


def readme_commands():
  """Logical lines of the bash blocks of README.md and docs/*.md."""
  commands = []
  for block in fenced_blocks("bash", MARKDOWN):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("#", 1)[0].strip() if line.lstrip().startswith(
          "#") else line.strip()
      if line:
        commands.append(line)
  return commands


def test_readme_commands_name_real_modules_and_configs():
  modules = [m for c in readme_commands()
             for m in re.findall(r"python3? -m ([\w.]+)", c)]
  assert modules and any("--config=" in c for c in readme_commands())
  for module in set(modules) - {"pytest", "venv", "pip"}:
    assert importlib.util.find_spec(module) is not None, module
    assert module.split(".")[0] in {p.name for p in package_dirs()}, module
  for command in readme_commands():
    for config in re.findall(r"--config=(\S+)", command):
      path, _, preset = config.partition(":")
      assert (ROOT / path).is_file(), config
      spec = importlib.util.spec_from_file_location("readme_config",
                                                    ROOT / path)
      config_module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(config_module)
      cfg = (config_module.get_config(preset) if preset
             else config_module.get_config())
      for field in re.findall(r"--config\.([\w.]+)=", command):
        node = cfg
        for part in field.split("."):
          assert part in node, f"{command}: no config field {field!r}"
          node = node[part]


def test_benchmark_commands_use_the_benchmarks_flags():
  """`python -m benchmarks.NAME --flag...` names flags of NAME's `FLAGS`
  (booleans also as --noflag), written absl's way (--name=value)."""
  checked = 0
  for command in readme_commands():
    match = re.search(r"python3? -m (benchmarks\.\w+)(.*)", command)
    if match is None:
      continue
    defined = importlib.import_module(match.group(1)).FLAGS
    for name, value in re.findall(r"--(\w+)(=?)", match.group(2)):
      flag = defined[name] if name in defined else (
          defined[name[2:]] if name.startswith("no") and name[2:] in defined
          else None)
      assert flag is not None, f"{command}: no flag --{name}"
      assert value or flag.boolean, f"{command}: write --{name}=VALUE"
      checked += 1
  assert checked > 10, checked


# ---------------------------------------------------------------------------
# Seed statistics in tables.
# ---------------------------------------------------------------------------


def markdown_tables(path):
  """Each table as a list of rows of stripped cells (separator row dropped)."""
  tables, rows = [], []
  for line in path.read_text(encoding="utf-8").splitlines() + [""]:
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if not all(re.fullmatch(r":?-+:?", c) for c in cells):
        rows.append(cells)
    elif rows:
      tables.append(rows)
      rows = []
  return tables


NUMBER = r"[-+]?\d+(?:\.\d+)?"


def parse_mean_std(cell):
  m = re.fullmatch(rf"\**({NUMBER}) ± ({NUMBER})\**", cell)
  return None if m is None else (m.group(1), m.group(2))


def half_ulp(text):
  """Half a unit in the last digit of a number shown as `text`."""
  return 0.5 * 10.0**-len(text.partition(".")[2])


def assert_matches(value_texts, shown, where):
  values = np.asarray([float(v) for v in value_texts], np.float64)
  n = len(values)
  h = max(map(half_ulp, value_texts))
  for label, exact, text, rounding in (
      ("mean", values.mean(), shown[0], h),
      ("sample std", values.std(ddof=1), shown[1], h * np.sqrt(n / (n - 1)))):
    assert abs(exact - float(text)) <= half_ulp(text) + rounding + 1e-9, (
        f"{where}: {label} shown {text}, computed {exact:.4f} from "
        f"{values.tolist()}")


def seed_statistics():
  """(where, per-seed value texts, (mean text, std text)) of every such
  cell."""
  found = []
  for path in MARKDOWN:
    for table in markdown_tables(path):
      header = table[0]
      per_seed = [i for i, c in enumerate(header)
                  if c.lower().startswith("per seed")]
      if MEAN_STD in header and per_seed:
        col = header.index(MEAN_STD)
        for row in table[1:]:
          values = re.findall(NUMBER, row[per_seed[0]])
          found.append((f"{path.name}: {row}", values,
                        parse_mean_std(row[col])))
      for r, row in enumerate(table):
        if row[0].strip("*") == MEAN_STD:
          for col, cell in enumerate(row[1:], start=1):
            if parse_mean_std(cell) is not None:
              values = [above[col].strip("*") for above in table[1:r]]
              found.append((f"{path.name}: {header[col]}", values,
                            parse_mean_std(cell)))
  return found


def test_tables_name_the_sample_std():
  """A table that quotes "± std" says which std: only the sample std is used."""
  for path in MARKDOWN:
    for table in markdown_tables(path):
      for cell in table[0] + [row[0] for row in table]:
        if "±" in cell and "std" in cell:
          assert cell.strip("*") == MEAN_STD, f"{path.name}: {cell!r}"


def test_seed_statistics_are_mean_and_sample_std_of_the_listed_values():
  found = seed_statistics()
  assert found, "no 'mean ± sample std' cell found"
  for where, values, shown in found:
    assert shown is not None, f"{where}: cell is not 'mean ± std'"
    assert len(values) >= 2, where
    assert_matches(values, shown, where)


# ---------------------------------------------------------------------------
# Links.
# ---------------------------------------------------------------------------


def heading_anchors(path: pathlib.Path) -> set[str]:
  """GitHub's anchors of a Markdown file's headings (lowercase; spaces to
  hyphens; characters other than word characters, hyphens and spaces
  dropped)."""
  anchors = set()
  in_code = False
  for line in path.read_text().splitlines():
    if line.startswith("```"):
      in_code = not in_code
    match = re.match(r"^#+\s+(.*)", line)
    if match and not in_code:
      text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
      anchors.add(text.replace(" ", "-"))
  return anchors


def test_heading_anchors_follow_github_rules():
  readme = heading_anchors(README)
  assert "quickstart" in readme
  results = heading_anchors(ROOT / "docs" / "results.md")
  assert "vae-estimators-vae_estimators" in results  # `_` kept, `()` dropped.


def test_relative_links_name_existing_files_and_headings():
  """Every relative link in README.md and docs/*.md names a file of the
  repository, and its #anchor a heading of that file."""
  link = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)")
  checked = 0
  for path in MARKDOWN:
    for target, anchor in link.findall(path.read_text()):
      if target.startswith(("http://", "https://", "mailto:")):
        continue
      file = (path.parent / target).resolve() if target else path
      assert file.exists(), f"{path.name}: link to missing {target!r}"
      if anchor and file.suffix == ".md":
        assert anchor in heading_anchors(file), (
            f"{path.name}: no heading #{anchor} in {file.name}")
      checked += 1
  assert checked > 10, checked
