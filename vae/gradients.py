"""Gradient estimates of the negative ELBO, one function per estimator.

Each `*_grads` function returns (gradients of the parameter dict, loss),
plus, for REBAR and RELAX, the gradient of their control-variate parameters.
The decoder gradient is always the ordinary gradient of -log p(x | latent)
at sampled latents; the estimators differ in how the gradient reaches the
encoder through the sampling of the latent. KL terms are analytic and
differentiated directly.

Gaussian VAE, `encoder_grad`:
  "pathwise": z = mu + sigma * eps (Kingma & Welling 2014, Eq. 10);
  "score_function": S samples, leave-one-out baseline (Williams 1992;
    Kool et al. 2019, Eq. 8) on f(z) = log p(x | z).
Categorical VAE, `estimator`:
  "gumbel_softmax": relaxed samples, biased (Jang et al. 2017, Eq. 1);
  "st_gumbel_softmax": one-hot forward, relaxed backward (Jang Sec. 2.2);
  "score_function": exact samples, leave-one-out baseline;
  "rebar": Tucker et al. 2017, control variate eta * f(sigma_lambda(z)),
    eta and lambda tuned online by their variance gradient;
  "relax": Grathwohl et al. 2018, Sec. 3.3, control variate
    c(z) = f(sigma_lambda(z)) + r_rho(z) with a small MLP r_rho, lambda and
    rho tuned online by the variance gradient.
  REBAR and RELAX are applied per data point (jax.vmap) to
  f_n(b) = log p(x_n | b); their logits gradient is chained into the encoder
  parameters with jax.vjp.
VQ-VAE: straight-through (van den Oord et al. 2017, Eq. 3).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from common import estimators
from vae import losses
from vae import models

Array = chex.Array
sg = jax.lax.stop_gradient

GAUSSIAN_ENCODER_GRADS = ("pathwise", "score_function")
CATEGORICAL_ESTIMATORS = ("gumbel_softmax", "st_gumbel_softmax",
                          "score_function", "rebar", "relax")


def gumbel_temperature(step: Array, *, initial: float, minimum: float,
                       anneal_rate: float, anneal_every: int) -> Array:
  """tau = max(minimum, initial * exp(-r * t)), t updated every N steps.

  The annealing schedule of Jang et al. 2017, Sec. 4 (tau = max(0.5,
  exp(-r t)), r in {1e-5, 1e-4}, updated every N in {500, 1000} steps).
  """
  t = (step // anneal_every) * anneal_every
  return jnp.maximum(minimum, initial * jnp.exp(-anneal_rate * t))


def _score_function_loss(log_q: Array, log_lik: Array, kl: Array) -> Array:
  """Surrogate -ELBO: score-function encoder gradient, ordinary decoder one.

  log_q, log_lik: [B, S] with log_q = log q(latent_s | x) (gradient to the
  encoder) and log_lik = log p(x | sg(latent_s)) (gradient to the decoder);
  kl: [B]. The value is the Monte-Carlo -ELBO estimate.
  """
  baseline = estimators.leave_one_out_baseline(sg(log_lik), axis=1)
  encoder_term = estimators.score_function_surrogate(log_q, log_lik, baseline)
  decoder_term = jnp.mean(log_lik) - sg(jnp.mean(log_lik))
  return jnp.mean(kl) - (encoder_term + decoder_term)


def gaussian_grads(model: models.GaussianVAE, params, x: Array,
                   key: chex.PRNGKey, *, encoder_grad: str,
                   num_samples: int) -> tuple[Any, Array]:
  """Gradient of the batch-mean -ELBO and its value, x [B, 784]."""

  def pathwise_loss(p):
    return jnp.mean(model.neg_elbo(p, x, key, num_samples=num_samples))

  def score_function_loss(p):
    mean, log_var = model.encode(p["encoder"], x)
    z = sg(model.sample_posterior(key, mean, log_var, num_samples))
    log_q = losses.gaussian_log_density(z, mean[:, None], log_var[:, None])
    log_lik = losses.bernoulli_log_likelihood(
        model.decode(p["decoder"], z), x[:, None])
    kl = losses.gaussian_kl_to_standard_normal(mean, log_var)
    return _score_function_loss(log_q, log_lik, kl)

  loss_fns = {"pathwise": pathwise_loss,
              "score_function": score_function_loss}
  if encoder_grad not in loss_fns:
    raise ValueError(f"encoder_grad must be one of {GAUSSIAN_ENCODER_GRADS}; "
                     f"got {encoder_grad!r}.")
  loss, grads = jax.value_and_grad(loss_fns[encoder_grad])(params)
  return grads, loss


class RelaxNet(nn.Module):
  """r_rho(z): MLP on the flattened relaxed sample [N, K] -> scalar."""
  hidden: int

  @nn.compact
  def __call__(self, z: Array) -> Array:
    h = nn.relu(nn.Dense(self.hidden)(z.reshape(-1)))
    return nn.Dense(1)(h)[0]


def init_control_variate(key: chex.PRNGKey, *, estimator: str,
                         latent_shape: tuple[int, int], relax_hidden: int,
                         rebar_eta: float, cv_temperature: float) -> dict:
  """Initial control-variate parameters ({} for estimators without one)."""
  log_temperature = jnp.asarray(math.log(cv_temperature), jnp.float32)
  if estimator == "rebar":
    return {"eta": jnp.asarray(rebar_eta, jnp.float32),
            "log_temperature": log_temperature}
  if estimator == "relax":
    net = RelaxNet(hidden=relax_hidden).init(
        key, jnp.zeros(latent_shape))["params"]
    return {"log_temperature": log_temperature, "net": net}
  return {}


def _relaxed_decoder_log_lik(model, decoder_params, x_n, temperature, z):
  """f(sigma_lambda(z)) = log p(x_n | softmax(z / lambda))."""
  soft = jax.nn.softmax(z / temperature, axis=-1)
  return losses.bernoulli_log_likelihood(model.decode(decoder_params, soft),
                                         x_n)


def categorical_grads(model: models.CategoricalVAE, params, cv_params,
                      x: Array, key: chex.PRNGKey, *, estimator: str,
                      num_samples: int, temperature: Array,
                      relax_hidden: int = 0):
  """(gradient of the batch-mean -ELBO, control-variate gradient, -ELBO).

  `temperature` is the Gumbel-softmax temperature (unused by the estimators
  of the discrete model). The control-variate gradient is {} except for
  "rebar" and "relax", where it is the batch mean of the per-example
  gradient of the estimate's squared norm.
  """
  if estimator in ("gumbel_softmax", "st_gumbel_softmax"):
    hard = estimator == "st_gumbel_softmax"

    def relaxed_loss(p):
      logits = model.encode(p["encoder"], x)
      shape = (x.shape[0], num_samples, *model.latent_shape)
      z = estimators.gumbel_softmax(
          key, jnp.broadcast_to(logits[:, None], shape),
          temperature=temperature, hard=hard)
      log_lik = losses.bernoulli_log_likelihood(model.decode(p["decoder"], z),
                                                x[:, None])
      return jnp.mean(losses.categorical_kl_to_uniform(logits)
                      - jnp.mean(log_lik, axis=1))

    loss, grads = jax.value_and_grad(relaxed_loss)(params)
    return grads, {}, loss

  if estimator == "score_function":

    def score_function_loss(p):
      logits = model.encode(p["encoder"], x)
      b = sg(model.sample_posterior(key, logits, num_samples))
      log_q = losses.categorical_log_prob(b, logits[:, None])
      log_lik = losses.bernoulli_log_likelihood(
          model.decode(p["decoder"], b), x[:, None])
      kl = losses.categorical_kl_to_uniform(logits)
      return _score_function_loss(log_q, log_lik, kl)

    loss, grads = jax.value_and_grad(score_function_loss)(params)
    return grads, {}, loss

  if estimator in ("rebar", "relax"):
    return _control_variate_grads(model, params, cv_params, x, key,
                                  estimator=estimator, num_samples=num_samples,
                                  relax_hidden=relax_hidden)
  raise ValueError(f"estimator must be one of {CATEGORICAL_ESTIMATORS}; got "
                   f"{estimator!r}.")


def _control_variate_grads(model, params, cv_params, x, key, *, estimator,
                           num_samples, relax_hidden):
  """REBAR / RELAX encoder gradients per data point, chained with jax.vjp."""
  k_estimate, k_decoder = jax.random.split(key)
  batch = x.shape[0]
  decoder_params = sg(params["decoder"])
  logits, encoder_vjp = jax.vjp(lambda p: model.encode(p, x),
                                params["encoder"])

  def per_example(x_n, logits_n, key_n):
    def f_n(b):  # log p(x_n | b); b one-hot or relaxed, [N, K].
      return losses.bernoulli_log_likelihood(
          model.decode(decoder_params, b), x_n)

    if estimator == "rebar":
      return estimators.rebar_grad(
          f_n, logits_n, key_n, eta=cv_params["eta"],
          log_temperature=cv_params["log_temperature"], kind="categorical",
          num_samples=num_samples)

    def control_variate(phi, z):
      relaxed = _relaxed_decoder_log_lik(
          model, decoder_params, x_n, jnp.exp(phi["log_temperature"]), z)
      return relaxed + RelaxNet(hidden=relax_hidden).apply(
          {"params": phi["net"]}, z)

    return estimators.relax_grad(
        f_n, logits_n, key_n, control_variate=control_variate,
        cv_params=cv_params, kind="categorical", num_samples=num_samples)

  keys = jax.random.split(k_estimate, batch)
  grad_logits, cv_grads = jax.vmap(per_example)(x, sg(logits), keys)
  cv_grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), cv_grads)

  # d(-ELBO)/d logits: analytic KL minus the estimated d E[log p(x|b)].
  kl_grad = jax.grad(
      lambda l: jnp.mean(losses.categorical_kl_to_uniform(l)))(logits)
  (encoder_grads,) = encoder_vjp(kl_grad - grad_logits / batch)

  def decoder_loss(dec):
    b = model.sample_posterior(k_decoder, sg(logits), num_samples)
    log_lik = losses.bernoulli_log_likelihood(model.decode(dec, b),
                                              x[:, None])
    return jnp.mean(losses.categorical_kl_to_uniform(sg(logits))
                    - jnp.mean(log_lik, axis=1))

  loss, decoder_grads = jax.value_and_grad(decoder_loss)(params["decoder"])
  return {"encoder": encoder_grads, "decoder": decoder_grads}, cv_grads, loss


def vqvae_grads(model: models.VQVAE, params, x: Array):
  """Gradient of the batch mean of Eq. 3's loss, and the forward metrics."""

  def loss_fn(p):
    out = model.forward(p, x)
    loss = jnp.mean(out["recon_loss"] + out["codebook_loss"]
                    + out["commitment_loss"])
    return loss, out

  (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  metrics = {"train_loss": loss,
             "train_recon_loss": jnp.mean(out["recon_loss"]),
             "train_perplexity": losses.codebook_perplexity(
                 out["indices"], model.num_codes)}
  return grads, metrics


def encoder_grad_variance(encoder_grad_fn: Callable[[chex.PRNGKey], Any],
                          key: chex.PRNGKey, *, num_repeats: int) -> Array:
  """Trace of the covariance of a stochastic encoder gradient.

  sum_j Var[g_j] over every encoder parameter j, from `num_repeats`
  estimates `encoder_grad_fn(k_r)` with keys split from `key`
  (`common.estimators.grad_moments`; the same key gives the same draws, so
  two estimators compared with one key share their random numbers).
  """
  moments = estimators.grad_moments(encoder_grad_fn, key,
                                    num_repeats=num_repeats, batch_size=4)
  return sum(jnp.sum(v) for v in jax.tree.leaves(moments.variance))
