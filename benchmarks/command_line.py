"""The command line of a benchmark: absl flags in the module's own FlagValues.

The convention every benchmark follows is described in the package
docstring (`benchmarks/__init__.py`). This module parses a command line into
a benchmark's `FlagValues`, prints `--help`, reports bad input, and defines
the one flag type absl lacks, a comma-separated list of integers.

Example:
  >>> from absl import flags
  >>> fv = flags.FlagValues()
  >>> experts = define_integer_list("experts", [32, 64], "Sizes.", fv)
  >>> repeats = flags.DEFINE_integer("repeats", 7, "Repeats.", flag_values=fv)
  >>> _ = parse(fv, ["--experts=8,16"])
  >>> experts.value, repeats.value
  ([8, 16], 7)
  >>> _ = parse(fv, ["--repeats=3"])  # Unnamed flags are back at defaults.
  >>> experts.value, repeats.value
  ([32, 64], 3)
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

# Flags defined through `define_integer_list` belong to the calling module.
flags.disclaim_key_flags()

HELP = ("--help", "-h", "--helpshort", "--helpfull")


class IntegerListParser(flags.ListParser):
  """Comma-separated integers: "32,64" -> [32, 64]."""

  def parse(self, argument):
    items = super().parse(argument)
    try:
      return [int(item) for item in items]
    except (TypeError, ValueError):
      raise ValueError(
          f"expected comma-separated integers, got {argument!r}") from None

  def flag_type(self) -> str:
    return "comma-separated list of integers"


def define_integer_list(name: str, default: Sequence[int] | None,
                        help_text: str, flag_values: flags.FlagValues
                        ) -> flags.FlagHolder:
  """Defines `--name=1,2,3` (a list of ints) in `flag_values`."""
  return flags.DEFINE(IntegerListParser(), name,
                      None if default is None else list(default), help_text,
                      flag_values=flag_values,
                      serializer=flags.CsvListSerializer(","))


def define_outputs(flag_values: flags.FlagValues, *, from_json: bool
                   ) -> None:
  """Defines the output flags of a benchmark that writes a directory.

  `--out_dir` (required): where the outputs go. With `from_json`, also
  `--from_json=PATH` (default ""): rewrite the tables and figures of that
  saved JSON into --out_dir instead of measuring.
  """
  if from_json:
    flags.DEFINE_string("from_json", "",
                        "Rewrite the tables and figure of this saved JSON "
                        "into --out_dir; no training.",
                        flag_values=flag_values)
  flags.DEFINE_string("out_dir", None, "Output directory.",
                      flag_values=flag_values, required=True)


def usage_error(message: str) -> None:
  """Prints `error: message` to stderr and exits with status 2."""
  print(f"error: {message}\n(--help lists the flags)", file=sys.stderr)
  raise SystemExit(2)


def parse(flag_values: flags.FlagValues, argv: Sequence[str] | None = None,
          *, doc: str = "") -> flags.FlagValues:
  """Parses `argv` into `flag_values`; returns it.

  Every flag is first reset to its default, so a benchmark's `main` can be
  called several times in one process with different arguments.

  Args:
    flag_values: the benchmark module's own `FLAGS`.
    argv: the arguments after the program name; default `sys.argv[1:]`.
    doc: printed with the flags' help on `--help` (the module docstring).

  Raises:
    SystemExit: 0 after `--help`; 2 (with `error: ...` on stderr) for an
      unknown flag, a bad value, a missing required flag or a positional
      argument.
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  if any(arg in HELP for arg in argv):
    print(doc.strip() + "\n\nFlags:\n"
          + flag_values.get_help(include_special_flags=False))
    raise SystemExit(0)
  flag_values.unparse_flags()
  try:
    rest = flag_values(["benchmark"] + argv)
  except flags.Error as e:
    usage_error(str(e))
  if rest[1:]:
    usage_error(f"unexpected arguments {rest[1:]}; flags are written "
                f"--name=value, lists comma-separated (--experts=32,64).")
  return flag_values
