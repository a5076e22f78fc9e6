"""SAC losses against hand-computed values (Haarnoja et al. 2018, Eq. 5-7, 18).

How SAC's losses (sac/losses.py, sac/learner.py, sac/replay.py) are tested:
- Each loss is compared with a value computed by hand on tiny inputs: the
  soft TD target (Eq. 3/6; termination cuts the bootstrap, truncation does
  not; the minimum over the critic ensemble), the critic loss (Eq. 5), the
  pathwise actor loss (Eq. 7/12; alpha is a constant in it), the temperature
  loss (Eq. 18) and its log-alpha form, whose gradient in log alpha does not
  scale with alpha.
- The score-function actor loss (REINFORCE with a leave-one-out baseline) is
  checked by hand in value and gradient, is shown never to differentiate the
  critic, and estimates the same gradient as the pathwise loss: the mean of
  20,000 pathwise gradients and one 20,000-action score-function gradient
  agree (cosine > 0.97, relative error < 0.25). Both are unbiased for the
  gradient of E[alpha log pi - Q] because E_pi[grad log pi] = 0.
- The replay buffer wraps FIFO and samples only filled rows; a fixed alpha
  must be positive; the tanh-Gaussian log-prob of a stopped sample equals the
  sampler's.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators
from sac import learner
from sac import losses
from sac import replay


def test_soft_td_target_termination_cuts_bootstrap_truncation_does_not():
  # Two transitions with identical s'-values: one terminal, one truncated
  # (stored with terminated = 0 and the true final observation as s').
  reward = jnp.array([1.0, 1.0])
  terminated = jnp.array([1.0, 0.0])
  q_next = jnp.array([[5.0, 5.0], [3.0, 3.0]])     # min = 3 for both
  next_log_prob = jnp.array([-2.0, -2.0])
  target = losses.soft_td_target(reward, terminated, q_next, next_log_prob,
                                 alpha=0.5, gamma=0.9)
  # Terminal: y = r = 1. Truncated: y = 1 + 0.9 * (3 - 0.5 * (-2)) = 4.6.
  np.testing.assert_allclose(target, [1.0, 4.6], rtol=1e-6)


def test_soft_td_target_uses_minimum_over_ensemble():
  target = losses.soft_td_target(
      jnp.zeros(1), jnp.zeros(1), jnp.array([[1.0], [-2.0], [4.0]]),
      jnp.zeros(1), alpha=1.0, gamma=1.0)
  np.testing.assert_allclose(target, [-2.0])


def test_critic_loss_hand_computed():
  q_pred = jnp.array([[1.0, 2.0], [0.0, 4.0]])
  target = jnp.array([0.0, 1.0])
  # Critic 1: mean(1, 1) = 1; critic 2: mean(0, 9) = 4.5; 0.5 * (1 + 4.5).
  np.testing.assert_allclose(losses.critic_loss(q_pred, target), 2.75)


def test_actor_loss_pathwise_hand_computed_and_alpha_constant():
  log_prob = jnp.array([-1.0, 0.5])
  q_values = jnp.array([[2.0, 1.0], [3.0, -1.0]])  # min: [2, -1]
  loss = losses.actor_loss_pathwise(log_prob, q_values, jnp.asarray(0.2))
  # mean(0.2 * -1 - 2, 0.2 * 0.5 + 1) = mean(-2.2, 1.1) = -0.55
  np.testing.assert_allclose(loss, -0.55, rtol=1e-6)
  grad_alpha = jax.grad(lambda a: losses.actor_loss_pathwise(
      log_prob, q_values, a))(0.2)
  assert grad_alpha == 0.0


def test_temperature_loss_value_and_gradient_sign():
  log_prob = jnp.array([-1.0, -3.0])   # entropy 2 > target -1
  loss, grad = jax.value_and_grad(losses.temperature_loss)(
      jnp.log(0.5), log_prob, -1.0)
  # -0.5 * mean(-1 - 1, -3 - 1) = -0.5 * -3 = 1.5
  np.testing.assert_allclose(loss, 1.5, rtol=1e-6)
  np.testing.assert_allclose(grad, 1.5, rtol=1e-6)   # d/dlog_alpha = alpha * 3
  assert grad > 0   # entropy above target: gradient descent lowers alpha.
  _, grad_low_entropy = jax.value_and_grad(losses.temperature_loss)(
      jnp.log(0.5), jnp.array([3.0]), -1.0)
  assert grad_low_entropy < 0   # entropy below target: alpha goes up.


def test_log_alpha_temperature_loss_gradient_does_not_scale_with_alpha():
  log_prob = jnp.array([-1.0, -3.0])   # entropy 2, target -1: excess 3
  for alpha in (0.5, 0.01):
    loss, grad = jax.value_and_grad(losses.temperature_loss_log_alpha)(
        jnp.log(alpha), log_prob, -1.0)
    # -log(alpha) * mean(-1 - 1, -3 - 1) = 3 log(alpha); d/dlog_alpha = 3.
    np.testing.assert_allclose(loss, 3.0 * np.log(alpha), rtol=1e-6)
    np.testing.assert_allclose(grad, 3.0, rtol=1e-6)
    _, eq18_grad = jax.value_and_grad(losses.temperature_loss)(
        jnp.log(alpha), log_prob, -1.0)
    np.testing.assert_allclose(eq18_grad, alpha * grad, rtol=1e-6)
  _, grad_low_entropy = jax.value_and_grad(losses.temperature_loss_log_alpha)(
      jnp.log(0.5), jnp.array([3.0]), -1.0)
  assert grad_low_entropy < 0   # entropy below target: alpha goes up.


def test_actor_loss_score_function_value_and_gradient_hand_computed():
  # log p_mb = theta * c_mb (linear in a scalar parameter), so the gradient
  # is mean_mb c_mb (f_mb - b_mb) with f = alpha * log p - min Q.
  c = jnp.array([[1.0, -1.0], [2.0, 0.5], [0.0, 1.0]])      # [M=3, B=2]
  q = jnp.stack([                                           # [N=2, M, B]
      jnp.array([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]]),
      jnp.array([[2.0, 0.0], [1.0, 1.0], [2.0, 0.0]])])
  alpha, theta = 0.3, 0.7
  loss_fn = lambda t: losses.actor_loss_score_function(t * c, q, alpha)
  value, grad = jax.value_and_grad(loss_fn)(theta)
  log_p = theta * np.asarray(c)
  f = alpha * log_p - np.min(np.asarray(q), axis=0)
  baseline = (f.sum(axis=0, keepdims=True) - f) / 2.0
  np.testing.assert_allclose(value, f.mean(), rtol=1e-6)
  np.testing.assert_allclose(grad, np.mean(np.asarray(c) * (f - baseline)),
                             rtol=1e-5)


def _toy_agent(actor_grad, samples=2):
  return learner.make_agent(
      obs_dim=3, action_dim=2, hidden_sizes=(8,), num_critics=2,
      actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, gamma=0.99, tau=0.005,
      batch_size=4, alpha=None, target_entropy=None, actor_grad=actor_grad,
      score_function_samples=samples)


def test_score_function_and_pathwise_actor_gradients_agree_in_expectation():
  """Both switches estimate the gradient of the same objective (Eq. 7)."""
  pathwise = _toy_agent(learner.PATHWISE)
  score = _toy_agent(learner.SCORE_FUNCTION, samples=20_000)
  state = learner.init_state(pathwise, seed=0, buffer_size=8)
  obs = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
  alpha = jnp.asarray(0.2)

  def grad_of(agent, key):
    fn = functools.partial(learner._actor_objective, agent)
    return jax.grad(lambda p: fn(p, state.critic_params, alpha, obs, key)[0])(
        state.actor_params)

  keys = jax.random.split(jax.random.PRNGKey(2), 20_000)
  g_path = jax.tree.map(lambda g: g.mean(0),
                        jax.vmap(functools.partial(grad_of, pathwise))(keys))
  g_score = grad_of(score, jax.random.PRNGKey(3))
  flat_path = jnp.concatenate([x.ravel() for x in jax.tree.leaves(g_path)])
  flat_score = jnp.concatenate([x.ravel() for x in jax.tree.leaves(g_score)])
  cosine = jnp.dot(flat_path, flat_score) / (
      jnp.linalg.norm(flat_path) * jnp.linalg.norm(flat_score))
  rel = jnp.linalg.norm(flat_path - flat_score) / jnp.linalg.norm(flat_path)
  assert cosine > 0.97, cosine
  assert rel < 0.25, rel


def test_score_function_gradient_never_differentiates_the_critic():
  agent = _toy_agent(learner.SCORE_FUNCTION, samples=4)
  state = learner.init_state(agent, seed=0, buffer_size=8)
  obs = jnp.ones((4, 3))
  grad_critic = jax.grad(lambda cp: learner._actor_objective(
      agent, state.actor_params, cp, jnp.asarray(0.2), obs,
      jax.random.PRNGKey(0))[0])(state.critic_params)
  assert all(float(jnp.abs(g).max()) == 0.0
             for g in jax.tree.leaves(grad_critic))


def test_replay_buffer_wraps_fifo_and_samples_only_filled_rows():
  buf = replay.init(capacity=4, obs_dim=1, action_dim=1)
  for start in (0, 3):
    values = jnp.arange(start, start + 3, dtype=jnp.float32)
    buf = replay.add(buf, replay.Transition(
        obs=values[:, None], action=values[:, None], reward=values,
        next_obs=values[:, None] + 1, terminated=jnp.zeros(3)))
  # Rows 0..3 held 0,1,2 then 3,4,5 overwrote rows 3,0,1: [4, 5, 2, 3].
  stored = replay.unpack(buf, buf.data)
  np.testing.assert_array_equal(stored.reward, [4.0, 5.0, 2.0, 3.0])
  np.testing.assert_array_equal(stored.next_obs[:, 0], [5.0, 6.0, 3.0, 4.0])
  assert int(buf.size) == 4 and int(buf.insert_index) == 2
  small = replay.add(replay.init(10, 1, 1), replay.Transition(
      obs=jnp.ones((2, 1)), action=jnp.ones((2, 1)),
      reward=jnp.array([7.0, 8.0]), next_obs=jnp.ones((2, 1)),
      terminated=jnp.zeros(2)))
  batch = replay.sample(small, jax.random.PRNGKey(0), 256)
  assert set(np.asarray(batch.reward).tolist()) == {7.0, 8.0}


@pytest.mark.parametrize("bad", [-1.0, 0.0])
def test_fixed_alpha_must_be_positive(bad):
  from launch.configs import sac as sac_config
  from sac import validation
  config = sac_config.get_config("test")
  config.alpha = bad
  with pytest.raises(ValueError, match="config.alpha"):
    validation.check_config(config)


def test_tanh_log_prob_of_stopped_sample_matches_sampler():
  # The score-function path scores stopped pre-tanh samples with
  # tanh_gaussian_log_prob; it must equal the sampler's own log-prob.
  key = jax.random.PRNGKey(0)
  mean, log_std = jnp.array([[0.3, -1.0]]), jnp.array([[-0.5, 0.2]])
  action, log_prob = estimators.tanh_gaussian_sample_and_log_prob(
      key, mean, log_std)
  pre_tanh = estimators.gaussian_reparameterize(key, mean, log_std)
  np.testing.assert_allclose(jnp.tanh(pre_tanh), action, rtol=1e-6)
  np.testing.assert_allclose(
      estimators.tanh_gaussian_log_prob(pre_tanh, mean, log_std), log_prob,
      rtol=1e-5)
