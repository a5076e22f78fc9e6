"""The ablation studies of `launch.ablate`: an explicit registry of grids.

A study is a named grid of conditions (config overrides of one system) times
seeds. `STUDIES` maps each name to its `Study`; the runner looks names up in
that dict only.

A `System` says how to build a condition's config (full or quick), how to
train it (the trainer's own `train(config, workdir)`, imported when the first
cell runs, so a study never needs another system's code), whether its trainer
vmaps seeds (SAC: one cell = one condition with all its seeds; MoE and VAE: one
cell per seed), and which eval.csv columns the report summarises.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import ml_collections


@dataclasses.dataclass(frozen=True)
class Metric:
  column: str  # eval.csv column (or final.json key), read at the end.
  label: str   # Name in the report.
  log_y: bool = False  # Learning curves on a log scale.
  # "eval.csv" (every evaluation: finals and learning curves) or
  # "final.json" (one value per run, written after training: finals only;
  # systems with one seed per cell).
  source: str = "eval.csv"

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"Metric {self.column!r}: source must be one of "
                       f"{SOURCES}; got {self.source!r}.")


SOURCES = ("eval.csv", "final.json")


@dataclasses.dataclass(frozen=True)
class Cost:
  """A run's speed, read from one of its CSV logs (wall clock: machine load
  changes it)."""
  csv: str     # File in the run directory.
  column: str  # Column read.
  label: str   # Name in the report.
  reduce: str  # "median" over the rows of the first seed, or "last" row.


@dataclasses.dataclass(frozen=True)
class System:
  name: str
  # (preset, quick, steps or None) -> config before the condition overrides.
  make_config: Callable[[str, bool, int | None], ml_collections.ConfigDict]
  train: Callable[[ml_collections.ConfigDict, str], Any]  # Trainer entry.
  vmapped_seeds: bool     # True: config.seed + range(config.num_seeds).
  seed_column: str | None  # eval.csv column naming the seed (vmapped only).
  metrics: tuple[Metric, ...]
  cost: Cost | None = None
  # Learning-curve x axes besides the environment step, computed by
  # launch/study_report.py (`AXES`): "seconds" (train.csv wall clock),
  # "critic_evaluations" (SAC's (state, action) pairs through the critics),
  # "training_seconds" (eval.csv step_seconds, summed), "decoder_evaluations"
  # (the Bernoulli VAE's latents through the decoder per digit).
  curve_axes: tuple[str, ...] = ()

  def __post_init__(self):
    per_run = [m.column for m in self.metrics if m.source == "final.json"]
    if per_run and self.vmapped_seeds:
      raise ValueError(f"System {self.name!r}: final.json metrics {per_run} "
                       f"need one seed per cell; this system vmaps seeds.")


@dataclasses.dataclass(frozen=True)
class Condition:
  name: str    # Unique in the study; the cell directory name.
  label: str   # Row name in the report.
  task: str    # Stratum: conditions of one task are compared with each other.
  preset: str  # Config preset passed to System.make_config.
  overrides: tuple[tuple[str, Any], ...]  # (field, value) applied in order.


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  description: str  # One paragraph, printed at the top of the report.
  system: System
  conditions: tuple[Condition, ...]
  num_seeds: int  # Default seeds: 0 .. num_seeds - 1.
  steps: int | None  # Default step budget; None = the preset's.
  pairs: tuple[tuple[str, str], ...]  # (A, B) condition names: A - B.
  # Aggregates over tasks: (label, ((A, B) per task, ...)). Each seed's
  # (A - B) / |mean of B over the task's seeds|, pooled over tasks: the
  # estimate is the mean over all pooled seeds, the CI a bootstrap stratified
  # by task.
  aggregates: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

  def condition(self, name: str) -> Condition:
    for c in self.conditions:
      if c.name == name:
        return c
    raise ValueError(f"study {self.name!r} has no condition {name!r}; it has "
                     f"{[c.name for c in self.conditions]}.")


# --- SAC ---------------------------------------------------------------------


def _sac_config(preset: str, quick: bool, steps: int | None
                ) -> ml_collections.ConfigDict:
  from launch.configs import sac as sac_config
  if quick:
    config = sac_config.get_config("test")  # Tiny networks, 600 steps.
    config.env_id = preset
    config.eval_every = 300
  else:
    config = sac_config.get_config(preset)
  if steps is not None:
    config.num_steps = steps
  # A buffer at least as large as the run never wraps, and sampling draws
  # rows in [0, size), so capacity min(preset, num_steps) gives the same
  # run as the preset's 1M with a tenth of the memory and checkpoint size.
  # A larger --steps grows it exactly (sac.state_layouts.grown_buffer).
  config.buffer_size = min(config.buffer_size, config.num_steps)
  if not quick:
    # Checkpoints every 10k steps (a killed cell loses little), and kept
    # permanently at 20%, 50% and 100% of the budget for
    # benchmarks/sac_grad_variance.py (20k, 50k and 100k at 100k steps).
    config.checkpoint_every = 10_000
    config.keep_checkpoint_steps = tuple(
        config.num_steps * p // 10 // config.num_envs * config.num_envs
        for p in (2, 5, 10))
  return config


def _sac_train(config, workdir):
  from sac import train
  return train.train(config, workdir)


SAC = System(
    name="sac", make_config=_sac_config, train=_sac_train,
    vmapped_seeds=True, seed_column="seed",
    metrics=(Metric("return_mean", "deterministic eval return"),),
    cost=Cost("train.csv", "steps_per_sec",
              "environment steps per second per seed, all seeds vmapped "
              "(median over the train.csv log intervals; one gradient "
              "update per step per seed after learning_starts)", "median"),
    curve_axes=("seconds", "critic_evaluations"))


def _sac_arm(task: str, actor_grad: str, samples: int | None) -> Condition:
  if actor_grad == "pathwise" and samples is None:
    name, label, extra = f"{task}_pathwise", "pathwise", ()
  elif actor_grad == "pathwise":
    name = f"{task}_pathwise_{samples}"
    label = f"pathwise ({samples} samples)"
    extra = (("pathwise_samples", samples),)
  else:
    name = f"{task}_score_function_{samples}"
    label = f"score_function ({samples} samples)"
    extra = (("score_function_samples", samples),)
  return Condition(name=name, label=label, task=task, preset=task,
                   overrides=(("actor_grad", actor_grad),) + extra)


SAC_ACTOR_GRAD = Study(
    name="sac_actor_grad",
    description=(
        "SAC actor-gradient estimator (Haarnoja et al. 2018 MuJoCo presets): "
        "pathwise (reparameterised) vs score function with a leave-one-out "
        "baseline over 8 actions per state, on HalfCheetah-v5 and Hopper-v5 "
        "(|A| = 6 and 3), plus score function with 2 actions on "
        "HalfCheetah-v5. Final deterministic evaluation return per seed "
        "(mean over the evaluation episodes)."),
    system=SAC,
    conditions=(
        _sac_arm("HalfCheetah-v5", "pathwise", None),
        _sac_arm("HalfCheetah-v5", "score_function", 8),
        _sac_arm("HalfCheetah-v5", "score_function", 2),
        _sac_arm("Hopper-v5", "pathwise", None),
        _sac_arm("Hopper-v5", "score_function", 8),
    ),
    num_seeds=5, steps=100_000,
    pairs=(
        ("HalfCheetah-v5_score_function_8", "HalfCheetah-v5_pathwise"),
        ("HalfCheetah-v5_score_function_2", "HalfCheetah-v5_pathwise"),
        ("HalfCheetah-v5_score_function_2", "HalfCheetah-v5_score_function_8"),
        ("Hopper-v5_score_function_8", "Hopper-v5_pathwise"),
    ),
    aggregates=((
        "score_function (8) vs pathwise, both tasks",
        (("HalfCheetah-v5_score_function_8", "HalfCheetah-v5_pathwise"),
         ("Hopper-v5_score_function_8", "Hopper-v5_pathwise"))),))


SAC_ACTOR_GRAD_DIMS = Study(
    name="sac_actor_grad_dims",
    description=(
        "SAC actor-gradient estimator across action dimensions (Haarnoja et "
        "al. 2018 MuJoCo presets): pathwise with 1 and with 8 reparameterized "
        "actions per state (equal samples) and the score function with a "
        "leave-one-out baseline over 8 actions, on Hopper-v5 (|A| = 3), "
        "Walker2d-v5 (6), Ant-v5 (8) and Humanoid-v5 (17). Final "
        "deterministic evaluation return per seed (mean over the evaluation "
        "episodes)."),
    system=SAC,
    conditions=(
        _sac_arm("Hopper-v5", "pathwise", 8),
        _sac_arm("Walker2d-v5", "pathwise", None),
        _sac_arm("Walker2d-v5", "pathwise", 8),
        _sac_arm("Walker2d-v5", "score_function", 8),
        _sac_arm("Ant-v5", "pathwise", None),
        _sac_arm("Ant-v5", "score_function", 8),
        _sac_arm("Humanoid-v5", "pathwise", None),
        _sac_arm("Humanoid-v5", "score_function", 8),
        # The partner of Hopper-v5_pathwise_8: the same cell as
        # sac_actor_grad's Hopper-v5_pathwise, registered here so the pair
        # is reported in one study. Appended last, so the cells of every
        # other shard i/8 with i >= 1 are unchanged.
        _sac_arm("Hopper-v5", "pathwise", None),
    ),
    num_seeds=5, steps=100_000,
    pairs=(
        ("Hopper-v5_pathwise_8", "Hopper-v5_pathwise"),
        ("Walker2d-v5_pathwise_8", "Walker2d-v5_pathwise"),
        ("Walker2d-v5_score_function_8", "Walker2d-v5_pathwise"),
        ("Walker2d-v5_score_function_8", "Walker2d-v5_pathwise_8"),
        ("Ant-v5_score_function_8", "Ant-v5_pathwise"),
        ("Humanoid-v5_score_function_8", "Humanoid-v5_pathwise"),
    ),
    aggregates=((
        "score_function (8) vs pathwise, Walker2d, Ant, Humanoid",
        (("Walker2d-v5_score_function_8", "Walker2d-v5_pathwise"),
         ("Ant-v5_score_function_8", "Ant-v5_pathwise"),
         ("Humanoid-v5_score_function_8", "Humanoid-v5_pathwise"))),))


def _set_num_steps(config: ml_collections.ConfigDict, steps: int | None,
                   system: str) -> None:
  """Sets config.num_steps to `steps` (None: the preset's), a multiple of
  config.eval_every (the MoE and VAE trainers evaluate every eval_every)."""
  if steps is None:
    return
  if steps % config.eval_every:
    raise ValueError(
        f"--steps={steps} must be a multiple of the {system} config's "
        f"eval_every ({config.eval_every}).")
  config.num_steps = steps


# --- MoE ---------------------------------------------------------------------


def _moe_config(preset: str, quick: bool, steps: int | None
                ) -> ml_collections.ConfigDict:
  from launch.configs import moe as moe_config
  config = moe_config.get_config("test" if quick else preset)
  config.progress_bar = False  # Many runs in one log.
  _set_num_steps(config, steps, "MoE")
  return config


def _moe_train(config, workdir):
  from moe import train
  return train.train(config, workdir)


MOE = System(
    name="moe", make_config=_moe_config, train=_moe_train,
    vmapped_seeds=False, seed_column=None,
    metrics=(Metric("cv_importance", "CV(Importance)", log_y=True),
             Metric("cv_load", "CV(Load)", log_y=True),
             Metric("max_over_mean_load", "max/mean load", log_y=True),
             Metric("excess_loss", "excess loss (nats)")),
    cost=Cost("eval.csv", "seconds", "training wall seconds per run "
              "(eval.csv, last row)", "last"))


def _moe_row(w_importance: float, w_load: float, noise: bool) -> Condition:
  name = f"wi{w_importance:g}_wl{w_load:g}" + ("" if noise else "_nonoise")
  label = f"({w_importance:g}, {w_load:g})" + ("" if noise else " no noise")
  return Condition(name=name, label=label, task="mixture", preset="default",
                   overrides=(("w_importance", float(w_importance)),
                              ("w_load", float(w_load)), ("noise", noise)))


_MOE_ROWS = (
    # Shazeer et al. 2017, Table 6 (its six rows), plus both losses at 0.1
    # without gating noise (not in the paper; no load-loss gradient).
    _moe_row(0.0, 0.0, True),
    _moe_row(0.2, 0.0, True),
    _moe_row(0.0, 0.2, True),
    _moe_row(0.1, 0.1, True),
    _moe_row(0.01, 0.01, True),
    _moe_row(1.0, 1.0, True),
    _moe_row(0.1, 0.1, False),
)

MOE_TABLE6 = Study(
    name="moe_table6",
    description=(
        "Noisy top-k MoE balancing losses (Shazeer et al. 2017, Table 6) on "
        "the synthetic mixture-of-domains task (launch/configs/moe.py): the "
        "six (w_importance, w_load) rows of the paper plus (0.1, 0.1) "
        "without gating noise; rows are labelled (w_importance, w_load). "
        "Final evaluation of each run: CV(Importance), CV(Load) and max/mean "
        "load on the evaluation set (eval mode, no noise), and the excess "
        "loss over the Bayes-optimal predictor. The "
        "seed fixes the task, the initialisation and the data, so runs with "
        "the same seed are paired."),
    system=MOE, conditions=_MOE_ROWS, num_seeds=3, steps=None,
    pairs=tuple((a.name, b.name)
                for a, b in itertools.combinations(_MOE_ROWS, 2)))


# --- VAE (trainer: vae.train.train; configs: launch/configs/vae.py) -------


def _vae_config(preset: str, quick: bool, steps: int | None
                ) -> ml_collections.ConfigDict:
  from launch.configs import vae as vae_config
  if quick:
    config = vae_config.get_config("test")  # Tiny nets and data, 200 steps.
    config.model = preset
  else:
    config = vae_config.get_config(preset)
  config.progress_bar = False  # Many runs in one log.
  _set_num_steps(config, steps, "VAE")
  return config


def _vae_train(config, workdir):
  from vae import train
  return train.train(config, workdir)


VAE = System(
    name="vae", make_config=_vae_config, train=_vae_train,
    vmapped_seeds=False, seed_column=None,
    metrics=(Metric("test_neg_elbo", "test -ELBO (nats)"),),
    cost=Cost("eval.csv", "seconds", "training wall seconds per run "
              "(eval.csv, last row)", "last"))


def _vae_arm(preset: str, field: str, value: str) -> Condition:
  return Condition(name=f"{preset}_{value}", label=value, task=preset,
                   preset=preset, overrides=((field, value),))


VAE_ESTIMATORS = Study(
    name="vae_estimators",
    description=(
        "VAE encoder-gradient estimators (launch/configs/vae.py): the "
        "Gaussian VAE with pathwise vs score-function encoder gradients, and "
        "the categorical VAE with Gumbel-softmax, straight-through "
        "Gumbel-softmax, score function, REBAR and RELAX. Final test "
        "negative ELBO per seed."),
    system=VAE,
    conditions=(
        _vae_arm("gaussian", "encoder_grad", "pathwise"),
        _vae_arm("gaussian", "encoder_grad", "score_function"),
        _vae_arm("categorical", "estimator", "gumbel_softmax"),
        _vae_arm("categorical", "estimator", "st_gumbel_softmax"),
        _vae_arm("categorical", "estimator", "score_function"),
        _vae_arm("categorical", "estimator", "rebar"),
        _vae_arm("categorical", "estimator", "relax"),
    ),
    num_seeds=3, steps=None,
    pairs=(
        ("gaussian_score_function", "gaussian_pathwise"),
        ("categorical_st_gumbel_softmax", "categorical_gumbel_softmax"),
        ("categorical_score_function", "categorical_gumbel_softmax"),
        ("categorical_rebar", "categorical_score_function"),
        ("categorical_relax", "categorical_score_function"),
        ("categorical_relax", "categorical_rebar"),
    ))


# The Gaussian VAE trained on the K-sample bound (vae/iwae.py): eval.csv has
# the test -L_K next to the test -ELBO, final.json the estimate of log p(x).
VAE_IWAE = dataclasses.replace(
    VAE, metrics=(Metric("test_neg_iw_bound", "test -L_K (nats)"),
                  Metric("test_neg_elbo", "test -ELBO (nats)"),
                  Metric("test_log_px_iw", "test log p(x), the "
                         "iw_samples-sample (1,000) importance-weighted "
                         "estimate (nats)", source="final.json")))


def _iwae_arm(estimator: str, k: int) -> Condition:
  return Condition(
      name=f"gaussian_k{k}_{estimator}", label=f"{estimator}, K = {k}",
      task="gaussian", preset="gaussian",
      overrides=(("num_importance_samples", k), ("num_samples", 1),
                 ("iwae_estimator", estimator)))


IWAE_ESTIMATORS = Study(
    name="iwae_estimators",
    description=(
        "The Gaussian VAE (launch/configs/vae.py) trained on the K = 16 "
        "importance-weighted bound (Burda et al. 2016; one 16-sample bound "
        "per digit) with the standard IWAE gradient vs the doubly "
        "reparameterized gradient (DReG, Tucker et al. 2019), as in Tucker "
        "et al.'s learning comparison. Final test -L_16 and test -ELBO per "
        "seed."),
    system=VAE_IWAE,
    conditions=(_iwae_arm("iwae", 16), _iwae_arm("dreg", 16)),
    num_seeds=3, steps=None,
    pairs=(("gaussian_k16_dreg", "gaussian_k16_iwae"),))


# The sparse Gamma VAE (vae/gamma.py): eval.csv has the encoder-gradient
# variance next to the test -ELBO.
GAMMA_VAE = dataclasses.replace(
    VAE, metrics=(Metric("test_neg_elbo", "test -ELBO (nats)"),
                  Metric("encoder_grad_variance",
                         "encoder-gradient variance (trace of the "
                         "covariance)", log_y=True)))


GAMMA_ESTIMATORS = Study(
    name="gamma_estimators",
    description=(
        "The sparse Gamma VAE (launch/configs/vae.py:gamma; 20 Gamma "
        "latents, Gamma(0.3, 0.3) prior, as in Ruiz et al. 2016's sparse "
        "gamma model) trained with each Gamma encoder gradient: implicit "
        "reparameterization (Figurnov et al. 2018), reparameterization "
        "through the rejection sampler (RSVI, Naesseth et al. 2017), "
        "generalized reparameterization (G-REP, Ruiz et al. 2016) and the "
        "score function. Per seed, at the final evaluation: the test -ELBO "
        "and the encoder-gradient variance on a fixed batch with fixed "
        "keys; every checkpoint in the learning curves."),
    system=GAMMA_VAE,
    conditions=tuple(_vae_arm("gamma", "encoder_grad", grad)
                     for grad in ("implicit", "rejection", "generalized",
                                  "score_function")),
    num_seeds=3, steps=None,
    pairs=(("gamma_rejection", "gamma_implicit"),
           ("gamma_generalized", "gamma_implicit"),
           ("gamma_score_function", "gamma_implicit"),
           ("gamma_score_function", "gamma_generalized")))


# --- Bernoulli VAE (the binary-latent benchmark; vae/bernoulli.py) ---------


BERNOULLI_VAE = System(
    name="vae", make_config=_vae_config, train=_vae_train,
    vmapped_seeds=False, seed_column=None,
    metrics=(Metric("test_neg_bound",
                    "test -L_K (nats; K-sample bound, K = eval_samples)"),
             Metric("encoder_grad_variance",
                    "encoder-gradient variance (trace of the covariance)",
                    log_y=True),
             Metric("test_neg_elbo", "test -ELBO (nats)")),
    cost=Cost("eval.csv", "step_seconds", "seconds per training step "
              "(eval.csv step_seconds, median over the evaluations; "
              "compilation and evaluation excluded)", "median"),
    curve_axes=("training_seconds", "decoder_evaluations"))

# Discrete samples per digit (config.num_samples): two for the estimators
# the papers give two evaluations of f (score function, the antithetic
# pair, VIMCO's K = 2) and for the relaxations; REBAR and RELAX make one
# draw, as in their papers (f at b, and at the relaxed z and z~).
BERNOULLI_SAMPLES = {
    "score_function": (2, "2 samples"), "arm": (2, "1 pair"),
    "disarm": (2, "1 pair"), "rebar": (1, "1 draw"), "relax": (1, "1 draw"),
    "vimco": (2, "K = 2"), "gumbel_softmax": (2, "2 samples"),
    "st_gumbel_softmax": (2, "2 samples")}


def _bernoulli_arm(architecture: str, estimator: str) -> Condition:
  samples, label = BERNOULLI_SAMPLES[estimator]
  return Condition(
      name=f"{architecture}_{estimator}", label=f"{estimator} ({label})",
      task=architecture, preset="bernoulli",
      overrides=(("architecture", architecture), ("estimator", estimator),
                 ("num_samples", samples)))


def _bernoulli_pairs(architecture: str) -> tuple[tuple[str, str], ...]:
  return tuple((f"{architecture}_{a}", f"{architecture}_{b}") for a, b in (
      ("disarm", "arm"), ("disarm", "score_function"),
      ("arm", "score_function"), ("disarm", "rebar"), ("disarm", "relax"),
      ("relax", "rebar"), ("vimco", "disarm"), ("disarm", "gumbel_softmax"),
      ("st_gumbel_softmax", "gumbel_softmax")))


BERNOULLI_ESTIMATORS = Study(
    name="bernoulli_estimators",
    description=(
        "Binary latents (launch/configs/vae.py:bernoulli, the benchmark of "
        "REBAR, RELAX, ARM, DisARM and VIMCO): a VAE with 200 Bernoulli "
        "latents and a learned prior, linear or nonlinear (two hidden "
        "layers of 200, leaky ReLU), on the 4,000 dynamically binarised "
        "training digits, trained with each estimator: score function "
        "(2 samples, leave-one-out baseline), ARM and DisARM (one "
        "antithetic pair), REBAR and RELAX (one draw), VIMCO (the 2-sample "
        "bound) and the binary Concrete relaxation with and without "
        "straight-through. Per seed, at the final evaluation: the negative "
        "100-sample test bound, the encoder-gradient variance on a fixed "
        "batch with fixed keys, and the test -ELBO; every checkpoint in "
        "the learning curves."),
    system=BERNOULLI_VAE,
    conditions=tuple(_bernoulli_arm(architecture, estimator)
                     for architecture in ("linear", "nonlinear")
                     for estimator in BERNOULLI_SAMPLES),
    num_seeds=3, steps=None,
    pairs=_bernoulli_pairs("linear") + _bernoulli_pairs("nonlinear"),
    aggregates=tuple(
        (f"{a} vs {b}, both architectures",
         ((f"linear_{a}", f"linear_{b}"), (f"nonlinear_{a}",
                                           f"nonlinear_{b}")))
        for a, b in (("disarm", "arm"), ("disarm", "score_function"),
                     ("vimco", "disarm"))))


STUDIES: dict[str, Study] = {
    s.name: s for s in (SAC_ACTOR_GRAD, SAC_ACTOR_GRAD_DIMS, MOE_TABLE6,
                        VAE_ESTIMATORS, IWAE_ESTIMATORS, GAMMA_ESTIMATORS,
                        BERNOULLI_ESTIMATORS)}


def get_study(name: str) -> Study:
  """The registered study `name`; ValueError naming it otherwise."""
  if name not in STUDIES:
    raise ValueError(f"unknown study {name!r}; expected one of "
                     f"{sorted(STUDIES)}.")
  return STUDIES[name]
