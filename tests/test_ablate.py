"""The study runner: launch/{ablate,studies,study_runner,study_report}.py.

One end-to-end study trains the real MoE trainer (two Table 6 rows, quick
configs, 2 seeds, 4 runs of 20 steps) and checks the report's numbers against
the runs' eval.csv and `common.seed_statistics`. The other tests use a fake
trainer that writes an eval.csv in the system's format (SAC: a `seed` column,
all seeds in one run directory), so the cell bookkeeping (resume, shards,
manifest) and the report's determinism are checked in milliseconds per run.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import zlib

import numpy as np
import pytest

from common import csv_logs
from common import provenance
from common import seed_statistics
from launch import ablate
from launch import studies
from launch import study_report
from launch import study_runner

ROOT = pathlib.Path(__file__).resolve().parents[1]


class FakeTrainer:
  """Writes eval.csv (two evaluations) as the system's trainer; counts calls."""

  def __init__(self, study, stop_after=None):
    self.system = study.system
    self.calls = []
    self.stop_after = stop_after  # Raise KeyboardInterrupt on call N + 1.

  def __call__(self, config, workdir):
    if self.stop_after is not None and len(self.calls) == self.stop_after:
      raise KeyboardInterrupt  # A kill: not caught by the runner.
    self.calls.append(os.path.relpath(workdir))
    provenance.append(workdir)  # As the trainers' restore_latest does.
    final = config.num_steps
    num = config.num_seeds if self.system.vmapped_seeds else 1
    rows = []
    for seed in range(config.seed, config.seed + num):
      rng = np.random.default_rng(
          zlib.crc32((config.to_json() + str(seed)).encode()))
      for step in (final // 2, final):
        row = {"step": step,
               **{m.column: float(rng.normal(1.0, 0.3))
                  for m in self.system.metrics if m.source == "eval.csv"}}
        if self.system.seed_column:
          row[self.system.seed_column] = seed
        rows.append(row)
    cost = self.system.cost
    if cost.csv == "eval.csv":
      for row in rows:
        row[cost.column] = 10.0 + row["step"]
    else:
      cost_rows = [{"step": r["step"], self.system.seed_column: r[
          self.system.seed_column], cost.column: 100.0 + r["step"]}
                   for r in rows]
      log = csv_logs.CsvLog(os.path.join(workdir, cost.csv), list(cost_rows[0]))
      log.start(None)
      log.write(cost_rows)
    log = csv_logs.CsvLog(os.path.join(workdir, "eval.csv"), list(rows[0]))
    log.start(None)
    log.write(rows)
    per_run = {m.column: float(rng.normal(-90.0, 1.0))
               for m in self.system.metrics if m.source == "final.json"}
    if per_run:
      with open(os.path.join(workdir, "final.json"), "w") as f:
        json.dump({"step": final, **per_run}, f)


def _cells(study, settings):
  return [c.path for c in study_runner.study_cells(study, settings)]


def _section(report, heading):
  """The text of a report's `## heading` section."""
  return report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_moe_study_end_to_end_with_the_real_trainer(tmp_path, monkeypatch):
  """Two rows x 2 seeds, quick configs; then a rerun trains nothing."""
  base = studies.MOE_TABLE6
  rows = (base.condition("wi0_wl0"), base.condition("wi0.1_wl0.1"))
  study = dataclasses.replace(base, name="moe_two_rows", conditions=rows,
                              pairs=(("wi0.1_wl0.1", "wi0_wl0"),))
  monkeypatch.setitem(studies.STUDIES, study.name, study)
  workdir = str(tmp_path / "study")
  report = ablate.run(study.name, workdir, quick=True, seeds=2, steps=20)
  text = open(report).read()
  assert "Finished cells: 4 of 4." in text
  assert "| all 4 finished cells |" in text  # By restore_latest.
  assert "## Cost: training wall seconds per run" in text
  finals = {}
  for row in rows:
    for seed in (0, 1):
      csv = csv_logs.read_csv(os.path.join(
          workdir, "cells", row.name, f"seed_{seed}", "eval.csv"))
      assert int(csv[-1]["step"]) == 20
      finals[row.name, seed] = float(csv[-1]["cv_load"])
  a = {s: finals["wi0.1_wl0.1", s] for s in (0, 1)}
  b = {s: finals["wi0_wl0", s] for s in (0, 1)}
  cv_load = _section(text, "CV(Load)")
  for label, values in (("(0, 0)", b), ("(0.1, 0.1)", a)):
    per_seed = ", ".join(study_report.fmt(v) for v in values.values())
    assert f"| {label} | mixture | 0, 1 | " in cv_load
    assert f" | {per_seed} |\n" in cv_load, (per_seed, cv_load)
  diff = seed_statistics.paired_difference(a, b, seed=study_report._seed_of(
      study.name, "cv_load", "wi0.1_wl0.1", "wi0_wl0"))
  assert (f"| (0.1, 0.1) − (0, 0) | mixture | 0, 1 | "
          f"{study_report.fmt(diff.mean)} "
          f"[{study_report.fmt(diff.ci[0])}, {study_report.fmt(diff.ci[1])}]"
          in text)
  for metric in study.system.metrics:
    assert os.path.exists(os.path.join(
        workdir, "figures", f"{study.name}_{metric.column}.png"))
  # Resume: every cell is finished, so the same command trains nothing.
  counting = FakeTrainer(study)
  ablate.run(study.name, workdir, quick=True, seeds=2, steps=20,
             train=counting)
  assert counting.calls == []


def test_resume_after_a_kill_skips_finished_cells(tmp_path):
  study = studies.MOE_TABLE6
  settings = study_runner.resolve_settings(study, seeds=2, steps=None,
                                           quick=True)
  workdir = str(tmp_path)
  killed = FakeTrainer(study, stop_after=5)
  with pytest.raises(KeyboardInterrupt):
    study_runner.run_study(study, workdir, settings, train=killed)
  assert len(killed.calls) == 5
  resumed = FakeTrainer(study)
  study_runner.run_study(study, workdir, settings, train=resumed)
  all_cells = _cells(study, settings)
  # The five finished cells are skipped; the killed sixth and the rest run.
  assert [os.path.relpath(c, workdir) for c in resumed.calls] == all_cells[5:]
  again = FakeTrainer(study)
  study_runner.run_study(study, workdir, settings, train=again)
  assert again.calls == []


@pytest.mark.parametrize("name", ["sac_actor_grad", "sac_actor_grad_dims",
                                  "moe_table6", "vae_estimators",
                                  "bernoulli_estimators"])
def test_shards_partition_the_cells(name):
  study = studies.STUDIES[name]
  settings = study_runner.resolve_settings(study, seeds=None, steps=None,
                                           quick=False)
  cells = _cells(study, settings)
  assert len(cells) == len(set(cells)) == len(study.conditions) * (
      1 if study.system.vmapped_seeds else study.num_seeds)
  for count in range(1, len(cells) + 2):
    groups = [[c.path for c in study_runner.shard_cells(
        study_runner.study_cells(study, settings), i, count)]
              for i in range(count)]
    flat = [c for g in groups for c in g]
    assert sorted(flat) == sorted(cells)  # Union is the study, no overlap.
    assert max(map(len, groups)) - min(map(len, groups)) <= 1


def test_sharded_runs_train_each_cell_once_then_report(tmp_path):
  study = studies.SAC_ACTOR_GRAD
  workdir = str(tmp_path)
  trained = []
  for i in range(3):
    fake = FakeTrainer(study)
    assert ablate.run(study.name, workdir, quick=True, seeds=3,
                      shard=f"{i}/3", train=fake) is None
    trained.append(fake.calls)
  settings = study_runner.resolve_settings(study, seeds=3, steps=None,
                                           quick=True)
  flat = [os.path.relpath(c, workdir) for g in trained for c in g]
  assert sorted(flat) == sorted(_cells(study, settings))
  assert [len(g) for g in trained] == [2, 2, 1]
  text = open(ablate.run(study.name, workdir, report_only=True,
                         check_settings=False)).read()
  assert "Finished cells: 5 of 5." in text
  assert "score_function (8) vs pathwise, both tasks" in text
  assert ("| score_function (2 samples) − pathwise | HalfCheetah-v5 "
          "| 0, 1, 2 |" in text)
  # Cost: median of the first seed's steps_per_sec rows (100 + 300, 100 + 600).
  assert "| pathwise | Hopper-v5 | 550.0 |" in text


def test_report_is_deterministic_and_lists_unfinished_cells(tmp_path):
  study = studies.MOE_TABLE6
  workdir = str(tmp_path)
  ablate.run(study.name, workdir, quick=True, seeds=3, shard="0/2",
             train=FakeTrainer(study))
  first = open(ablate.run(study.name, workdir, report_only=True,
                          check_settings=False), "rb").read()
  for png in os.listdir(tmp_path / "figures"):
    os.remove(tmp_path / "figures" / png)
  second = open(study_report.write_report(study, workdir), "rb").read()
  assert first == second
  text = first.decode()
  assert "Finished cells: 11 of 21. Not finished (left out below): " in text
  assert "`cells/wi0_wl0/seed_1`" in text  # Shard 1's cells.
  assert "`cells/wi0_wl0/seed_0`" not in text
  assert "| (0, 0) | mixture | 0, 2 |" in text  # Seeds 0 and 2 finished.
  # Every "mean ± sample std" cell is numpy's of the per-seed values shown,
  # within the rounding of both: rounding each value by at most h moves the
  # mean by at most h and the sample std by at most h sqrt(n / (n - 1)).
  rows = [line.split(" | ") for line in text.splitlines()
          if line.startswith("| (") and " ± " in line
          and " ± n/a" not in line]  # Rows 0, 2, 4, 6 have 2 seeds.
  assert len(rows) == 4 * 4
  half_ulp = lambda s: 0.5 * 10.0**-len(s.partition(".")[2])
  for row in rows:
    shown_values = row[5].strip(" |").split(", ")
    values = [float(v) for v in shown_values]
    n, h = len(values), max(map(half_ulp, shown_values))
    mean, std = row[4].split(" ± ")
    for shown, exact, rounding in (
        (mean, np.mean(values), h),
        (std, np.std(values, ddof=1), h * np.sqrt(n / (n - 1)))):
      assert abs(float(shown) - exact) <= half_ulp(shown) + rounding + 1e-12, (
          row)


def test_report_prints_each_seed_final_with_four_significant_digits(
    tmp_path):
  """The per-seed column uses the report's `fmt`, like every other number.

  Oracle: the finals read back from each cell's eval.csv, formatted by
  `fmt` (whose own digits its doctest checks); the fake trainer's finals
  have 16 significant digits, so a full-precision column fails.
  """
  study = studies.MOE_TABLE6
  workdir = str(tmp_path)
  ablate.run(study.name, workdir, quick=True, seeds=2,
             train=FakeTrainer(study))
  text = open(study_report.write_report(study, workdir)).read()
  checked = 0
  for metric in study.system.metrics:
    section = _section(text, metric.label)
    for condition in study.conditions:
      finals = []
      for seed in (0, 1):
        rows = csv_logs.read_csv(os.path.join(
            workdir, "cells", condition.name, f"seed_{seed}", "eval.csv"))
        finals.append(float(rows[-1][metric.column]))
      assert float(study_report.fmt(finals[0])) != finals[0]  # More digits.
      per_seed = ", ".join(study_report.fmt(v) for v in finals)
      row = next(r for r in section.splitlines()
                 if r.startswith(f"| {condition.label} | "))
      assert row.endswith(f" | {per_seed} |"), row
      checked += 1
  assert checked == len(study.system.metrics) * len(study.conditions)


def test_bad_input_is_named(tmp_path):
  with pytest.raises(ValueError, match="unknown study 'nope'"):
    ablate.run("nope", str(tmp_path))
  for shard in ("3/3", "5/2", "1/0"):
    with pytest.raises(ValueError, match=f"--shard={shard!r} is out of range"):
      ablate.run("moe_table6", str(tmp_path), shard=shard)
  for shard in ("a/b", "-1/2", "2"):
    with pytest.raises(ValueError,
                       match=f"--shard must look like i/n.*{shard!r}"):
      ablate.run("moe_table6", str(tmp_path), shard=shard)
  with pytest.raises(ValueError, match="--seeds must be an int >= 1; got 0"):
    ablate.run("moe_table6", str(tmp_path), seeds=0)
  with pytest.raises(ValueError, match="--steps=30 must be a multiple"):
    ablate.run("moe_table6", str(tmp_path), quick=True, steps=30)
  with pytest.raises(ValueError, match="has no study.json"):
    ablate.run("moe_table6", str(tmp_path / "empty"), report_only=True,
               check_settings=False)
  workdir = str(tmp_path / "moe")
  ablate.run("moe_table6", workdir, quick=True, seeds=2, shard="0/20",
             train=FakeTrainer(studies.MOE_TABLE6))
  with pytest.raises(ValueError, match="holds study 'moe_table6', not "
                     "'sac_actor_grad'"):
    ablate.run("sac_actor_grad", workdir, quick=True, seeds=2,
               train=FakeTrainer(studies.SAC_ACTOR_GRAD))
  with pytest.raises(ValueError, match=r"seeds \(saved 2, now 3\)"):
    ablate.run("moe_table6", workdir, quick=True, seeds=3)
  os.makedirs(tmp_path / "stray" / "cells")
  with pytest.raises(ValueError, match="holds cells/ but no study.json"):
    ablate.run("moe_table6", str(tmp_path / "stray"), quick=True)


def test_cli_reports_bad_input_without_a_traceback():
  result = subprocess.run(
      [sys.executable, "-m", "launch.ablate", "--study=nope",
       "--workdir=/nonexistent"], cwd=ROOT, capture_output=True, text=True,
      env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
  assert result.returncode != 0
  assert "unknown study 'nope'" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("quick", [True, False])
def test_cell_configs_pass_the_trainers_checks(quick):
  from moe import train as moe_train
  from sac import validation as sac_validation
  checks = {"sac": sac_validation.check_config, "moe": moe_train.check_config}
  for study in (studies.SAC_ACTOR_GRAD, studies.MOE_TABLE6):
    settings = study_runner.resolve_settings(study, seeds=None, steps=None,
                                             quick=quick)
    for cell in study_runner.study_cells(study, settings):
      config = study_runner.cell_config(study, cell, settings)
      checks[study.system.name](config)
      for field, value in cell.condition.overrides:
        assert config[field] == value
  full = study_runner.cell_config(
      studies.SAC_ACTOR_GRAD,
      study_runner.study_cells(studies.SAC_ACTOR_GRAD, study_runner.Settings(
          5, 100_000, False))[2], study_runner.Settings(5, 100_000, False))
  assert (full.env_id, full.num_steps, full.num_seeds, full.seed) == (
      "HalfCheetah-v5", 100_000, 5, 0)
  assert (full.actor_grad, full.score_function_samples) == ("score_function", 2)
  assert full.actor_lr == 3e-4 and full.learning_starts == 10_000


def test_dims_pathwise_8_cells_differ_only_in_samples():
  """sac_actor_grad_dims pairs Hopper-v5 and Walker2d-v5 pathwise_8 each with
  a pathwise cell that differs only in pathwise_samples, Hopper-v5's with the
  config of sac_actor_grad's, and shards i/8 (i >= 1) keep their one cell."""
  dims, base = studies.SAC_ACTOR_GRAD_DIMS, studies.SAC_ACTOR_GRAD
  configs, cells = {}, {}
  for study in (dims, base):
    settings = study_runner.resolve_settings(study, seeds=None, steps=None,
                                             quick=False)
    cells[study.name] = study_runner.study_cells(study, settings)
    for cell in cells[study.name]:
      configs[study.name, cell.condition.name] = study_runner.cell_config(
          study, cell, settings)
  assert (configs[dims.name, "Hopper-v5_pathwise"].to_dict()
          == configs[base.name, "Hopper-v5_pathwise"].to_dict())
  for task in ("Hopper-v5", "Walker2d-v5"):
    pathwise = configs[dims.name, f"{task}_pathwise"].to_dict()
    paired = configs[dims.name, f"{task}_pathwise_8"].to_dict()
    assert pathwise.pop("pathwise_samples") == 1
    assert paired.pop("pathwise_samples") == 8
    assert pathwise == paired  # Every other field is the same.
    assert (f"{task}_pathwise_8", f"{task}_pathwise") in dims.pairs
  names = [[c.condition.name
            for c in study_runner.shard_cells(cells[dims.name], i, 8)]
           for i in range(8)]
  assert names[0] == ["Hopper-v5_pathwise_8", "Hopper-v5_pathwise"]
  assert names[1:] == [["Walker2d-v5_pathwise"], ["Walker2d-v5_pathwise_8"],
                       ["Walker2d-v5_score_function_8"], ["Ant-v5_pathwise"],
                       ["Ant-v5_score_function_8"], ["Humanoid-v5_pathwise"],
                       ["Humanoid-v5_score_function_8"]]


@pytest.mark.parametrize("name,num_cells", [("vae_estimators", 7 * 3),
                                             ("gamma_estimators", 4 * 3)])
def test_vae_cell_configs(name, num_cells):
  """Each cell's config passes the trainer's checks and logs the metrics."""
  vae_train = pytest.importorskip("vae.train")
  study = studies.get_study(name)
  for quick in (True, False):
    settings = study_runner.resolve_settings(study, seeds=None, steps=None,
                                             quick=quick)
    cells = study_runner.study_cells(study, settings)
    assert len(cells) == num_cells
    for cell in cells:
      config = study_runner.cell_config(study, cell, settings)
      vae_train.check_config(config)
      assert config.model == cell.condition.task
      for field, value in cell.condition.overrides:
        assert config[field] == value
      assert {m.column for m in study.system.metrics} <= set(
          vae_train.eval_columns(config))


def test_bernoulli_cell_configs():
  """Every architecture x estimator, with the study's sample counts."""
  vae_train = pytest.importorskip("vae.train")
  bernoulli = pytest.importorskip("vae.bernoulli")
  study = studies.BERNOULLI_ESTIMATORS
  assert {c.task for c in study.conditions} == {"linear", "nonlinear"}
  estimators = {c.name.split("_", 1)[1] for c in study.conditions}
  assert estimators == set(bernoulli.ESTIMATORS)
  for quick in (True, False):
    settings = study_runner.resolve_settings(study, seeds=None, steps=None,
                                             quick=quick)
    cells = study_runner.study_cells(study, settings)
    assert len(cells) == 16 * 3
    for cell in cells:
      config = study_runner.cell_config(study, cell, settings)
      vae_train.check_config(config)
      assert config.model == "bernoulli"
      assert config.architecture == cell.condition.task
      assert config.num_latents == (4 if quick else 200)
      for field, value in cell.condition.overrides:
        assert config[field] == value


def test_bernoulli_report_has_every_metric_the_cost_and_aggregates(
    tmp_path):
  study = studies.BERNOULLI_ESTIMATORS
  workdir = str(tmp_path)
  text = open(ablate.run(study.name, workdir, quick=True, seeds=2,
                         train=FakeTrainer(study))).read()
  assert "Finished cells: 32 of 32." in text
  for metric in study.system.metrics:
    assert f"## {metric.label}\n" in text
    assert os.path.exists(os.path.join(
        workdir, "figures", f"{study.name}_{metric.column}.png"))
  assert "## Cost: seconds per training step" in text
  assert "disarm vs arm, both architectures" in text
  assert "| disarm (1 pair) − arm (1 pair) | nonlinear | 0, 1 |" in text


def test_final_json_metrics_are_reported_per_run_without_curves(tmp_path):
  study = studies.IWAE_ESTIMATORS
  workdir = str(tmp_path)
  text = open(ablate.run(study.name, workdir, quick=True, seeds=2,
                         train=FakeTrainer(study))).read()
  (metric,) = [m for m in study.system.metrics if m.source == "final.json"]
  section = _section(text, metric.label)
  assert f"`{metric.column}` at the final evaluation (final.json)." in section
  settings = study_runner.resolve_settings(study, seeds=2, steps=None,
                                           quick=True)
  for path in _cells(study, settings):
    with open(os.path.join(workdir, path, "final.json")) as f:
      value = json.load(f)[metric.column]
    assert study_report.fmt(value) in section
  assert "![" not in section
  assert not os.path.exists(os.path.join(
      workdir, "figures", f"{study.name}_{metric.column}.png"))
  for other in study.system.metrics:
    if other.source == "eval.csv":
      assert os.path.exists(os.path.join(
          workdir, "figures", f"{study.name}_{other.column}.png"))


def test_metric_sources_are_checked():
  with pytest.raises(ValueError, match=r"source must be one of .*'eval.csv'"
                     r".*got 'final.csv'"):
    studies.Metric("x", "x", source="final.csv")
  with pytest.raises(ValueError, match=r"final.json metrics \['x'\] need "
                     r"one seed per cell"):
    dataclasses.replace(
        studies.SAC, metrics=(studies.Metric("x", "x", source="final.json"),))


def test_finished_cell_with_another_config_is_refused(tmp_path):
  study = studies.MOE_TABLE6
  settings = study_runner.resolve_settings(study, seeds=1, steps=None,
                                           quick=True)
  workdir = str(tmp_path)
  study_runner.run_study(study, workdir, settings, shard=(0, 7),
                         train=FakeTrainer(study))
  done = tmp_path / "cells" / "wi0_wl0" / "seed_0" / "cell_done.json"
  saved = json.loads(done.read_text())
  saved["config"]["field_of_an_older_version"] = 1  # Not compared.
  done.write_text(json.dumps(saved))
  study_runner.run_study(study, workdir, settings, shard=(0, 7),
                         train=FakeTrainer(study))
  saved["config"]["learning_rate"] = 1.0
  done.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"different config: learning_rate "
                     r"\(saved 1.0, now 0.003\)"):
    study_runner.run_study(study, workdir, settings, shard=(0, 7),
                           train=FakeTrainer(study))


def test_cells_record_their_software_and_the_report_names_differences(
    tmp_path):
  """The report lists the cells' software; another MuJoCo in one is named."""
  study = studies.SAC_ACTOR_GRAD
  workdir = str(tmp_path)
  ablate.run(study.name, workdir, quick=True, seeds=2,
             train=FakeTrainer(study))
  settings = study_runner.resolve_settings(study, seeds=2, steps=None,
                                           quick=True)
  paths = _cells(study, settings)
  for path in paths:
    records = provenance.read(os.path.join(workdir, path))
    assert len(records) == 1
    assert records[0]["packages"]["numpy"] == np.__version__
  text = open(study_report.write_report(study, workdir)).read()
  assert "## Software and machine" in text
  assert f"numpy {np.__version__}" in text
  assert "different" not in text.split("## Software and machine")[1]
  # A second record with another MuJoCo in one cell, no record in another.
  first = os.path.join(workdir, paths[0], "provenance.json")
  records = json.load(open(first))
  other = json.loads(json.dumps(records[0]))
  other["packages"]["mujoco"] = "0.0.1"
  json.dump(records + [other], open(first, "w"))
  os.remove(os.path.join(workdir, paths[1], "provenance.json"))
  text = open(study_report.write_report(study, workdir)).read()
  assert "**Cells ran under different mujoco.**" in text
  assert "mujoco 0.0.1" in text
  assert f"No `provenance.json`: `{paths[1]}`." in text
  with open(os.path.join(workdir, paths[2], "provenance.json"), "w") as f:
    f.write("{not json")
  text = open(study_report.write_report(study, workdir)).read()
  assert f"Unreadable `provenance.json`: `{paths[2]}`." in text


def test_provenance_record_names_the_code_the_process_imported(monkeypatch):
  """A later commit or install does not change a running process's record."""
  def fail(*args, **kwargs):
    raise AssertionError("record() must not query the checkout or packages")
  monkeypatch.setattr(provenance, "git_commit", fail)
  monkeypatch.setattr(provenance, "package_versions", fail)
  rec = provenance.record()
  assert rec["commit"] == provenance.PROCESS_COMMIT
  assert rec["packages"] == provenance.PROCESS_PACKAGES
  rec["packages"]["numpy"] = "changed"
  assert provenance.record()["packages"] != rec["packages"]


def test_provenance_helpers(tmp_path):
  a = {"python": "3.11.0", "packages": {"jax": "1", "mujoco": "3"}}
  b = {"python": "3.11.0", "packages": {"jax": "1", "mujoco": "4"}}
  c = {"python": "3.12.0", "packages": {"jax": "1"}}
  assert provenance.differing([a, a]) == []
  assert provenance.differing([a, b]) == ["mujoco"]
  assert provenance.differing([a, c]) == ["mujoco", "python"]
  assert provenance.package_versions(["no-such-dist-xyz"]) == {
      "no-such-dist-xyz": None}
  assert provenance.git_commit(str(tmp_path)) is None  # Not a checkout.
  assert provenance.differing([a, {"python": "3.11.0", "packages": None,
                                   "devices": "2 cpu"}]) == [
                                       "jax", "jax devices", "mujoco"]
  # A damaged list is named by read() and set aside by append().
  (tmp_path / "provenance.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="provenance.json is not a JSON list"):
    provenance.read(str(tmp_path))
  provenance.append(str(tmp_path))
  assert len(provenance.read(str(tmp_path))) == 1
  assert (tmp_path / "provenance.json.unreadable").read_text() == "[1, 2]"


# --- Learning curves against wall clock and critic evaluations ---------------


def test_wall_clock_is_interpolated_through_the_origin():
  # Rows (200, 30 s), (400, 40 s), (600, 60 s), and (0, 0 s) where the clock
  # starts: step 100 is halfway to 200 (15 s), 300 halfway from 200 to 400
  # (35 s), 500 halfway from 400 to 600 (50 s); 700 is past the last row.
  got = study_report.wall_clock_at([100, 300, 500, 600, 700],
                                   [200, 400, 600], [30.0, 40.0, 60.0])
  np.testing.assert_array_equal(got, [15.0, 35.0, 50.0, 60.0, np.nan])
  for steps, seconds in (([200, 200], [1.0, 2.0]), ([0], [1.0]),
                         ([200, 400], [5.0, 4.0]), ([100], [1.0, 2.0])):
    with pytest.raises(ValueError, match="logged"):
      study_report.wall_clock_at([100], steps, seconds)


def test_value_at_reads_a_curve_linearly_and_never_extrapolates():
  # Evaluations at x = 0, 0, 40, 80 with values 5, 7, 11, 31: between 0 and
  # 40 the later of the two x = 0 points (7) counts, so x = 10 gives
  # 7 + (11 - 7) / 4 = 8 and x = 60 gives (11 + 31) / 2 = 21.
  got = study_report.value_at([-1.0, 0.0, 10.0, 60.0, 80.0, 81.0],
                              [0.0, 0.0, 40.0, 80.0], [5.0, 7.0, 11.0, 31.0])
  np.testing.assert_array_equal(got, [np.nan, 7.0, 8.0, 21.0, 31.0, np.nan])
  # A NaN x (no clock there) is left out: 20 lies between 0 and 40 -> 9.
  assert study_report.value_at(20.0, [0.0, np.nan, 40.0],
                               [7.0, 100.0, 11.0]) == 9.0
  with pytest.raises(ValueError, match="non-decreasing"):
    study_report.value_at(1.0, [2.0, 1.0], [0.0, 0.0])


def _sac_schedule(**fields):
  config = {"num_envs": 1, "learning_starts": 0, "updates_per_step": 1,
            "train_every": 1, "batch_size": 32, "actor_grad": "pathwise",
            "pathwise_samples": 1, "score_function_samples": 8}
  config.update(fields)
  return config


def test_sac_gradient_steps_and_critic_evaluations_by_hand():
  # E = 2 envs, w = 3, U = 2, learning_starts = 7: iterations i >= 4
  # (i E >= 7) with i mod 3 = 0 run U E w = 12 gradient steps. Step t
  # follows iteration t / 2 - 1: t = 12 -> i <= 5, none; t = 14 -> {6};
  # t = 20 -> {6, 9}; t = 40 -> {6, 9, 12, 15, 18}.
  config = _sac_schedule(num_envs=2, train_every=3, updates_per_step=2,
                         learning_starts=7)
  assert study_report.sac_gradient_steps(
      config, [2, 8, 12, 14, 20, 40]).tolist() == [0, 0, 0, 12, 24, 60]
  # learning_starts = 0: iteration 0 has no transitions to learn from yet.
  assert study_report.sac_gradient_steps(
      _sac_schedule(), [1, 2, 5]).tolist() == [0, 1, 4]
  with pytest.raises(ValueError, match="multiples of num_envs=2"):
    study_report.sac_gradient_steps(config, [3])
  # Per gradient step B (2 + K) pairs: 32 * 3, 32 * (2 + 4), 32 * (2 + 8).
  for fields, per_step in (({}, 96), ({"pathwise_samples": 4}, 192),
                           ({"actor_grad": "score_function"}, 320)):
    assert study_report.sac_critic_evaluations(
        _sac_schedule(**fields), [5]).tolist() == [4 * per_step]
  with pytest.raises(ValueError, match="actor_grad must be"):
    study_report.sac_critic_evaluations(
        _sac_schedule(actor_grad="nope"), [5])


@pytest.mark.parametrize("actor_grad,samples", [
    ("pathwise", 1), ("pathwise", 3), ("score_function", 4)])
def test_critic_evaluations_per_gradient_step_are_the_learners(
    monkeypatch, actor_grad, samples):
  """B (2 + K): the (state, action) pairs `learner.gradient_step` passes
  through the critics, counted while it is traced."""
  import jax
  from launch.configs import sac as sac_config
  from sac import learner
  from sac import replay
  from sac import train as sac_train
  config = sac_config.get_config("test")
  config.hidden_sizes, config.batch_size = (8,), 5
  config.actor_grad = actor_grad
  config.pathwise_samples = samples if actor_grad == "pathwise" else 1
  config.score_function_samples = samples if actor_grad != "pathwise" else 8
  agent = sac_train.build_agent(config, obs_dim=3, action_dim=2)
  state = learner.init_state(agent, seed=0, buffer_size=8)
  batch = jax.tree.map(lambda x: x[:5], replay.sample(
      state.buffer, jax.random.PRNGKey(0), 5))
  pairs = []
  apply = learner._critic_apply

  def counting(agent, params, obs, action):
    pairs.append(int(np.prod(action.shape[:-1])))
    return apply(agent, params, obs, action)

  monkeypatch.setattr(learner, "_critic_apply", counting)
  jax.eval_shape(lambda s, b: learner.gradient_step(agent, s, b),
                 state.replace(buffer=None), batch)
  expected = study_report.sac_critic_evaluations(
      json.loads(config.to_json()), [config.learning_starts + 1])
  assert sum(pairs) == 5 * (2 + samples)
  assert expected.tolist() == [sum(pairs)]  # Iteration learning_starts only.


def test_sac_gradient_steps_match_a_real_runs_update_counter(tmp_path):
  """`sac_gradient_steps` against the critic's TrainState step in the kept
  checkpoints of a tiny run with E = 2, w = 3, U = 2, learning_starts = 7
  (the hand-computed 0, 12, 24, 60 of the test above)."""
  from benchmarks import sac_grad_variance as gv
  from launch.configs import sac as sac_config
  from sac import train as sac_train
  config = sac_config.get_config("test")
  config.update(num_envs=2, train_every=3, updates_per_step=2,
                learning_starts=7, num_steps=40, hidden_sizes=(8,),
                batch_size=8, buffer_size=40, eval_every=40,
                checkpoint_every=40, keep_checkpoint_steps=(12, 14, 20))
  workdir = str(tmp_path)
  sac_train.train(config, workdir)
  agent = sac_train.build_agent(config, 3, 1)  # Pendulum-v1.
  for step, expected in ((12, 0), (14, 12), (20, 24), (40, 60)):
    state = gv.restore_state(workdir, config, agent, step)
    assert np.asarray(state.num_updates).tolist() == [expected]
    assert study_report.sac_gradient_steps(config, [step]).tolist() == [
        expected]


class TimedSacTrainer:
  """Writes a SAC cell's eval.csv and train.csv with given values.

  `returns[condition][step](seed)` and `seconds[condition][step]` (train.csv
  rows at 200, 400, 600); 3 vmapped seeds, evaluations at 300 and 600.
  """

  def __init__(self, returns, seconds):
    self.returns, self.seconds = returns, seconds

  def __call__(self, config, workdir):
    name = next(n for n in self.returns
                if workdir.endswith(os.path.join("cells", n)))
    os.makedirs(workdir, exist_ok=True)
    seeds = range(config.seed, config.seed + config.num_seeds)
    evals = [{"step": step, "seed": s, "return_mean": f(s),
              "return_std": 0.0, "episodes": 1}
             for step, f in self.returns[name].items() for s in seeds]
    train = [{"step": step, "seed": s, "steps_per_sec": 1.0,
              "seconds": seconds}
             for step, seconds in self.seconds[name].items() for s in seeds]
    for file, rows in (("eval.csv", evals), ("train.csv", train)):
      log = csv_logs.CsvLog(os.path.join(workdir, file), list(rows[0]))
      log.start(None)
      log.write(rows)


def _table_row(section, first_cells):
  return next(r for r in section.splitlines() if r.startswith(first_cells))


def _check_equal_axis_row(section, study, column, axis, name, target, step,
                          values):
  """The equal-x table's row of condition `name` (seeds 0, 1, 2): x*
  `target`, the median step `step` and the seeds' `values` at x*."""
  fmt = study_report.fmt
  condition = study.condition(name)
  low, high = seed_statistics.stratified_bootstrap_ci(
      [values], seed=study_report._seed_of(study.name, column, "equal", axis,
                                           name))
  row = _table_row(section, f"| {target} | {condition.label} | "
                   f"{condition.task} | ")
  assert row == (
      f"| {target} | {condition.label} | {condition.task} | {step} | "
      f"0, 1, 2 | {fmt(np.mean(values))} [{fmt(low)}, {fmt(high)}] | "
      f"{fmt(np.mean(values))} ± {fmt(np.std(values, ddof=1))} | "
      f"{', '.join(fmt(v) for v in values)} |"), (axis, row)


def test_sac_report_at_equal_wall_clock_and_critic_evaluations(
    tmp_path, monkeypatch):
  """Quick-mode study, 3 seeds, hand-computed oracles.

  Quick config: batch 32, learning_starts 200, one env, so G(300) = 100 and
  G(600) = 400 gradient steps; critic evaluations 32 * 3 * G for pathwise,
  32 * 10 * G for the score function with 8 actions.
  Hopper pathwise (P): 35 s at step 300 (between the rows (200, 30 s) and
  (400, 40 s)), 60 s at 600. Hopper score function (S): 37.5 s and 75 s.
  So T = 60 s: P is read at its final evaluation (100 + 10 s), S at
  (60 - 37.5) / 37.5 = 0.6 of the way from 300 to 600: 0.4 (20 + 2 s) +
  0.6 (70 + 5 s) = 50 + 3.8 s, at env step 480. HalfCheetah (H, alone):
  T = its final 30 s. Equal critic evaluations: C = 38400 (P's final);
  S has 32000 at 300 and 128000 at 600, so is read 6400 / 96000 = 1/15 of
  the way: (20 + 2 s) + (50 + 3 s) / 15, at env step 320.
  """
  base = studies.SAC_ACTOR_GRAD
  names = ("Hopper-v5_pathwise", "Hopper-v5_score_function_8",
           "HalfCheetah-v5_pathwise")
  study = dataclasses.replace(
      base, name="sac_timed", conditions=tuple(map(base.condition, names)),
      pairs=((names[1], names[0]),), aggregates=())
  monkeypatch.setitem(studies.STUDIES, study.name, study)
  returns = {
      names[0]: {300: lambda s: 10.0 + s, 600: lambda s: 100.0 + 10 * s},
      names[1]: {300: lambda s: 20.0 + 2 * s, 600: lambda s: 70.0 + 5 * s},
      names[2]: {300: lambda s: 1.0, 600: lambda s: 5.0 + s}}
  seconds = {names[0]: {200: 30.0, 400: 40.0, 600: 60.0},
             names[1]: {200: 25.0, 400: 50.0, 600: 75.0},
             names[2]: {200: 10.0, 400: 20.0, 600: 30.0}}
  workdir = str(tmp_path)
  path = ablate.run(study.name, workdir, quick=True, seeds=3,
                    train=TimedSacTrainer(returns, seconds))
  text = open(path, encoding="utf-8").read()
  fmt = study_report.fmt
  wall = text.split("### deterministic eval return against training wall")[1]
  critic = wall.split("### deterministic eval return against critic")[1]
  wall = wall.split("### ")[0]
  expected = {
      ("wall", names[0]): ("60.00", "600", [100.0, 110.0, 120.0]),
      ("wall", names[1]): ("60.00", "480", [50.0, 53.8, 57.6]),
      ("wall", names[2]): ("30.00", "600", [5.0, 6.0, 7.0]),
      ("critic", names[0]): ("38400.0", "600",
                             [100.0, 110.0, 120.0]),
      ("critic", names[1]): ("38400.0", "320",
                             [20 + 2 * s + (50 + 3 * s) / 15
                              for s in range(3)]),
      ("critic", names[2]): ("38400.0", "600", [5.0, 6.0, 7.0])}
  for (axis, name), (target, step, values) in expected.items():
    _check_equal_axis_row(
        wall if axis == "wall" else critic, study, "return_mean",
        "seconds" if axis == "wall" else "critic_evaluations", name, target,
        step, values)
  # Paired S - P at T = 60 s: 50 - 100, 53.8 - 110, 57.6 - 120.
  pair = _table_row(wall, "| score_function (8 samples) − pathwise |")
  assert f"| 0, 1, 2 | {fmt(-56.2)} [" in pair
  for axis in ("seconds", "critic_evaluations"):
    assert os.path.getsize(tmp_path / "figures" /
                           f"sac_timed_return_mean_{axis}.png") > 0
  # Deterministic: the same run directories give the same bytes.
  again = open(study_report.write_report(study, workdir), "rb").read()
  assert again == text.encode("utf-8")


def test_training_seconds_sum_the_per_step_times_by_hand():
  # Rows at 100 (0.5 s per update) and 300 (0.25 s per update): 50 s by
  # step 100, 50 + 200 * 0.25 = 100 s by 300; 200 is halfway (75 s).
  got = study_report.training_seconds_at([50, 100, 200, 300, 400],
                                         [100, 300], [0.5, 0.25])
  np.testing.assert_array_equal(got, [25.0, 50.0, 75.0, 100.0, np.nan])
  for steps, seconds in (([100], [-1.0]), ([100, 300], [1.0])):
    with pytest.raises(ValueError, match="step_seconds >= 0"):
      study_report.training_seconds_at([100], steps, seconds)


class TimedVaeTrainer:
  """Writes a Bernoulli VAE cell's eval.csv: `bounds[condition][step](seed)`
  and `step_seconds[condition][step]`; evaluations at 100 and 200."""

  def __init__(self, bounds, step_seconds):
    self.bounds, self.step_seconds = bounds, step_seconds

  def __call__(self, config, workdir):
    name = next(n for n in self.bounds
                if os.path.join("cells", n, "") in workdir)
    os.makedirs(workdir, exist_ok=True)
    rows = [{"step": step, "test_neg_bound": f(config.seed),
             "encoder_grad_variance": 1.0, "test_neg_elbo": 1.0,
             "step_seconds": self.step_seconds[name][step]}
            for step, f in self.bounds[name].items()]
    log = csv_logs.CsvLog(os.path.join(workdir, "eval.csv"), list(rows[0]))
    log.start(None)
    log.write(rows)


def test_bernoulli_report_at_equal_training_time_and_decoder_evaluations(
    tmp_path, monkeypatch):
  """Quick-mode study, 3 seeds, hand-computed oracles.

  Quick config: 200 steps, evaluations at 100 and 200. Decoder evaluations
  per step: score function (2 samples) 2, DisARM (1 pair) 3, REBAR (1
  draw) 4, so E = 400 (the score function's final): the score function
  at step 200, DisARM 1/3 of the way from 100 (E = 300) to 200 (600),
  REBAR at step 100. Training seconds: score function 0.5 s per step
  (50 s, 100 s), DisARM 0.6 (60 s, 120 s), REBAR 1.0 then 1.5 (100 s,
  250 s), so T = 100 s: the score function at 200, DisARM 2/3 of the way
  from 100 to 200, REBAR at 100.
  """
  base = studies.BERNOULLI_ESTIMATORS
  names = ("linear_score_function", "linear_disarm", "linear_rebar")
  study = dataclasses.replace(
      base, name="bernoulli_timed",
      conditions=tuple(map(base.condition, names)),
      pairs=((names[1], names[0]),), aggregates=())
  monkeypatch.setitem(studies.STUDIES, study.name, study)
  bounds = {
      names[0]: {100: lambda s: 10.0 + s, 200: lambda s: 5.0 + s},
      names[1]: {100: lambda s: 12.0 + s, 200: lambda s: 6.0 + 2 * s},
      names[2]: {100: lambda s: 9.0 + s, 200: lambda s: 4.0}}
  step_seconds = {names[0]: {100: 0.5, 200: 0.5},
                  names[1]: {100: 0.6, 200: 0.6},
                  names[2]: {100: 1.0, 200: 1.5}}
  workdir = str(tmp_path)
  path = ablate.run(study.name, workdir, quick=True, seeds=3,
                    train=TimedVaeTrainer(bounds, step_seconds))
  text = open(path, encoding="utf-8").read()
  heading = "### test -L_K (nats; K-sample bound, K = eval_samples) against "
  timed = text.split(heading + "training seconds")[1].split("### ")[0]
  counted = text.split(heading + "decoder evaluations")[1].split("### ")[0]
  expected = {
      ("training_seconds", names[0]): ("100.0", "200", [5.0, 6.0, 7.0]),
      ("training_seconds", names[1]): (
          "100.0", "167", [12 + s + 2 * (s - 6) / 3 for s in range(3)]),
      ("training_seconds", names[2]): ("100.0", "100", [9.0, 10.0, 11.0]),
      ("decoder_evaluations", names[0]): ("400.0", "200", [5.0, 6.0, 7.0]),
      ("decoder_evaluations", names[1]): (
          "400.0", "133", [12 + s + (s - 6) / 3 for s in range(3)]),
      ("decoder_evaluations", names[2]): ("400.0", "100",
                                          [9.0, 10.0, 11.0])}
  for (axis, name), (target, step, values) in expected.items():
    _check_equal_axis_row(
        timed if axis == "training_seconds" else counted, study,
        "test_neg_bound", axis, name, target, step, values)
    assert os.path.getsize(tmp_path / "figures" /
                           f"bernoulli_timed_test_neg_bound_{axis}.png") > 0


def test_cells_without_a_logged_clock_are_left_out_of_the_wall_clock_table(
    tmp_path):
  """The fake trainer's train.csv has no `seconds` column (runs logged
  before it existed): named in the wall-clock section; the critic
  evaluations need only the config."""
  study = studies.SAC_ACTOR_GRAD
  ablate.run(study.name, str(tmp_path), quick=True, seeds=2,
             train=FakeTrainer(study))
  text = open(tmp_path / "report.md").read()
  assert ("Hopper-v5: no wall clock at the final evaluation of pathwise, "
          "score_function (8 samples) (left out).") in text
  assert "At equal wall clock" not in text
  assert "| 38400.0 | pathwise | Hopper-v5 | 600 | 0, 1 |" in text


def test_a_larger_steps_extends_the_finished_cells_it_reaches(tmp_path):
  study = studies.SAC_ACTOR_GRAD
  workdir = str(tmp_path)
  ablate.run(study.name, workdir, quick=True, seeds=2, steps=600,
             train=FakeTrainer(study))
  settings = study_runner.resolve_settings(study, seeds=2, steps=600,
                                           quick=True)
  cells = study_runner.study_cells(study, settings)
  extend = FakeTrainer(study)
  ablate.run(study.name, workdir, quick=True, seeds=2, steps=1200,
             shard="0/3", train=extend)
  extended = [c.path for c in study_runner.shard_cells(cells, 0, 3)]
  assert [os.path.relpath(c, workdir) for c in extend.calls] == extended
  for cell in cells:
    done = json.loads((tmp_path / cell.path / "cell_done.json").read_text())
    budget, buffer = (1200, 1000) if cell.path in extended else (600, 600)
    assert (done["config"]["num_steps"], done["config"]["buffer_size"]) == (
        budget, buffer)  # The quick preset's 1000 rows, or the budget.
  again = FakeTrainer(study)
  for steps in (1200, 600):  # Extended and shorter cells are skipped.
    ablate.run(study.name, workdir, quick=True, seeds=2, steps=steps,
               shard="0/3", train=again)
  assert again.calls == []
  with pytest.raises(ValueError, match=r"other settings: steps \(saved 600, "
                     r"now 300\); .*a larger --steps extends the study"):
    ablate.run(study.name, workdir, quick=True, seeds=2, steps=300,
               train=again)
  with pytest.raises(ValueError, match=r"steps \(saved 600, now None\)"):
    ablate.run(study.name, workdir, quick=True, seeds=2, train=again)
  text = open(ablate.run(study.name, workdir, report_only=True,
                         check_settings=False)).read()
  assert ("Cells trained to another budget than the study's (extended with "
          "`--steps`): " + ", ".join(f"`{p}` (600 to 1200 steps)"
                                     for p in extended)) in text
  tasks = {c.condition.task for c in cells if c.path in extended}
  for task in sorted(tasks):
    assert f"On {task} the conditions end at different budgets (" in text
  data = study_report.load_condition(study, workdir, cells[0].condition, cells)
  assert all(v["step"][-1] == 1200 for v in data.values())


def test_a_finished_cell_is_checked_at_its_own_budget(tmp_path):
  study = studies.MOE_TABLE6
  workdir = str(tmp_path)
  run = dict(quick=True, seeds=1, shard="0/7")
  ablate.run(study.name, workdir, steps=20, train=FakeTrainer(study), **run)
  done = tmp_path / "cells" / "wi0_wl0" / "seed_0" / "cell_done.json"
  saved = json.loads(done.read_text())
  saved["config"]["learning_rate"] = 1.0
  done.write_text(json.dumps(saved))
  # Only learning_rate: num_steps (20, asked 40) is compared at the cell's 20.
  with pytest.raises(ValueError, match=r"different config: learning_rate "
                     r"\(saved 1.0, now 0.003\); use a new workdir"):
    ablate.run(study.name, workdir, steps=40, train=FakeTrainer(study), **run)


def test_a_study_on_the_presets_budget_extends_only_past_every_preset(
    tmp_path):
  study = studies.MOE_TABLE6
  workdir = str(tmp_path)
  run = dict(quick=True, seeds=2)
  ablate.run(study.name, workdir, train=FakeTrainer(study), **run)
  settings = study_runner.resolve_settings(study, seeds=2, steps=None,
                                           quick=True)
  cells = study_runner.study_cells(study, settings)
  preset = study_runner.cell_config(study, cells[0], settings).num_steps
  for steps in (preset // 2, preset):
    with pytest.raises(ValueError, match=rf"steps \(saved None, now "
                       rf"{steps}\)"):
      ablate.run(study.name, workdir, steps=steps, train=FakeTrainer(study),
                 **run)
  extend = FakeTrainer(study)
  ablate.run(study.name, workdir, steps=2 * preset, shard="0/2",
             train=extend, **run)
  part = [c.path for c in study_runner.shard_cells(cells, 0, 2)]
  assert [os.path.relpath(c, workdir) for c in extend.calls] == part
  # Half-extended conditions (one seed each) still give a report, flagged.
  text = open(ablate.run(study.name, workdir, report_only=True,
                         check_settings=False)).read()
  condition = cells[0].condition.name
  assert (f"The cells of {condition} end at different budgets ({preset}, "
          f"{2 * preset})") in text
  # A finished cell short of its preset's budget is not extended silently.
  done = tmp_path / cells[1].path / "cell_done.json"
  saved = json.loads(done.read_text())
  saved["config"]["num_steps"] = preset // 2
  done.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=rf"finished run of {preset // 2} "
                     rf"steps; the study's config asks {preset}\. Rerun with "
                     rf"--steps={preset} to extend it"):
    ablate.run(study.name, workdir, train=FakeTrainer(study), **run)
