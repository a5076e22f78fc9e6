"""A seeded synthetic mixture-of-domains next-token task with a Bayes loss.

Each of M domains is its own first-order Markov chain over a vocabulary of V
tokens, with transition rows drawn from a sparse Dirichlet (so domains look
different). An example picks a domain d ~ prior, a first token uniformly, runs
d's chain for L tokens (the context) and asks for the next token. Good routing
is per domain: an expert per domain (or group of domains) only has to learn
its own chain.

Because the generating process is known, the Bayes-optimal predictive

    p(y | c) = sum_d p(d | c) T_d[c_L, y],
    p(d | c) ∝ prior_d * prod_t T_d[c_t, c_{t+1}]

is exact, and so is the expected cross-entropy of any model q on a context,
sum_y p(y | c) (-log q(y | c)); its excess over the Bayes loss (the entropy
of p(. | c)) is KL(p || q) >= 0. Evaluating with expected rather than sampled
targets removes the target-sampling noise.

Shapes: M domains, V vocabulary, L context length, B batch.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = chex.Array


class DomainMixture(NamedTuple):
  """Parameters of the generating process (a pytree)."""
  log_prior: Array  # [M]
  log_transition: Array  # [M, V, V], rows are log-distributions.


class Batch(NamedTuple):
  context: Array  # int32 [B, L]
  target: Array  # int32 [B]
  domain: Array  # int32 [B]


def make_task(key: chex.PRNGKey, *, num_domains: int, vocab_size: int,
              concentration: float) -> DomainMixture:
  """Draws the domains' transition matrices (seeded by `key`).

  Args:
    key: PRNG key (the task seed).
    num_domains: M >= 1.
    vocab_size: V >= 2.
    concentration: Dirichlet concentration of each transition row (> 0;
      small values give sparse, easily told-apart domains).

  Returns:
    DomainMixture with a uniform prior.
  """
  if num_domains < 1:
    raise ValueError(f"num_domains must be >= 1; got {num_domains}.")
  if vocab_size < 2:
    raise ValueError(f"vocab_size must be >= 2; got {vocab_size}.")
  if not concentration > 0:
    raise ValueError(f"concentration must be > 0; got {concentration}.")
  alpha = jnp.full((vocab_size,), concentration, jnp.float32)
  rows = jax.random.dirichlet(key, alpha, (num_domains, vocab_size))
  log_transition = jnp.log(jnp.maximum(rows, 1e-30))
  log_transition = jax.nn.log_softmax(log_transition, axis=-1)
  log_prior = jnp.full((num_domains,), -jnp.log(num_domains), jnp.float32)
  return DomainMixture(log_prior, log_transition)


def sample_batch(key: chex.PRNGKey, task: DomainMixture, *, batch_size: int,
                 context_length: int) -> Batch:
  """Samples B (context, next token, domain) examples.

  Args:
    key: PRNG key.
    task: the generating process.
    batch_size: B.
    context_length: L >= 1.

  Returns:
    Batch.
  """
  num_domains, vocab_size, _ = task.log_transition.shape
  k_domain, k_first, k_steps = jax.random.split(key, 3)
  domain = jax.random.categorical(k_domain, task.log_prior, shape=(batch_size,))
  first = jax.random.randint(k_first, (batch_size,), 0, vocab_size)

  def step(token, key_t):
    logits = task.log_transition[domain, token]  # [B, V]
    nxt = jax.random.categorical(key_t, logits, axis=-1)
    return nxt, nxt

  _, rest = jax.lax.scan(step, first, jax.random.split(k_steps, context_length))
  tokens = jnp.concatenate([first[None], rest], axis=0).T  # [B, L + 1]
  return Batch(context=tokens[:, :-1].astype(jnp.int32),
               target=tokens[:, -1].astype(jnp.int32),
               domain=domain.astype(jnp.int32))


def domain_log_posterior(task: DomainMixture, context: Array) -> Array:
  """log p(d | context), [B, M] (the first token is uniform in every domain)."""
  chex.assert_rank(context, 2)
  # log T_d[c_t, c_{t+1}] for every domain: [M, B, L - 1].
  trans = task.log_transition[:, context[:, :-1], context[:, 1:]]
  log_joint = task.log_prior[:, None] + jnp.sum(trans, axis=-1)  # [M, B]
  return jax.nn.log_softmax(log_joint.T, axis=-1)


def bayes_log_predictive(task: DomainMixture, context: Array) -> Array:
  """log p(y | context) of the Bayes-optimal predictor, [B, V]."""
  log_post = domain_log_posterior(task, context)  # [B, M]
  last = context[:, -1]
  log_next = jnp.transpose(task.log_transition[:, last], (1, 0, 2))  # [B,M,V]
  return jax.nn.logsumexp(log_post[:, :, None] + log_next, axis=1)


def expected_cross_entropy(log_p: Array, log_q: Array) -> Array:
  """Mean over the batch of sum_y p(y) (-log q(y)); log_p, log_q [B, V]."""
  chex.assert_equal_shape([log_p, log_q])
  return jnp.mean(-jnp.sum(jnp.exp(log_p) * log_q, axis=-1))


def bayes_loss(task: DomainMixture, context: Array) -> Array:
  """Bayes-optimal expected cross-entropy (the predictive's entropy), nats."""
  log_p = bayes_log_predictive(task, context)
  return expected_cross_entropy(log_p, log_p)
