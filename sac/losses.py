"""SAC losses as pure functions of arrays (no networks inside).

Each function takes the network outputs it needs, so the losses can be checked
by hand (tests/test_sac_losses.py) and the learner (sac/learner.py) only wires
networks to them. Shapes: `N` critics, `B` batch, `M` action samples per state.

References:
  Haarnoja, Zhou, Hartikainen, Tucker, Ha, Tan, Kumar, Zhu, Gupta, Abbeel &
    Levine 2018, "Soft Actor-Critic Algorithms and Applications",
    arXiv:1812.05905 (Eq. numbers below refer to this paper).
  Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error
    in Actor-Critic Methods" (TD3), Sec. 4.2, clipped double Q-learning.
  Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
    Free!", Eq. 8 (leave-one-out baseline).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from common import estimators

Array = chex.Array


def soft_td_target(reward_t: Array, terminated_t: Array, q_next: Array,
                   next_log_prob: Array, alpha: Array, gamma: float) -> Array:
  """Soft Bellman target with clipped double Q.

  Haarnoja et al. 2018, Eq. 3 and 6 (soft value V(s') = E[Q(s', a') -
  alpha log pi(a'|s')]), with the target critics' minimum in place of Q
  (Fujimoto et al. 2018, Sec. 4.2; Haarnoja et al. 2018, Sec. 5 "two
  Q-functions ... use the minimum"):

      y = r + gamma * (1 - terminated)
              * (min_i Qbar_i(s', a') - alpha log pi(a'|s')),
      a' ~ pi(.|s').

  Only termination cuts the bootstrap. A time-limit truncation is not a
  terminal state: the caller stores the true final observation as s' and
  terminated = 0, so the target bootstraps from it.

  Args:
    reward_t: [B].
    terminated_t: [B], 1.0 where s' is terminal, else 0.0.
    q_next: [N, B], target critics at (s', a').
    next_log_prob: [B], log pi(a'|s').
    alpha: scalar temperature.
    gamma: discount.

  Returns:
    Target y [B], with gradients stopped.
  """
  chex.assert_rank([reward_t, terminated_t, q_next, next_log_prob],
                   [1, 1, 2, 1])
  soft_value = jnp.min(q_next, axis=0) - alpha * next_log_prob
  target = reward_t + gamma * (1.0 - terminated_t) * soft_value
  return jax.lax.stop_gradient(target)


def critic_loss(q_pred: Array, target: Array) -> Array:
  """J_Q = sum_i E[(1/2) (Q_i(s, a) - y)^2], Haarnoja et al. 2018, Eq. 5.

  Args:
    q_pred: [N, B], every critic at the replayed (s, a).
    target: [B] from `soft_td_target` (no gradient).

  Returns:
    Scalar: the sum over the N critics of each one's Eq. 5 loss.
  """
  chex.assert_rank([q_pred, target], [2, 1])
  return 0.5 * jnp.sum(jnp.mean(jnp.square(q_pred - target[None]), axis=1))


def actor_loss_pathwise(log_prob: Array, q_values: Array,
                        alpha: Array) -> Array:
  """J_pi = E_s E_{a~pi}[alpha log pi(a|s) - min_i Q_i(s, a)], pathwise.

  Haarnoja et al. 2018, Eq. 7 with the reparameterization of Eq. 11-12
  (a = tanh(mean + std * eps)), and the minimum over the critics as in the
  paper's implementation. Gradients reach the actor through `log_prob` and
  through the actions inside `q_values`; `alpha` is treated as a constant.

  Args:
    log_prob: [B], log pi(a|s) of reparameterized actions.
    q_values: [N, B], critics at those actions.
    alpha: scalar temperature.
  """
  chex.assert_rank([log_prob, q_values], [1, 2])
  alpha = jax.lax.stop_gradient(alpha)
  return jnp.mean(alpha * log_prob - jnp.min(q_values, axis=0))


def actor_loss_score_function(log_prob: Array, q_values: Array,
                              alpha: Array) -> Array:
  """The same actor objective with the score-function (REINFORCE) gradient.

  Objective (Haarnoja et al. 2018, Eq. 7), per state s:
      J(theta) = E_{a ~ pi_theta}[f_theta(a)],
      f_theta(a) = alpha log pi_theta(a|s) - Q(s, a),
  with Q = min_i Q_i. Because f depends on theta directly (entropy term),
      grad J = E[grad log pi(a|s) * f(a)] + alpha E[grad log pi(a|s)]
             = E[grad log pi(a|s) * f(a)],
  since E_pi[grad log pi] = grad int pi = 0 (Williams 1992; Mohamed et al.
  2020, Eq. 13). So the score-function estimator with
  f = alpha * sg(log pi) - sg(min Q) is unbiased for grad J. Subtracting the
  leave-one-out baseline b_m = mean_{j != m} f_j over the M actions sampled
  for the same state (Kool et al. 2019, Eq. 8) keeps it unbiased. With
  M = 1 no other sample exists and b = 0 (plain REINFORCE): the M = 1 arm of
  benchmarks/sac_grad_variance.py; training requires M >= 2
  (sac/validation.py).

  The actions are sampled with stopped gradients; `log_prob` must be their
  log-density under the *current* policy as a differentiable function of the
  actor parameters (e.g. `common.estimators.tanh_gaussian_log_prob` of the
  stopped pre-tanh sample). The value of the returned scalar is the Monte
  Carlo estimate of J (mean of f); its gradient is
  mean_{m,b} grad log pi(a_mb|s_b) (f_mb - b_mb), via
  `common.estimators.score_function_surrogate`.

  Args:
    log_prob: [M, B], differentiable log pi(a_mb | s_b), M >= 1.
    q_values: [N, M, B], critics at the sampled actions (never differentiated).
    alpha: scalar temperature (never differentiated).
  """
  chex.assert_rank([log_prob, q_values], [2, 3])
  alpha = jax.lax.stop_gradient(alpha)
  f_value = jax.lax.stop_gradient(
      alpha * log_prob - jnp.min(q_values, axis=0))
  baseline = (estimators.leave_one_out_baseline(f_value, axis=0)
              if log_prob.shape[0] >= 2 else 0.0)
  return estimators.score_function_surrogate(log_prob, f_value, baseline)


def temperature_loss(log_alpha: Array, log_prob: Array,
                     target_entropy: float) -> Array:
  """J(alpha) = E_{a~pi}[-alpha log pi(a|s) - alpha Hbar], Eq. 18.

  Haarnoja et al. 2018, Eq. 18, with alpha = exp(log_alpha) so alpha stays
  positive; `log_prob` is treated as a constant. Its gradient raises alpha
  when the policy's entropy -E[log pi] is below the target Hbar (default
  -|A|, Sec. 5) and lowers it otherwise.

  Args:
    log_alpha: scalar, the trained parameter.
    log_prob: [B], log pi(a|s) of fresh policy actions.
    target_entropy: Hbar.
  """
  chex.assert_rank([log_alpha, log_prob], [0, 1])
  log_prob = jax.lax.stop_gradient(log_prob)
  return jnp.mean(-jnp.exp(log_alpha) * (log_prob + target_entropy))


def temperature_loss_log_alpha(log_alpha: Array, log_prob: Array,
                               target_entropy: float) -> Array:
  """E[-log(alpha) (log pi(a|s) + Hbar)]: Eq. 18 with log alpha for alpha.

  The form of the authors' released code (softlearning,
  `alpha_loss = -mean(log_alpha * stop_gradient(log_pis + target_entropy))`)
  and of SB3/sbx. Its gradient in log alpha is -(E[log pi] + Hbar) =
  H(pi) - Hbar, while `temperature_loss` (Eq. 18 as written) gives
  alpha * (H(pi) - Hbar): the same sign and the same fixed point
  (entropy = Hbar), but step sizes that do not shrink with alpha. Under Adam
  that matters when alpha falls by orders of magnitude, because Adam's
  second-moment estimate remembers the larger gradients of larger alphas.

  Args:
    log_alpha: scalar, the trained parameter.
    log_prob: [B], log pi(a|s) of fresh policy actions (no gradient).
    target_entropy: Hbar.
  """
  chex.assert_rank([log_alpha, log_prob], [0, 1])
  log_prob = jax.lax.stop_gradient(log_prob)
  return jnp.mean(-log_alpha * (log_prob + target_entropy))
