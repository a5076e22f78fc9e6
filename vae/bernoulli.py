"""The Bernoulli VAE of the binary-latent benchmark, and its estimators.

The MNIST model on which REBAR (Tucker et al. 2017), RELAX (Grathwohl et
al. 2018), ARM (Yin & Zhou 2019), DisARM (Dong et al. 2020) and VIMCO (Mnih
& Rezende 2016) were compared, as the DisARM code (google-research
`disarm/binary`) builds it:

  q(b | x) = prod_i Bernoulli(b_i; sigmoid(encoder(x)_i)),  200 latents;
  p(b)     = prod_i Bernoulli(b_i; sigmoid(prior_i)), prior logits learned;
  p(x | b) = prod_d Bernoulli(x_d; sigmoid(decoder(b)_d)).

"linear": encoder and decoder are one affine map each (784 -> 200 and
200 -> 784); "nonlinear": two hidden layers (`hidden`, 200 and 200) with
leaky ReLU of slope 0.3 in each. Parameters: {"encoder", "decoder",
"prior"}. Training digits are binarised afresh per batch (vae/data.py).

Estimators of the gradient of the batch-mean -ELBO (`ESTIMATORS`). With
f(b) = log p(x, b) - log q(b | x), the ELBO integrand, and S =
`num_samples` discrete samples per digit:

  score_function     S >= 2 samples, leave-one-out baseline (Kool et al.
                     2019, Eq. 8); the samples also give the decoder and
                     prior gradient.
  arm, disarm        S / 2 antithetic pairs (S even), `common.estimators`.
  rebar, relax       S draws, `common.estimators` with kind="bernoulli";
                     REBAR's control variate eta f(sigmoid(z / lambda)),
                     RELAX's f(sigmoid(z / lambda)) + r_rho(z) (Grathwohl et
                     al. 2018, Sec. 3.3) with r_rho a leaky-ReLU MLP of
                     `relax_hidden` units on z (the DisARM code's network
                     also reads x, which with per-digit variance gradients
                     makes RELAX's step much slower); eta, lambda, rho
                     descend the variance gradient.
  vimco              trains the K-sample bound, K = S >= 2 (Mnih & Rezende
                     2016; `common.estimators.vimco_surrogate`).
  gumbel_softmax,    the binary Concrete relaxation (Maddison et al. 2017:
  st_gumbel_softmax  the Concrete distribution with two classes),
                     S relaxed samples, straight-through with hard samples
                     for st_ (Jang et al. 2017, Sec. 2.2), with the analytic
                     KL(q || p) (the categorical VAE's objective).

The antithetic and control-variate estimators give grad_logits E[f(b)] per
digit (f with every parameter held fixed) and are chained into the encoder
with jax.vjp; the direct gradient of -log q(b | x) in f has expectation
zero and is left out, as in the DisARM code. Their decoder and prior
gradient is that of f at one fresh sample b ~ q (the DisARM code's choice).

Cost per digit and step, in evaluations of the decoder (f) at a latent:
score_function S (forward and backward); arm and disarm S forward plus one
forward and backward (decoder gradient); vimco K forward and backward;
gumbel_softmax S forward and backward; rebar and relax per draw one
forward at b, forward and backward at the relaxed z and z~, and the
backward pass of the variance gradient, plus one forward and backward for
the decoder gradient.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections

from common import config_checks as checks
from common import estimators
from vae import data as vae_data
from vae import losses

Array = chex.Array
Params = dict
sg = jax.lax.stop_gradient

NUM_PIXELS = vae_data.NUM_PIXELS
ARCHITECTURES = ("linear", "nonlinear")
ESTIMATORS = ("score_function", "arm", "disarm", "rebar", "relax", "vimco",
              "gumbel_softmax", "st_gumbel_softmax")
LEAKY_SLOPE = 0.3  # The DisARM code's LeakyReLU(alpha=0.3).


def bernoulli_log_prob(b: Array, logits: Array) -> Array:
  """log prod_i Bernoulli(b_i; sigmoid(logits_i)), summed over the last axis.

  Linear in b, so it also takes relaxed b in [0, 1] (REBAR, RELAX).
  """
  return jnp.sum(b * jax.nn.log_sigmoid(logits)
                 + (1.0 - b) * jax.nn.log_sigmoid(-logits), axis=-1)


def bernoulli_kl(q_logits: Array, p_logits: Array) -> Array:
  """KL(Bernoulli(sigmoid(q)) || Bernoulli(sigmoid(p))), summed over the
  last axis: sum_i q_i log(q_i / p_i) + (1 - q_i) log((1 - q_i) / (1 - p_i)).
  """
  q = jax.nn.sigmoid(q_logits)
  return jnp.sum(
      q * (jax.nn.log_sigmoid(q_logits) - jax.nn.log_sigmoid(p_logits))
      + (1.0 - q) * (jax.nn.log_sigmoid(-q_logits)
                     - jax.nn.log_sigmoid(-p_logits)), axis=-1)


class LeakyMLP(nn.Module):
  """Dense(h) -> leaky ReLU(0.3) for each h in `hidden`, then Dense(out)."""
  hidden: tuple[int, ...]
  out: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for width in self.hidden:
      x = nn.leaky_relu(nn.Dense(width)(x), negative_slope=LEAKY_SLOPE)
    return nn.Dense(self.out)(x)


@dataclasses.dataclass(frozen=True)
class BernoulliVAE:
  """num_latents Bernoulli latents; hidden () is the linear model."""
  hidden: tuple[int, ...]
  num_latents: int

  @property
  def encoder(self) -> LeakyMLP:
    return LeakyMLP(hidden=self.hidden, out=self.num_latents)

  @property
  def decoder(self) -> LeakyMLP:
    return LeakyMLP(hidden=tuple(reversed(self.hidden)), out=NUM_PIXELS)

  def init(self, key: chex.PRNGKey) -> Params:
    k_enc, k_dec = jax.random.split(key)
    return {
        "encoder": self.encoder.init(
            k_enc, jnp.zeros((1, NUM_PIXELS)))["params"],
        "decoder": self.decoder.init(
            k_dec, jnp.zeros((1, self.num_latents)))["params"],
        "prior": jnp.zeros((self.num_latents,), jnp.float32)}

  def encode(self, encoder_params, x: Array) -> Array:
    """x [..., 784] -> logits of q(b | x) [..., L]."""
    return self.encoder.apply({"params": encoder_params}, x)

  def decode(self, decoder_params, b: Array) -> Array:
    """b [..., L] (binary or relaxed) -> Bernoulli logits [..., 784]."""
    return self.decoder.apply({"params": decoder_params}, b)

  def log_joint(self, params: Params, x: Array, b: Array) -> Array:
    """log p(x | b) + log p(b) [...] for b [..., L], x broadcastable."""
    return (losses.bernoulli_log_likelihood(
        self.decode(params["decoder"], b), x)
            + bernoulli_log_prob(b, params["prior"]))

  def sample_posterior(self, key, logits: Array, num_samples: int) -> Array:
    """b ~ q(b | x), float {0, 1} [B, S, L]."""
    shape = (logits.shape[0], num_samples, logits.shape[-1])
    return jax.random.bernoulli(
        key, jax.nn.sigmoid(logits)[:, None], shape).astype(logits.dtype)

  def log_weights(self, params: Params, x: Array, key: chex.PRNGKey, *,
                  num_samples: int) -> Array:
    """log p(x, b_s) - log q(b_s | x) for b_s ~ q, [B, S] (Burda Eq. 8)."""
    logits = self.encode(params["encoder"], x)
    b = self.sample_posterior(key, logits, num_samples)
    return (self.log_joint(params, x[:, None], b)
            - bernoulli_log_prob(b, logits[:, None]))

  def reconstruct(self, params: Params, x: Array, key) -> Array:
    logits = self.encode(params["encoder"], x)
    b = self.sample_posterior(key, logits, 1)[:, 0]
    return jax.nn.sigmoid(self.decode(params["decoder"], b))

  def sample_prior(self, params: Params, key, num: int) -> Array:
    """Decoder means at b ~ p(b) (the learned prior), [num, 784]."""
    b = jax.random.bernoulli(key, jax.nn.sigmoid(params["prior"]),
                             (num, self.num_latents)).astype(jnp.float32)
    return jax.nn.sigmoid(self.decode(params["decoder"], b))


# --- Config ------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> None:
  """The Bernoulli model's fields (the shared ones: vae.train.check_config)."""
  checks.one_of(config, "architecture", ARCHITECTURES)
  checks.one_of(config, "estimator", ESTIMATORS)
  estimator, samples = config.estimator, config.num_samples
  if estimator in ("arm", "disarm") and samples % 2:
    raise ValueError(
        f"config.num_samples counts the samples of {estimator}'s antithetic "
        f"pairs, so it must be even; got {samples}.")
  if estimator in ("score_function", "vimco") and samples < 2:
    raise ValueError(
        f"{estimator} needs config.num_samples >= 2 (a leave-one-out "
        f"baseline); got {samples}.")


def make_model(config: ml_collections.ConfigDict) -> BernoulliVAE:
  """The linear or nonlinear model of `config.architecture`."""
  hidden = {"linear": (), "nonlinear": tuple(config.hidden)}
  return BernoulliVAE(hidden=hidden[config.architecture],
                      num_latents=config.num_latents)


class RelaxNet(nn.Module):
  """r_rho(z): leaky-ReLU MLP on z [..., L] -> scalar [...]."""
  hidden: int

  @nn.compact
  def __call__(self, z: Array) -> Array:
    h = nn.leaky_relu(nn.Dense(self.hidden)(z), negative_slope=LEAKY_SLOPE)
    return nn.Dense(1)(h)[..., 0]


def init_cv_params(key: chex.PRNGKey,
                   config: ml_collections.ConfigDict) -> dict:
  """REBAR {"eta", "log_temperature"}, RELAX {"log_temperature", "net"}."""
  log_temperature = jnp.asarray(math.log(config.cv_temperature), jnp.float32)
  if config.estimator == "rebar":
    return {"eta": jnp.asarray(config.rebar_eta, jnp.float32),
            "log_temperature": log_temperature}
  if config.estimator == "relax":
    net = RelaxNet(hidden=config.relax_hidden).init(
        key, jnp.zeros(config.num_latents))["params"]
    return {"log_temperature": log_temperature, "net": net}
  return {}


# --- Estimators ---------------------------------------------------------------


class Options(NamedTuple):
  num_samples: int
  temperature: Array  # Gumbel-softmax tau of this step.
  relax_hidden: int


def _elbo_integrand(model, params, x_n, logits_n) -> Callable[[Array], Array]:
  """f(b) = log p(x_n, b) - log q(b | x_n) with every parameter fixed."""
  params, logits_n = sg(params), sg(logits_n)
  return lambda b: (model.log_joint(params, x_n, b)
                    - bernoulli_log_prob(b, logits_n))


def _decoder_prior_grads(model, params, x, logits, key):
  """Gradient of -mean f at one fresh b ~ q for "decoder" and "prior"."""
  b = model.sample_posterior(key, sg(logits), 1)

  def loss(p):
    log_w = (model.log_joint(p, x[:, None], b)
             - bernoulli_log_prob(b, sg(logits)[:, None]))
    return -jnp.mean(log_w)

  return jax.value_and_grad(loss)({"decoder": params["decoder"],
                                   "prior": params["prior"]})


def _chained(per_example):
  """Estimators of grad_logits E[f(b)] per digit, chained into the encoder.

  `per_example(f_n, logits_n, key_n, cv_params, options)` returns
  (grad_logits [L], cv_grads); the encoder gradient of the batch-mean -ELBO
  is vjp(-grad_logits / B), cv_grads are averaged over the batch.
  """

  def grads(model, params, cv_params, x, key, options):
    k_estimate, k_decoder = jax.random.split(key)
    logits, encoder_vjp = jax.vjp(lambda p: model.encode(p, x),
                                  params["encoder"])

    def one(x_n, logits_n, key_n):
      f_n = _elbo_integrand(model, params, x_n, logits_n)
      return per_example(f_n, logits_n, key_n, cv_params, options)

    keys = jax.random.split(k_estimate, x.shape[0])
    grad_logits, cv_grads = jax.vmap(one)(x, sg(logits), keys)
    (encoder_grads,) = encoder_vjp(-grad_logits / x.shape[0])
    loss, rest = _decoder_prior_grads(model, params, x, logits, k_decoder)
    cv_grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), cv_grads)
    return {"encoder": encoder_grads, **rest}, cv_grads, loss

  return grads


def _antithetic(estimator):
  def per_example(f_n, logits_n, key_n, cv_params, options):
    del cv_params
    return estimator(f_n, logits_n, key_n,
                     num_samples=options.num_samples // 2), {}
  return _chained(per_example)


def _rebar(f_n, logits_n, key_n, cv_params, options):
  return estimators.rebar_grad(
      f_n, logits_n, key_n, eta=cv_params["eta"],
      log_temperature=cv_params["log_temperature"], kind="bernoulli",
      num_samples=options.num_samples)


def _relax(f_n, logits_n, key_n, cv_params, options):
  def control_variate(phi, z):
    relaxed = jax.nn.sigmoid(z / jnp.exp(phi["log_temperature"]))
    return f_n(relaxed) + RelaxNet(hidden=options.relax_hidden).apply(
        {"params": phi["net"]}, z)

  return estimators.relax_grad(
      f_n, logits_n, key_n, control_variate=control_variate,
      cv_params=cv_params, kind="bernoulli", num_samples=options.num_samples)


def _score_function(model, params, cv_params, x, key, options):
  """S samples, f = ELBO integrand, leave-one-out baseline."""
  del cv_params

  def loss(p):
    logits = model.encode(p["encoder"], x)
    b = sg(model.sample_posterior(key, logits, options.num_samples))
    log_q = bernoulli_log_prob(b, logits[:, None])  # Score term.
    f = model.log_joint(p, x[:, None], b) - sg(log_q)  # [B, S]
    baseline = estimators.leave_one_out_baseline(sg(f), axis=1)
    encoder_term = estimators.score_function_surrogate(log_q, f, baseline)
    decoder_term = jnp.mean(f) - sg(jnp.mean(f))
    return -(encoder_term + decoder_term)

  value, grads = jax.value_and_grad(loss)(params)
  return grads, {}, value


def _vimco(model, params, cv_params, x, key, options):
  """The K-sample bound, K = num_samples, with VIMCO's gradient."""
  del cv_params

  def loss(p):
    logits = model.encode(p["encoder"], x)
    b = sg(model.sample_posterior(key, logits, options.num_samples))
    log_q = bernoulli_log_prob(b, logits[:, None])
    log_w = model.log_joint(p, x[:, None], b) - log_q
    return -estimators.vimco_surrogate(log_w, log_q, axis=1)

  value, grads = jax.value_and_grad(loss)(params)
  return grads, {}, value


def _relaxed(hard: bool):
  """Binary Concrete samples: Gumbel-softmax over the classes (0, 1) with
  logits (0, l), i.e. sigmoid((l + logistic noise) / tau)."""

  def grads(model, params, cv_params, x, key, options):
    del cv_params

    def loss(p):
      logits = model.encode(p["encoder"], x)
      shape = (x.shape[0], options.num_samples, logits.shape[-1])
      two_class = jnp.stack([jnp.zeros(shape),
                             jnp.broadcast_to(logits[:, None], shape)], -1)
      z = estimators.gumbel_softmax(key, two_class,
                                    temperature=options.temperature,
                                    hard=hard)[..., 1]
      log_lik = losses.bernoulli_log_likelihood(
          model.decode(p["decoder"], z), x[:, None])
      return jnp.mean(bernoulli_kl(logits, p["prior"])
                      - jnp.mean(log_lik, axis=1))

    value, grads = jax.value_and_grad(loss)(params)
    return grads, {}, value

  return grads


GRADS = {
    "score_function": _score_function,
    "arm": _antithetic(estimators.arm_grad),
    "disarm": _antithetic(estimators.disarm_grad),
    "rebar": _chained(_rebar),
    "relax": _chained(_relax),
    "vimco": _vimco,
    "gumbel_softmax": _relaxed(hard=False),
    "st_gumbel_softmax": _relaxed(hard=True),
}


def make_grad_fn(model: BernoulliVAE, config: ml_collections.ConfigDict,
                 temperature_at: Callable[[Array], Array]) -> Callable:
  """(params, cv_params, x, key, step) -> (grads, cv_grads, metrics).

  `metrics["train_loss"]` is the batch's training loss: the -ELBO estimate
  at the samples drawn (for vimco, minus the K-sample bound; for the
  relaxations, the relaxed objective).
  """
  estimate = GRADS[config.estimator]

  def grad_fn(params, cv_params, x, key, step):
    options = Options(num_samples=config.num_samples,
                      temperature=temperature_at(step),
                      relax_hidden=config.relax_hidden)
    grads, cv_grads, loss = estimate(model, params, cv_params, x, key,
                                     options)
    if not cv_grads:
      cv_grads = jax.tree.map(jnp.zeros_like, cv_params)
    return grads, cv_grads, {"train_loss": loss}

  return grad_fn


# --- Evaluation ---------------------------------------------------------------


def make_evaluate(model: BernoulliVAE, config: ml_collections.ConfigDict):
  """Jitted (params, test, key) -> {"test_neg_bound", "test_neg_elbo"}.

  With K = config.eval_samples samples per test digit (100 in the preset,
  the test bound of the DisARM benchmark), in chunks of config.iw_batch
  digits: -L_K, the negative K-sample bound (Burda et al. 2016, Eq. 8), and
  the negative ELBO estimated by the mean of the same K log weights.
  """

  def evaluate(params, test, key):
    x = test.reshape(-1, config.iw_batch, test.shape[-1])
    keys = jax.random.split(key, x.shape[0])

    def chunk(args):
      log_w = model.log_weights(params, *args,
                                num_samples=config.eval_samples)
      return (jnp.mean(losses.importance_weighted_bound(log_w)),
              jnp.mean(log_w))

    bound, elbo = jax.lax.map(chunk, (x, keys))
    return {"test_neg_bound": -jnp.mean(bound),
            "test_neg_elbo": -jnp.mean(elbo)}

  return jax.jit(evaluate)


def decoder_evaluations(estimator: str, num_samples: int) -> int:
  """Forward evaluations of the decoder per digit in one training step.

  The count of latents (binary or relaxed) that one training step passes
  through the decoder per digit, as the module docstring lists them, with
  S = num_samples: S for score_function, vimco and the relaxations; S + 1
  for arm and disarm (S / 2 antithetic pairs, two evaluations each, and one
  fresh sample for the decoder gradient); 3 S + 1 for rebar and relax (f at
  b, z and z~ per draw, and the fresh sample). Backward passes are not
  counted.

  Args:
    estimator: one of `ESTIMATORS`.
    num_samples: S, the config's num_samples.

  Returns:
    Forward passes per digit.

  Example:
    >>> decoder_evaluations("disarm", 2), decoder_evaluations("rebar", 1)
    (3, 4)
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {ESTIMATORS}; got "
                     f"{estimator!r}.")
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int; got "
                     f"{num_samples!r}.")
  if estimator in ("arm", "disarm"):
    return num_samples + 1
  if estimator in ("rebar", "relax"):
    return 3 * num_samples + 1
  return num_samples


class TimedStep:
  """A jitted training step, compiled before its first call, that records
  the wall-clock seconds of its last call (compilation excluded, the device
  work waited for): the eval.csv column step_seconds is `seconds` / stride.
  """

  def __init__(self, step: Callable[[Any], Any]):
    self._step = step
    self._compiled = None
    self.seconds = math.nan

  def __call__(self, state):
    if self._compiled is None:
      self._compiled = self._step.lower(state).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(self._compiled(state))
    self.seconds = time.perf_counter() - start
    return out
