"""Training a small MoE model on the mixture-of-domains task.

`train(config, workdir)` is the whole entry point (the launcher only parses
flags). The model embeds the L context tokens, mixes them with a dense layer,
applies one MoE layer with a residual connection and predicts the next token.
Training state is a `flax.training.train_state.TrainState`; `lax.scan` runs
`eval_every` updates inside one jitted, state-donating call
(`common.training_loop`); keys come from `fold_in(rng, step)`.

Logged per evaluation to `workdir/eval.csv` (and TensorBoard): the expected
cross-entropy on a fixed evaluation set, the Bayes-optimal loss and the
excess, and the Table 6 columns of Shazeer et al. 2017 (CV(Importance),
CV(Load), max/mean load), measured on the evaluation set in eval mode (no
noise) and on the last training batch (with noise).

Nothing is lost: after every evaluation the training state and the full
config are checkpointed atomically (`common.checkpointing`, orbax);
rerunning the same command resumes from the latest checkpoint and continues
the same run (data and gating keys depend only on the seed and the step), so
eval.csv ends up the same as an uninterrupted run's. The run holds
`workdir/run.lock` (one writer per workdir); a resume under a config that
differs from the checkpoint's outside `RESUME_ALLOWED` is refused with an
error naming each changed field; a damaged latest checkpoint is set aside and
the run resumes from the newest one that restores. A non-finite training
loss stops the run with an error naming the loss and step; the last good
checkpoint stays.

Outputs in `workdir`: config.json, eval.csv, tensorboard/ (if
config.tensorboard), checkpoints/, run.lock.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from common import checkpointing
from common import config_checks as checks
from common import train_state
from common import training_loop
from moe import layer as moe_layer
from moe import task as moe_task

Array = chex.Array

EVAL_COLUMNS = (
    "step", "train_loss", "train_aux_loss", "eval_loss", "bayes_loss",
    "excess_loss", "cv_importance", "cv_load", "max_over_mean_load",
    "train_cv_importance", "train_cv_load", "train_max_over_mean_load",
    "fraction_dropped", "router_entropy", "seconds")


class NextTokenMoE(nn.Module):
  """Embeddings of the context -> Dense -> x + MoE(x) -> next-token logits."""
  vocab_size: int
  d_model: int
  moe: moe_layer.MoE

  @nn.compact
  def __call__(self, context: Array, *, train: bool):
    """context: int [B, L] -> (logits [B, V], MoEAux)."""
    chex.assert_rank(context, 2)
    emb = nn.Embed(self.vocab_size, self.d_model)(context)
    h = nn.relu(nn.Dense(self.d_model)(emb.reshape(context.shape[0], -1)))
    y, aux = self.moe(h, train=train)
    h = nn.LayerNorm()(h + y)
    return nn.Dense(self.vocab_size)(h), aux


# The config fields a resume may change; every other field must equal the
# checkpoint's. None changes the trajectory: num_steps extends or ends the
# run (keys depend on the seed and step only); tensorboard and progress_bar
# only choose outputs. (eval_every is checked: it sets the scan length of
# the compiled update and which steps are evaluated.)
RESUME_ALLOWED = ("num_steps", "tensorboard", "progress_bar")
LOSS_NAMES = ("train_loss", "train_aux_loss")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises TypeError or ValueError naming the first bad config value."""
  checks.all_positive_ints(config, (
      "num_domains", "vocab_size", "context_length", "d_model",
      "num_experts", "k", "expert_hidden", "batch_size", "num_steps",
      "eval_every", "eval_batch_size"))
  checks.integer(config, "seed", minimum=0)
  checks.all_non_negative(config, ("w_importance", "w_load", "switch_alpha",
                                   "z_loss"))
  checks.all_positive(config, ("learning_rate", "concentration",
                               "gumbel_temperature"))
  checks.integer(config, "vocab_size", minimum=2)
  checks.multiple_of(config, "num_steps", "eval_every")
  moe_layer.check_moe_options(
      num_experts=config.num_experts, k=config.k,
      expert_hidden=config.expert_hidden,
      capacity_factor=config.capacity_factor,
      routing_gradient=config.routing_gradient,
      block_sizes=tuple(config.block_sizes),
      gumbel_temperature=config.gumbel_temperature)


def make_model(config: ml_collections.ConfigDict) -> NextTokenMoE:
  """The model named by the config (fields passed explicitly, no splat)."""
  moe = moe_layer.MoE(
      num_experts=config.num_experts, k=config.k,
      expert_hidden=config.expert_hidden,
      capacity_factor=config.capacity_factor,
      w_importance=config.w_importance, w_load=config.w_load,
      switch_alpha=config.switch_alpha, z_loss=config.z_loss,
      noise=config.noise, routing_gradient=config.routing_gradient,
      gumbel_temperature=config.gumbel_temperature,
      block_sizes=tuple(config.block_sizes))
  return NextTokenMoE(vocab_size=config.vocab_size, d_model=config.d_model,
                      moe=moe)


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> optax.GradientTransformation:
  """Adam with the configured step size."""
  return optax.adam(config.learning_rate)


def make_update(model: NextTokenMoE, optimizer: optax.GradientTransformation,
                task: moe_task.DomainMixture,
                config: ml_collections.ConfigDict, rng: chex.PRNGKey):
  """Returns one update: (TrainState) -> (TrainState, metrics by name)."""

  def update(state: train_state.TrainState, _=None):
    key = jax.random.fold_in(rng, state.step)
    k_data, k_gate = jax.random.split(key)
    batch = moe_task.sample_batch(k_data, task, batch_size=config.batch_size,
                                  context_length=config.context_length)

    def loss_fn(params):
      logits, aux = model.apply({"params": params}, batch.context,
                                train=True, rngs={"gating": k_gate})
      ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits, batch.target))
      return ce + aux.loss, (ce, aux)

    grads, (ce, aux) = jax.grad(loss_fn, has_aux=True)(state.params)
    metrics = {"train_loss": ce, "train_aux_loss": aux.loss,
               "train_cv_importance": aux.cv_importance,
               "train_cv_load": aux.cv_load,
               "train_max_over_mean_load": aux.max_over_mean_load}
    return state.apply_gradients(grads, optimizer), metrics

  return update


def make_evaluate(model: NextTokenMoE, task: moe_task.DomainMixture):
  """Returns a jitted (params, context) -> metrics in eval mode."""

  def evaluate(params, context):
    logits, aux = model.apply({"params": params}, context, train=False)
    log_p = moe_task.bayes_log_predictive(task, context)
    eval_loss = moe_task.expected_cross_entropy(
        log_p, jax.nn.log_softmax(logits, axis=-1))
    bayes = moe_task.expected_cross_entropy(log_p, log_p)
    return {"eval_loss": eval_loss, "bayes_loss": bayes,
            "excess_loss": eval_loss - bayes,
            "cv_importance": aux.cv_importance, "cv_load": aux.cv_load,
            "max_over_mean_load": aux.max_over_mean_load,
            "fraction_dropped": aux.fraction_dropped,
            "router_entropy": aux.router_entropy}

  return jax.jit(evaluate)


def _postfix(rows: list[dict]) -> dict[str, str]:
  """The progress bar's postfix: evaluation loss, Bayes loss, CV(Load)."""
  row = rows[0]
  return {"loss": f"{row['eval_loss']:.3f}",
          "bayes": f"{row['bayes_loss']:.3f}",
          "cv_load": f"{row['cv_load']:.2f}"}


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes), writing `workdir/eval.csv` and TensorBoard events.

  Args:
    config: see `launch/configs/moe.py`.
    workdir: output directory (created); holds config.json, eval.csv,
      checkpoints/, tensorboard/ and run.lock (see the module doc).

  Returns:
    The last evaluation's metrics.
  """
  check_config(config)
  rng = jax.random.key(config.seed)
  k_task, k_init, k_eval, k_train = jax.random.split(rng, 4)
  task = moe_task.make_task(k_task, num_domains=config.num_domains,
                            vocab_size=config.vocab_size,
                            concentration=config.concentration)
  eval_batch = moe_task.sample_batch(k_eval, task,
                                     batch_size=config.eval_batch_size,
                                     context_length=config.context_length)
  model = make_model(config)
  optimizer = make_optimizer(config)
  state = train_state.create(
      tx=optimizer,
      params=jax.jit(model.init, static_argnames="train")(
          k_init, eval_batch.context[:2], train=False)["params"])
  evaluate = make_evaluate(model, task)
  every = training_loop.Every(config.eval_every)
  program = training_loop.Program(
      stride=config.eval_every,
      step=jax.jit(training_loop.scan_chunk(
          make_update(model, optimizer, task, config, k_train),
          config.eval_every,
          LOSS_NAMES), donate_argnums=0),
      evaluate=lambda s, step, _, metrics: [{
          "step": step, **_floats(metrics),
          **_floats(evaluate(s.params, eval_batch.context))}],
      eval_columns=EVAL_COLUMNS, loss_names=LOSS_NAMES,
      evaluate_every=every, checkpoint_every=every, postfix=_postfix,
      desc="moe")
  with checkpointing.open_run(workdir, config,
                              allowed_changes=RESUME_ALLOWED) as run:
    _, rows = training_loop.run(
        run, state, program, workdir=workdir, num_steps=config.num_steps,
        tensorboard=config.tensorboard, progress_bar=config.progress_bar)
  return rows[0] if rows else {}


def _floats(metrics: dict) -> dict[str, float]:
  return {name: float(value) for name, value in metrics.items()}
