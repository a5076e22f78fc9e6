"""The report of a study directory: `DIR/report.md` and `DIR/figures/*.png`.

Everything is computed from the finished cells' `eval.csv` files by
`common.seed_statistics` (no hand-entered number): per condition the IQM of
the per-seed final values with a 95% percentile bootstrap CI (Agarwal et al.
2021, Secs. 4.1 and 4.3; stratified by task where tasks are pooled), the mean
+- sample std (ddof = 1) and the per-seed finals; paired differences A - B on
the seeds both conditions ran; optional aggregates over tasks; learning curves
(IQM over seeds per evaluation step, with the CI as a band).

The report is deterministic: every bootstrap draws from a generator seeded by
a CRC-32 of the study, metric and row names, every number of its tables is
printed by `fmt` (4 significant digits), and nothing depends on the clock or
the directory's path, so the same run directories give a byte-identical
report.md.
"""

from __future__ import annotations

import decimal
import json
import os
import zlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np

from common import atomic_files
from common import csv_logs
from common import provenance
from common import seed_statistics
from launch import studies
from launch import study_runner

FIGURES = "figures"


def _seed_of(*names: str) -> int:
  """A fixed bootstrap seed per statistic (independent of other rows)."""
  return zlib.crc32("/".join(names).encode())


def fmt(value: float) -> str:
  """Summary number: 4 significant digits (1 decimal from 1000 up), no exponent.

  Trailing zeros are kept, so every number shows its 4 digits:

  Example:
    >>> [fmt(v) for v in (0.10298888, 0.516, 999.96, 1e-7, 12345.678)]
    ['0.1030', '0.5160', '1000.0', '0.0000001000', '12345.7']
  """
  value = float(value)
  if not np.isfinite(value):
    return "n/a"
  rounded = decimal.Decimal(f"{value:#.4g}")
  if abs(rounded) >= 1000:
    return f"{value:.1f}"
  return format(rounded, "f")


def load_condition(study: studies.Study, workdir: str,
                   condition: studies.Condition,
                   cells: Sequence[study_runner.Cell]
                   ) -> dict[int, dict[str, np.ndarray]]:
  """seed -> {"step": [T], metric column: [T]} over the finished cells.

  Raises ValueError if a finished cell's eval.csv does not end at the step
  budget recorded in its cell_done.json.
  """
  system = study.system
  columns = [m.column for m in system.metrics]
  out = {}
  for cell in cells:
    if cell.condition != condition or not study_runner.is_done(workdir, cell):
      continue
    run_dir = os.path.join(workdir, cell.path)
    with open(os.path.join(run_dir, study_runner.DONE)) as f:
      final_step = int(json.load(f)["config"]["num_steps"])
    rows = csv_logs.read_csv(os.path.join(run_dir, "eval.csv"))
    for seed in cell.seeds:
      mine = [r for r in rows if system.seed_column is None
              or int(float(r[system.seed_column])) == seed]
      mine.sort(key=lambda r: int(float(r["step"])))
      steps = np.array([int(float(r["step"])) for r in mine])
      if not len(steps) or steps[-1] != final_step:
        raise ValueError(
            f"{run_dir}/eval.csv: seed {seed} ends at step "
            f"{steps[-1] if len(steps) else None}, not at the recorded "
            f"num_steps={final_step}.")
      out[seed] = {"step": steps, **{c: np.array([float(r[c]) for r in mine])
                                     for c in columns}}
  return out


def _iqm_row(study, metric, condition, finals: dict[int, float]) -> str:
  seeds = sorted(finals)
  values = np.array([finals[s] for s in seeds])
  per_seed = ", ".join(fmt(finals[s]) for s in seeds)
  if len(values) >= 2:
    low, high = seed_statistics.stratified_bootstrap_ci(
        [values], seed=_seed_of(study.name, metric.column, condition.name))
    iqm = f"{fmt(seed_statistics.iqm(values))} [{fmt(low)}, {fmt(high)}]"
    std = seed_statistics.sample_std(values)
    spread = f"{fmt(values.mean())} ± {fmt(std)}"
  else:
    iqm = f"{fmt(seed_statistics.iqm(values))} [n/a]"
    spread = f"{fmt(values.mean())} ± n/a"
  seed_list = ", ".join(str(s) for s in seeds)
  return (f"| {condition.label} | {condition.task} | {seed_list} | {iqm} | "
          f"{spread} | {per_seed} |")


def _pair_row(study, metric, finals_by_cond, a: str, b: str) -> str | None:
  fa, fb = finals_by_cond[a], finals_by_cond[b]
  if not set(fa) & set(fb):
    return None
  d = seed_statistics.paired_difference(
      fa, fb, seed=_seed_of(study.name, metric.column, a, b))
  ci = "n/a" if d.ci is None else f"[{fmt(d.ci[0])}, {fmt(d.ci[1])}]"
  std = "n/a" if d.std is None else fmt(d.std)
  label_a, label_b = study.condition(a).label, study.condition(b).label
  seeds = ", ".join(str(s) for s in d.seeds)
  return (f"| {label_a} − {label_b} | {study.condition(a).task} | {seeds} | "
          f"{fmt(d.mean)} {ci} | {std} | "
          f"{'yes' if d.excludes_zero else 'no'} |")


def _aggregate_row(study, metric, finals_by_cond, label, pairs) -> str | None:
  strata, tasks = [], []
  for a, b in pairs:
    shared = sorted(set(finals_by_cond[a]) & set(finals_by_cond[b]))
    if len(shared) < 2:
      return None
    base = abs(np.mean([finals_by_cond[b][s] for s in shared]))
    if base == 0:
      raise ValueError(
          f"relative difference {label!r}: the mean of {b!r} over seeds "
          f"{shared} is 0; a difference relative to it is undefined.")
    strata.append(np.array([(finals_by_cond[a][s] - finals_by_cond[b][s])
                            / base for s in shared]))
    tasks.append(f"{study.condition(a).task} ({len(shared)} seeds)")
  low, high = seed_statistics.stratified_bootstrap_ci(
      strata, statistic=np.mean, seed=_seed_of(study.name, metric.column,
                                               label))
  mean = float(np.mean(np.concatenate(strata)))
  excludes = low > 0 or high < 0
  return (f"| {label} | {', '.join(tasks)} | {fmt(mean)} "
          f"[{fmt(low)}, {fmt(high)}] | {'yes' if excludes else 'no'} |")


def _plot_metric(study, metric, data_by_cond, path: str) -> bool:
  """Learning curves per task with results: IQM over seeds, 95% CI band."""
  tasks = list(dict.fromkeys(c.task for c in study.conditions
                             if data_by_cond[c.name]))
  if not tasks:
    return False
  fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for condition in study.conditions:
      data = data_by_cond[condition.name]
      if condition.task != task or not data:
        continue
      seeds = sorted(data)
      steps = data[seeds[0]]["step"]
      if any(not np.array_equal(data[s]["step"], steps) for s in seeds):
        raise ValueError(f"{condition.name}: seeds evaluated at different "
                         f"steps; cannot draw one curve.")
      values = np.stack([data[s][metric.column] for s in seeds])  # [n, T]
      line, = ax.plot(steps, seed_statistics.iqm(values, axis=0),
                      label=f"{condition.label} (n={len(seeds)})")
      if len(seeds) >= 2:
        low, high = seed_statistics.stratified_bootstrap_ci(
            [values], seed=_seed_of(study.name, metric.column, condition.name,
                                    "curve"))
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2,
                        linewidth=0)
    ax.set_title(task)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric.label} (IQM, 95% CI)")
    if metric.log_y:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100, metadata={"Software": None})
  plt.close(fig)
  return True


def _cost_lines(study: studies.Study, workdir: str,
                cells: Sequence[study_runner.Cell]) -> list[str]:
  """One row per condition: the cost of each finished cell, as logged."""
  cost = study.system.cost
  if cost is None:
    return []
  rows = []
  for condition in study.conditions:
    values = []
    for cell in cells:
      if cell.condition != condition or not study_runner.is_done(workdir,
                                                                 cell):
        continue
      logged = csv_logs.read_csv(os.path.join(workdir, cell.path, cost.csv))
      if study.system.seed_column is not None:
        logged = [r for r in logged
                  if int(float(r[study.system.seed_column])) == cell.seeds[0]]
      column = [float(r[cost.column]) for r in logged]
      if column:
        values.append(float(np.median(column)) if cost.reduce == "median"
                      else column[-1])
    if values:
      rows.append(f"| {condition.label} | {condition.task} | "
                  f"{', '.join(fmt(v) for v in values)} |")
  if not rows:
    return []
  return [f"## Cost: {cost.label}", "",
          "Wall-clock figures: they depend on the machine and its load.", "",
          "| condition | task | per cell |", "|---|---|---|"] + rows + [""]


def _provenance_lines(workdir: str, cells: Sequence[study_runner.Cell]
                      ) -> list[str]:
  """The distinct software of the finished cells, and what differs.

  Reads each cell's provenance.json (one record per start or resume).
  """
  done = [c.path for c in cells if study_runner.is_done(workdir, c)]

  def listing(paths):
    if len(paths) == len(done):
      return f"all {len(done)} finished cells"
    return ", ".join(f"`{p}`" for p in paths)

  if not done:
    return []
  by_software: dict[str, list[str]] = {}
  records, unrecorded, unreadable = [], [], []
  for path in done:
    try:
      mine = provenance.read(os.path.join(workdir, path))
    except ValueError:
      unreadable.append(path)
      continue
    if not mine:
      unrecorded.append(path)
    for rec in mine:
      key = provenance.describe(rec)
      if path not in by_software.setdefault(key, []):
        by_software[key].append(path)
      records.append(rec)
  lines = ["## Software and machine", "",
           "Recorded by each cell's trainer at every start or resume "
           f"(`{provenance.FILE}`, `common.provenance`).", ""]
  if by_software:
    lines += ["| software | cells |", "|---|---|"] + [
        f"| {key} | {listing(paths)} |" for key, paths in by_software.items()]
    commits = sorted({str(r.get("commit")) for r in records})
    machines = sorted({str(r.get("machine")) for r in records})
    lines += ["", f"Commits: {', '.join(commits)}. "
              f"Machines: {'; '.join(machines)}.", ""]
  if unrecorded:
    lines += [f"No `{provenance.FILE}`: "
              f"{listing(unrecorded)}.", ""]
  if unreadable:
    lines += [f"Unreadable `{provenance.FILE}`: {listing(unreadable)}.", ""]
  changed = provenance.differing(records)
  if changed:
    lines += [f"**Cells ran under different {', '.join(changed)}.** The same "
              "seed gives other numbers under other versions, so per-seed "
              "values of such cells are not comparable run for run and their "
              "paired differences are paired in name only.", ""]
  return lines


def _statistics_text(settings: study_runner.Settings) -> list[str]:
  n = settings.num_seeds
  coverage = (f" With {n} seeds, the percentile interval of a mean of normal "
              f"values covers the true mean about "
              f"{seed_statistics.normal_coverage(n):.0%} of the time, not 95% "
              f"(common/seed_statistics.py)." if n >= 2 else "")
  few = (" With 3 seeds, the CI of a paired mean difference excludes 0 only "
         "when all three differences have the same sign." if n == 3 else "")
  return [
      "Statistics (`common/seed_statistics.py`, from each run's `eval.csv`): "
      "per condition, the IQM (`scipy.stats.trim_mean(x, 0.25)`; the plain "
      "mean below 4 seeds) of the per-seed final values, with a 95% "
      "percentile bootstrap CI (Agarwal et al. 2021, Secs. 4.1 and 4.3; "
      f"{seed_statistics.NUM_RESAMPLES} resamples of the seeds, "
      "`scipy.stats.bootstrap` with a seeded generator); mean ± sample std "
      "(ddof = 1); the final value of every seed. Paired differences A − B "
      "use the seeds both conditions ran (the same seed gives both the same "
      "initialisation and data streams): their mean, its 95% bootstrap CI "
      "and the sample std of the differences. **Rule:** two conditions are "
      "called distinguishable on a metric when the 95% CI of their paired "
      "difference excludes 0." + coverage + few,
  ]


def write_report(study: studies.Study, workdir: str) -> str:
  """Writes DIR/report.md and DIR/figures/*.png from the finished cells."""
  manifest = study_runner.check_manifest(workdir, study, None)
  if manifest is None:
    raise ValueError(f"workdir {workdir!r} has no {study_runner.MANIFEST}: "
                     f"no study was run there.")
  settings = study_runner.manifest_settings(manifest)
  cells = study_runner.study_cells(study, settings)
  missing = [c.path for c in cells if not study_runner.is_done(workdir, c)]
  data = {c.name: load_condition(study, workdir, c, cells)
          for c in study.conditions}
  flags = f"--study={study.name} --workdir=DIR"
  if settings.quick:
    flags += " --quick"
  flags += f" --seeds={settings.num_seeds}"
  if settings.steps is not None:
    flags += f" --steps={settings.steps}"
  lines = [
      f"# Study `{study.name}`", "",
      study.description, "",
      f"Run: `python -m launch.ablate {flags}`; this report: the same command "
      "with `--report_only`. "
      f"Seeds 0-{settings.num_seeds - 1}; step budget "
      f"{settings.steps if settings.steps is not None else 'of the preset'}"
      f"{' (quick mode: tiny test configs)' if settings.quick else ''}.", "",
      f"Finished cells: {len(cells) - len(missing)} of {len(cells)}."
      + (" Not finished (left out below): " + ", ".join(
          f"`{m}`" for m in missing) + "." if missing else ""), "",
  ]
  lines += _statistics_text(settings) + [""]
  os.makedirs(os.path.join(workdir, FIGURES), exist_ok=True)
  for metric in study.system.metrics:
    finals = {name: {s: float(v[metric.column][-1]) for s, v in d.items()}
              for name, d in data.items()}
    lines += [f"## {metric.label}", "",
              f"`{metric.column}` at the final evaluation.", "",
              "| condition | task | seeds | IQM [95% CI] | mean ± sample std "
              "| per seed (final) |",
              "|---|---|---|---|---|---|"]
    for condition in study.conditions:
      if finals[condition.name]:
        lines.append(_iqm_row(study, metric, condition,
                              finals[condition.name]))
      else:
        lines.append(f"| {condition.label} | {condition.task} | none | "
                     f"not run | | |")
    pair_rows = [r for r in (_pair_row(study, metric, finals, a, b)
                             for a, b in study.pairs) if r]
    if pair_rows:
      lines += ["", "Paired differences (A − B, same seeds):", "",
                "| A − B | task | seeds | mean [95% CI] | sample std | "
                "distinguishable |", "|---|---|---|---|---|---|"] + pair_rows
      same = [r.split(" | ")[0].lstrip("| ").replace(" − ", " vs ")
              for r in pair_rows if r.endswith("| no |")]
      lines += ["", f"Distinguishable (95% CI of the paired difference "
                f"excludes 0): {len(pair_rows) - len(same)} of "
                f"{len(pair_rows)} pairs."
                + (f" Not distinguishable: {'; '.join(same)}." if same
                   else "")]
    agg_rows = [r for r in (_aggregate_row(study, metric, finals, label, p)
                            for label, p in study.aggregates) if r]
    if agg_rows:
      lines += ["", "Aggregate over tasks: mean of (A − B) / |mean B| per "
                "seed, 95% bootstrap CI resampling seeds within each task "
                "(stratified):", "",
                "| comparison | tasks | relative difference [95% CI] | "
                "CI excludes 0 |", "|---|---|---|---|"] + agg_rows
    figure = os.path.join(FIGURES, f"{study.name}_{metric.column}.png")
    if _plot_metric(study, metric, data, os.path.join(workdir, figure)):
      lines += ["", f"![{metric.label}]({figure})"]
    lines.append("")
  lines += _cost_lines(study, workdir, cells)
  lines += _provenance_lines(workdir, cells)
  path = os.path.join(workdir, "report.md")
  atomic_files.write_text(path, "\n".join(lines))
  return path
