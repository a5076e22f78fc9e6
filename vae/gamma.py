"""A VAE with sparse Gamma latents, and four encoder-gradient estimators.

The model (`config.model = "gamma"`): L = 20 latents with the sparse prior
z_l ~ Gamma(0.3, 0.3) (shape 0.3 < 1: most mass near zero, a heavy tail;
the sparse Gamma priors of the sparse gamma deep exponential family,
Ranganath et al. 2015, on which Ruiz, Titsias & Blei 2016, Sec. 5, and
Naesseth et al. 2017, Sec. 6, test their Gamma gradients), a Bernoulli
likelihood p(x | z) of the binarised digits with logits from an MLP decoder
of z (mirroring the encoder), and the encoder
q(z | x) = prod_l Gamma(z_l; alpha_l(x), beta_l(x)), shape and rate from an
MLP through softplus. The likelihood is Bernoulli, not the deep exponential
family's Poisson: the digits are binary, a Poisson would put mass on counts
above 1, and a Bernoulli makes the bound comparable in nats with the other
VAEs' (same data, same decoder family).

The -ELBO is KL(q || p) - E_q[log p(x | z)] with the Gamma-Gamma KL in
closed form (distrax). Only E_q[log p(x | z)] needs a gradient estimator;
per digit, for f_n(z) = log p(x_n | z), `encoder_grad` chooses how the
gradient of E_q[f_n] reaches (alpha, beta) (`common.estimators`):

  "implicit":       pathwise through distrax Gamma samples, whose gradient
                    is the implicit reparameterization of Figurnov et al.
                    2018, Eq. 5 (`pathwise_grad`);
  "rejection":      RSVI through the Marsaglia-Tsang sampler with shape
                    augmentation B (Naesseth et al. 2017;
                    `gamma_rejection_grad`);
  "generalized":    G-REP with the standardization of log z (Ruiz et al.
                    2016, Eqs. 6-8; `gamma_generalized_reparam_grad`);
  "score_function": S samples with the leave-one-out baseline (Williams
                    1992; Kool et al. 2019, Eq. 8;
                    `score_function_surrogate`), log q evaluated in log
                    space (the law of log z).

The (alpha, beta) gradient of each digit is chained into the encoder
parameters with jax.vjp; the KL's gradient is exact. The decoder gradient is
the ordinary gradient of log p(x | z) at S posterior samples of its own.
Densities at samples (the importance weights) are evaluated in log space:
log z is drawn with `jax.random.loggamma`, so a shape well below 1, whose z
underflows to 0 in float32, still gives finite log-densities.

References:
  Ranganath, Tang, Charlin & Blei 2015, "Deep Exponential Families"
    (AISTATS), the sparse gamma model.
  Ruiz, Titsias & Blei 2016, "The Generalized Reparameterization Gradient"
    (NeurIPS).
  Naesseth, Ruiz, Linderman & Blei 2017, "Reparameterization Gradients
    through Acceptance-Rejection Sampling Algorithms" (AISTATS).
  Figurnov, Mohamed & Mnih 2018, "Implicit Reparameterization Gradients".
  Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline
    for Free!".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import distrax
import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from common import config_checks as checks
from common import estimators
from vae import losses
from vae import models

Array = chex.Array
Params = dict
NUM_PIXELS = 784
sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class GammaVAE(models.TwoParameterMLPVAE):
  """num_latents Gamma latents; prior Gamma(prior_concentration, prior_rate).

  Example:
    >>> model = GammaVAE(hidden=(8,), num_latents=3, prior_concentration=0.3,
    ...                  prior_rate=0.3)
    >>> params = model.init(jax.random.key(0))
    >>> x = jnp.zeros((2, NUM_PIXELS))
    >>> model.log_weights(params, x, jax.random.key(1), num_samples=5).shape
    (2, 5)
  """
  prior_concentration: float
  prior_rate: float

  def encode(self, encoder_params, x: Array) -> tuple[Array, Array]:
    """x [B, 784] -> (concentration alpha [B, L], rate beta [B, L]) > 0."""
    out = self.encoder.apply({"params": encoder_params}, x)
    raw_concentration, raw_rate = jnp.split(out, 2, axis=-1)
    return jax.nn.softplus(raw_concentration), jax.nn.softplus(raw_rate)

  def decode(self, decoder_params, z: Array) -> Array:
    """z [..., L] -> Bernoulli logits [..., 784]."""
    return self.decoder.apply({"params": decoder_params}, z)

  def kl(self, concentration: Array, rate: Array) -> Array:
    """KL(q || p) per digit [B], summed over the latents (closed form)."""
    prior = distrax.Gamma(self.prior_concentration, self.prior_rate)
    return jnp.sum(distrax.Gamma(concentration, rate).kl_divergence(prior),
                   axis=-1)

  def sample_posterior(self, key, concentration: Array, rate: Array,
                       num_samples: int) -> Array:
    """z ~ q(z | x), [B, S, L] (no gradient: used for the decoder)."""
    shape = (concentration.shape[0], num_samples, concentration.shape[-1])
    z = jax.random.gamma(key, jnp.broadcast_to(concentration[:, None], shape))
    return sg(z / rate[:, None])

  def neg_elbo(self, params: Params, x: Array, key: chex.PRNGKey, *,
               num_samples: int) -> Array:
    """-ELBO per digit [B]: closed-form KL minus the S-sample mean of
    log p(x | z), z ~ q (Kingma & Welling 2014, Eq. 10, for this model)."""
    concentration, rate = self.encode(params["encoder"], x)
    z = self.sample_posterior(key, concentration, rate, num_samples)
    log_lik = losses.bernoulli_log_likelihood(
        self.decode(params["decoder"], z), x[:, None])
    return self.kl(concentration, rate) - jnp.mean(log_lik, axis=1)

  def log_weights(self, params: Params, x: Array, key: chex.PRNGKey, *,
                  num_samples: int) -> Array:
    """log p(x, z_s) - log q(z_s | x) for z_s ~ q, [B, S] (Burda Eq. 8).

    With y = log z, log p(z) - log q(z) = log p_Y(y) - log q_Y(y) (the
    Jacobian |dz/dy| = z cancels), each the log-density of the law of the
    log of a Gamma variate (TFP's ExpGamma), evaluated at y drawn by
    `jax.random.loggamma`.
    """
    concentration, rate = self.encode(params["encoder"], x)
    shape = (x.shape[0], num_samples, self.num_latents)
    log_z = jax.random.loggamma(
        key, jnp.broadcast_to(concentration[:, None], shape)) - jnp.log(
            rate[:, None])
    log_q = tfp.distributions.ExpGamma(
        concentration[:, None], rate=rate[:, None]).log_prob(log_z)
    log_prior = tfp.distributions.ExpGamma(
        self.prior_concentration, rate=self.prior_rate).log_prob(log_z)
    log_lik = losses.bernoulli_log_likelihood(
        self.decode(params["decoder"], jnp.exp(log_z)), x[:, None])
    return log_lik + jnp.sum(log_prior - log_q, axis=-1)

  def reconstruct(self, params: Params, x: Array, key) -> Array:
    """Decoder means at one posterior sample, [B, 784]."""
    concentration, rate = self.encode(params["encoder"], x)
    z = self.sample_posterior(key, concentration, rate, 1)[:, 0]
    return jax.nn.sigmoid(self.decode(params["decoder"], z))

  def sample_prior(self, params: Params, key, num: int) -> Array:
    """Decoder means at z ~ the Gamma prior, [num, 784]."""
    z = jax.random.gamma(key, self.prior_concentration,
                         (num, self.num_latents)) / self.prior_rate
    return jax.nn.sigmoid(self.decode(params["decoder"], z))


def _gamma(p: dict) -> distrax.Distribution:
  return distrax.Gamma(p["concentration"], p["rate"])


def _log_gamma(p: dict) -> Any:
  """The law of log z for z ~ Gamma(concentration, rate)."""
  return tfp.distributions.ExpGamma(p["concentration"], rate=p["rate"])


# Each: (f, concentration [L], rate [L], key, S, B) -> (d/dalpha, d/dbeta) of
# E_{z ~ Gamma(alpha, beta)}[f(z)], S samples (B: RSVI's shape augmentation).
def _implicit(f, concentration, rate, key, num_samples, shape_augmentation):
  del shape_augmentation
  g = estimators.pathwise_grad(
      f, _gamma, {"concentration": concentration, "rate": rate}, key,
      num_samples=num_samples)
  return g["concentration"], g["rate"]


def _rejection(f, concentration, rate, key, num_samples, shape_augmentation):
  return estimators.gamma_rejection_grad(
      f, concentration, rate, key, num_samples=num_samples,
      shape_augmentation=shape_augmentation)


def _generalized(f, concentration, rate, key, num_samples,
                 shape_augmentation):
  del shape_augmentation
  return estimators.gamma_generalized_reparam_grad(
      f, concentration, rate, key, num_samples=num_samples)


def _score_function(f, concentration, rate, key, num_samples,
                    shape_augmentation):
  """Score function with the leave-one-out baseline, in log space.

  E_z[f(z)] = E_y[f(exp y)] with y = log z, whose score in (alpha, beta)
  is that of z (the map z -> log z does not depend on them); y is drawn by
  `jax.random.loggamma` and scored with TFP's ExpGamma, so z underflowing
  to 0 cannot make the score infinite. The surrogate and baseline of
  `common.estimators` (Williams 1992; Kool et al. 2019, Eq. 8).
  """
  del shape_augmentation
  shape = (num_samples, *concentration.shape)
  log_z = sg(jax.random.loggamma(
      key, jnp.broadcast_to(concentration, shape)) - jnp.log(rate))
  f_values = jax.vmap(lambda y: f(jnp.exp(y)))(log_z)
  baseline = estimators.leave_one_out_baseline(f_values)

  def surrogate(a, b):
    log_q = jnp.sum(_log_gamma({"concentration": a, "rate": b}).log_prob(
        log_z), axis=-1)
    return estimators.score_function_surrogate(log_q, f_values, baseline)

  return jax.grad(surrogate, argnums=(0, 1))(concentration, rate)


_ESTIMATES: dict[str, Callable] = {
    "implicit": _implicit,
    "rejection": _rejection,
    "generalized": _generalized,
    "score_function": _score_function,
}
ENCODER_GRADS = tuple(_ESTIMATES)


def gamma_grads(model: GammaVAE, params, x: Array, key: chex.PRNGKey, *,
                encoder_grad: str, num_samples: int,
                shape_augmentation: int) -> tuple[Any, Array]:
  """Gradient of the batch-mean -ELBO and its value, x [B, 784].

  Args:
    model: the Gamma VAE.
    params: {"encoder", "decoder"}.
    x: binary digits [B, 784].
    key: PRNG key.
    encoder_grad: one of `ENCODER_GRADS` (static).
    num_samples: S latent samples per digit (static; >= 2 for
      "score_function").
    shape_augmentation: B >= 1 of "rejection" (static; unused otherwise).

  Returns:
    (gradients with the structure of `params`, the -ELBO estimate: mean
    over the batch of the closed-form KL minus the mean log-likelihood at
    the decoder's S samples).
  """
  if encoder_grad not in _ESTIMATES:
    raise ValueError(f"encoder_grad must be one of {ENCODER_GRADS}; got "
                     f"{encoder_grad!r}.")
  estimate = _ESTIMATES[encoder_grad]
  batch = x.shape[0]
  k_encoder, k_decoder = jax.random.split(key)
  decoder_params = sg(params["decoder"])
  (concentration, rate), encoder_vjp = jax.vjp(
      lambda p: model.encode(p, x), params["encoder"])

  def per_digit(x_n, concentration_n, rate_n, key_n):
    def f_n(z):  # log p(x_n | z), z [L].
      return losses.bernoulli_log_likelihood(
          model.decode(decoder_params, z), x_n)
    return estimate(f_n, concentration_n, rate_n, key_n, num_samples,
                    shape_augmentation)

  g_concentration, g_rate = jax.vmap(per_digit)(
      x, sg(concentration), sg(rate), jax.random.split(k_encoder, batch))
  kl_concentration, kl_rate = jax.grad(
      lambda a, b: jnp.mean(model.kl(a, b)), argnums=(0, 1))(concentration,
                                                             rate)
  (encoder_grads,) = encoder_vjp((kl_concentration - g_concentration / batch,
                                  kl_rate - g_rate / batch))

  def decoder_loss(decoder):
    z = model.sample_posterior(k_decoder, sg(concentration), sg(rate),
                               num_samples)
    log_lik = losses.bernoulli_log_likelihood(model.decode(decoder, z),
                                              x[:, None])
    return jnp.mean(model.kl(sg(concentration), sg(rate))
                    - jnp.mean(log_lik, axis=1))

  loss, decoder_grads = jax.value_and_grad(decoder_loss)(params["decoder"])
  return {"encoder": encoder_grads, "decoder": decoder_grads}, loss


def check_config(config) -> None:
  """Raises TypeError or ValueError naming the first bad Gamma VAE field."""
  checks.all_positive(config, ("prior_concentration", "prior_rate"))
  checks.positive_int(config, "shape_augmentation")
  if config.model != "gamma":
    return
  checks.one_of(config, "encoder_grad", ENCODER_GRADS)
  if config.encoder_grad == "score_function" and config.num_samples < 2:
    raise ValueError(
        f"the score-function estimator uses the leave-one-out baseline, "
        f"which needs config.num_samples >= 2; got {config.num_samples}.")
