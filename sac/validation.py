"""Checks of the run configuration, with errors that name the bad value."""

from __future__ import annotations

from sac import learner

_POSITIVE_INTS = ("total_steps", "batch_size", "buffer_size", "num_critics",
                  "updates_per_step", "train_every", "num_envs", "num_seeds",
                  "eval_every", "eval_episodes", "checkpoint_every", "log_every")
_POSITIVE_FLOATS = ("actor_lr", "critic_lr", "alpha_lr", "init_alpha")


def check_config(config) -> None:
  """Raises ValueError naming the first out-of-range field of `config`."""
  for name in _POSITIVE_INTS:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{name} must be a positive integer; got {value!r}.")
  for name in _POSITIVE_FLOATS:
    value = config[name]
    if not float(value) > 0.0:
      raise ValueError(f"config.{name} must be > 0; got {value!r}.")
  if config.alpha is not None and not float(config.alpha) > 0.0:
    raise ValueError(
        f"config.alpha must be > 0 (fixed temperature) or None (learned); got "
        f"{config.alpha!r}.")
  if not 0.0 <= config.gamma <= 1.0:
    raise ValueError(f"config.gamma must be in [0, 1]; got {config.gamma!r}.")
  if not 0.0 < config.tau <= 1.0:
    raise ValueError(f"config.tau must be in (0, 1]; got {config.tau!r}.")
  if config.learning_starts < 0:
    raise ValueError(
        f"config.learning_starts must be >= 0; got {config.learning_starts!r}.")
  if config.batch_size > config.buffer_size:
    raise ValueError(
        f"config.batch_size={config.batch_size} is larger than "
        f"config.buffer_size={config.buffer_size}; expected batch_size <= "
        "buffer_size.")
  if config.buffer_size % config.num_envs:
    raise ValueError(
        f"config.buffer_size={config.buffer_size} must be a multiple of "
        f"config.num_envs={config.num_envs}.")
  if config.actor_grad not in learner.ACTOR_GRADS:
    raise ValueError(
        f"config.actor_grad must be one of {learner.ACTOR_GRADS}; got "
        f"{config.actor_grad!r}.")
  if config.temperature_loss not in learner.TEMPERATURE_LOSSES:
    raise ValueError(
        f"config.temperature_loss must be one of "
        f"{tuple(learner.TEMPERATURE_LOSSES)}; got {config.temperature_loss!r}.")
  if config.actor_grad == learner.SCORE_FUNCTION and config.score_function_samples < 2:
    raise ValueError(
        "config.score_function_samples must be >= 2 for the leave-one-out "
        f"baseline; got {config.score_function_samples!r}.")
  if not config.hidden_sizes or any(int(h) < 1 for h in config.hidden_sizes):
    raise ValueError(
        f"config.hidden_sizes must be positive layer widths; got "
        f"{tuple(config.hidden_sizes)!r}.")
  keep = config.keep_checkpoint_steps
  if not isinstance(keep, (tuple, list)) or any(
      isinstance(k, bool) or not isinstance(k, int) or k < 1
      or k % config.num_envs for k in keep):
    raise ValueError(
        "config.keep_checkpoint_steps must be a tuple of positive step "
        f"counts, each a multiple of config.num_envs={config.num_envs}; got "
        f"{keep!r}.")
  if config.seed < 0:
    raise ValueError(f"config.seed must be >= 0; got {config.seed!r}.")
