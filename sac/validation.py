"""Checks of the SAC run configuration (`common.config_checks`): a wrong type
raises TypeError, a wrong value ValueError, each naming the field and value."""

from __future__ import annotations

from common import config_checks as checks
from sac import learner

_POSITIVE_INTS = ("num_steps", "batch_size", "buffer_size", "num_critics",
                  "updates_per_step", "train_every", "num_envs", "num_seeds",
                  "eval_every", "eval_episodes", "checkpoint_every",
                  "log_every", "score_function_samples", "pathwise_samples")
_POSITIVE_FLOATS = ("actor_lr", "critic_lr", "alpha_lr", "init_alpha")


def check_config(config) -> None:
  """Raises TypeError or ValueError naming the first bad field of `config`."""
  checks.all_positive_ints(config, _POSITIVE_INTS)
  checks.all_positive(config, _POSITIVE_FLOATS)
  checks.optional_positive(config, "alpha")
  if config.target_entropy is not None:
    checks.real(config, "target_entropy")
  checks.real(config, "gamma", low=0.0, high=1.0)
  checks.real(config, "tau", low=0.0, high=1.0, low_open=True)
  checks.integer(config, "learning_starts", minimum=0)
  checks.integer(config, "seed", minimum=0)
  if config.batch_size > config.buffer_size:
    raise ValueError(
        f"config.batch_size={config.batch_size} is larger than "
        f"config.buffer_size={config.buffer_size}; expected batch_size <= "
        "buffer_size.")
  checks.multiple_of(config, "buffer_size", "num_envs")
  checks.one_of(config, "actor_grad", learner.ACTOR_GRADS)
  checks.one_of(config, "temperature_loss", learner.TEMPERATURE_LOSSES)
  if (config.actor_grad == learner.SCORE_FUNCTION
      and config.score_function_samples < 2):
    raise ValueError(
        "config.score_function_samples must be >= 2 for the leave-one-out "
        f"baseline; got {config.score_function_samples!r}.")
  checks.int_tuple(config, "hidden_sizes", minimum=1, allow_empty=False)
  keep = checks.int_tuple(config, "keep_checkpoint_steps", minimum=1,
                          allow_empty=True)
  if any(k % config.num_envs for k in keep):
    raise ValueError(
        "config.keep_checkpoint_steps must be multiples of "
        f"config.num_envs={config.num_envs}; got {keep!r}.")
