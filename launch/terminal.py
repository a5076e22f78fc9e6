"""A launcher's terminal output: a start line, the progress bar, a summary.

By default a run's terminal holds one line saying what runs and where its
outputs go, the trainer's progress bar, and a final summary that lists the
files the run wrote. The libraries' logs (orbax's checkpoint-manager INFO
lines, JAX's backend probing, the config dump) stay hidden: absl's verbosity
is set to WARNING unless the user passed absl's standard `--verbosity`/`-v`
flag, so `--verbosity=0` shows INFO again and `--verbosity=1` DEBUG. absl's
handler sits on the root Python logger and sets its level, so this also
governs the libraries that log through Python's `logging` (some orbax
modules, JAX).
"""

from __future__ import annotations

import os

from absl import flags
from absl import logging


def quiet_logs_unless_verbosity_given() -> None:
  """Sets absl's verbosity to WARNING unless `--verbosity`/`-v` was passed.

  Call from `main`, after absl has parsed the flags (absl raises its default
  to INFO after parsing when the flag is absent).
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def announce(what: str, workdir: str) -> None:
  """Prints the start line: what runs and where its outputs go."""
  print(f"{what}\noutputs: {os.path.abspath(workdir)} "
        "(--verbosity=0 shows the logs)", flush=True)


def list_outputs(workdir: str) -> str:
  """Returns 'outputs in DIR: a.csv, b/, ...' for the files the run left.

  Listed from the directory rather than from a fixed list, so the summary
  names exactly what the trainer wrote. Hidden files are left out.
  """
  names = sorted(n for n in os.listdir(workdir) if not n.startswith("."))
  shown = [n + "/" if os.path.isdir(os.path.join(workdir, n)) else n
           for n in names]
  return f"outputs in {os.path.abspath(workdir)}: {', '.join(shown)}"
