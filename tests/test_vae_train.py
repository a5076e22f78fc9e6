"""End-to-end tests of vae.train: learning, resume, determinism, errors."""

import json
import math
import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from common import checkpointing
from common import csv_logs
from launch.configs import vae as vae_config
from vae import train as vae_train


def _config(model="gaussian", **overrides):
  config = vae_config.get_config("test")
  config.model = model
  for key, value in overrides.items():
    config[key] = value
  return config


# The bound of a model that predicts every pixel on with probability 1/2
# (an untrained decoder is close to it): 784 log 2 = 543.4 nats.
_COIN_FLIP_NATS = 784 * math.log(2.0)


def _rows(workdir):
  """eval.csv without its wall-clock columns."""
  return [{k: v for k, v in r.items() if k not in ("seconds", "step_seconds")}
          for r in csv_logs.read_csv(os.path.join(workdir, "eval.csv"))]


@pytest.mark.parametrize("model,estimator", [
    ("gaussian", None), ("categorical", "gumbel_softmax"), ("vqvae", None),
    ("bernoulli", "disarm")])
def test_each_preset_learns_in_a_short_run(tmp_path, model, estimator):
  config = _config(model)
  if estimator:
    config.estimator = estimator
  final = vae_train.train(config, str(tmp_path))
  for name in ("eval.csv", "config.json", "learning_curve.png", "digits.png"):
    assert os.path.exists(tmp_path / name), name
  rows = csv_logs.read_csv(str(tmp_path / "eval.csv"))
  assert [r["step"] for r in rows] == ["100", "200"]
  if model == "vqvae":
    assert set(rows[0]) >= {"step", "test_recon_loss", "codebook_perplexity"}
    # A clear margin below the coin-flip model.
    assert final["test_recon_loss"] < _COIN_FLIP_NATS - 250
    assert 1.0 <= final["codebook_perplexity"] <= config.num_codes
    return
  assert set(rows[0]) >= {"step", "test_neg_elbo"}
  assert final["test_neg_elbo"] < _COIN_FLIP_NATS - 250
  if model == "bernoulli":
    # The K-sample bound is tighter than the ELBO (Burda Thm. 1), up to
    # Monte-Carlo noise; the variance and the time per step are logged.
    assert final["test_neg_bound"] < final["test_neg_elbo"] + 1.0
    assert final["encoder_grad_variance"] > 0.0
    assert 0.0 < final["step_seconds"] < final["seconds"] / 100
  # The importance-weighted bound is tighter than the ELBO (Burda Thm. 1),
  # up to Monte-Carlo noise, and is written to final.json.
  assert final["test_log_px_iw"] > -final["test_neg_elbo"] - 1.0
  with open(tmp_path / "final.json") as f:
    saved = json.load(f)
  assert saved["test_log_px_iw"] == final["test_log_px_iw"]
  assert saved["iw_samples"] == config.iw_samples


@pytest.mark.parametrize("options", [
    {},
    # The Gaussian VAE on the K-sample bound (vae/iwae.py).
    {"num_importance_samples": 3, "iwae_estimator": "dreg"},
    # The Gamma VAE with RSVI encoder gradients (vae/gamma.py).
    {"model": "gamma", "encoder_grad": "rejection", "hidden": (8,),
     "num_latents": 2},
    # The Bernoulli VAE with DisARM (vae/bernoulli.py).
    {"model": "bernoulli", "estimator": "disarm"},
], ids=["gaussian", "iwae_dreg", "gamma_rejection", "bernoulli_disarm"])
def test_same_seed_same_results_and_an_interrupted_run_resumes_exactly(
    tmp_path, monkeypatch, options):
  config = _config(num_steps=40, eval_every=20, num_test=50, iw_samples=5,
                   **options)
  reference = str(tmp_path / "reference")
  vae_train.train(config, reference)
  assert [r["step"] for r in _rows(reference)] == ["20", "40"]
  assert list(_rows(reference)[0]) == [
      c for c in vae_train.eval_columns(config)
      if c not in ("seconds", "step_seconds")]

  # Interrupted after the first checkpoint: the second evaluation fails.
  make_evaluate = vae_train.make_evaluate

  def failing_make_evaluate(model, cfg):
    evaluate = make_evaluate(model, cfg)
    calls = []

    def wrapped(*args):
      calls.append(1)
      if len(calls) == 2:
        raise KeyboardInterrupt("simulated interruption")
      return evaluate(*args)
    return wrapped

  interrupted = str(tmp_path / "interrupted")
  monkeypatch.setattr(vae_train, "make_evaluate", failing_make_evaluate)
  with pytest.raises(KeyboardInterrupt):
    vae_train.train(config, interrupted)
  monkeypatch.undo()
  assert [r["step"] for r in _rows(interrupted)] == ["20"]
  final = vae_train.train(config, interrupted)  # The same command resumes.
  # Same seed, same results: eval.csv and final.json of the uninterrupted
  # run.
  assert _rows(interrupted) == _rows(reference)
  with open(os.path.join(reference, "final.json")) as f:
    assert json.load(f)["test_log_px_iw"] == final["test_log_px_iw"]

  # The parameters are those of the uninterrupted run, bit for bit.
  model = vae_train.make_model(config)
  like = vae_train.init_state(model, config, jax.random.key(0),
                              optax.adam(1.0), optax.adam(1.0))
  states = []
  for workdir in (reference, interrupted):
    checkpointer = checkpointing.Checkpointer(workdir)
    states.append(checkpointer.restore(40, like, with_host=False)[0])
    checkpointer.close()
  jax.tree.map(np.testing.assert_array_equal, states[0], states[1])

  # A resume under a changed config is refused, naming the field.
  config.learning_rate = 1e-2
  with pytest.raises(ValueError, match=r"different learning_rate"):
    vae_train.train(config, interrupted)


@pytest.mark.parametrize("estimator", ["rebar", "relax"])
def test_control_variate_state_is_checkpointed(tmp_path, estimator):
  """REBAR's (eta, lambda) and RELAX's (lambda, r_rho) round-trip exactly."""
  config = _config("categorical", estimator=estimator)
  model = vae_train.make_model(config)
  state = vae_train.init_state(model, config, jax.random.key(3),
                               optax.adam(1.0), optax.adam(1.0))
  state = state.replace(cv=state.cv.replace(params=jax.tree.map(
      lambda p: p + 0.125, state.cv_params)))
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(7, state, None, {"step": 7, "seconds": 0.0},
                    config={})
  like = vae_train.init_state(model, config, jax.random.key(4),
                              optax.adam(1.0), optax.adam(1.0))
  restored = checkpointer.restore(7, like, with_host=False)[0]
  checkpointer.close()
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, restored, state)


@pytest.mark.parametrize("overrides,message", [
    ({"temperature": 0.0}, r"config.temperature must be finite and > 0; "
                           r"got 0.0"),
    ({"min_temperature": -0.5}, r"config.min_temperature must be finite"),
    ({"model": "categorical", "estimator": "reinforce"},
     r"config.estimator must be one of .*'rebar', 'relax'.*got 'reinforce'"),
    ({"encoder_grad": "implicit"},
     r"config.encoder_grad must be one of .*got 'implicit'"),
    ({"model": "mixture"}, r"config.model must be one of"),
    ({"encoder_grad": "score_function", "num_samples": 1},
     r"leave-one-out baseline, which needs config.num_samples >= 2; got 1"),
    ({"num_steps": 150}, r"multiple of config.eval_every"),
    ({"num_train": 4500, "num_test": 1000}, r"must be <= 5000"),
    ({"hidden": ()}, r"config.hidden must be a non-empty tuple"),
    ({"model": "bernoulli", "estimator": "reinforce"},
     r"config.estimator must be one of .*'arm', 'disarm'.*got 'reinforce'"),
    ({"model": "bernoulli", "architecture": "deep"},
     r"config.architecture must be one of \('linear', 'nonlinear'\); got "
     r"'deep'"),
    ({"model": "bernoulli", "estimator": "disarm", "num_samples": 3},
     r"samples of disarm's antithetic pairs, so it must be even; got 3"),
    ({"model": "bernoulli", "estimator": "vimco", "num_samples": 1},
     r"vimco needs config.num_samples >= 2.*got 1"),
    ({"num_importance_samples": 0},
     r"config.num_importance_samples must be an int >= 1; got 0"),
    ({"iwae_estimator": "vimco"},
     r"config.iwae_estimator must be one of .*'dreg'.*got 'vimco'"),
    ({"model": "categorical", "num_importance_samples": 4},
     r"num_importance_samples=4 .* needs config.model='gaussian'; got "
     r"'categorical'"),
    ({"encoder_grad": "score_function", "num_importance_samples": 4},
     r"needs config.encoder_grad='pathwise'; got 'score_function'"),
    ({"model": "gamma"},
     r"config.encoder_grad must be one of \('implicit', 'rejection', "
     r"'generalized', 'score_function'\); got 'pathwise'"),
    ({"model": "gamma", "encoder_grad": "score_function", "num_samples": 1},
     r"leave-one-out baseline, which needs config.num_samples >= 2; got 1"),
    ({"prior_concentration": 0.0},
     r"config.prior_concentration must be finite and > 0; got 0.0"),
    ({"prior_rate": -0.3}, r"config.prior_rate must be finite and > 0"),
    ({"shape_augmentation": 0},
     r"config.shape_augmentation must be an int >= 1; got 0"),
    ({"variance_repeats": 1},
     r"config.variance_repeats must be an int >= 2; got 1"),
])
def test_bad_config_values_are_refused_with_a_clear_error(
    tmp_path, overrides, message):
  config = _config()
  for key, value in overrides.items():
    config[key] = value
  with pytest.raises(ValueError, match=message):
    vae_train.train(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # Refused before anything is written.


@pytest.mark.parametrize("overrides,message", [
    ({"num_importance_samples": 4.0},
     r"config.num_importance_samples must be an int >= 1; got 4.0 \(float\)"),
    ({"iwae_estimator": 3}, r"config.iwae_estimator must be one of"),
    ({"prior_rate": "0.3"}, r"config.prior_rate must be a number"),
    ({"shape_augmentation": True}, r"config.shape_augmentation must be an int"),
])
def test_config_values_of_the_wrong_type_are_refused(tmp_path, overrides,
                                                     message):
  # Not type-safe: a ConfigDict would itself refuse most of these, but a
  # config built another way (from JSON, or by hand) is checked the same.
  config = ml_collections.ConfigDict(_config().to_dict(), type_safe=False)
  for key, value in overrides.items():
    config[key] = value
  with pytest.raises(TypeError, match=message):
    vae_train.train(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_unknown_preset_is_refused():
  with pytest.raises(ValueError,
                     match=r"unknown preset 'big'; expected one of"):
    vae_config.get_config("big")
