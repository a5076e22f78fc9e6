"""Training the Gaussian VAE on the K-sample importance-weighted bound.

With K = `num_importance_samples` > 1 the Gaussian VAE is trained on the
IWAE bound of Burda, Grosse & Salakhutdinov 2016 (Eq. 8),

    L_K(x) = E_{z_1..K ~ q(z|x)} [ log (1/K) sum_k p(x, z_k) / q(z_k|x) ],

averaged over M = `num_samples` independent K-sample estimates per digit
(Rainforth et al. 2018, Sec. 4, MIWAE; M = 1 is Burda et al.'s IWAE). The
gradient comes from `common.estimators.iwae_grad`, one digit at a time
(jax.vmap), with log p(x, z) = log p(x|z) + log N(z; 0, I) and
q = N(mu(x), diag sigma^2(x)):

  "iwae": the standard reparameterized gradient (Burda et al. 2016);
  "stl":  sticking the landing, the score term of log q dropped (Roeder et
          al. 2017; biased for K > 1);
  "dreg": doubly reparameterized, squared normalized weights (Tucker et al.
          2019, Eq. 8; unbiased, and its encoder signal-to-noise ratio does
          not decay with K).

The estimator only changes the encoder gradient: `iwae_grad`'s gradient of
(mu(x), log sigma^2(x)) is chained into the encoder parameters with jax.vjp.
The decoder gradient, sum_k w~_k grad log p(x, z_k), is the same for all
three; it is computed for the whole batch at once on its own draws of z
(unbiased for grad L_K like the per-digit one, and without per-digit
copies of the decoder's gradient). K = 1 keeps the ELBO training of
`vae.gradients.gaussian_grads` (analytic KL), so this module is used only
for K > 1 (and by `benchmarks.iwae_snr` for every K).

References:
  Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders".
  Roeder, Wu & Duvenaud 2017, "Sticking the Landing".
  Tucker, Lawson, Gu & Maddison 2019, "Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives", Eq. 8.
  Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018, "Tighter
    Variational Bounds are Not Necessarily Better", Sec. 4 (MIWAE).
"""

from __future__ import annotations

from typing import Any

import chex
import distrax
import jax
import jax.numpy as jnp

from common import config_checks as checks
from common import estimators
from vae import losses
from vae import models

Array = chex.Array

ESTIMATORS = ("iwae", "stl", "dreg")
# eval.csv of a run on the K-sample bound: the test -ELBO (eval_samples
# samples, as for K = 1), the test -L_K and the training batch's -L_K.
EVAL_COLUMNS = ("step", "test_neg_elbo", "test_neg_iw_bound",
                "train_neg_iw_bound", "seconds")
LOSS_NAMES = ("train_neg_iw_bound",)


def trains_on_iw_bound(config) -> bool:
  """True if the run trains on the K-sample bound (Gaussian VAE, K > 1)."""
  return config.model == "gaussian" and config.num_importance_samples > 1


def check_config(config) -> None:
  """Raises TypeError or ValueError naming the first bad IWAE field."""
  checks.positive_int(config, "num_importance_samples")
  checks.one_of(config, "iwae_estimator", ESTIMATORS)
  k = config.num_importance_samples
  if k > 1 and config.model != "gaussian":
    raise ValueError(
        f"config.num_importance_samples={k} (training on the K-sample "
        f"bound) needs config.model='gaussian'; got {config.model!r}.")
  if k > 1 and config.encoder_grad != "pathwise":
    raise ValueError(
        f"config.num_importance_samples={k} trains with the reparameterized "
        f"IWAE gradients (config.iwae_estimator), which needs "
        f"config.encoder_grad='pathwise'; got {config.encoder_grad!r}.")


def _posterior(phi: dict) -> distrax.Distribution:
  """q(z|x) = N(mean, diag exp(log_var)) for one digit's encoder output."""
  return distrax.Normal(phi["mean"], jnp.exp(0.5 * phi["log_var"]))


def gaussian_iwae_grads(model: models.GaussianVAE, params, x: Array,
                        key: chex.PRNGKey, *, num_importance_samples: int,
                        num_samples: int, estimator: str
                        ) -> tuple[Any, Array]:
  """Gradient of the batch-mean -L_K and its value, x [B, 784].

  Args:
    model: the Gaussian VAE.
    params: {"encoder", "decoder"}.
    x: binary digits [B, 784].
    key: PRNG key.
    num_importance_samples: K >= 1 (static).
    num_samples: M >= 1 independent K-sample bounds per digit (static).
    estimator: "iwae", "stl" or "dreg" (static).

  Returns:
    (gradients of mean_b -L_K(x_b) with the structure of `params`, that
    mean), the bound estimated with the same samples.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {ESTIMATORS}; got "
                     f"{estimator!r}.")
  batch = x.shape[0]
  k_encoder, k_decoder = jax.random.split(key)
  decoder_params = jax.lax.stop_gradient(params["decoder"])
  (mean, log_var), encoder_vjp = jax.vjp(
      lambda p: tuple(model.encode(p, x)), params["encoder"])

  def per_digit(x_n, phi_n, key_n):
    def log_joint(_, z):  # log p(x_n | z) + log N(z; 0, I), z [L].
      return (losses.bernoulli_log_likelihood(
          model.decode(decoder_params, z), x_n)
              + losses.gaussian_log_density(z, 0.0, jnp.zeros_like(z)))

    def one_bound(key_m):
      bound, _, g_phi = estimators.iwae_grad(
          log_joint, _posterior, {}, phi_n, key_m,
          num_samples=num_importance_samples, estimator=estimator)
      return bound, g_phi

    bounds, g_phi = jax.vmap(one_bound)(jax.random.split(key_n, num_samples))
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), (bounds, g_phi))

  phi = {"mean": jax.lax.stop_gradient(mean),
         "log_var": jax.lax.stop_gradient(log_var)}
  bounds, g_phi = jax.vmap(per_digit)(x, phi,
                                      jax.random.split(k_encoder, batch))
  # Ascent directions of sum_b L_K(x_b) -> descent directions of the mean.
  (encoder_grads,) = encoder_vjp((-g_phi["mean"] / batch,
                                  -g_phi["log_var"] / batch))
  decoder_grads = jax.grad(_neg_bound_of_decoder, argnums=1)(
      model, params["decoder"], jax.lax.stop_gradient(params["encoder"]),
      x, k_decoder, num_importance_samples, num_samples)
  return ({"encoder": encoder_grads, "decoder": decoder_grads},
          -jnp.mean(bounds))


def _neg_bound_of_decoder(model, decoder_params, encoder_params, x, key,
                          num_importance_samples, num_samples):
  """mean_b -L_K(x_b) as a function of the decoder, for its gradient.

  grad_theta L_K = sum_k w~_k grad_theta log p_theta(x, z_k) (Burda et al.
  2016, Sec. 3), the model gradient of `iwae_grad` for every estimator,
  computed for the whole batch at once (z_k drawn with `key`).
  """
  log_w = model.log_weights(
      {"encoder": encoder_params, "decoder": decoder_params}, x, key,
      num_samples=num_samples * num_importance_samples)
  log_w = log_w.reshape(x.shape[0], num_samples, num_importance_samples)
  return -jnp.mean(losses.importance_weighted_bound(log_w))
