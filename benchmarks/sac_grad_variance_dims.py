r"""SAC's actor-gradient variance ratio against the action dimension.

  python -m benchmarks.sac_grad_variance_dims \
      --inputs=runs/grad_variance/Pendulum-v1,runs/grad_variance/Hopper-v5 \
      --out=runs/grad_variance_dims

Combines the outputs of `benchmarks.sac_grad_variance`, one --out directory
per task (each holding its grad_variance.json), into one table and one
figure of the variance ratio against the action dimension |A|. |A| is read
from the environment (`gymnasium.make(env_id).action_space`), not from a
table. Per task, checkpoint step and arm the number is the input's own
across-seeds summary (`sac_grad_variance.across_seeds`, the same as in its
grad_variance.md): the IQM over seeds of the per-seed ratio total variance
/ pathwise's, with a 95% percentile bootstrap CI over the seeds (Agarwal et
al. 2021, Secs. 4.1 and 4.3; `common.seed_statistics`).

Outputs in --out, each written atomically (`common.atomic_files`):
  variance_dims.md    the inputs (task, |A|, the run's actor gradient,
                      checkpoints, seeds, measuring commit) and one table
                      per checkpoint: a row per task in order of |A|, a
                      column per arm, IQM [95% CI] (3 significant digits,
                      as grad_variance.md);
  variance_dims.json  the same numbers;
  variance_dims.png   one panel per checkpoint: ratio against |A| (log-log),
                      IQM with the 95% CI as error bars, one line per arm,
                      pathwise's 1 dashed.

Flags: --inputs (comma-separated directories), --out, --steps (default:
every checkpoint step of any input; a task without a step is left out of
its table and panel) and --arms (default: those of score_function_1,
score_function_2, score_function_8 and pathwise_8 that some input measured;
an arm an input did not measure shows as "not measured").
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Callable, Sequence

from absl import flags
import matplotlib
import numpy as np

from benchmarks import command_line
from benchmarks import sac_grad_variance as gv
from common import atomic_files

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

RESULTS = "grad_variance.json"
ARMS = ("score_function_1", "score_function_2", "score_function_8",
        "pathwise_8")


def action_dim(env_id: str) -> int:
  """|A| of a Box-action environment, from the environment itself."""
  return gv.space_dims(env_id)[1]


def load_input(directory: str) -> dict[str, Any]:
  """The grad_variance.json of one `sac_grad_variance` output directory."""
  path = os.path.join(directory, RESULTS)
  if not os.path.exists(path):
    raise ValueError(f"{directory!r} holds no {RESULTS} (an --out "
                     "directory of benchmarks.sac_grad_variance expected).")
  with open(path) as f:
    results = json.load(f)
  if not isinstance(results, dict) or not results.get("variance"):
    raise ValueError(f"{path!r} holds no variance measurements.")
  return results


def combine(inputs: dict[str, dict[str, Any]], *,
            steps: Sequence[int] | None = None,
            arms: Sequence[str] | None = None,
            dim_of: Callable[[str], int] = action_dim) -> dict[str, Any]:
  """Rows (task, |A|, step, arm, IQM, CI) from several tasks' results.

  Args:
    inputs: directory -> its grad_variance.json contents, one per task.
    steps: checkpoint steps to keep; None: every step of any input.
    arms: arms to keep, each measured by some input (pathwise is the
      unit); None: those of `ARMS` that some input measured.
    dim_of: env id -> |A|.

  Returns:
    {"inputs": [{directory, env_id, action_dim, actor_grad, steps, seeds,
    arms, commit}], "steps", "arms", "rows": [{env_id, action_dim, step,
    arm, seeds, iqm, ci, min, max}]}, inputs and rows in order of |A|.
  """
  seen: dict[str, str] = {}
  described = []
  for directory, results in inputs.items():
    env_id = results["env_id"]
    if env_id in seen:
      raise ValueError(f"two inputs measure {env_id}: {seen[env_id]!r} and "
                       f"{directory!r}; give one per task.")
    seen[env_id] = directory
    entries = results["variance"]
    described.append({
        "directory": directory, "env_id": env_id,
        "action_dim": int(dim_of(env_id)),
        "actor_grad": results.get("actor_grad"),
        "steps": sorted({e["step"] for e in entries}),
        "seeds": sorted({e["seed"] for e in entries}),
        "arms": [a for a in entries[0]["arms"] if a != gv.PATHWISE],
        "commit": (results.get("provenance") or {}).get("commit"),
        "summary": gv.across_seeds(results)})
  described.sort(key=lambda d: (d["action_dim"], d["env_id"]))
  present = sorted({s for d in described for s in d["steps"]})
  steps = present if steps is None else sorted(set(steps))
  missing = [s for s in steps if s not in present]
  if missing:
    raise ValueError(f"--steps {missing} are in no input; the inputs hold "
                     f"{present}.")
  measured = {a for d in described for a in d["arms"]}
  if arms is None:
    arms = [a for a in ARMS if a in measured]
  unknown = [a for a in arms if a not in measured]
  if unknown:
    raise ValueError(f"--arms {unknown} are in no input; the inputs hold "
                     f"{sorted(measured)}.")
  rows = []
  for d in described:
    for row in d.pop("summary"):
      if row["step"] in steps and row["arm"] in arms:
        rows.append({"env_id": d["env_id"], "action_dim": d["action_dim"],
                     **{k: row[k] for k in ("step", "arm", "seeds", "iqm",
                                            "ci", "min", "max")}})
  return {"inputs": described, "steps": list(steps), "arms": list(arms),
          "rows": rows}


def _cell(row: dict[str, Any] | None) -> str:
  if row is None:
    return "not measured"
  ci = f" [{row['ci'][0]:.3g}, {row['ci'][1]:.3g}]" if row["ci"] else ""
  return f"{row['iqm']:.3g}{ci}"


def markdown(combined: dict[str, Any]) -> str:
  lines = [
      "# Actor-gradient variance ratio against the action dimension", "",
      "Total variance of each arm's actor-gradient estimate / pathwise's at "
      "frozen critics (benchmarks/sac_grad_variance.py): IQM over seeds "
      "with a 95% bootstrap CI over the seeds (common/seed_statistics.py). "
      "|A|: the environment's action dimension.", "",
      "| task | dim A | input | run | checkpoints | seeds | commit |",
      "|---|---:|---|---|---|---|---|"]
  for d in combined["inputs"]:
    lines.append(
        f"| {d['env_id']} | {d['action_dim']} | `{d['directory']}` | "
        f"{d['actor_grad']} | {', '.join(map(str, d['steps']))} | "
        f"{', '.join(map(str, d['seeds']))} | {d['commit']} |")
  arms = combined["arms"]
  for step in combined["steps"]:
    lines += ["", f"## Checkpoint {step}", "",
              "| task | dim A | seeds | " + " | ".join(arms) + " |",
              "|---|---:|---:|" + "---:|" * len(arms)]
    for d in combined["inputs"]:
      mine = {r["arm"]: r for r in combined["rows"]
              if r["env_id"] == d["env_id"] and r["step"] == step}
      if not mine:
        continue
      seeds = len(next(iter(mine.values()))["seeds"])
      lines.append(f"| {d['env_id']} | {d['action_dim']} | {seeds} | "
                   + " | ".join(_cell(mine.get(a)) for a in arms) + " |")
  return "\n".join(lines) + "\n"


def plot(combined: dict[str, Any], path: str) -> None:
  """One panel per checkpoint: ratio against |A|, IQM with CI error bars."""
  steps, arms = combined["steps"], combined["arms"]
  fig, axes = plt.subplots(1, len(steps), figsize=(4.6 * len(steps), 4),
                           squeeze=False, sharey=True)
  tasks: dict[int, list[str]] = {}
  for d in combined["inputs"]:
    tasks.setdefault(d["action_dim"], []).append(
        d["env_id"].rsplit("-v", 1)[0])
  for ax, step in zip(axes[0], steps):
    ax.axhline(1.0, color="k", ls="--", lw=1, label=gv.PATHWISE)
    for k, arm in enumerate(arms):
      rows = [r for r in combined["rows"]
              if r["step"] == step and r["arm"] == arm]
      if not rows:
        continue
      # Arms side by side around each |A| so their error bars stay apart.
      x = np.array([r["action_dim"] for r in rows]) * 1.05 ** (
          k - (len(arms) - 1) / 2)
      iqm = np.array([r["iqm"] for r in rows])
      low = np.array([r["ci"][0] if r["ci"] else r["iqm"] for r in rows])
      high = np.array([r["ci"][1] if r["ci"] else r["iqm"] for r in rows])
      ax.errorbar(x, iqm, yerr=[iqm - low, high - iqm], fmt="-o", ms=4,
                  capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(tasks))
    ax.set_xticks([], minor=True)
    # Names stacked under their |A|, tilted: neighbouring |A| (6, 8) on a log
    # axis are too close for level labels.
    ax.set_xticklabels([f"{dim}\n" + "\n".join(names)
                        for dim, names in sorted(tasks.items())], fontsize=7,
                       rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlabel("action dimension |A|")
    ax.set_title(f"checkpoint {step}")
    ax.grid(True, which="both", alpha=0.3)
  axes[0][0].set_ylabel("total variance / pathwise (IQM, 95% CI)")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=120, metadata={"Software": None})
  plt.close(fig)
  atomic_files.write_bytes(path, png.getvalue())


def write(combined: dict[str, Any], out: str) -> None:
  """Writes variance_dims.{md,json,png} into `out` (each atomically)."""
  os.makedirs(out, exist_ok=True)
  atomic_files.write_json(os.path.join(out, "variance_dims.json"), combined)
  atomic_files.write_text(os.path.join(out, "variance_dims.md"),
                          markdown(combined))
  plot(combined, os.path.join(out, "variance_dims.png"))


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


FLAGS = flags.FlagValues()
_INPUTS = flags.DEFINE_list(
    "inputs", None, "Output directories of benchmarks.sac_grad_variance, one "
    "per task.", flag_values=FLAGS, required=True)
_OUT = flags.DEFINE_string("out", None, "Output directory.",
                           flag_values=FLAGS, required=True)
_STEPS = command_line.define_integer_list(
    "steps", None, "Checkpoint steps (default: all present).", FLAGS)
_ARMS = flags.DEFINE_list(
    "arms", None, f"Arms (ratio to pathwise); default: those of "
    f"{','.join(ARMS)} measured.", flag_values=FLAGS)


def main(argv=None) -> None:
  command_line.parse(FLAGS, argv, doc=__doc__)
  try:
    combined = combine({d: load_input(d) for d in _INPUTS.value},
                       steps=_STEPS.value, arms=_ARMS.value)
  except ValueError as e:
    command_line.usage_error(str(e))
  write(combined, _OUT.value)
  print(markdown(combined))


if __name__ == "__main__":
  main()
