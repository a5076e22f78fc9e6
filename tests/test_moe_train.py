"""Tests of the MoE task (Bayes loss) and the training entry point.

- Task: the Bayes-optimal predictive sum_d p(d | context) T_d[last, y]
  matches brute-force enumeration, and sampled sequences follow the domain's
  Markov chain (5 SE).
- Learning and balancing: a 400-step run learns, and the balancing losses
  keep CV(load) below 0.4 on the eval set (0.3 on the last training batch),
  while without them it exceeds 0.5 and twice the balanced run's value.
- Determinism and resume: two runs with the same seed write the same
  `eval.csv`, and a run interrupted after its first checkpoint and rerun
  writes it too. The run config is replaced atomically and checked on resume.
- A non-finite training loss stops the run at the step it first shows, with
  the checkpoint before it kept. Bad config values raise errors.
"""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import checkpointing
from common import csv_logs
from launch.configs import moe as moe_config
from moe import layer as moe_layer
from moe import task as moe_task
from moe import train as moe_train


def _task():
  return moe_task.make_task(jax.random.key(0), num_domains=3, vocab_size=5,
                            concentration=0.3)


def test_bayes_predictive_matches_brute_force_enumeration():
  """p(y | context) by summing the joint over domains, computed naively."""
  task = _task()
  batch = moe_task.sample_batch(jax.random.key(1), task, batch_size=6,
                                context_length=4)
  log_pred = moe_task.bayes_log_predictive(task, batch.context)
  trans = np.exp(np.asarray(task.log_transition, np.float64))
  prior = np.exp(np.asarray(task.log_prior, np.float64))
  for b, ctx in enumerate(np.asarray(batch.context)):
    joint = np.zeros(5)
    for d in range(3):
      p = prior[d] / 5.0
      for t in range(len(ctx) - 1):
        p *= trans[d, ctx[t], ctx[t + 1]]
      joint += p * trans[d, ctx[-1]]
    np.testing.assert_allclose(np.exp(log_pred[b]), joint / joint.sum(),
                               rtol=1e-4, atol=1e-6)


def test_samples_follow_the_domain_chain():
  """Empirical next-token frequencies of one domain match its transitions."""
  task = moe_task.DomainMixture(
      log_prior=jnp.log(jnp.array([1.0, 1e-30])),
      log_transition=_task().log_transition[:2])
  batch = moe_task.sample_batch(jax.random.key(2), task, batch_size=20_000,
                                context_length=1)
  assert np.all(np.asarray(batch.domain) == 0)
  first = np.asarray(batch.context[:, 0])
  target = np.asarray(batch.target)
  expected = np.exp(np.asarray(task.log_transition[0]))
  for s in range(5):
    n = int(np.sum(first == s))
    freq = np.bincount(target[first == s], minlength=5) / n
    se = np.sqrt(np.maximum(expected[s] * (1 - expected[s]), 1.0 / n) / n)
    np.testing.assert_array_less(np.abs(freq - expected[s]), 5 * se)


def _run(tmp_path, name, **overrides):
  config = moe_config.get_config("test")
  config.num_steps = 400
  config.eval_every = 200
  config.learning_rate = 1e-2
  for key, value in overrides.items():
    config[key] = value
  workdir = os.path.join(tmp_path, name)
  final = moe_train.train(config, workdir)
  with open(os.path.join(workdir, "eval.csv")) as f:
    rows = list(csv.DictReader(f))
  return final, rows


def test_training_learns_and_balancing_losses_keep_load_balanced(tmp_path):
  on, rows_on = _run(tmp_path, "on", w_importance=1.0, w_load=1.0)
  off, rows_off = _run(tmp_path, "off", w_importance=0.0, w_load=0.0)
  assert len(rows_on) == 2 and set(moe_train.EVAL_COLUMNS) <= set(rows_on[0])
  # Learns: well below the uniform predictor's log(16) = 2.77 nats, and the
  # Bayes loss is a lower bound.
  for final in (on, off):
    assert final["eval_loss"] < 2.2
    assert final["excess_loss"] > 0
  # Table 6 in miniature: without balancing the load drifts.
  assert on["cv_load"] < 0.4 and on["train_cv_load"] < 0.3
  assert off["cv_load"] > 0.5 and off["cv_load"] > 2 * on["cv_load"]


def _rows_without_time(workdir):
  return [{k: v for k, v in r.items() if k != "seconds"}
          for r in csv_logs.read_csv(os.path.join(workdir, "eval.csv"))]


def test_same_seed_same_results_and_an_interrupted_run_resumes_exactly(
    tmp_path, monkeypatch):
  config = moe_config.get_config("test")  # 40 steps, evaluations at 20, 40.
  reference = str(tmp_path / "reference")
  moe_train.train(config, reference)
  again = str(tmp_path / "again")
  moe_train.train(config, again)
  assert _rows_without_time(again) == _rows_without_time(reference)
  assert [r["step"] for r in _rows_without_time(reference)] == ["20", "40"]

  # Interrupted after the first checkpoint: the second evaluation fails.
  make_evaluate = moe_train.make_evaluate

  def failing_make_evaluate(model, task):
    evaluate = make_evaluate(model, task)
    calls = []

    def wrapped(params, context):
      calls.append(1)
      if len(calls) == 2:
        raise KeyboardInterrupt("simulated interruption")
      return evaluate(params, context)
    return wrapped

  interrupted = str(tmp_path / "interrupted")
  monkeypatch.setattr(moe_train, "make_evaluate", failing_make_evaluate)
  with pytest.raises(KeyboardInterrupt):
    moe_train.train(config, interrupted)
  monkeypatch.undo()
  assert [r["step"] for r in _rows_without_time(interrupted)] == ["20"]
  final = moe_train.train(config, interrupted)  # The same command resumes.
  assert _rows_without_time(interrupted) == _rows_without_time(reference)
  assert final["step"] == 40
  # A resume under a changed config is refused, naming the field.
  config.k = 1
  with pytest.raises(ValueError, match=r"different k \(saved 2, now 1\)"):
    moe_train.train(config, interrupted)


def test_run_config_is_replaced_atomically(tmp_path):
  workdir = str(tmp_path)
  config = moe_config.get_config("test")
  checkpointing.write_run_config(workdir, config)
  config.num_steps = 2 * config.num_steps
  checkpointing.write_run_config(workdir, config)
  assert os.listdir(workdir) == ["config.json"]  # No temporary file left.
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_steps"] == config.num_steps


def test_non_finite_loss_stops_with_named_step_and_keeps_checkpoint(
    tmp_path, monkeypatch):
  config = moe_config.get_config("test")
  # NaN updates from the 21st on: the loss is NaN from step 22.
  monkeypatch.setattr(moe_train, "make_optimizer", lambda c: optax.chain(
      optax.adam(c.learning_rate),
      optax.scale_by_schedule(
          lambda count: jnp.where(count < 20, 1.0, jnp.nan))))
  with pytest.raises(FloatingPointError,
                     match=r"non-finite train_loss=nan at step 22; "
                     r".*last good checkpoint is step 20"):
    moe_train.train(config, str(tmp_path))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 20
  ckpt.close()


@pytest.mark.parametrize("field,value,match", [
    ("k", 0, "k must be an int >= 1"),
    ("k", 9, "k must be <= num_experts"),
    ("w_load", -1.0, "config.w_load must be finite and >= 0; got -1.0"),
    ("num_steps", 30, r"num_steps \(30\) must be a multiple"),
    ("learning_rate", 0.0, "config.learning_rate must be finite and > 0"),
    ("learning_rate", float("inf"), "config.learning_rate must be finite"),
    ("gumbel_temperature", 0.0,
     r"config.gumbel_temperature must be finite and > 0; got 0.0\."),
    ("gumbel_temperature", -0.5,
     r"config.gumbel_temperature must be finite and > 0; got -0.5\."),
])
def test_bad_config_values_raise(tmp_path, field, value, match):
  config = moe_config.get_config("test")
  config[field] = value
  with pytest.raises(ValueError, match=match):
    moe_train.train(config, str(tmp_path))


def _gate_gradient_fn(config):
  """Jitted params -> d(loss)/d(w_gate) of the configured model on one batch
  of random tokens with a fixed gating key; and initial parameters."""
  tokens = jax.random.randint(jax.random.key(1),
                              (32, config.context_length + 1), 0,
                              config.vocab_size)
  context, target = tokens[:, :-1], tokens[:, -1]
  model = moe_train.make_model(config)

  def loss(params):
    logits, aux = model.apply({"params": params}, context, train=True,
                              rngs={"gating": jax.random.key(3)})
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, target)) + aux.loss

  params = jax.jit(model.init, static_argnames="train")(
      jax.random.key(2), context, train=False)["params"]
  return jax.jit(lambda p: jax.grad(loss)(p)["moe"]["w_gate"]), params


def test_gumbel_temperature_reaches_the_gate():
  config = moe_config.get_config("test")
  config.routing_gradient = "gumbel"
  config.capacity_factor = 2.0   # The simpler dispatcher compiles faster.
  config.gumbel_temperature = 0.5
  cold_fn, params = _gate_gradient_fn(config)
  cold = np.asarray(cold_fn(params))
  np.testing.assert_array_equal(cold_fn(params), cold)   # Fixed keys.
  config.gumbel_temperature = 2.0
  hot = np.asarray(_gate_gradient_fn(config)[0](params))
  assert np.all(np.isfinite(hot)) and np.abs(cold).max() > 0
  assert np.abs(hot - cold).max() > 1e-3 * np.abs(cold).max()
  with pytest.raises(ValueError, match=r"gumbel_temperature must be finite "
                     r"and > 0; got gumbel_temperature=0\.0\."):
    moe_layer.MoE(num_experts=4, k=2, expert_hidden=8,
                  routing_gradient="gumbel", gumbel_temperature=0.0).init(
                      jax.random.key(0), jnp.ones((4, 8)), train=False)
