"""Checks of config fields, the same in every trainer.

Each check reads `config[name]` and raises with a message that names the
field, the value and what was expected: TypeError for a value of the wrong
type (a string where a number belongs, a float where an int belongs, a
bool anywhere a number belongs), ValueError for a value of the right type out
of range (zero steps, an infinite or negative learning rate, an unknown
choice).

Example:
  >>> import ml_collections
  >>> from common import config_checks
  >>> config = ml_collections.ConfigDict({"num_steps": 0})
  >>> config_checks.positive_int(config, "num_steps")
  Traceback (most recent call last):
  ...
  ValueError: config.num_steps must be an int >= 1; got 0.
"""

from __future__ import annotations

import math
from typing import Any, Collection, Sequence


def _number(config, name: str, kinds, expected: str) -> Any:
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, kinds):
    raise TypeError(f"config.{name} must be {expected}; got {value!r} "
                    f"({type(value).__name__}).")
  return value


def integer(config, name: str, *, minimum: int) -> int:
  """config[name] is an int >= minimum."""
  value = _number(config, name, int, f"an int >= {minimum}")
  if value < minimum:
    raise ValueError(
        f"config.{name} must be an int >= {minimum}; got {value!r}.")
  return value


def positive_int(config, name: str) -> int:
  """config[name] is an int >= 1."""
  return integer(config, name, minimum=1)


def real(config, name: str, *, low: float = -math.inf,
         high: float = math.inf, low_open: bool = False,
         high_open: bool = False) -> float:
  """config[name] is a finite number in [low, high].

  `low_open`/`high_open` exclude the end points.
  """
  bounds = ["finite"]
  if low > -math.inf:
    bounds.append(f"{'>' if low_open else '>='} {low:g}")
  if high < math.inf:
    bounds.append(f"{'<' if high_open else '<='} {high:g}")
  expected = " and ".join(bounds)
  value = _number(config, name, (int, float), f"a number, {expected}")
  inside = (math.isfinite(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high))
  if not inside:
    raise ValueError(f"config.{name} must be {expected}; got {value!r}.")
  return float(value)


def positive(config, name: str) -> float:
  """config[name] is a finite number > 0."""
  return real(config, name, low=0.0, low_open=True)


def non_negative(config, name: str) -> float:
  """config[name] is a finite number >= 0."""
  return real(config, name, low=0.0)


def optional_positive(config, name: str) -> float | None:
  """config[name] is None or a finite number > 0."""
  return None if config[name] is None else positive(config, name)


def one_of(config, name: str, choices: Collection[str]) -> str:
  """config[name] is one of `choices` (names)."""
  value = config[name]
  if not isinstance(value, str):
    raise TypeError(f"config.{name} must be one of {tuple(choices)}; got "
                    f"{value!r} ({type(value).__name__}).")
  if value not in choices:
    raise ValueError(
        f"config.{name} must be one of {tuple(choices)}; got {value!r}.")
  return value


def int_tuple(config, name: str, *, minimum: int, allow_empty: bool
              ) -> tuple[int, ...]:
  """config[name] is a tuple (or list) of ints >= minimum."""
  value = config[name]
  expected = (f"a {'' if allow_empty else 'non-empty '}tuple of ints >= "
              f"{minimum}")
  if not isinstance(value, (tuple, list)) or any(
      isinstance(v, bool) or not isinstance(v, int) for v in value):
    raise TypeError(f"config.{name} must be {expected}; got {value!r}.")
  if (not value and not allow_empty) or any(v < minimum for v in value):
    raise ValueError(f"config.{name} must be {expected}; got {value!r}.")
  return tuple(value)


def multiple_of(config, name: str, divisor_name: str) -> None:
  """config[name] is a multiple of config[divisor_name]."""
  if config[name] % config[divisor_name]:
    raise ValueError(
        f"config.{name} ({config[name]}) must be a multiple of "
        f"config.{divisor_name} ({config[divisor_name]}).")


def all_positive_ints(config, names: Sequence[str]) -> None:
  for name in names:
    positive_int(config, name)


def all_positive(config, names: Sequence[str]) -> None:
  for name in names:
    positive(config, name)


def all_non_negative(config, names: Sequence[str]) -> None:
  for name in names:
    non_negative(config, name)
