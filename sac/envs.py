"""Gymnasium vector environments for SAC: creation, checks, stepping, snapshots.

Autoreset semantics. The vector envs run in Gymnasium 1.x SAME_STEP autoreset
mode: when a sub-environment terminates or is truncated, `step` resets it in
the same call, returns the *reset* observation in `obs`, and puts the true
final observation in `info["final_obs"]` (mask `info["_final_obs"]`). So
every `step` yields one valid transition per sub-env:

    s' = final_obs where the episode ended, else obs;
    terminated stored as is (cuts the bootstrap); truncated is not stored
    (bootstraps from s');
    the next action is chosen for `obs` (the reset observation),

and nothing from an episode leaks into the next (tests/test_sac_envs.py).

Snapshots. The vector env made by `gym.make_vec` does not pickle (it holds a
local closure), and checkpoints must never run code when loaded, so nothing
here uses pickle. `snapshot` copies the state of every layer of every
sub-environment as plain JSON: the attributes of each wrapper (TimeLimit's
elapsed steps, OrderEnforcing's flag, ...) and of the base env (its
`np_random` generator as its bit generator's state dict, classic-control
`state`, the MuJoCo integration state of `mj_getState(mjSTATE_INTEGRATION)`,
which makes the continuation bitwise exact), plus the SyncVectorEnv's own
buffers and autoreset flags. Arrays are stored as dtype, shape and base64
bytes. Constant objects (spaces, the spec, MuJoCo's compiled model) are
rebuilt by make and not copied. `restore` parses the JSON, accepts only the
types in `SNAPSHOT_TYPES` (rebuilt by this module's own code) and refuses any
other content with a ValueError, then writes the state into a freshly made
vector env of the same id.
"""

from __future__ import annotations

import base64
import json
from typing import NamedTuple, Sequence

import gymnasium as gym
import mujoco
import numpy as np

# Attributes not copied by snapshots: the wrapped env (walked separately) and
# MuJoCo's compiled model (constant, rebuilt by make).
_NOT_SNAPSHOT = frozenset({"env", "model", "_ezpickle_args", "_ezpickle_kwargs",
                           "_saved_kwargs", "mujoco_renderer", "render_mode",
                           "metadata"})
# Constant objects rebuilt by make, not copied by snapshots: the spaces and
# the registration spec. (A space's own sampler is not saved: SAC draws its
# random actions itself.)
_CONSTANT_TYPES = (gym.Space, gym.envs.registration.EnvSpec)
_VECTOR_FIELDS = ("_autoreset_envs", "_env_obs", "_observations", "_rewards",
                  "_terminations", "_truncations")
SNAPSHOT_FORMAT = "stochgrad-env-snapshot/1"
# What a snapshot may hold besides JSON's null, bools, numbers, strings, lists.
SNAPSHOT_TYPES = ("tuple", "dict", "ndarray", "scalar", "generator", "mjdata")
_NUMERIC_KINDS = "biuf"   # bool, signed and unsigned ints, floats.
_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM,
                   "MT19937": np.random.MT19937, "Philox": np.random.Philox,
                   "SFC64": np.random.SFC64}
_MJ_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
  """The registered spec of `env_id`, or a ValueError naming it."""
  try:
    return gym.spec(env_id)
  except gym.error.Error as err:
    raise ValueError(
        f"unknown env_id {env_id!r}: not registered with Gymnasium ({err}). "
        "Expected an id such as 'Pendulum-v1' or 'HalfCheetah-v5'.") from err


def check_spaces(env_id: str, observation_space: gym.Space,
                 action_space: gym.Space) -> None:
  """SAC needs a flat Box observation and a bounded Box action space."""
  if not isinstance(action_space, gym.spaces.Box):
    raise ValueError(
        f"env {env_id!r} has action space {action_space}; SAC needs a "
        "continuous gymnasium.spaces.Box action space (discrete and other "
        "spaces are not supported).")
  if not isinstance(observation_space, gym.spaces.Box):
    raise ValueError(
        f"env {env_id!r} has observation space {observation_space}; SAC needs "
        "a gymnasium.spaces.Box observation space.")
  if len(observation_space.shape) != 1 or len(action_space.shape) != 1:
    raise ValueError(
        f"env {env_id!r}: expected 1-D Box spaces; got observation shape "
        f"{observation_space.shape} and action shape {action_space.shape}.")
  if not (np.all(np.isfinite(action_space.low))
          and np.all(np.isfinite(action_space.high))):
    raise ValueError(
        f"env {env_id!r}: the action bounds must be finite to rescale tanh "
        f"actions; got low={action_space.low}, high={action_space.high}.")


def make_vec_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
  """Synchronous vector env in SAME_STEP autoreset mode, spaces checked."""
  check_env_id(env_id)
  env = gym.make_vec(
      env_id, num_envs=num_envs, vectorization_mode="sync",
      vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
  check_spaces(env_id, env.single_observation_space, env.single_action_space)
  return env


def env_seeds(seeds: Sequence[int], num_envs: int, stream: int = 0,
              round_index: int = 0) -> list[int]:
  """Sub-env reset seeds [seed-major, env-minor] of (seed, stream, round, env).

  A seed's environments depend on that seed only, so agent i of a run with
  num_seeds > 1 sees the same episodes as a single-seed run with its seed.
  stream 0 is training, 1 evaluation.
  """
  return [int(np.random.SeedSequence([int(s), stream, round_index, e])
              .generate_state(1)[0])
          for s in seeds for e in range(num_envs)]


class ActionScaler:
  """Maps policy actions in [-1, 1]^A to the env's Box [low, high] (affine)."""

  def __init__(self, action_space: gym.spaces.Box):
    self.low = np.asarray(action_space.low, np.float64)
    self.high = np.asarray(action_space.high, np.float64)

  def to_env(self, action: np.ndarray) -> np.ndarray:
    action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
    return self.low + 0.5 * (action + 1.0) * (self.high - self.low)


def step(env: gym.vector.VectorEnv, env_action: np.ndarray):
  """One vector step; returns (obs, reward, terminated, truncated, next_obs).

  `obs` is what to act on next (reset observation where an episode ended);
  `next_obs` is the true s' of the transition (final observation there).
  """
  obs, reward, terminated, truncated, info = env.step(env_action)
  next_obs = np.array(obs, copy=True)
  if "_final_obs" in info:
    ended = np.asarray(info["_final_obs"], bool)
    for i in np.flatnonzero(ended):
      next_obs[i] = info["final_obs"][i]
  return (obs, np.asarray(reward), np.asarray(terminated, bool),
          np.asarray(truncated, bool), next_obs)


def _layers(env: gym.Env) -> list:
  layers = [env]
  while hasattr(env, "env"):
    env = env.env
    layers.append(env)
  return layers


def snapshot(env: gym.vector.SyncVectorEnv) -> bytes:
  """State of a SyncVectorEnv and all its sub-envs as JSON (see module doc).

  Raises TypeError naming the attribute if a layer holds a value of a type
  with no plain-data encoding (so nothing is silently left out).
  """
  if not isinstance(env, gym.vector.SyncVectorEnv):
    raise TypeError(
        f"snapshot needs a SyncVectorEnv; got {type(env).__name__}.")
  subenvs = [[_encode_layer(layer) for layer in _layers(sub)]
             for sub in env.envs]
  vector = {k: _encode(getattr(env, k), f"vector.{k}")
            for k in _VECTOR_FIELDS if hasattr(env, k)}
  return json.dumps({"format": SNAPSHOT_FORMAT, "subenvs": subenvs,
                     "vector": vector}).encode()


def restore(env: gym.vector.SyncVectorEnv, blob: bytes) -> None:
  """Writes a `snapshot` back into a freshly made vector env of the same id.

  Only JSON is parsed, and only the types listed in `SNAPSHOT_TYPES` are
  rebuilt (by this module's own code), so a snapshot cannot run code; any
  other content raises ValueError before the env is touched.
  """
  saved = _parse_snapshot(blob)
  try:
    subenvs = [[{k: _decode(v) for k, v in layer.items()} for layer in sub]
               for sub in saved["subenvs"]]
    vector = {k: _decode(v) for k, v in saved["vector"].items()}
  except (AttributeError, KeyError, TypeError) as err:
    raise ValueError(f"the environment snapshot is malformed ({err!r}); "
                     "refusing to load it.") from None
  if len(subenvs) != len(env.envs):
    raise ValueError(
        f"snapshot has {len(subenvs)} sub-envs; the env has "
        f"{len(env.envs)} (num_envs/num_seeds changed since the checkpoint?).")
  pairs = []  # (layer, its saved state), all checked before any is written.
  for sub, layer_states in zip(env.envs, subenvs):
    layers = _layers(sub)
    if len(layers) != len(layer_states):
      raise ValueError("snapshot's wrapper stack differs from the env's.")
    pairs += zip(layers, layer_states)
  for layer, state in pairs:
    _check_layer(layer, state)
  for k in vector:
    if k not in _VECTOR_FIELDS:
      raise ValueError(f"snapshot sets unknown vector-env field {k!r}; "
                       f"expected some of {_VECTOR_FIELDS}.")
  for layer, state in pairs:
    _restore_layer(layer, state)
  for k, v in vector.items():
    setattr(env, k, v)


# --- Plain-data encoding of the snapshot -------------------------------------
# Hand-written because no library offers a code-free serialisation of these
# objects: pickle (and everything built on it) can run code on load.


class _MjState(NamedTuple):
  """A decoded MuJoCo integration state, written into the layer's MjData."""
  state: np.ndarray


def _encode_layer(layer) -> dict:
  name = type(layer).__name__
  return {k: _encode(v, f"{name}.{k}", layer) for k, v in vars(layer).items()
          if k not in _NOT_SNAPSHOT and not isinstance(v, _CONSTANT_TYPES)}


def _encode(value, where: str, layer=None):
  """JSON-able form of `value`: plain JSON, or {"type": ..., ...} objects."""
  if isinstance(value, np.generic):
    return {"type": "scalar", **_encode_bytes(np.asarray(value))}
  if value is None or type(value) in (bool, int, float, str):
    return value
  if type(value) is list:
    return [_encode(v, f"{where}[{i}]", layer) for i, v in enumerate(value)]
  if type(value) is tuple:
    return {"type": "tuple", "items": [_encode(v, f"{where}[{i}]", layer)
                                       for i, v in enumerate(value)]}
  if type(value) is dict and all(type(k) is str for k in value):
    return {"type": "dict", "items": {k: _encode(v, f"{where}[{k!r}]", layer)
                                      for k, v in value.items()}}
  if type(value) is np.ndarray:
    return {"type": "ndarray", **_encode_bytes(value)}
  if isinstance(value, np.random.Generator):
    bit_generator = value.bit_generator
    return {"type": "generator", "bit_generator": type(bit_generator).__name__,
            "state": _encode(bit_generator.state, f"{where}.state")}
  if isinstance(value, mujoco.MjData):
    # mjSTATE_INTEGRATION: everything mj_step reads, for bitwise-exact
    # continuation (MuJoCo docs, "State"); derived quantities are recomputed
    # by the next mj_step.
    state = np.empty(mujoco.mj_stateSize(layer.model, _MJ_STATE))
    mujoco.mj_getState(layer.model, value, state, _MJ_STATE)
    return {"type": "mjdata", **_encode_bytes(state)}
  raise TypeError(
      f"cannot snapshot {where}: type {type(value).__module__}."
      f"{type(value).__qualname__} has no plain-data encoding (expected one "
      f"of {SNAPSHOT_TYPES}).")


def _encode_bytes(array: np.ndarray) -> dict:
  if array.dtype.kind not in _NUMERIC_KINDS:
    raise TypeError(f"cannot snapshot an array of dtype {array.dtype}.")
  return {"dtype": array.dtype.str, "shape": list(array.shape),
          "data": base64.b64encode(np.ascontiguousarray(array).tobytes()
                                   ).decode("ascii")}


def _parse_snapshot(blob: bytes) -> dict:
  try:
    saved = json.loads(bytes(blob).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ValueError(
        "the environment snapshot is not JSON; refusing to load it (snapshots "
        f"are plain JSON, never pickle): {err}") from None
  if not (isinstance(saved, dict) and saved.get("format") == SNAPSHOT_FORMAT
          and isinstance(saved.get("subenvs"), list)
          and isinstance(saved.get("vector"), dict)):
    raise ValueError(
        "the environment snapshot is not a "
        f"{SNAPSHOT_FORMAT!r} document; refusing to load it.")
  return saved


def _decode(value):
  """Inverse of `_encode`; ValueError for anything outside SNAPSHOT_TYPES."""
  if value is None or type(value) in (bool, int, float, str):
    return value
  if type(value) is list:
    return [_decode(v) for v in value]
  kind = value.get("type")
  if kind == "tuple":
    return tuple(_decode(v) for v in value["items"])
  if kind == "dict":
    return {k: _decode(v) for k, v in value["items"].items()}
  if kind == "ndarray":
    return _decode_bytes(value)
  if kind == "scalar":
    return _decode_bytes(value)[()]
  if kind == "generator":
    name = value["bit_generator"]
    if name not in _BIT_GENERATORS:
      raise ValueError(
          f"the environment snapshot names bit generator {name!r}; expected "
          f"one of {tuple(_BIT_GENERATORS)}. Refusing to load it.")
    bit_generator = _BIT_GENERATORS[name]()
    bit_generator.state = _decode(value["state"])
    return np.random.Generator(bit_generator)
  if kind == "mjdata":
    return _MjState(_decode_bytes(value))
  raise ValueError(
      f"the environment snapshot names type {kind!r}; only {SNAPSHOT_TYPES} "
      "are allowed. Refusing to load it.")


def _decode_bytes(value: dict) -> np.ndarray:
  dtype = np.dtype(value["dtype"])
  if dtype.kind not in _NUMERIC_KINDS:
    raise ValueError(
        f"the environment snapshot holds an array of dtype {dtype}; only "
        "bool and numeric arrays are allowed. Refusing to load it.")
  data = base64.b64decode(value["data"], validate=True)
  return np.frombuffer(data, dtype).reshape(value["shape"]).copy()


def _check_layer(layer, state: dict) -> None:
  """Raises ValueError if `state` cannot be written into `layer`."""
  for k, v in state.items():
    if isinstance(v, _MjState):
      model, data = getattr(layer, "model", None), getattr(layer, k, None)
      if not isinstance(data, mujoco.MjData):
        raise ValueError(f"snapshot holds MuJoCo state for {k!r}, which the "
                         f"env's {type(layer).__name__} does not have.")
      if v.state.shape != (mujoco.mj_stateSize(model, _MJ_STATE),):
        raise ValueError(
            f"snapshot's MuJoCo state has shape {v.state.shape}; the env's "
            f"model needs ({mujoco.mj_stateSize(model, _MJ_STATE)},).")


def _restore_layer(layer, state: dict) -> None:
  """Writes a `_check_layer`-checked state into `layer`."""
  for k, v in state.items():
    if isinstance(v, _MjState):
      mujoco.mj_setState(layer.model, getattr(layer, k), v.state, _MJ_STATE)
    else:
      layer.__dict__[k] = v
