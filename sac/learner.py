"""SAC learner: the train state pytree and the pure, compiled updates.

Two compiled calls per environment iteration, for every seed at once (mapped
over a leading seed axis, `over_seeds`): `make_act_fn` picks the actions, and
`make_update_fn` inserts the transitions into the replay buffer and runs K
gradient steps (`lax.scan`). The host steps the environments while the
update runs (`sac.collector`).

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
from common import train_state
from sac import losses
from sac import networks
from sac import replay

PATHWISE = "pathwise"
SCORE_FUNCTION = "score_function"
ACTOR_GRADS = (PATHWISE, SCORE_FUNCTION)

# Temperature losses: Eq. 18 as written, or with log alpha (authors' code, sbx).
TEMPERATURE_LOSSES = {"alpha": losses.temperature_loss,
                      "log_alpha": losses.temperature_loss_log_alpha}

# The metrics of a gradient step, by name (`gradient_step`).
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
  pathwise_samples: int = 1


@flax.struct.dataclass
class SACState:
  """One seed's training state (`common.train_state.TrainState` per learner).

  The step of `critic` counts the gradient steps done; `alpha.params` is
  log alpha, a float32 scalar.
  """
  actor: train_state.TrainState
  critic: train_state.TrainState
  target_critic_params: Any
  alpha: train_state.TrainState
  buffer: replay.ReplayBuffer
  key: jax.Array                # raw uint32[2] PRNG key

  @property
  def actor_params(self):
    return self.actor.params

  @property
  def critic_params(self):
    return self.critic.params

  @property
  def log_alpha(self) -> jax.Array:
    return self.alpha.params["log_alpha"]

  @property
  def num_updates(self) -> jax.Array:
    return self.critic.step


def make_agent(*, obs_dim: int, action_dim: int, hidden_sizes, num_critics: int,
               actor_lr: float, critic_lr: float, alpha_lr: float, gamma: float,
               tau: float, batch_size: int, alpha, target_entropy,
               actor_grad: str, score_function_samples: int,
               temperature_loss: str = "log_alpha",
               pathwise_samples: int = 1) -> Agent:
  """The static agent; `alpha=None`: learned, `target_entropy=None`: -|A|."""
  if actor_grad not in ACTOR_GRADS:
    raise ValueError(
        f"actor_grad must be one of {ACTOR_GRADS}; got {actor_grad!r}.")
  if temperature_loss not in TEMPERATURE_LOSSES:
    raise ValueError(
        f"temperature_loss must be one of {tuple(TEMPERATURE_LOSSES)}; got "
        f"{temperature_loss!r}.")
  hidden_sizes = tuple(int(h) for h in hidden_sizes)
  # Adam over one flat vector per network (`optax.flatten`): the same
  # elementwise arithmetic with 2 moment arrays per network instead of 2 per
  # parameter array, which makes the per-step update call cheaper to
  # dispatch and run (docs/benchmarks.md, "SAC throughput"). On one device,
  # runs of several seeds give the same numbers as Adam per parameter array,
  # bit for bit; a single seed, and seeds sharded over devices, round
  # differently in the last bits.
  return Agent(
      actor=networks.Actor(hidden_sizes, action_dim),
      critic=networks.CriticEnsemble(hidden_sizes, num_critics),
      actor_optimizer=optax.flatten(optax.adam(actor_lr)),
      critic_optimizer=optax.flatten(optax.adam(critic_lr)),
      alpha_optimizer=optax.adam(alpha_lr),
      obs_dim=obs_dim, action_dim=action_dim, gamma=gamma, tau=tau,
      batch_size=batch_size,
      target_entropy=(-float(action_dim) if target_entropy is None
                      else float(target_entropy)),
      learn_alpha=alpha is None, actor_grad=actor_grad,
      score_function_samples=score_function_samples,
      temperature_loss=temperature_loss, pathwise_samples=pathwise_samples)


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
      actor=train_state.create(params=actor_params, tx=agent.actor_optimizer),
      critic=train_state.create(params=critic_params,
                                tx=agent.critic_optimizer),
      target_critic_params=critic_params,
      alpha=train_state.create(params={"log_alpha": log_alpha},
                               tx=agent.alpha_optimizer),
      buffer=replay.init(buffer_size, agent.obs_dim, agent.action_dim),
      key=key)


def _actor_apply(agent: Agent, params, obs):
  return agent.actor.apply({"params": params}, obs)


def _critic_apply(agent: Agent, params, obs, action):
  return agent.critic.apply({"params": params}, obs, action)


def _actor_objective(agent: Agent, actor_params, critic_params, alpha, obs,
                     key):
  """Actor loss (pathwise or score-function) and log pi of fresh actions [B]."""
  mean, log_std = _actor_apply(agent, actor_params, obs)
  if agent.actor_grad == PATHWISE and agent.pathwise_samples == 1:
    action, log_prob = estimators.tanh_gaussian_sample_and_log_prob(
        key, mean, log_std)
    q_values = _critic_apply(agent, critic_params, obs, action)
    return losses.actor_loss_pathwise(log_prob, q_values, alpha), log_prob
  if agent.actor_grad == PATHWISE:
    # K reparameterized actions per state; Eq. 12 averaged over them.
    num_samples = agent.pathwise_samples
    shape = (num_samples,) + mean.shape
    action, log_prob = estimators.tanh_gaussian_sample_and_log_prob(
        key, jnp.broadcast_to(mean, shape), jnp.broadcast_to(log_std, shape))
    q_values = _critic_apply(
        agent, critic_params, jnp.broadcast_to(obs, (num_samples,) + obs.shape),
        action)                                                  # [N, K, B]
    loss = losses.actor_loss_pathwise(
        log_prob.reshape(-1), q_values.reshape(q_values.shape[0], -1), alpha)
    return loss, log_prob[0]
  # Score function: M stopped samples per state, scored under the current
  # policy.
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
  next_mean, next_log_std = _actor_apply(agent, state.actor_params,
                                         batch.next_obs)
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
  critic = state.critic.apply_gradients(critic_grads, agent.critic_optimizer)

  # Actor (Eq. 7 / 12), against the updated critics.
  (actor_loss, log_prob), actor_grads = jax.value_and_grad(
      functools.partial(_actor_objective, agent), has_aux=True)(
          state.actor_params, critic.params, alpha, batch.obs, actor_key)
  actor = state.actor.apply_gradients(actor_grads, agent.actor_optimizer)

  # Temperature (Eq. 18, or its log-alpha form).
  alpha_loss, alpha_grad = jax.value_and_grad(
      TEMPERATURE_LOSSES[agent.temperature_loss])(
          state.log_alpha, log_prob, agent.target_entropy)
  alpha_state = (state.alpha.apply_gradients({"log_alpha": alpha_grad},
                                             agent.alpha_optimizer)
                 if agent.learn_alpha else state.alpha)

  # Target critics: Polyak averaging, Qbar <- tau Q + (1 - tau) Qbar.
  target_critic_params = optax.incremental_update(
      critic.params, state.target_critic_params, agent.tau)

  metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss,
             "temperature_loss": alpha_loss, "alpha": alpha,
             "entropy": -jnp.mean(log_prob), "q_mean": jnp.mean(q_pred),
             "target_mean": jnp.mean(target)}
  new_state = state.replace(
      actor=actor, critic=critic, target_critic_params=target_critic_params,
      alpha=alpha_state, key=key)
  return new_state, metrics


def run_updates(agent: Agent, state: SACState, num_updates: int):
  """K gradient steps in one `lax.scan`; returns (state, metrics, each [K]).

  The K batches are sampled up front (uniformly, from the buffer as it is now)
  and scanned over as inputs, so the loop carries only networks, optimizer
  states and keys.
  """
  key, sample_key = jax.random.split(state.key)

  def sample(k):
    return replay.sample(state.buffer, k, agent.batch_size)

  batches = jax.vmap(sample)(jax.random.split(sample_key, num_updates))
  step = functools.partial(gradient_step, agent)
  core, metrics = jax.lax.scan(step, state.replace(buffer=None, key=key),
                               batches)
  return core.replace(buffer=state.buffer), metrics


def sample_action(agent: Agent, actor_params, key, obs, *, random: bool):
  """Exploration action in [-1, 1]^A for obs [E, O]; returns (key, action)."""
  key, act_key = jax.random.split(key)
  if random:
    action = jax.random.uniform(act_key, (obs.shape[0], agent.action_dim),
                                minval=-1.0, maxval=1.0)
  else:
    mean, log_std = _actor_apply(agent, actor_params, obs)
    action, _ = estimators.tanh_gaussian_sample_and_log_prob(
        act_key, mean, log_std)
  return key, action


def deterministic_action(agent: Agent, actor_params, obs):
  """Evaluation action tanh(mean) (Haarnoja et al. 2018, Sec. 6)."""
  mean, _ = _actor_apply(agent, actor_params, obs)
  return jnp.tanh(mean)


def insert_and_update(agent: Agent, state: SACState,
                      transition: replay.Transition, *, num_updates: int):
  """Insert the transitions just observed, then K gradient steps.

  Args:
    state: one seed's state (mapped over seeds by `make_update_fn`).
    transition: E transitions (true final obs as next_obs).
    num_updates: K (static); 0 during warm-up.

  Returns:
    (state, metrics: the mean of each over the K steps, or {} when K = 0).
  """
  state = state.replace(buffer=replay.add(state.buffer, transition))
  if num_updates == 0:
    return state, {}
  state, metrics = run_updates(agent, state, num_updates)
  return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def over_seeds(fn: Callable) -> Callable:
  """`fn` mapped over the leading seed axis of every argument and output.

  `jax.vmap` when the axis holds several seeds. With one seed the axis is
  dropped and `fn` runs unbatched: XLA:CPU runs the gradient step compiled
  that way faster than the same step vmapped over an axis of size 1
  (`benchmarks/sac_throughput.py`; docs/benchmarks.md, "SAC throughput").
  The two compile to different kernels, so a seed run alone and the same
  seed run beside others agree up to floating-point rounding, not bit for
  bit; runs of several seeds are unaffected.

  Example:
    >>> import jax.numpy as jnp
    >>> double = over_seeds(lambda x: 2 * x)
    >>> double(jnp.ones((1, 3))).shape, double(jnp.ones((2, 3))).shape
    ((1, 3), (2, 3))
  """
  batched = jax.vmap(fn)

  def mapped(*args):
    if {x.shape[0] for x in jax.tree.leaves(args)} != {1}:
      return batched(*args)
    out = fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: x[None], out)

  return mapped


def make_update_fn(agent: Agent, *, num_updates: int) -> Callable:
  """Compiled, seed-mapped `insert_and_update`; donates the state buffers.

  Returns (state, metrics): the metrics as one array [S, len(METRIC_NAMES)],
  columns in the order of `METRIC_NAMES` (None when K = 0), so the host
  fetches them in one transfer instead of one per metric.
  """
  def fn(state, transition):
    state, metrics = insert_and_update(agent, state, transition,
                                       num_updates=num_updates)
    if not metrics:
      return state, None
    return state, jnp.stack([metrics[name] for name in METRIC_NAMES])

  return jax.jit(over_seeds(fn), donate_argnums=0)


def make_act_fn(agent: Agent, *, random: bool) -> Callable:
  """Compiled, seed-mapped `sample_action`: (state, obs [S, E, O]) ->
  (state, action [S, E, A]).

  Only the actor parameters and the key go to the compiled call (its
  dispatch cost grows with the number of arrays passed); the key is donated
  and the returned state holds the next one.
  """
  compiled = jax.jit(
      over_seeds(functools.partial(sample_action, agent, random=random)),
      donate_argnums=1)

  def act(state: SACState, obs):
    key, action = compiled(state.actor.params, state.key, obs)
    return state.replace(key=key), action

  return act


def make_eval_policy(agent: Agent) -> Callable:
  """Compiled, seed-mapped deterministic policy: params [S], obs [S, n, O]."""
  return jax.jit(over_seeds(functools.partial(deterministic_action, agent)))


def make_update_only_fn(agent: Agent, *, num_updates: int) -> Callable:
  """K gradient steps, no env: the update-only ceiling used by benchmarks."""
  def run(state):
    state, metrics = run_updates(agent, state, num_updates)
    return state, jax.tree.map(lambda m: m[-1], metrics)
  return jax.jit(over_seeds(run), donate_argnums=0)
