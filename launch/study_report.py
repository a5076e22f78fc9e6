"""The report of a study directory: `DIR/report.md` and `DIR/figures/*.png`.

Everything is computed from the finished cells' `eval.csv` files by
`common.seed_statistics` (no hand-entered number): per condition the IQM of
the per-seed final values with a 95% percentile bootstrap CI (Agarwal et al.
2021, Secs. 4.1 and 4.3; stratified by task where tasks are pooled), the mean
+- sample std (ddof = 1) and the per-seed finals; paired differences A - B on
the seeds both conditions ran; optional aggregates over tasks; learning curves
(IQM over seeds per evaluation step, with the CI as a band).

Cost axes. For a system with `curve_axes` (SAC, the Bernoulli VAE), the
learning curves are also drawn against
  seconds              each cell's training wall clock (train.csv `seconds`,
                       summed over resumes), interpolated onto each seed's
                       evaluation steps (`wall_clock_at`);
  critic_evaluations   the (state, action) pairs passed through the critic
                       ensemble per seed, from each cell's config
                       (`sac_critic_evaluations`, with SAC's update schedule
                       `sac_gradient_steps`);
  training_seconds     the time of a cell's updates alone (eval.csv
                       `step_seconds` per evaluation interval, summed:
                       `training_seconds_at`);
  decoder_evaluations  latents through the decoder per training digit, from
                       each cell's config (`vae.bernoulli.decoder_evaluations`);
and a table compares the conditions of each task at one common value of the
axis: x* = the smallest final value among the task's conditions, so every
seed of every condition reached it; per condition the IQM [95% CI] over
seeds of the metric read at x* (`value_at`, linear between evaluations),
and paired differences there for the study's pairs. Figures:
DIR/figures/STUDY_METRIC_AXIS.png.

The report is deterministic: every bootstrap draws from a generator seeded by
a CRC-32 of the study, metric and row names, every number of its tables is
printed by `fmt` (4 significant digits), and nothing depends on the clock or
the directory's path, so the same run directories give a byte-identical
report.md.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import io
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
  columns = [m.column for m in system.metrics if m.source == "eval.csv"]
  final_keys = [m.column for m in system.metrics if m.source == "final.json"]
  out = {}
  for cell in cells:
    if cell.condition != condition or not study_runner.is_done(workdir, cell):
      continue
    run_dir = os.path.join(workdir, cell.path)
    final_step = study_runner.cell_budget(workdir, cell)
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
    if final_keys:
      (seed,) = cell.seeds  # One seed per cell (checked by System).
      with open(os.path.join(run_dir, "final.json")) as f:
        final = json.load(f)
      out[seed].update({k: np.array([float(final[k])]) for k in final_keys})
  return out


def _iqm_row(study, metric, condition, finals: dict[int, float]) -> str:
  return (f"| {condition.label} | {condition.task} | "
          + _seed_cells(study, metric, condition, finals))


def _seed_cells(study, metric, condition, finals: dict[int, float],
                *tags: str) -> str:
  """`seeds | IQM [CI] | mean ± std | per seed |` of seed -> value.

  `tags` name the statistic in the bootstrap seed (none: the finals).
  """
  seeds = sorted(finals)
  values = np.array([finals[s] for s in seeds])
  per_seed = ", ".join(fmt(finals[s]) for s in seeds)
  if len(values) >= 2:
    low, high = seed_statistics.stratified_bootstrap_ci(
        [values], seed=_seed_of(study.name, metric.column, *tags,
                                condition.name))
    iqm = f"{fmt(seed_statistics.iqm(values))} [{fmt(low)}, {fmt(high)}]"
    std = seed_statistics.sample_std(values)
    spread = f"{fmt(values.mean())} ± {fmt(std)}"
  else:
    iqm = f"{fmt(seed_statistics.iqm(values))} [n/a]"
    spread = f"{fmt(values.mean())} ± n/a"
  seed_list = ", ".join(str(s) for s in seeds)
  return f"{seed_list} | {iqm} | {spread} | {per_seed} |"


def _pair_row(study, metric, finals_by_cond, a: str, b: str,
              *tags: str) -> str | None:
  fa, fb = finals_by_cond[a], finals_by_cond[b]
  if not set(fa) & set(fb):
    return None
  d = seed_statistics.paired_difference(
      fa, fb, seed=_seed_of(study.name, metric.column, *tags, a, b))
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


def _step_curve(condition, data, column: str
                ) -> tuple[np.ndarray, np.ndarray] | None:
  """(steps [T], values [n, T]) of a condition's seeds, or None if none."""
  if not data:
    return None
  seeds = sorted(data)
  # Seeds of cells extended to other budgets: the steps all of them reached.
  steps = functools.reduce(np.intersect1d, [data[s]["step"] for s in seeds])
  if not len(steps):
    raise ValueError(f"{condition.name}: its seeds share no evaluation "
                     f"step; cannot draw one curve.")
  return steps, np.stack([data[s][column][np.isin(data[s]["step"], steps)]
                          for s in seeds])


def _plot_metric(study, metric, curves, path: str, *, xlabel: str = "step",
                 tags: tuple[str, ...] = ()) -> bool:
  """Learning curves per task with results: IQM over seeds, 95% CI band.

  `curves`: condition name -> (x [T], values [n seeds, T]), or None when the
  condition has no curve. `tags` name the x axis in the bootstrap seeds.
  """
  tasks = list(dict.fromkeys(c.task for c in study.conditions
                             if curves[c.name] is not None))
  if not tasks:
    return False
  fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for condition in study.conditions:
      curve = curves[condition.name]
      if condition.task != task or curve is None:
        continue
      x, values = curve
      line, = ax.plot(x, seed_statistics.iqm(values, axis=0),
                      label=f"{condition.label} (n={len(values)})")
      if len(values) >= 2:
        low, high = seed_statistics.stratified_bootstrap_ci(
            [values], seed=_seed_of(study.name, metric.column, condition.name,
                                    "curve", *tags))
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2,
                        linewidth=0)
    ax.set_title(task)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric.label} (IQM, 95% CI)")
    if metric.log_y:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=100, metadata={"Software": None})
  plt.close(fig)
  atomic_files.write_bytes(path, png.getvalue())
  return True


# --- Learning curves against cost: wall clock and critic evaluations ---------


@dataclasses.dataclass(frozen=True)
class Axis:
  """An x axis of the learning curves besides the environment step."""
  name: str    # Its name in `studies.System.curve_axes`.
  label: str   # x label of the figures.
  equal: str   # "At equal ...".
  symbol: str  # The common x value of the equal-x table.
  unit: str    # Its unit in the table's header.
  text: str    # What the values are, for the report.


AXES = {
    "seconds": Axis(
        "seconds", "training wall-clock seconds", "wall clock", "T", " (s)",
        "Training wall-clock seconds of each cell (train.csv `seconds`: the "
        "training loop's time, evaluations and checkpoints included, summed "
        "over resumes), at each evaluation step by linear interpolation "
        "between the logged (step, seconds) rows, starting from (0, 0). The "
        "seeds of a SAC cell train together (vmapped) and share its clock. "
        "Wall clock depends on the machine and its load: compare cells run "
        "on one machine under similar load."),
    "critic_evaluations": Axis(
        "critic_evaluations",
        "critic evaluations per seed ((state, action) pairs)",
        "critic evaluations", "C", "",
        "Critic evaluations: the (state, action) pairs passed through the "
        "critic ensemble per seed, computed from each cell's config "
        "(`launch.study_report.sac_critic_evaluations`): batch_size x (2 + "
        "K) per gradient step, K the actions per state of the actor loss "
        "(pathwise_samples or score_function_samples)."),
    "training_seconds": Axis(
        "training_seconds", "training seconds (updates only)",
        "training time", "T", " (s)",
        "Training seconds of each cell: the time of its jitted updates "
        "alone (eval.csv `step_seconds`, measured per chunk of eval_every "
        "updates with compilation and evaluation excluded, times the steps "
        "of the chunk, summed; `training_seconds_at`). Wall clock depends "
        "on the machine and its load: compare cells run on one machine "
        "under similar load."),
    "decoder_evaluations": Axis(
        "decoder_evaluations", "decoder evaluations per digit",
        "decoder evaluations", "E", "",
        "Decoder evaluations: the latents passed forward through the "
        "decoder per training digit, computed from each cell's config "
        "(`vae.bernoulli.decoder_evaluations` per step, times the steps): "
        "S for the score function, VIMCO and the relaxations, S + 1 for "
        "ARM and DisARM, 3 S + 1 for REBAR and RELAX (S = num_samples); "
        "backward passes are not counted."),
}


def wall_clock_at(steps, logged_steps, logged_seconds) -> np.ndarray:
  """Training seconds at `steps` from a run's logged (step, seconds) rows.

  Linear interpolation (`np.interp`) through (0, 0), where the training
  loop's clock starts, and the logged rows; NaN past the last logged row
  (no measurement). This assumes an even pace within each logging interval
  (the first interval includes compilation and the warm-up steps before the
  first gradient step).

  Args:
    steps: [T] environment steps, e.g. a seed's evaluation steps.
    logged_steps: [R] steps of the log's rows, strictly increasing, > 0.
    logged_seconds: [R] seconds at those steps, non-decreasing, >= 0.

  Returns:
    [T] float64 seconds.

  Example:
    >>> wall_clock_at([100, 300, 600, 700], [200, 400, 600],
    ...               [30.0, 40.0, 60.0]).tolist()
    [15.0, 35.0, 60.0, nan]
  """
  logged_steps = np.asarray(logged_steps, np.float64)
  logged_seconds = np.asarray(logged_seconds, np.float64)
  if logged_steps.ndim != 1 or logged_steps.shape != logged_seconds.shape:
    raise ValueError(
        f"logged_steps and logged_seconds must be 1-D of one length; got "
        f"shapes {logged_steps.shape} and {logged_seconds.shape}.")
  xp = np.concatenate([[0.0], logged_steps])
  fp = np.concatenate([[0.0], logged_seconds])
  if np.any(np.diff(xp) <= 0) or np.any(np.diff(fp) < 0):
    raise ValueError(
        f"logged steps must be positive and strictly increasing and their "
        f"seconds non-decreasing from 0; got steps {logged_steps.tolist()} "
        f"and seconds {logged_seconds.tolist()}.")
  return np.interp(np.asarray(steps, np.float64), xp, fp, right=np.nan)


def training_seconds_at(steps, logged_steps, step_seconds) -> np.ndarray:
  """Training seconds at `steps` from per-step times logged per interval.

  Row r logs at step t_r the mean seconds per update s_r over the updates
  since the previous row (t_0 = 0), so the training time at t_r is
  sum_{q <= r} s_q (t_q - t_{q-1}); between rows it is read linearly
  (`wall_clock_at`), NaN past the last row.

  Args:
    steps: [T] steps to read at.
    logged_steps: [R] steps of the rows, strictly increasing, > 0.
    step_seconds: [R] mean seconds per update in each interval, >= 0.

  Returns:
    [T] float64 seconds.

  Example:
    >>> training_seconds_at([100, 200, 300], [100, 300],
    ...                     [0.5, 0.25]).tolist()  # 50, then + 50.
    [50.0, 75.0, 100.0]
  """
  logged_steps = np.asarray(logged_steps, np.float64)
  step_seconds = np.asarray(step_seconds, np.float64)
  if (logged_steps.ndim != 1 or logged_steps.shape != step_seconds.shape
      or not np.all(step_seconds >= 0)):
    raise ValueError(
        f"logged steps and step_seconds must be 1-D of one length with "
        f"step_seconds >= 0; got steps {logged_steps.tolist()} and "
        f"step_seconds {step_seconds.tolist()}.")
  intervals = np.diff(np.concatenate([[0.0], logged_steps]))
  return wall_clock_at(steps, logged_steps,
                       np.cumsum(step_seconds * intervals))


def sac_gradient_steps(config, steps) -> np.ndarray:
  """Gradient steps per seed done when SAC's loop reaches each env step.

  The schedule of `sac.collector.Collector.step`. Iteration i = 0, 1, ...
  takes every seed from env step i E to (i + 1) E (E = num_envs) and runs
  U E w gradient steps (U = updates_per_step, w = train_every) on the
  transitions of iteration i - 1 when i >= 1, i E >= learning_starts and
  i mod w = 0. An evaluation at env step t follows iteration t / E - 1, so

    G(t) = U E w * #{i : i0 <= i <= t / E - 1, i mod w = 0},
    i0 = max(1, ceil(learning_starts / E)),

  the count of multiples of w in [i0, t / E - 1]:
  max(0, floor((t / E - 1) / w) - floor((i0 - 1) / w)). A resume continues
  the same schedule (the pending transitions are checkpointed). G(t) is
  the critic's `TrainState.step` at step t (`learner.SACState.num_updates`).

  Args:
    config: the run's config (ConfigDict or its JSON dict): num_envs,
      learning_starts, updates_per_step, train_every.
    steps: [T] env steps per seed, multiples of num_envs.

  Returns:
    [T] int64 gradient steps.

  Example:
    >>> config = {"num_envs": 1, "learning_starts": 200,
    ...           "updates_per_step": 1, "train_every": 1}
    >>> sac_gradient_steps(config, [100, 200, 300, 600]).tolist()
    [0, 0, 100, 400]
  """
  num_envs = int(config["num_envs"])
  every = int(config["train_every"])
  per_iteration = int(config["updates_per_step"]) * num_envs * every
  steps = np.asarray(steps, np.int64)
  if np.any(steps % num_envs) or np.any(steps < 0):
    raise ValueError(f"steps must be non-negative multiples of num_envs="
                     f"{num_envs}; got {steps.tolist()}.")
  first = max(1, -(-int(config["learning_starts"]) // num_envs))
  last = steps // num_envs - 1
  count = np.maximum(0, last // every - (first - 1) // every)
  return per_iteration * count


def sac_critic_evaluations(config, steps) -> np.ndarray:
  """(state, action) pairs through SAC's critic ensemble per seed by a step.

  One gradient step (`sac.learner.gradient_step`) on a batch of B =
  batch_size transitions evaluates the critics on B (next state, next
  action) pairs (target critics, the TD target of Haarnoja et al. 2018,
  Eq. 5-6), on the B replay pairs (the critic loss, Eq. 5) and on K B
  (state, fresh action) pairs in the actor loss (Eq. 7 / 12), K =
  pathwise_samples for the pathwise gradient and score_function_samples for
  the score function. With G(t) gradient steps by env step t
  (`sac_gradient_steps`):

    C(t) = B (2 + K) G(t).

  Each pair goes through all num_critics critics of the ensemble (network
  evaluations: num_critics C(t)); backward passes are not counted.

  References:
    Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
    Algorithm 1 and Eqs. 5-7, 12.

  Example:
    >>> config = {"num_envs": 1, "learning_starts": 200,
    ...           "updates_per_step": 1, "train_every": 1,
    ...           "batch_size": 32, "actor_grad": "score_function",
    ...           "score_function_samples": 8, "pathwise_samples": 1}
    >>> sac_critic_evaluations(config, [300, 600]).tolist()  # 32 * 10 * G
    [32000, 128000]
  """
  if config["actor_grad"] == "pathwise":
    actions = int(config.get("pathwise_samples", 1))
  elif config["actor_grad"] == "score_function":
    actions = int(config["score_function_samples"])
  else:
    raise ValueError(f"actor_grad must be 'pathwise' or 'score_function'; "
                     f"got {config['actor_grad']!r}.")
  per_step = int(config["batch_size"]) * (2 + actions)
  return per_step * sac_gradient_steps(config, steps)


def value_at(x, xs, values) -> np.ndarray:
  """A seed's curve (xs, values) read at x: linear between evaluations.

  NaN outside [xs[0], xs[-1]] (no extrapolation); points with a NaN x are
  left out, and of evaluations with equal x (those before the first
  gradient step all have 0 critic evaluations) the last counts.

  Args:
    x: scalar or [N] points to read at.
    xs: [T] the seed's x at its evaluations, non-decreasing.
    values: [T] the seed's metric at its evaluations.

  Example:
    >>> value_at([30.0, 60.0, 90.0], [37.5, 75.0], [20.0, 70.0]).tolist()
    [nan, 50.0, nan]
  """
  xs = np.asarray(xs, np.float64)
  values = np.asarray(values, np.float64)
  keep = np.isfinite(xs)
  xs, values = xs[keep], values[keep]
  if np.any(np.diff(xs) < 0):
    raise ValueError(f"xs must be non-decreasing; got {xs.tolist()}.")
  last = np.append(xs[1:] != xs[:-1], True)
  xs, values = xs[last], values[last]
  if not len(xs):
    return np.full(np.shape(x), np.nan)
  return np.interp(np.asarray(x, np.float64), xs, values, left=np.nan,
                   right=np.nan)


def curve_on_common_x(xs: Sequence, values: Sequence
                      ) -> tuple[np.ndarray, np.ndarray] | None:
  """(x [T'], values [n, T']) of n seeds' curves on one x grid, or None.

  If every seed has the same x values (the seeds of a SAC cell share its
  clock and schedule), those, with the seeds' own values; otherwise the
  median over the seeds of the x of each evaluation, within the range that
  every seed covers, each seed read there by `value_at`. Evaluations with
  an unknown (NaN) x are left out.

  Example:
    >>> x, v = curve_on_common_x([[0.0, 2.0, 4.0], [0.0, 4.0, 6.0]],
    ...                          [[0.0, 1.0, 3.0], [0.0, 2.0, 4.0]])
    >>> x.tolist(), v.tolist()  # Medians 0, 3, 5; seed 0 ends at 4.
    ([0.0, 3.0], [[0.0, 2.0], [0.0, 1.5]])
  """
  xs = np.asarray(xs, np.float64)
  values = np.asarray(values, np.float64)
  known = np.all(np.isfinite(xs), axis=0)
  xs, values = xs[:, known], values[:, known]
  if not xs.shape[1]:
    return None
  if np.all(xs == xs[0]):
    return xs[0], values
  grid = np.median(xs, axis=0)
  grid = grid[(grid >= xs[:, 0].max()) & (grid <= xs[:, -1].min())]
  if not len(grid):
    return None
  return grid, np.stack([value_at(grid, x, v) for x, v in zip(xs, values)])


# Axis -> (CSV file, column) of the logged clock it reads.
_CLOCKS = {"seconds": ("train.csv", "seconds"),
           "training_seconds": ("eval.csv", "step_seconds")}


def _logged_clock(study, run_dir: str, seed: int, axis: str
                  ) -> tuple[np.ndarray, np.ndarray] | None:
  """A seed's (steps, clock) rows for `axis` (`_CLOCKS`), rows after step 0,
  sorted by step; None without the column or rows."""
  file, name = _CLOCKS[axis]
  rows = csv_logs.read_csv(os.path.join(run_dir, file))
  if not rows or name not in rows[0]:
    return None
  column = study.system.seed_column
  mine = sorted((int(float(r["step"])), float(r[name])) for r in rows
                if int(float(r["step"])) > 0
                and (column is None or int(float(r[column])) == seed))
  if not mine:
    return None
  steps, values = zip(*mine)
  return np.array(steps), np.array(values)


def load_axis(study: studies.Study, workdir: str,
              condition: studies.Condition,
              cells: Sequence[study_runner.Cell],
              data: dict[int, dict[str, np.ndarray]], axis: str
              ) -> dict[int, np.ndarray]:
  """seed -> the `axis` value at each of its evaluation steps (`data`).

  NaN where unknown: seconds past a cell's last train.csv row, or of a cell
  whose train.csv has no `seconds` (eval.csv: `step_seconds`) column.
  """
  if axis not in AXES:
    raise ValueError(f"unknown curve axis {axis!r} of system "
                     f"{study.system.name!r}; expected one of "
                     f"{sorted(AXES)}.")
  out = {}
  for cell in cells:
    if cell.condition != condition or not study_runner.is_done(workdir, cell):
      continue
    run_dir = os.path.join(workdir, cell.path)
    for seed in cell.seeds:
      steps = data[seed]["step"]
      if axis == "critic_evaluations":
        out[seed] = sac_critic_evaluations(
            study_runner.done_config(workdir, cell), steps).astype(np.float64)
      elif axis == "decoder_evaluations":
        from vae import bernoulli  # The VAE's dependencies only here.
        config = study_runner.done_config(workdir, cell)
        out[seed] = steps * float(bernoulli.decoder_evaluations(
            config["estimator"], int(config["num_samples"])))
      else:
        clock = (wall_clock_at if axis == "seconds"
                 else training_seconds_at)
        logged = _logged_clock(study, run_dir, seed, axis)
        out[seed] = (np.full(len(steps), np.nan) if logged is None
                     else clock(steps, *logged))
  return out


def _axis_curve(condition, data, xs, column: str):
  if not data:
    return None
  seeds = sorted(data)
  return curve_on_common_x([xs[s] for s in seeds],
                           [data[s][column] for s in seeds])


def _equal_axis_lines(study, metric, axis: Axis, data, xs) -> list[str]:
  """Per task, the metric of every condition at one common x.

  x* = the smallest final x among the task's conditions (over their seeds),
  so every seed of every condition has reached it; each seed's value is read
  there by `value_at`.
  """
  rows, pair_rows, notes = [], [], []
  at_by_cond: dict[str, dict[int, float]] = {}
  tags = ("equal", axis.name)
  for task in dict.fromkeys(c.task for c in study.conditions):
    conditions = [c for c in study.conditions
                  if c.task == task and data[c.name]]
    final = {c.name: min(xs[c.name][s][-1] for s in data[c.name])
             for c in conditions}
    unknown = [c.label for c in conditions if not np.isfinite(final[c.name])]
    if unknown:
      notes.append(f"{task}: no {axis.equal} at the final evaluation of "
                   f"{', '.join(unknown)} (left out).")
    known = [c for c in conditions if np.isfinite(final[c.name])]
    if not known:
      continue
    target = min(final[c.name] for c in known)
    for condition in known:
      seeds = sorted(data[condition.name])
      at = {s: float(value_at(target, xs[condition.name][s],
                              data[condition.name][s][metric.column]))
            for s in seeds}
      steps = [float(value_at(target, xs[condition.name][s],
                              data[condition.name][s]["step"]))
               for s in seeds]
      prefix = f"| {fmt(target)} "
      if any(np.isnan(v) for v in at.values()):
        rows.append(f"{prefix}| {condition.label} | {task} | before the "
                    f"first evaluation | | | | |")
        continue
      at_by_cond[condition.name] = at
      rows.append(f"{prefix}| {condition.label} | {task} | "
                  f"{np.median(steps):.0f} | "
                  + _seed_cells(study, metric, condition, at, *tags))
  for a, b in study.pairs:
    if a in at_by_cond and b in at_by_cond:
      row = _pair_row(study, metric, at_by_cond, a, b, *tags)
      if row:
        pair_rows.append(row)
  if not rows:
    return notes
  lines = [f"At equal {axis.equal}: per task, {axis.symbol} = the smallest "
           f"final value among the task's conditions (over their seeds), "
           f"which every seed of every condition reached; each seed's "
           f"`{metric.column}` read there, linearly between its "
           f"evaluations. Steps: the median over seeds of the step at "
           f"{axis.symbol}.", "",
           f"| {axis.symbol}{axis.unit} | condition | task | steps | "
           f"seeds | "
           f"IQM [95% CI] | mean ± sample std | per seed (at "
           f"{axis.symbol}) |", "|---|---|---|---|---|---|---|---|"] + rows
  if pair_rows:
    lines += ["", f"Paired differences at equal {axis.equal} (A − B, same "
              "seeds):", "",
              "| A − B | task | seeds | mean [95% CI] | sample std | "
              "distinguishable |", "|---|---|---|---|---|---|"] + pair_rows
  return lines + ([""] + notes if notes else [])


def _axis_lines(study, metric, axis: Axis, data, xs, workdir: str
                ) -> list[str]:
  """The section of one metric against one axis: figure and equal-x table."""
  curves = {c.name: _axis_curve(c, data[c.name], xs[c.name], metric.column)
            for c in study.conditions}
  lines = [f"### {metric.label} against {axis.label}", "", axis.text, ""]
  figure = os.path.join(FIGURES,
                        f"{study.name}_{metric.column}_{axis.name}.png")
  if _plot_metric(study, metric, curves, os.path.join(workdir, figure),
                  xlabel=axis.label, tags=(axis.name,)):
    lines += [f"![{metric.label} against {axis.label}]({figure})", ""]
  else:
    lines += [f"No curve: no finished cell has {axis.equal} values.", ""]
  table = _equal_axis_lines(study, metric, axis, data, xs)
  return lines + (table + [""] if table else [])


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


def _budget_text(study: studies.Study, workdir: str,
                 cells: Sequence[study_runner.Cell],
                 settings: study_runner.Settings) -> list[str]:
  """Names the cells whose budget is not the study's (extended with
  --steps), and the conditions and tasks whose cells then end at different
  budgets; [] if every finished cell ran the study's budget."""
  budgets = {c: study_runner.cell_budget(workdir, c) for c in cells
             if study_runner.is_done(workdir, c)}
  base = {c: study_runner.cell_config(study, c, settings).num_steps
          for c in budgets}
  if all(budgets[c] == base[c] for c in budgets):
    return []
  lines = ["Cells trained to another budget than the study's (extended with "
           "`--steps`): " + ", ".join(
               f"`{c.path}` ({base[c]} to {budgets[c]} steps)"
               for c in budgets if budgets[c] != base[c])
           + ". Finals are at each cell's own budget."]
  for condition in study.conditions:
    ends = {budgets[c] for c in budgets if c.condition == condition}
    if len(ends) > 1:
      lines.append(
          f"The cells of {condition.name} end at different budgets "
          f"({', '.join(map(str, sorted(ends)))}): its statistics mix them, "
          "and its curve stops where all of them stop; extend every one of "
          "its cells.")
  for task in dict.fromkeys(c.task for c in study.conditions):
    ends = {c.name: sorted({budgets[x] for x in budgets if x.condition == c})
            for c in study.conditions if c.task == task}
    ends = {name: b for name, b in ends.items() if b}
    if len({tuple(b) for b in ends.values()}) > 1:
      lines.append(
          f"On {task} the conditions end at different budgets ("
          + ", ".join(f"{n}: {'/'.join(map(str, b))}" for n, b in ends.items())
          + "): their finals and paired differences compare unequal "
          "budgets; compare them on the curves.")
  return [" ".join(lines), ""]


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
  xs = {axis: {c.name: load_axis(study, workdir, c, cells, data[c.name],
                                 axis) for c in study.conditions}
        for axis in study.system.curve_axes}
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
  lines += _budget_text(study, workdir, cells, settings)
  lines += _statistics_text(settings) + [""]
  os.makedirs(os.path.join(workdir, FIGURES), exist_ok=True)
  for metric in study.system.metrics:
    finals = {name: {s: float(v[metric.column][-1]) for s, v in d.items()}
              for name, d in data.items()}
    lines += [f"## {metric.label}", "",
              f"`{metric.column}` at the final evaluation"
              + (" (final.json)." if metric.source == "final.json" else "."),
              "",
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
    if metric.source != "eval.csv":
      lines.append("")
      continue  # One value per run: no learning curve.
    figure = os.path.join(FIGURES, f"{study.name}_{metric.column}.png")
    curves = {c.name: _step_curve(c, data[c.name], metric.column)
              for c in study.conditions}
    if _plot_metric(study, metric, curves, os.path.join(workdir, figure)):
      lines += ["", f"![{metric.label}]({figure})"]
    lines.append("")
    for axis in study.system.curve_axes:
      lines += _axis_lines(study, metric, AXES[axis], data, xs[axis], workdir)
  lines += _cost_lines(study, workdir, cells)
  lines += _provenance_lines(workdir, cells)
  path = os.path.join(workdir, "report.md")
  atomic_files.write_text(path, "\n".join(lines))
  return path
