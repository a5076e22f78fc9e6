"""SAC learner: the train state pytree and the pure, compiled update.

One compiled call per environment iteration (`env_step_update`) does, for
every seed at once (vmap over a leading seed axis): insert the transitions
just observed into the replay buffer, run K gradient steps (`lax.scan`), and
pick the next action. So the host does one dispatch and one small transfer
(actions + metrics) per iteration.

Static settings (networks, optimizers, hyperparameters) live in `Agent`, a
frozen dataclass bound with functools.partial; everything that changes is in
`SACState`, a pytree.

References: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications", Algorithm 1 (one critic, actor and temperature step per
gradient step, then Polyak-averaged target critics, Eq. 6 / Sec. 5).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from common import estimators
from sac import losses
from sac import networks
from sac import replay

PATHWISE = "pathwise"
SCORE_FUNCTION = "score_function"
ACTOR_GRADS = (PATHWISE, SCORE_FUNCTION)

# Temperature losses: Eq. 18 as written, or with log alpha (authors' code, sbx).
TEMPERATURE_LOSSES = {"alpha": losses.temperature_loss,
                      "log_alpha": losses.temperature_loss_log_alpha}

# Order of the scalars returned by `env_step_update` (one small transfer).
METRIC_NAMES = ("critic_loss", "actor_loss", "temperature_loss", "alpha",
                "entropy", "q_mean", "target_mean")


@dataclasses.dataclass(frozen=True)
class Agent:
  """Static description of a SAC agent (not traced; bound via partial)."""
  actor: networks.Actor
  critic: networks.CriticEnsemble
  actor_optimizer: optax.GradientTransformation
  critic_optimizer: optax.GradientTransformation
  alpha_optimizer: optax.GradientTransformation
  obs_dim: int
  action_dim: int
  gamma: float
  tau: float
  batch_size: int
  target_entropy: float
  learn_alpha: bool
  actor_grad: str
  score_function_samples: int
  temperature_loss: str


@flax.struct.dataclass
class SACState:
  actor_params: Any
  critic_params: Any
  target_critic_params: Any
  log_alpha: jax.Array          # [] float32
  actor_opt_state: Any
  critic_opt_state: Any
  alpha_opt_state: Any
  buffer: replay.ReplayBuffer
  key: jax.Array                # raw uint32[2] PRNG key
  num_updates: jax.Array        # [] int32, gradient steps done


def make_agent(*, obs_dim: int, action_dim: int, hidden_sizes, num_critics: int,
               actor_lr: float, critic_lr: float, alpha_lr: float, gamma: float,
               tau: float, batch_size: int, alpha, target_entropy,
               actor_grad: str, score_function_samples: int,
               temperature_loss: str = "log_alpha") -> Agent:
  """Builds the static agent; `alpha=None` learns it, `target_entropy=None` is -|A|."""
  if actor_grad not in ACTOR_GRADS:
    raise ValueError(f"actor_grad must be one of {ACTOR_GRADS}; got {actor_grad!r}.")
  if temperature_loss not in TEMPERATURE_LOSSES:
    raise ValueError(
        f"temperature_loss must be one of {tuple(TEMPERATURE_LOSSES)}; got "
        f"{temperature_loss!r}.")
  hidden_sizes = tuple(int(h) for h in hidden_sizes)
  return Agent(
      actor=networks.Actor(hidden_sizes, action_dim),
      critic=networks.CriticEnsemble(hidden_sizes, num_critics),
      actor_optimizer=optax.adam(actor_lr),
      critic_optimizer=optax.adam(critic_lr),
      alpha_optimizer=optax.adam(alpha_lr),
      obs_dim=obs_dim, action_dim=action_dim, gamma=gamma, tau=tau,
      batch_size=batch_size,
      target_entropy=(-float(action_dim) if target_entropy is None
                      else float(target_entropy)),
      learn_alpha=alpha is None, actor_grad=actor_grad,
      score_function_samples=score_function_samples,
      temperature_loss=temperature_loss)


def init_state(agent: Agent, seed: int, buffer_size: int,
               init_alpha: float = 1.0, fixed_alpha=None) -> SACState:
  """Fresh state for one seed; all randomness derives from `seed` alone."""
  key = jax.random.PRNGKey(seed)
  key, actor_key, critic_key = jax.random.split(key, 3)
  obs = jnp.zeros((1, agent.obs_dim), jnp.float32)
  act = jnp.zeros((1, agent.action_dim), jnp.float32)
  actor_params = agent.actor.init(actor_key, obs)["params"]
  critic_params = agent.critic.init(critic_key, obs, act)["params"]
  log_alpha = jnp.log(jnp.asarray(
      init_alpha if fixed_alpha is None else fixed_alpha, jnp.float32))
  return SACState(
      actor_params=actor_params, critic_params=critic_params,
      target_critic_params=critic_params, log_alpha=log_alpha,
      actor_opt_state=agent.actor_optimizer.init(actor_params),
      critic_opt_state=agent.critic_optimizer.init(critic_params),
      alpha_opt_state=agent.alpha_optimizer.init(log_alpha),
      buffer=replay.init(buffer_size, agent.obs_dim, agent.action_dim),
      key=key, num_updates=jnp.zeros((), jnp.int32))


def _actor_apply(agent: Agent, params, obs):
  return agent.actor.apply({"params": params}, obs)


def _critic_apply(agent: Agent, params, obs, action):
  return agent.critic.apply({"params": params}, obs, action)


def _actor_objective(agent: Agent, actor_params, critic_params, alpha, obs, key):
  """Actor loss (pathwise or score-function) and log pi of fresh actions [B]."""
  mean, log_std = _actor_apply(agent, actor_params, obs)
  if agent.actor_grad == PATHWISE:
    action, log_prob = estimators.tanh_gaussian_sample_and_log_prob(
        key, mean, log_std)
    q_values = _critic_apply(agent, critic_params, obs, action)
    return losses.actor_loss_pathwise(log_prob, q_values, alpha), log_prob
  # Score function: M stopped samples per state, scored under the current policy.
  num_samples = agent.score_function_samples
  pre_tanh = jax.lax.stop_gradient(
      estimators.gaussian_reparameterize(
          key, jnp.broadcast_to(mean, (num_samples,) + mean.shape),
          jnp.broadcast_to(log_std, (num_samples,) + log_std.shape)))
  log_prob = estimators.tanh_gaussian_log_prob(
      pre_tanh, jnp.broadcast_to(mean, pre_tanh.shape),
      jnp.broadcast_to(log_std, pre_tanh.shape))                  # [M, B]
  obs_m = jnp.broadcast_to(obs, (num_samples,) + obs.shape)
  q_values = _critic_apply(agent, critic_params, obs_m, jnp.tanh(pre_tanh))
  loss = losses.actor_loss_score_function(log_prob, q_values, alpha)
  return loss, log_prob[0]


def actor_gradient(agent: Agent, actor_params, critic_params, log_alpha, obs,
                   key):
  """The actor-gradient estimate of `gradient_step` for fixed critics.

  Gradient in the actor parameters of the pathwise (Eq. 12) or score-function
  actor loss of `agent.actor_grad`, on obs [B, O] with the action noise drawn
  from `key`; the critics and alpha = exp(log_alpha) are held fixed. Used by
  benchmarks/sac_grad_variance.py.
  """
  objective = functools.partial(_actor_objective, agent)
  return jax.grad(lambda p: objective(p, critic_params, jnp.exp(log_alpha),
                                      obs, key)[0])(actor_params)


def gradient_step(agent: Agent, state: SACState, batch: replay.Transition):
  """One SAC gradient step on a batch (Haarnoja et al. 2018, Algorithm 1).

  `state.buffer` is neither read nor written (it may be None): batches are
  drawn before the scan (`run_updates`), so the replay buffer is not part of
  the loop, which XLA would otherwise copy whole on every call.
  """
  key, critic_key, actor_key = jax.random.split(state.key, 3)
  alpha = jnp.exp(state.log_alpha)

  # Critic (Eq. 5-6, clipped double Q).
  next_mean, next_log_std = _actor_apply(agent, state.actor_params, batch.next_obs)
  next_action, next_log_prob = estimators.tanh_gaussian_sample_and_log_prob(
      critic_key, next_mean, next_log_std)
  q_next = _critic_apply(agent, state.target_critic_params, batch.next_obs,
                         next_action)
  target = losses.soft_td_target(batch.reward, batch.terminated, q_next,
                                 next_log_prob, alpha, agent.gamma)

  def critic_loss_fn(critic_params):
    q_pred = _critic_apply(agent, critic_params, batch.obs, batch.action)
    return losses.critic_loss(q_pred, target), q_pred

  (critic_loss, q_pred), critic_grads = jax.value_and_grad(
      critic_loss_fn, has_aux=True)(state.critic_params)
  critic_updates, critic_opt_state = agent.critic_optimizer.update(
      critic_grads, state.critic_opt_state, state.critic_params)
  critic_params = optax.apply_updates(state.critic_params, critic_updates)

  # Actor (Eq. 7 / 12), against the updated critics.
  (actor_loss, log_prob), actor_grads = jax.value_and_grad(
      functools.partial(_actor_objective, agent), has_aux=True)(
          state.actor_params, critic_params, alpha, batch.obs, actor_key)
  actor_updates, actor_opt_state = agent.actor_optimizer.update(
      actor_grads, state.actor_opt_state, state.actor_params)
  actor_params = optax.apply_updates(state.actor_params, actor_updates)

  # Temperature (Eq. 18, or its log-alpha form).
  alpha_loss, alpha_grad = jax.value_and_grad(
      TEMPERATURE_LOSSES[agent.temperature_loss])(
          state.log_alpha, log_prob, agent.target_entropy)
  if agent.learn_alpha:
    alpha_updates, alpha_opt_state = agent.alpha_optimizer.update(
        alpha_grad, state.alpha_opt_state, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, alpha_updates)
  else:
    alpha_opt_state, log_alpha = state.alpha_opt_state, state.log_alpha

  # Target critics: Polyak averaging, Qbar <- tau Q + (1 - tau) Qbar.
  target_critic_params = optax.incremental_update(
      critic_params, state.target_critic_params, agent.tau)

  metrics = jnp.stack([critic_loss, actor_loss, alpha_loss, alpha,
                       -jnp.mean(log_prob), jnp.mean(q_pred), jnp.mean(target)])
  new_state = state.replace(
      actor_params=actor_params, critic_params=critic_params,
      target_critic_params=target_critic_params, log_alpha=log_alpha,
      actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
      alpha_opt_state=alpha_opt_state, key=key,
      num_updates=state.num_updates + 1)
  return new_state, metrics


def run_updates(agent: Agent, state: SACState, num_updates: int):
  """K gradient steps in one `lax.scan`; returns (state, metrics [K, len(METRIC_NAMES)]).

  The K batches are sampled up front (uniformly, from the buffer as it is now)
  and scanned over as inputs, so the loop carries only networks, optimizer
  states and keys.
  """
  key, sample_key = jax.random.split(state.key)
  batches = jax.vmap(lambda k: replay.sample(state.buffer, k, agent.batch_size))(
      jax.random.split(sample_key, num_updates))
  step = functools.partial(gradient_step, agent)
  core, metrics = jax.lax.scan(step, state.replace(buffer=None, key=key),
                               batches)
  return core.replace(buffer=state.buffer), metrics


def sample_action(agent: Agent, state: SACState, obs, *, random: bool):
  """Exploration action in [-1, 1]^A for obs [E, O]; returns (state, action)."""
  key, act_key = jax.random.split(state.key)
  if random:
    action = jax.random.uniform(act_key, (obs.shape[0], agent.action_dim),
                                minval=-1.0, maxval=1.0)
  else:
    mean, log_std = _actor_apply(agent, state.actor_params, obs)
    action, _ = estimators.tanh_gaussian_sample_and_log_prob(
        act_key, mean, log_std)
  return state.replace(key=key), action


def deterministic_action(agent: Agent, actor_params, obs):
  """Evaluation action tanh(mean) (Haarnoja et al. 2018, Sec. 6)."""
  mean, _ = _actor_apply(agent, actor_params, obs)
  return jnp.tanh(mean)


def env_step_update(agent: Agent, state: SACState, transition: replay.Transition,
                    next_obs, *, num_updates: int, random_action: bool):
  """Insert, K gradient steps, next action: the whole per-iteration work.

  Args:
    state: one seed's state (vmapped over seeds by `make_step_fn`).
    transition: the E transitions just observed (true final obs as next_obs).
    next_obs: [E, O], observations to act on (reset obs after episode ends).
    num_updates: K (static); 0 during warm-up.
    random_action: uniform actions (static), before `learning_starts`.

  Returns:
    (state, action [E, A], metrics [len(METRIC_NAMES)], mean over the K steps
    or NaN-free zeros when K = 0).
  """
  state = state.replace(buffer=replay.add(state.buffer, transition))
  if num_updates > 0:
    state, metrics = run_updates(agent, state, num_updates)
    metrics = jnp.mean(metrics, axis=0)
  else:
    metrics = jnp.zeros((len(METRIC_NAMES),), jnp.float32)
  state, action = sample_action(agent, state, next_obs, random=random_action)
  return state, action, metrics


def make_step_fn(agent: Agent, *, num_updates: int, random_action: bool
                 ) -> Callable:
  """Compiled, seed-vmapped `env_step_update`; donates the state buffers."""
  fn = functools.partial(env_step_update, agent, num_updates=num_updates,
                         random_action=random_action)
  return jax.jit(jax.vmap(fn), donate_argnums=0)


def make_act_fn(agent: Agent, *, random: bool) -> Callable:
  """Compiled, seed-vmapped `sample_action` (used once, for the first obs)."""
  fn = functools.partial(sample_action, agent, random=random)
  return jax.jit(jax.vmap(fn), donate_argnums=0)


def make_eval_policy(agent: Agent) -> Callable:
  """Compiled, seed-vmapped deterministic policy: params [S], obs [S, n, O]."""
  return jax.jit(jax.vmap(functools.partial(deterministic_action, agent)))


def make_update_only_fn(agent: Agent, *, num_updates: int) -> Callable:
  """K gradient steps, no env: the update-only ceiling used by benchmarks."""
  def run(state):
    state, metrics = run_updates(agent, state, num_updates)
    return state, metrics[-1]
  return jax.jit(jax.vmap(run), donate_argnums=0)
