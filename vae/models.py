"""The three latent-variable models as pure functions of their parameters.

Each model is a frozen dataclass holding its flax modules and sizes; its
methods take the parameter dict {"encoder", "decoder"[, "codebook"]} and
arrays, and return arrays (no state). Observations x are binary float
[B, 784].

- `GaussianVAE`: q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I),
  p(x|z) Bernoulli (Kingma & Welling 2014).
- `CategoricalVAE`: q(b|x) = prod_i Cat(b_i; softmax(logits_i(x))) over N
  latents with K classes, p(b) uniform, p(x|b) Bernoulli (Jang et al. 2017,
  Sec. 4.2).
- `VQVAE`: deterministic encoder, nearest-codebook quantisation, Bernoulli
  decoder (van den Oord et al. 2017).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from common import estimators
from vae import losses
from vae import networks

Array = chex.Array
Params = dict
NUM_PIXELS = 784


@dataclasses.dataclass(frozen=True)
class TwoParameterMLPVAE:
  """MLP encoder with two outputs per latent, mirrored MLP decoder.

  The shared networks of the Gaussian VAE (mean, log-variance) and the Gamma
  VAE (`vae.gamma`: concentration, rate); subclasses give `encode` and the
  rest of the model.
  """
  hidden: tuple[int, ...]
  num_latents: int

  @property
  def encoder(self) -> networks.MLP:
    return networks.MLP(hidden=self.hidden, out=2 * self.num_latents)

  @property
  def decoder(self) -> networks.MLP:
    return networks.MLP(hidden=tuple(reversed(self.hidden)), out=NUM_PIXELS)

  def init(self, key: chex.PRNGKey) -> Params:
    k_enc, k_dec = jax.random.split(key)
    return {
        "encoder": self.encoder.init(
            k_enc, jnp.zeros((1, NUM_PIXELS)))["params"],
        "decoder": self.decoder.init(
            k_dec, jnp.zeros((1, self.num_latents)))["params"]}


@dataclasses.dataclass(frozen=True)
class GaussianVAE(TwoParameterMLPVAE):
  """Gaussian latents z in R^num_latents; encoder MLP widths `hidden`."""

  def encode(self, encoder_params, x: Array) -> tuple[Array, Array]:
    """x [B, 784] -> (mean [B, L], log_var [B, L])."""
    out = self.encoder.apply({"params": encoder_params}, x)
    return jnp.split(out, 2, axis=-1)

  def decode(self, decoder_params, z: Array) -> Array:
    """z [..., L] -> Bernoulli logits [..., 784]."""
    return self.decoder.apply({"params": decoder_params}, z)

  def sample_posterior(self, key, mean, log_var, num_samples: int) -> Array:
    """z = mu + exp(log_var / 2) * eps, [B, S, L] (Kingma & Welling Eq. 10)."""
    shape = (mean.shape[0], num_samples, mean.shape[-1])
    return estimators.gaussian_reparameterize(
        key, jnp.broadcast_to(mean[:, None], shape),
        jnp.broadcast_to(0.5 * log_var[:, None], shape))

  def neg_elbo(self, params: Params, x: Array, key: chex.PRNGKey, *,
               num_samples: int) -> Array:
    """-ELBO per example [B]: analytic KL minus the S-sample mean of
    log p(x|z) (Kingma & Welling 2014, Eq. 10)."""
    mean, log_var = self.encode(params["encoder"], x)
    z = self.sample_posterior(key, mean, log_var, num_samples)
    log_lik = losses.bernoulli_log_likelihood(
        self.decode(params["decoder"], z), x[:, None])
    return losses.gaussian_kl_to_standard_normal(mean, log_var) - jnp.mean(
        log_lik, axis=1)

  def log_weights(self, params: Params, x: Array, key: chex.PRNGKey, *,
                  num_samples: int) -> Array:
    """log p(x, z_s) - log q(z_s | x) for z_s ~ q, [B, S] (Burda Eq. 8)."""
    mean, log_var = self.encode(params["encoder"], x)
    z = self.sample_posterior(key, mean, log_var, num_samples)
    log_lik = losses.bernoulli_log_likelihood(
        self.decode(params["decoder"], z), x[:, None])
    log_prior = losses.gaussian_log_density(z, 0.0, jnp.zeros_like(z))
    log_q = losses.gaussian_log_density(z, mean[:, None], log_var[:, None])
    return log_lik + log_prior - log_q

  def reconstruct(self, params: Params, x: Array, key) -> Array:
    """Decoder means (pixel probabilities) at one posterior sample, [B, 784]."""
    mean, log_var = self.encode(params["encoder"], x)
    z = self.sample_posterior(key, mean, log_var, 1)[:, 0]
    return jax.nn.sigmoid(self.decode(params["decoder"], z))

  def sample_prior(self, params: Params, key, num: int) -> Array:
    """Decoder means at z ~ N(0, I), [num, 784]."""
    z = jax.random.normal(key, (num, self.num_latents))
    return jax.nn.sigmoid(self.decode(params["decoder"], z))


@dataclasses.dataclass(frozen=True)
class CategoricalVAE:
  """num_latents categorical latents with num_classes classes each."""
  hidden: tuple[int, ...]
  num_latents: int
  num_classes: int

  @property
  def encoder(self) -> networks.MLP:
    return networks.MLP(hidden=self.hidden,
                        out=self.num_latents * self.num_classes)

  @property
  def decoder(self) -> networks.MLP:
    return networks.MLP(hidden=tuple(reversed(self.hidden)), out=NUM_PIXELS)

  @property
  def latent_shape(self) -> tuple[int, int]:
    return (self.num_latents, self.num_classes)

  def init(self, key: chex.PRNGKey) -> Params:
    k_enc, k_dec = jax.random.split(key)
    return {
        "encoder": self.encoder.init(
            k_enc, jnp.zeros((1, NUM_PIXELS)))["params"],
        "decoder": self.decoder.init(
            k_dec, jnp.zeros((1, math.prod(self.latent_shape))))["params"]}

  def encode(self, encoder_params, x: Array) -> Array:
    """x [B, 784] -> logits [B, N, K]."""
    out = self.encoder.apply({"params": encoder_params}, x)
    return out.reshape(x.shape[0], *self.latent_shape)

  def decode(self, decoder_params, b: Array) -> Array:
    """(relaxed) one-hot codes [..., N, K] -> Bernoulli logits [..., 784]."""
    flat = b.reshape(*b.shape[:-2], math.prod(self.latent_shape))
    return self.decoder.apply({"params": decoder_params}, flat)

  def sample_posterior(self, key, logits: Array, num_samples: int) -> Array:
    """Exact one-hot samples b ~ q(b|x), [B, S, N, K]."""
    index = jax.random.categorical(
        key, logits[:, None],
        shape=(logits.shape[0], num_samples, *logits.shape[1:-1]))
    return jax.nn.one_hot(index, self.num_classes, dtype=logits.dtype)

  def log_prior(self) -> float:
    """log p(b) = -N log K for the uniform prior."""
    return -self.num_latents * math.log(self.num_classes)

  def neg_elbo(self, params: Params, x: Array, key: chex.PRNGKey, *,
               num_samples: int) -> Array:
    """-ELBO per example [B] of the discrete model: analytic KL to the
    uniform prior minus the S-sample mean of log p(x|b), b ~ q exactly."""
    logits = self.encode(params["encoder"], x)
    b = self.sample_posterior(key, logits, num_samples)
    log_lik = losses.bernoulli_log_likelihood(
        self.decode(params["decoder"], b), x[:, None])
    return losses.categorical_kl_to_uniform(logits) - jnp.mean(log_lik, axis=1)

  def log_weights(self, params: Params, x: Array, key: chex.PRNGKey, *,
                  num_samples: int) -> Array:
    """log p(x, b_s) - log q(b_s | x) for b_s ~ q, [B, S] (Burda Eq. 8)."""
    logits = self.encode(params["encoder"], x)
    b = self.sample_posterior(key, logits, num_samples)
    log_lik = losses.bernoulli_log_likelihood(
        self.decode(params["decoder"], b), x[:, None])
    log_q = losses.categorical_log_prob(b, logits[:, None])
    return log_lik + self.log_prior() - log_q

  def reconstruct(self, params: Params, x: Array, key) -> Array:
    logits = self.encode(params["encoder"], x)
    b = self.sample_posterior(key, logits, 1)[:, 0]
    return jax.nn.sigmoid(self.decode(params["decoder"], b))

  def sample_prior(self, params: Params, key, num: int) -> Array:
    index = jax.random.randint(key, (num, self.num_latents), 0,
                               self.num_classes)
    b = jax.nn.one_hot(index, self.num_classes)
    return jax.nn.sigmoid(self.decode(params["decoder"], b))


@dataclasses.dataclass(frozen=True)
class VQVAE:
  """Conv encoder/decoder with `channels`, codebook of num_codes x dim."""
  channels: int
  num_codes: int
  embedding_dim: int
  commitment_beta: float

  @property
  def encoder(self) -> networks.ConvEncoder:
    return networks.ConvEncoder(channels=self.channels,
                                embedding_dim=self.embedding_dim)

  @property
  def decoder(self) -> networks.ConvDecoder:
    return networks.ConvDecoder(channels=self.channels)

  def init(self, key: chex.PRNGKey) -> Params:
    k_enc, k_dec, k_code = jax.random.split(key, 3)
    return {
        "encoder": self.encoder.init(
            k_enc, jnp.zeros((1, NUM_PIXELS)))["params"],
        "decoder": self.decoder.init(
            k_dec, jnp.zeros((1, 7, 7, self.embedding_dim)))["params"],
        "codebook": networks.init_codebook(k_code, self.num_codes,
                                           self.embedding_dim)}

  def forward(self, params: Params, x: Array) -> dict[str, Array]:
    """Encode, quantise (straight-through), decode; per-example losses.

    Returns a dict with "recon_loss" = -log p(x | z_q) [B] (nats),
    "codebook_loss" and "commitment_loss" [B] (van den Oord Eq. 3, the
    latter already times beta), "indices" [B, 7, 7] and "logits" [B, 784].
    """
    z_e = self.encoder.apply({"params": params["encoder"]}, x)
    indices = losses.nearest_code(z_e, params["codebook"])
    z_q = params["codebook"][indices]
    codebook_loss, commitment_loss = losses.vq_losses(
        z_e, z_q, beta=self.commitment_beta)
    # Eq. 3's straight-through: decoder input z_q, gradient copied to z_e.
    z = estimators.straight_through(z_q, z_e)
    logits = self.decoder.apply({"params": params["decoder"]}, z)
    return {"recon_loss": -losses.bernoulli_log_likelihood(logits, x),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "indices": indices, "logits": logits}

  def reconstruct(self, params: Params, x: Array, key=None) -> Array:
    del key  # Deterministic.
    return jax.nn.sigmoid(self.forward(params, x)["logits"])
