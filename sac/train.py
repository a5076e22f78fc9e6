"""`train(config, workdir)`: the SAC run loop (collect, update, eval, log, checkpoint).

Each loop iteration steps the S * E sub-environments once (S seeds, E envs per
seed) and makes one compiled call that stores the transitions, runs the
gradient steps and returns the next actions (sac/learner.py).

Resume. The loop resumes from the latest checkpoint in `workdir` when there
is one, and the continuation is exact (byte for byte in eval.csv and the
final state). The run holds `workdir/run.lock` (one writer per workdir) and
resumes only under the checkpoint's own config: any change outside
`RESUME_ALLOWED` is refused with an error naming each changed field; a
damaged latest checkpoint is set aside and the run resumes from the newest
one that restores (`common.checkpointing`).

Outputs in `workdir`: config.json, eval.csv, train.csv, tensorboard/,
learning_curve.png, checkpoints/, run.lock.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from common import checkpointing
from common import csv_logs
from sac import envs
from sac import evaluation
from sac import learner
from sac import plots
from sac import replay
from sac import seed_sharding
from sac import validation

TRAIN_COLUMNS = ("step", "seed") + learner.METRIC_NAMES + (
    "episode_return", "steps_per_sec")
# The config fields a resume may change; every other field must equal the
# checkpoint's. None changes the trajectory (states, environments, eval
# episodes): total_steps extends or ends the run; checkpoint_every moves the
# checkpoints, and a resume from any checkpoint is exact; log_every changes
# only the averaging windows of train.csv and TensorBoard (metrics feed
# nothing back); progress_bar only the terminal.
RESUME_ALLOWED = ("total_steps", "checkpoint_every", "log_every",
                  "progress_bar")


def build_agent(config, obs_dim: int, action_dim: int) -> learner.Agent:
  return learner.make_agent(
      obs_dim=obs_dim, action_dim=action_dim, hidden_sizes=config.hidden_sizes,
      num_critics=config.num_critics, actor_lr=config.actor_lr,
      critic_lr=config.critic_lr, alpha_lr=config.alpha_lr, gamma=config.gamma,
      tau=config.tau, batch_size=config.batch_size, alpha=config.alpha,
      target_entropy=config.target_entropy, actor_grad=config.actor_grad,
      score_function_samples=config.score_function_samples,
      temperature_loss=config.temperature_loss)


def init_states(agent: learner.Agent, config, seeds) -> learner.SACState:
  """Per-seed states stacked on a leading seed axis."""
  states = [learner.init_state(agent, s, config.buffer_size,
                               init_alpha=config.init_alpha,
                               fixed_alpha=config.alpha) for s in seeds]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def _crossed(step: int, num_new: int, every: int) -> bool:
  """True if (step - num_new, step] contains a multiple of `every`."""
  return step // every > (step - num_new) // every


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) SAC; returns {"eval_returns": [S] final eval returns}."""
  validation.check_config(config)
  with checkpointing.open_run(workdir, config,
                              allowed_changes=RESUME_ALLOWED,
                              keep_steps=config.keep_checkpoint_steps) as run:
    return _train(config, workdir, run)


def _train(config: ml_collections.ConfigDict, workdir: str,
           run: checkpointing.Run) -> dict:
  """`train` inside the open (locked) workdir `run`."""
  seeds = [config.seed + i for i in range(config.num_seeds)]
  num_seeds, num_envs = config.num_seeds, config.num_envs
  env = envs.make_vec_env(config.env_id, num_seeds * num_envs)
  eval_env = envs.make_vec_env(config.env_id, num_seeds * config.eval_episodes)
  scaler = envs.ActionScaler(env.single_action_space)
  obs_dim = env.single_observation_space.shape[0]
  action_dim = env.single_action_space.shape[0]
  agent = build_agent(config, obs_dim, action_dim)
  sharding = seed_sharding.seed_sharding(num_seeds)  # None on one device.
  state = seed_sharding.place(init_states(agent, config, seeds), sharding)

  restored = run.restore_latest(
      state, with_host=True,
      restore_host=lambda host: envs.restore(env, host["env"].tobytes()))
  resume_step = None if restored is None else restored.step
  if restored is None:
    obs, _ = env.reset(seed=envs.env_seeds(seeds, num_envs))
    obs = np.asarray(obs, np.float32).reshape(num_seeds, num_envs, obs_dim)
    state, action = learner.make_act_fn(
        agent, random=config.learning_starts > 0)(
            state, seed_sharding.place(obs, sharding))
    action = np.asarray(action)
    step, iteration, eval_round = 0, 0, 0
    episode_return = np.zeros(num_seeds * num_envs)
    last_return = np.full(num_seeds, np.nan)
  else:
    state, host, meta = restored.state, restored.host, restored.meta
    obs, action = host["obs"], host["action"]
    episode_return, last_return = host["episode_return"], host["last_return"]
    step, iteration, eval_round = meta["step"], meta["iteration"], meta["eval_round"]

  eval_log = csv_logs.CsvLog(os.path.join(workdir, "eval.csv"),
                             evaluation.EVAL_COLUMNS)
  train_log = csv_logs.CsvLog(os.path.join(workdir, "train.csv"), TRAIN_COLUMNS)
  eval_log.start(resume_step)
  train_log.start(resume_step)
  writer = SummaryWriter(os.path.join(workdir, "tensorboard"),
                         purge_step=None if resume_step is None else resume_step + 1)
  step_fns = {}
  eval_policy = learner.make_eval_policy(agent)
  metric_sum = np.zeros((num_seeds, len(learner.METRIC_NAMES)))
  metric_count = 0
  last_eval = None
  interval_start, interval_step = time.perf_counter(), step
  bar = tqdm.tqdm(total=config.total_steps, initial=step, unit="step",
                  disable=not config.progress_bar, dynamic_ncols=True)

  def save_checkpoint():
    host = {"env": np.frombuffer(envs.snapshot(env), np.uint8).copy(),
            "obs": np.asarray(obs), "action": np.asarray(action),
            "episode_return": episode_return, "last_return": last_return}
    run.save(step, state, host=host, meta={
        "step": step, "iteration": iteration, "eval_round": eval_round})

  while step < config.total_steps:
    flat_action = action.reshape(num_seeds * num_envs, action_dim)
    next_obs_act, reward, terminated, truncated, next_obs = envs.step(
        env, scaler.to_env(flat_action))
    episode_return += reward
    done = terminated | truncated
    for i in np.flatnonzero(done):
      last_return[i // num_envs] = episode_return[i]
      episode_return[i] = 0.0
    shape = (num_seeds, num_envs)
    transition = replay.Transition(
        obs=obs, action=action,
        reward=reward.astype(np.float32).reshape(shape),
        next_obs=np.asarray(next_obs, np.float32).reshape(shape + (obs_dim,)),
        terminated=terminated.astype(np.float32).reshape(shape))
    obs = np.asarray(next_obs_act, np.float32).reshape(shape + (obs_dim,))
    step += num_envs
    iteration += 1
    train_now = step >= config.learning_starts and iteration % config.train_every == 0
    num_updates = (config.updates_per_step * num_envs * config.train_every
                   if train_now else 0)
    random_action = step < config.learning_starts
    fn_key = (num_updates, random_action)
    if fn_key not in step_fns:
      step_fns[fn_key] = learner.make_step_fn(
          agent, num_updates=num_updates, random_action=random_action)
    state, action, metrics = step_fns[fn_key](
        state, *seed_sharding.place((transition, obs), sharding))
    action, metrics = jax.device_get((action, metrics))
    if num_updates:
      if not np.all(np.isfinite(metrics)):
        bad = np.argwhere(~np.isfinite(metrics))[0]
        raise FloatingPointError(
            f"non-finite {learner.METRIC_NAMES[bad[1]]}={metrics[tuple(bad)]} "
            f"for seed {seeds[bad[0]]} at step {step}; training stopped, the "
            f"last good checkpoint is step {run.latest_step()}.")
      metric_sum += metrics
      metric_count += 1

    if _crossed(step, num_envs, config.log_every) and metric_count:
      now = time.perf_counter()
      sps = (step - interval_step) / max(now - interval_start, 1e-9)
      interval_start, interval_step = now, step
      means = metric_sum / metric_count
      train_log.write([
          dict(step=step, seed=seed, **dict(zip(learner.METRIC_NAMES, means[s])),
               episode_return=last_return[s], steps_per_sec=sps)
          for s, seed in enumerate(seeds)])
      for name, value in zip(learner.METRIC_NAMES, means.mean(axis=0)):
        writer.add_scalar(f"train/{name}", value, step)
      writer.add_scalar("train/steps_per_sec", sps, step)
      metric_sum[:] = 0.0
      metric_count = 0
      bar.set_postfix(sps=f"{sps:.0f}", ret=f"{np.nanmean(last_return):.1f}",
                      refresh=False)

    scheduled = _crossed(step, num_envs, config.eval_every)
    if scheduled or step >= config.total_steps:
      returns, _ = evaluation.evaluate(
          eval_env, eval_policy, state.actor_params, seeds,
          config.eval_episodes, eval_round, scaler)
      # Only scheduled evaluations advance the round (it seeds the episodes),
      # so a run extended past an off-schedule final evaluation evaluates on
      # the same episodes as a run given the longer budget from the start.
      eval_round += int(scheduled)
      last_eval = returns.mean(axis=1)
      eval_log.write([dict(step=step, seed=seed, return_mean=returns[s].mean(),
                           return_std=returns[s].std(),
                           episodes=config.eval_episodes)
                      for s, seed in enumerate(seeds)])
      for s, seed in enumerate(seeds):
        writer.add_scalar(f"eval/return_seed{seed}", returns[s].mean(), step)
      writer.add_scalar("eval/return_mean", returns.mean(), step)
      bar.set_postfix(eval=f"{returns.mean():.1f}", refresh=False)

    if (_crossed(step, num_envs, config.checkpoint_every)
        or step in config.keep_checkpoint_steps or step >= config.total_steps):
      save_checkpoint()
    bar.update(num_envs)

  bar.close()
  writer.close()
  plots.plot_learning_curve(
      os.path.join(workdir, "eval.csv"),
      os.path.join(workdir, "learning_curve.png"),
      f"SAC ({config.actor_grad}) on {config.env_id}")
  if last_eval is None:  # Resumed a finished run: report the logged last eval.
    rows = [r for r in csv_logs.read_csv(os.path.join(workdir, "eval.csv"))
            if int(r["step"]) == step]
    last_eval = np.array([float(r["return_mean"]) for r in rows])
  return {"eval_returns": np.asarray(last_eval), "step": step}
