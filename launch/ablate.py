r"""Runs an ablation study (a grid of configs x seeds) and writes its report.

  python -m launch.ablate --study=moe_table6 --workdir=runs/moe_table6
  python -m launch.ablate --study=sac_actor_grad --workdir=runs/sac_actor_grad
  python -m launch.ablate --study=moe_table6 --workdir=/tmp/t6 --quick --seeds=2

Studies (launch/studies.py, `STUDIES`):
  sac_actor_grad  SAC on HalfCheetah-v5 and Hopper-v5 (MuJoCo presets), actor
                  gradient pathwise vs score function (8 actions per state),
                  plus score function with 2 actions on HalfCheetah-v5;
                  5 seeds, 100k steps. One cell per condition, seeds vmapped.
  sac_actor_grad_dims
                  The same across action dimensions: Hopper-v5 (3),
                  Walker2d-v5 (6), Ant-v5 (8), Humanoid-v5 (17); pathwise
                  with 1 and 8 actions per state, score function with 8;
                  5 seeds, 100k steps.
  moe_table6      The seven rows of the MoE balancing-loss table (Shazeer et
                  al. 2017, Table 6, plus 0.1/0.1 without noise); 3 seeds.
  vae_estimators  Gaussian VAE pathwise vs score function; categorical VAE
                  gumbel_softmax, st_gumbel_softmax, score_function, rebar,
                  relax; 3 seeds (needs the `vae` package).
  bernoulli_estimators
                  Bernoulli VAE (200 binary latents, learned prior), linear
                  and nonlinear: score_function, arm, disarm, rebar, relax,
                  vimco, gumbel_softmax, st_gumbel_softmax; 3 seeds.
  iwae_estimators Gaussian VAE on the K = 16 importance-weighted bound,
                  iwae vs dreg gradients; 3 seeds.

Flags:
  --seeds=N      seeds 0..N-1 (default: the study's).
  --steps=N      step budget of every cell (default: the study's or preset's);
                 larger than the study's, it extends the finished cells it
                 reaches (each resumes from its last checkpoint).
  --quick        tiny test configs (seconds per cell), to try the tool.
  --shard=i/n    run only cell group i of n (cells i, i+n, i+2n, ... in
                 registry order), e.g. one SLURM array task per shard; then
                 run --report_only once all shards are done.
  --report_only  write DIR/report.md and DIR/figures/ from the finished cells
                 without training (seconds).

Each cell is an ordinary run directory of its trainer (`DIR/cells/...`).
Rerunning the same command resumes: finished cells (with `cell_done.json`)
are skipped, an interrupted cell resumes from its own checkpoints. DIR keeps
a manifest (`study.json`); a DIR holding another study, or this study with
other --seeds/--quick or a smaller --steps, is refused (launch/study_runner.py,
"Extending a study"). Without --shard (or with n = 1)
the report is written at the end of the run. The report gives per condition
the IQM of the per-seed finals with a stratified bootstrap CI at level 0.95,
mean ± sample std (ddof = 1), the finals per seed, paired differences on
shared seeds, learning curves with CI bands, and each cell's logged speed
(SAC: environment steps per second; MoE, VAE: training seconds); see
launch/study_report.py.
Bad input (unknown study, shard out of range, a DIR of another study) exits
with status 1 and one line naming the value.
"""

from __future__ import annotations

from typing import Callable

from absl import app
from absl import flags

# First among the project's modules: the commit and package versions that
# every cell's provenance record names are read when it is imported.
from common import provenance  # noqa: F401 (imported for its side effect)
from launch import studies
from launch import study_report
from launch import study_runner
from launch import terminal

_STUDY = flags.DEFINE_string("study", None, "Study name (launch/studies.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds 0..N-1 (default: study's).")
_STEPS = flags.DEFINE_integer("steps", None, "Step budget of every cell.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny test configs.")
_SHARD = flags.DEFINE_string("shard", "0/1", "Run only cell group i of n.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False,
                                 "Only write the report from finished cells.")
flags.mark_flags_as_required(["study", "workdir"])


def run(study_name: str, workdir: str, *, seeds: int | None = None,
        steps: int | None = None, quick: bool = False, shard: str = "0/1",
        report_only: bool = False, check_settings: bool = True,
        train: Callable | None = None) -> str | None:
  """The whole command; returns the report path (None for a shard of n > 1).

  `check_settings=False` (with `report_only`) takes the settings from the
  study directory's manifest instead of checking them against the flags.
  """
  study = studies.get_study(study_name)
  index, count = study_runner.parse_shard(shard)
  settings = study_runner.resolve_settings(study, seeds=seeds, steps=steps,
                                           quick=quick)
  extend = steps is not None
  if report_only:
    if check_settings:
      study_runner.check_manifest(workdir, study, settings, extend=extend)
    return study_report.write_report(study, workdir)
  study_runner.run_study(study, workdir, settings, shard=(index, count),
                         extend=extend, train=train)
  if count > 1:
    print(f"Shard {index}/{count} finished; run --report_only once every "
          "shard has.", flush=True)
    return None
  return study_report.write_report(study, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  terminal.quiet_logs_unless_verbosity_given()
  given = any(flags.FLAGS[name].present for name in ("seeds", "steps", "quick"))
  try:
    path = run(_STUDY.value, _WORKDIR.value, seeds=_SEEDS.value,
               steps=_STEPS.value, quick=_QUICK.value, shard=_SHARD.value,
               report_only=_REPORT_ONLY.value,
               check_settings=given or not _REPORT_ONLY.value)
  except ValueError as e:
    raise SystemExit(f"launch.ablate: error: {e}") from e
  if path:
    print(f"Report: {path}")


if __name__ == "__main__":
  app.run(main)
