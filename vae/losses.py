"""Log-likelihoods, KL terms, bounds and VQ losses of the three VAEs.

Pure functions of arrays (no networks). All log-densities are in nats and
sum over the event axes (pixels, latents), leaving the batch axes.

References:
  Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Eq. 10 and
    Appendix B (the Gaussian ELBO with analytic KL).
  Jang, Gu & Poole 2017, "Categorical Reparameterization with
    Gumbel-Softmax", Sec. 4.2 (the categorical VAE, KL to a uniform prior).
  Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
    Eq. 8.
  van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
    Learning", Eq. 1-3.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import optax

Array = chex.Array

_LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_likelihood(logits: Array, x: Array) -> Array:
  """log p(x | logits) = sum_d [x_d log s_d + (1 - x_d) log(1 - s_d)].

  s = sigmoid(logits); the Bernoulli decoder of Kingma & Welling 2014,
  Appendix C.1, computed stably as -sigmoid_binary_cross_entropy.

  Args:
    logits: float [..., D].
    x: float [..., D] in {0, 1} (broadcastable).

  Returns:
    float [...].
  """
  return -jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)


def gaussian_kl_to_standard_normal(mean: Array, log_var: Array) -> Array:
  """KL(N(mean, diag exp(log_var)) || N(0, I)), summed over the last axis.

  Kingma & Welling 2014, Appendix B (the -D_KL term of Eq. 10):
      -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
  """
  chex.assert_equal_shape([mean, log_var])
  return -0.5 * jnp.sum(1.0 + log_var - jnp.square(mean) - jnp.exp(log_var),
                        axis=-1)


def gaussian_log_density(z: Array, mean: Array, log_var: Array) -> Array:
  """log N(z; mean, diag exp(log_var)), summed over the last axis."""
  return -0.5 * jnp.sum(
      _LOG_2PI + log_var + jnp.square(z - mean) * jnp.exp(-log_var), axis=-1)


def categorical_log_prob(one_hot: Array, logits: Array) -> Array:
  """log q(b) = sum_i log softmax(logits_i)[b_i] for one-hot b [..., N, K].

  Sums over the N latent variables (and the K classes), leaving [...];
  the leading axes of `one_hot` and `logits` broadcast.
  """
  chex.assert_equal_shape_suffix([one_hot, logits], 2)
  return jnp.sum(one_hot * jax.nn.log_softmax(logits, axis=-1),
                 axis=(-2, -1))


def categorical_kl_to_uniform(logits: Array) -> Array:
  """KL(q || uniform) = sum_i sum_k q_ik (log q_ik + log K) for [..., N, K].

  The analytic KL term of the categorical VAE (Jang et al. 2017, Sec. 4.2,
  prior uniform over the K classes of each of the N latents).
  """
  log_q = jax.nn.log_softmax(logits, axis=-1)
  num_classes = logits.shape[-1]
  return jnp.sum(jnp.exp(log_q) * (log_q + math.log(num_classes)),
                 axis=(-2, -1))


def importance_weighted_bound(log_weights: Array) -> Array:
  """L_k = log (1/k) sum_i w_i over the last axis; Burda et al. 2016, Eq. 8.

  log_weights: log w_i = log p(x, h_i) - log q(h_i | x), float [..., k], for
  k independent draws h_i ~ q(h | x). With k = 1 this is the single-sample
  ELBO estimate; L_k increases with k towards log p(x) (Burda Theorem 1).
  """
  k = log_weights.shape[-1]
  return jax.nn.logsumexp(log_weights, axis=-1) - math.log(k)


def nearest_code(z_e: Array, codebook: Array) -> Array:
  """Index of the nearest codebook vector (van den Oord et al. 2017, Eq. 1).

  Args:
    z_e: float [..., D] encoder outputs.
    codebook: float [K, D].

  Returns:
    int [...], argmin_k ||z_e - e_k||^2.
  """
  distances = (jnp.sum(jnp.square(z_e), axis=-1, keepdims=True)
               - 2.0 * z_e @ codebook.T
               + jnp.sum(jnp.square(codebook), axis=-1))
  return jnp.argmin(distances, axis=-1)


def vq_losses(z_e: Array, z_q: Array, *, beta: float) -> tuple[Array, Array]:
  """(codebook loss, beta * commitment loss) of van den Oord et al. Eq. 3.

      L = log p(x | z_q(x)) + ||sg[z_e(x)] - e||^2 + beta ||z_e(x) - sg[e]||^2

  The squared norms are summed over the latent grid and the embedding axis
  (all axes after the first), leaving one value per example [B].
  """
  chex.assert_equal_shape([z_e, z_q])
  axes = tuple(range(1, z_e.ndim))
  sg = jax.lax.stop_gradient
  codebook = jnp.sum(jnp.square(sg(z_e) - z_q), axis=axes)
  commitment = jnp.sum(jnp.square(z_e - sg(z_q)), axis=axes)
  return codebook, beta * commitment


def codebook_perplexity(indices: Array, num_codes: int) -> Array:
  """exp(entropy of the average code usage): K for uniform use, 1 for one code.

  Args:
    indices: int [...] of chosen codes.
    num_codes: K.
  """
  usage = jnp.mean(jax.nn.one_hot(indices.reshape(-1), num_codes), axis=0)
  entropy = -jnp.sum(jnp.where(usage > 0, usage * jnp.log(usage), 0.0))
  return jnp.exp(entropy)
