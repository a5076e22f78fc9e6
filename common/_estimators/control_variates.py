"""Unbiased, low-variance gradients for discrete samples: REBAR and RELAX.

Both estimate grad_logits E_b[f(b)] for categorical (one-hot) or Bernoulli b
by a score-function term with a control variate evaluated at a continuous
relaxation of b, corrected by pathwise terms so that the estimate stays
unbiased (Grathwohl et al. 2018, Sec. 3.3). REBAR fixes the control variate
to a scaled, tempered f (Tucker et al. 2017); RELAX learns it.

References:
  Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017, "REBAR: Low-variance,
    unbiased gradient estimates for discrete latent variable models".
  Grathwohl, Choi, Wu, Roeder & Duvenaud 2018, "Backpropagation through the
    Void: Optimizing Control Variates for Black-Box Gradient Estimation".
  Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax".
  Maddison, Mnih & Teh 2017, "The Concrete Distribution".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from common._estimators import checks

Array = checks.Array
PRNGKey = checks.PRNGKey
PyTree = checks.PyTree

CATEGORICAL = "categorical"
BERNOULLI = "bernoulli"


class _DiscreteFamily(NamedTuple):
  """The pieces REBAR/RELAX need for one kind of discrete variable.

  b = H(z) with z = relaxed(logits, u) a reparameterised continuous sample
  (u parameter-free noise), and z~ = conditional(logits, v, b) a
  reparameterised sample of p(z | b) (v parameter-free noise). All functions
  act on one whole sample (every variable of `logits`); log_prob is the joint
  log-probability of b (a scalar).
  """
  check_logits: Callable[[Array], None]
  draw_noise: Callable[[PRNGKey, Array], tuple[Array, Array]]
  relaxed: Callable[[Array, Array], Array]
  hard: Callable[[Array], Array]
  conditional: Callable[[Array, Array, Array], Array]
  log_prob: Callable[[Array, Array], Array]
  soft: Callable[[Array, Array], Array]


def _categorical_check_logits(logits: Array) -> None:
  checks.check_min_rank(
      "logits", logits, 1,
      " (the last is the category axis of kind='categorical')")


def _categorical_draw_noise(key: PRNGKey, logits: Array) -> tuple[Array, Array]:
  key_z, key_v = jax.random.split(key)
  return (jax.random.gumbel(key_z, logits.shape, logits.dtype),
          jax.random.gumbel(key_v, logits.shape, logits.dtype))


def _categorical_relaxed(logits: Array, gumbels: Array) -> Array:
  """z = log p + g, g ~ Gumbel(0, 1): the Gumbel-max relaxation (Jang et al.

  2017, Eq. 1; Maddison et al. 2017). Normalising the logits (log_softmax)
  follows Tucker et al. 2017 (their categorical construction) and makes z
  independent of the logits' arbitrary additive offset.
  """
  return jax.nn.log_softmax(logits, axis=-1) + gumbels


def _categorical_hard(z: Array) -> Array:
  return jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)


def _categorical_conditional(logits: Array, gumbels: Array, b: Array) -> Array:
  """z~ ~ p(z | b) for z = log p + Gumbel noise and b = one_hot(argmax z).

  Tucker et al. 2017 (appendix, categorical case); Grathwohl et al. 2018,
  Appendix B: with v_k ~ U(0, 1) and p_k = softmax(logits)_k,

      z~_b = -log(-log v_b),
      z~_k = -log(-log(v_k) / p_k - log v_b),   k != b.

  Written with g_k = -log(-log v_k) (a Gumbel(0, 1) draw, so -log v_k =
  exp(-g_k)): z~_b = g_b and z~_k = -logaddexp(-(log p_k + g_k), -g_b), which
  is finite for every draw. The top coordinate is Gumbel(0, 1) (the max of
  Gumbels located at log p_k, sum_k p_k = 1) and the others are truncated
  below it, as the construction requires.
  """
  log_p = jax.nn.log_softmax(logits, axis=-1)
  g_b = jnp.sum(b * gumbels, axis=-1, keepdims=True)
  others = -jnp.logaddexp(-(log_p + gumbels), -g_b)
  return jnp.where(b > 0, g_b, others)


def _categorical_log_prob(logits: Array, b: Array) -> Array:
  return jnp.sum(b * jax.nn.log_softmax(logits, axis=-1))


def _categorical_soft(z: Array, temperature: Array) -> Array:
  return jax.nn.softmax(z / temperature, axis=-1)


def _bernoulli_check_logits(logits: Array) -> None:
  del logits  # Any shape, scalars included.


def _bernoulli_draw_noise(key: PRNGKey, logits: Array) -> tuple[Array, Array]:
  key_z, key_v = jax.random.split(key)
  v = jax.random.uniform(key_v, logits.shape, logits.dtype,
                         minval=jnp.finfo(logits.dtype).tiny, maxval=1.0)
  return jax.random.logistic(key_z, logits.shape, logits.dtype), v


def _bernoulli_relaxed(logits: Array, logistic_noise: Array) -> Array:
  """z = logits + log u - log(1 - u), u ~ U(0, 1) (Tucker et al. 2017;
  Maddison et al. 2017).

  b = H(z) = 1[z > 0] is then Bernoulli(sigmoid(logits)).
  """
  return logits + logistic_noise


def _bernoulli_hard(z: Array) -> Array:
  return (z > 0).astype(z.dtype)


def _bernoulli_conditional(logits: Array, v: Array, b: Array) -> Array:
  """z~ ~ p(z | b) for z = logits + logistic noise and b = 1[z > 0].

  Tucker et al. 2017 (appendix, binary case); Grathwohl et al. 2018,
  Appendix B: with theta = sigmoid(logits) and v ~ U(0, 1), the uniform
  behind z is u' = v (1 - theta) given b = 0 and u' = 1 - v theta given
  b = 1 (uniform on (0, 1 - theta) and on (1 - theta, 1); the paper writes
  v theta + 1 - theta, which has the same law), and z~ = logits + log u' -
  log(1 - u'). Both cases in one stable form, with s = 1 - 2b:

      z~ = s * [log sigmoid(s * logits) + log v
                - log(1 - v sigmoid(-s * logits))].

  v < 1 keeps the log1p argument above -1, so z~ is finite for all logits.
  """
  s = 1.0 - 2.0 * b
  return s * (jax.nn.log_sigmoid(s * logits) + jnp.log(v)
              - jnp.log1p(-v * jax.nn.sigmoid(-s * logits)))


def _bernoulli_log_prob(logits: Array, b: Array) -> Array:
  return jnp.sum(b * jax.nn.log_sigmoid(logits)
                 + (1.0 - b) * jax.nn.log_sigmoid(-logits))


def _bernoulli_soft(z: Array, temperature: Array) -> Array:
  return jax.nn.sigmoid(z / temperature)


_FAMILIES = {
    CATEGORICAL: _DiscreteFamily(
        check_logits=_categorical_check_logits,
        draw_noise=_categorical_draw_noise,
        relaxed=_categorical_relaxed,
        hard=_categorical_hard,
        conditional=_categorical_conditional,
        log_prob=_categorical_log_prob,
        soft=_categorical_soft),
    BERNOULLI: _DiscreteFamily(
        check_logits=_bernoulli_check_logits,
        draw_noise=_bernoulli_draw_noise,
        relaxed=_bernoulli_relaxed,
        hard=_bernoulli_hard,
        conditional=_bernoulli_conditional,
        log_prob=_bernoulli_log_prob,
        soft=_bernoulli_soft),
}


def _family(kind: Any) -> _DiscreteFamily:
  if not isinstance(kind, str):
    raise TypeError(
        f"kind must be a string, one of {sorted(_FAMILIES)}; got {kind!r} of "
        f"type {type(kind).__name__}.")
  if kind not in _FAMILIES:
    raise ValueError(
        f"kind must be one of {sorted(_FAMILIES)}; got kind={kind!r}.")
  return _FAMILIES[kind]


def _discrete_draws(family: _DiscreteFamily, logits: Array, key: PRNGKey,
                    num_samples: int) -> tuple[Array, Array, Array]:
  """Noise (u, v) and hard samples b = H(z) for `num_samples` draws [S, ...]."""
  noise_u, noise_v = jax.vmap(lambda k: family.draw_noise(k, logits))(
      jax.random.split(key, num_samples))
  b = jax.lax.stop_gradient(
      family.hard(family.relaxed(jax.lax.stop_gradient(logits), noise_u)))
  return noise_u, noise_v, b


def _control_variate_grad(
    f: Callable[[Array], Array],
    logits: Array,
    key: PRNGKey,
    *,
    control_variate: Callable[[PyTree, Array], Array],
    cv_params: PyTree,
    family: _DiscreteFamily,
    num_samples: int,
) -> tuple[Array, PyTree]:
  """The RELAX estimate and the gradient of its squared norm (shared core).

  For each draw (u, v) with z = z(logits, u), b = H(z), z~ = z~(logits, v, b):

      g = [f(b) - c(z~)] grad log p(b) + grad c(z) - grad c(z~),

  gradients with respect to `logits`, b held fixed; the last two terms are
  pathwise (through z and z~). The weight is written out rather than passed
  to `score_function_surrogate`, whose stop_gradient on the baseline would
  also remove c(z~)'s dependence on `cv_params`, which the variance gradient
  d ||g||^2 / d cv_params needs.
  """
  logits = jax.lax.stop_gradient(logits)
  noise_u, noise_v, b = _discrete_draws(family, logits, key, num_samples)
  # f is never differentiated.
  f_b = jax.lax.stop_gradient(checks.per_sample_f(f, b))

  def one_draw(u, v, b_s, f_s):
    def estimate(params):
      def c_at(sample_fn):
        return lambda l: checks.check_scalar_output(
            "control_variate(cv_params, z)",
            control_variate(params, sample_fn(l)))
      c_z_grad = jax.grad(c_at(lambda l: family.relaxed(l, u)))(logits)
      c_zt, c_zt_grad = jax.value_and_grad(
          c_at(lambda l: family.conditional(l, v, b_s)))(logits)
      score = jax.grad(family.log_prob)(logits, b_s)
      g = (f_s - c_zt) * score + c_z_grad - c_zt_grad
      return jnp.sum(jnp.square(g)), g

    cv_grad, g = jax.grad(estimate, has_aux=True)(cv_params)
    return g, cv_grad

  grads, cv_grads = jax.vmap(one_draw)(noise_u, noise_v, b, f_b)
  mean = lambda x: jnp.mean(x, axis=0)
  return jax.lax.stop_gradient(
      (mean(grads), jax.tree.map(mean, cv_grads)))


def _check_discrete_inputs(logits: Array, kind: Any,
                           num_samples: int) -> _DiscreteFamily:
  family = _family(kind)
  checks.check_num_samples(num_samples)
  checks.check_float("logits", logits)
  family.check_logits(logits)
  return family


def relax_grad(
    f: Callable[[Array], Array],
    logits: Array,
    key: PRNGKey,
    *,
    control_variate: Callable[[PyTree, Array], Array],
    cv_params: PyTree,
    kind: str = CATEGORICAL,
    num_samples: int = 1,
) -> tuple[Array, PyTree]:
  """RELAX estimate of grad_logits E_b[f(b)] for discrete b; CV gradient.

  Grathwohl, Choi, Wu, Roeder & Duvenaud 2018, Sec. 3.3 and Alg. 2
  (discrete case). With z ~ p(z | logits) a continuous relaxation, b = H(z),
  and z~ ~ p(z | b) (the conditional sample of their Appendix B, the
  construction of Tucker et al. 2017), each draw gives

      g = [f(b) - c_phi(z~)] grad log p(b) + grad c_phi(z) - grad c_phi(z~),

  with every gradient taken with respect to `logits`: the first term is the
  score function (f is evaluated at the hard b and never differentiated),
  the last two are pathwise, through the reparameterised z(logits, u) and
  z~(logits, v, b). Unbiased for any c_phi differentiable in z
  (Sec. 3.3: E[c(z~) grad log p(b)] + E[grad c(z~)] = grad E[c(z)]).

  The relaxations:
    * "categorical": b is one-hot over the last axis of logits [..., K],
      p(b) = softmax(logits); z = log_softmax(logits) + Gumbel(0, 1) noise and
      b = one_hot(argmax z).
    * "bernoulli": b in {0, 1} with the shape of logits, p(b = 1) =
      sigmoid(logits); z = logits + Logistic(0, 1) noise and b = 1[z > 0].

  The second output is d ||g||^2 / d phi averaged over draws: the gradient of
  the single-sample variance objective of Grathwohl et al. 2018, Sec. 3.2 (E[g]
  does not depend on phi, so d Var / d phi = d E||g||^2 / d phi). Descend it
  to train the control variate (Alg. 2).

  Per data point and into an encoder (e.g. a discrete VAE, where f(b) is the
  ELBO integrand of one datum): `jax.vmap` over (data, logits, keys) with f
  built inside the mapped function, then chain the logit gradients into the
  encoder parameters with `jax.vjp` (f to maximise; negate for a loss)::

      def per_example(x, logits_x, key_x):
        f = lambda b: log_likelihood(decoder_params, x, b) + log_prior(b)
        return relax_grad(f, logits_x, key_x, control_variate=cv,
                          cv_params=cv_params, kind="categorical")

      logits, encoder_vjp = jax.vjp(
          lambda p: encoder.apply(p, xs), encoder_params)       # [B, N, K]
      g_logits, g_cv = jax.vmap(per_example)(xs, logits,
                                             jax.random.split(key, len(xs)))
      (g_encoder,) = encoder_vjp(g_logits / len(xs))  # grad of the batch mean
      g_cv = jax.tree.map(lambda x: x.mean(axis=0), g_cv)  # descend it

  The control variate may close over the datum in the same way (e.g.
  `control_variate=lambda phi, z: mlp.apply(phi, z, x)`). A term of f that
  depends on the logits themselves (such as -log q(b | x)) enters f with the
  logits stopped: its direct gradient has expectation zero.

  Args:
    f: b -> scalar, for one sample b (float, the shape of `logits`). Called
      only at hard samples and never differentiated.
    logits: float [..., K] ("categorical") or [...] ("bernoulli"); every
      entry (every categorical row) is an independent variable.
    key: PRNG key.
    control_variate: (cv_params, z) -> scalar c_phi(z), z with the shape of
      `logits`; differentiable in z and cv_params.
    cv_params: phi, any pytree.
    kind: "categorical" or "bernoulli" (static).
    num_samples: S >= 1 independent draws, averaged (static).

  Returns:
    (grad_logits with the shape of `logits`, cv_variance_grad with the
    structure of `cv_params`). Both are returned under stop_gradient.

  Example:
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> cv = lambda phi, z: phi["scale"] * f(jax.nn.sigmoid(z / 0.5))
    >>> g, g_cv = relax_grad(f, jnp.zeros(3), jax.random.key(0),
    ...                      control_variate=cv, cv_params={"scale": 1.0},
    ...                      kind="bernoulli", num_samples=4)
    >>> g.shape, g_cv["scale"].shape
    ((3,), ())

  References:
    Grathwohl et al. 2018, "Backpropagation through the Void: Optimizing
      Control Variates for Black-Box Gradient Estimation" (ICLR).
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017, "REBAR: Low-variance,
      unbiased gradient estimates for discrete latent variable models".
  """
  family = _check_discrete_inputs(logits, kind, num_samples)
  return _control_variate_grad(
      f, logits, key, control_variate=control_variate, cv_params=cv_params,
      family=family, num_samples=num_samples)


def rebar_grad(
    f: Callable[[Array], Array],
    logits: Array,
    key: PRNGKey,
    *,
    eta: float | Array,
    log_temperature: float | Array,
    kind: str = CATEGORICAL,
    num_samples: int = 1,
) -> tuple[Array, dict[str, Array]]:
  """REBAR estimate of grad_logits E_b[f(b)]; (eta, temperature) gradient.

  Tucker et al. 2017, Sec. 3 (the REBAR estimator): RELAX with the control
  variate c(z) = eta * f(sigma_lambda(z)), where sigma_lambda is the tempered
  softmax (categorical) or sigmoid (Bernoulli), lambda = exp(log_temperature):

      g = [f(b) - eta f(sigma_lambda(z~))] grad log p(b)
          + eta grad f(sigma_lambda(z)) - eta grad f(sigma_lambda(z~)).

  f is evaluated at the hard b without differentiation, and differentiated
  (pathwise, through z and z~) at the relaxed inputs, so f must accept
  continuous inputs in the simplex (categorical) or in (0, 1) (Bernoulli).
  The relaxations z, z~ and the two kinds are those of `relax_grad`.

  The second output is {"eta": d ||g||^2 / d eta, "log_temperature":
  d ||g||^2 / d log_temperature}, averaged over draws: the single-sample
  variance gradient with which Tucker et al. 2017 (Sec. 3) tune eta and
  lambda online (it needs f twice differentiable at relaxed inputs). On a
  single Bernoulli variable with f(b) = (b - 0.45)^2, eta = 1 raises the
  variance above plain REINFORCE at every lambda in [0.03, 2] (a
  Monte-Carlo measurement gave 0.023 against 0.016 at lambda = 0.5);
  with several variables or categorical variables it lowers it, so tune
  eta rather than fixing it where it matters.

  Use per data point with `jax.vmap` and chain into an encoder with `jax.vjp`
  exactly as described in `relax_grad`.

  Args:
    f: b -> scalar, for one sample b with the shape of `logits`; also called
      on relaxed samples.
    logits: float [..., K] ("categorical") or [...] ("bernoulli").
    key: PRNG key.
    eta: scalar control-variate scale (eta = 0 gives plain REINFORCE).
    log_temperature: scalar, finite; lambda = exp(log_temperature) > 0.
    kind: "categorical" or "bernoulli" (static).
    num_samples: S >= 1 independent draws, averaged (static).

  Returns:
    (grad_logits with the shape of `logits`,
     {"eta": scalar, "log_temperature": scalar}), under stop_gradient.

  Example:
    >>> f = lambda b: jnp.sum(b * jnp.arange(3.0)) ** 2
    >>> g, g_cv = rebar_grad(f, jnp.zeros((2, 3)), jax.random.key(0),
    ...                      eta=1.0, log_temperature=jnp.log(0.5))
    >>> g.shape, sorted(g_cv)
    ((2, 3), ['eta', 'log_temperature'])

  References:
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017, "REBAR: Low-variance,
      unbiased gradient estimates for discrete latent variable models"
      (NeurIPS).
  """
  family = _check_discrete_inputs(logits, kind, num_samples)
  checks.check_finite_static("eta", eta)
  checks.check_finite_static(
      "log_temperature", log_temperature,
      " (the temperature exp(log_temperature) must be > 0 and finite)")
  cv_params = {"eta": jnp.asarray(eta, logits.dtype),
               "log_temperature": jnp.asarray(log_temperature, logits.dtype)}

  def control_variate(params, z):
    relaxed_b = family.soft(z, jnp.exp(params["log_temperature"]))
    return params["eta"] * checks.check_scalar_output(
        "f (at a relaxed sample)", f(relaxed_b))

  return _control_variate_grad(
      f, logits, key, control_variate=control_variate, cv_params=cv_params,
      family=family, num_samples=num_samples)
