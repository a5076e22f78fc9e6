"""`train(config, workdir)`: SAC on a Gymnasium task, in the shared loop.

`common.training_loop` runs the loop; this module supplies its parts:
  step        one iteration of every seed's sub-environments and the
              gradient steps they call for (`sac.collector`);
  log         train.csv: per seed, the means of the update metrics since
              the last log, the last finished episode's return, environment
              steps per second and the training wall-clock seconds;
  evaluate    eval.csv: per seed, the deterministic policy's return over
              `eval_episodes` episodes (`sac.evaluation`);
  checkpoint  the SACState stacked over seeds, with the environments, the
              observations to act on and the pending transitions.

Resume. The loop resumes from the latest checkpoint in `workdir` when there
is one, and the continuation is exact (byte for byte in eval.csv and the
final state). The run holds `workdir/run.lock` (one writer per workdir) and
resumes only under the checkpoint's own config: any change outside
`RESUME_ALLOWED` (and an increase of `RESUME_MAY_GROW`) is refused with an
error naming each changed field; a damaged latest checkpoint is set aside and
the run resumes from the newest one that restores (`common.checkpointing`).
Checkpoints written in an earlier structure of the state load too, and so
do those of a smaller buffer that never wrapped (`sac.state_layouts`): a
run extended with a larger num_steps and buffer_size goes on as the run
given that budget and buffer from the start.

Outputs in `workdir`: config.json, provenance.json, eval.csv, train.csv,
tensorboard/, learning_curve.png, checkpoints/, run.lock.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import checkpointing
from common import training_loop
from sac import collector as sac_collector
from sac import envs
from sac import evaluation
from sac import learner
from sac import plots
from sac import seed_sharding
from sac import state_layouts
from sac import validation

TRAIN_COLUMNS = ("step", "seed") + learner.METRIC_NAMES + (
    "episode_return", "steps_per_sec", "seconds")
# The config fields a resume may change; every other field must equal the
# checkpoint's. None changes the trajectory (states, environments, eval
# episodes): num_steps extends or ends the run; checkpoint_every moves the
# checkpoints, and a resume from any checkpoint is exact; log_every changes
# only the averaging windows of train.csv and TensorBoard (metrics feed
# nothing back); progress_bar only the terminal; keep_checkpoint_steps only
# which checkpoints stay (none kept before is deleted).
RESUME_ALLOWED = ("num_steps", "checkpoint_every", "log_every",
                  "progress_bar", "keep_checkpoint_steps")
# Config fields a resume may increase: buffer_size, for a buffer that never
# wrapped (`sac.state_layouts.grown_buffer`), gives the run the larger
# buffer would have trained from the start.
RESUME_MAY_GROW = ("buffer_size",)


def build_agent(config, obs_dim: int, action_dim: int) -> learner.Agent:
  return learner.make_agent(
      obs_dim=obs_dim, action_dim=action_dim, hidden_sizes=config.hidden_sizes,
      num_critics=config.num_critics, actor_lr=config.actor_lr,
      critic_lr=config.critic_lr, alpha_lr=config.alpha_lr, gamma=config.gamma,
      tau=config.tau, batch_size=config.batch_size, alpha=config.alpha,
      target_entropy=config.target_entropy, actor_grad=config.actor_grad,
      score_function_samples=config.score_function_samples,
      temperature_loss=config.temperature_loss,
      pathwise_samples=config.pathwise_samples)


def init_states(agent: learner.Agent, config, seeds) -> learner.SACState:
  """Per-seed states stacked on a leading seed axis."""
  states = [learner.init_state(agent, s, config.buffer_size,
                               init_alpha=config.init_alpha,
                               fixed_alpha=config.alpha) for s in seeds]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) SAC; returns {"eval_returns": [S] final eval returns,
  "step": the final step}."""
  validation.check_config(config)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  env = envs.make_vec_env(config.env_id, config.num_seeds * config.num_envs)
  eval_env = envs.make_vec_env(config.env_id,
                               config.num_seeds * config.eval_episodes)
  scaler = envs.ActionScaler(env.single_action_space)
  agent = build_agent(config, env.single_observation_space.shape[0],
                      env.single_action_space.shape[0])
  sharding = seed_sharding.seed_sharding(config.num_seeds)  # None: 1 device.
  state = seed_sharding.place(init_states(agent, config, seeds), sharding)
  collector = sac_collector.Collector(config, agent, env, scaler, seeds,
                                      sharding)
  program = make_program(config, agent, collector, eval_env)
  with checkpointing.open_run(workdir, config,
                              allowed_changes=RESUME_ALLOWED,
                              may_grow=RESUME_MAY_GROW,
                              keep_steps=config.keep_checkpoint_steps,
                              keep_steps_field="keep_checkpoint_steps") as run:
    _, rows = training_loop.run(
        run, state, program, workdir=workdir, num_steps=config.num_steps,
        tensorboard=True, progress_bar=config.progress_bar)
  plots.plot_learning_curve(
      os.path.join(workdir, "eval.csv"),
      os.path.join(workdir, "learning_curve.png"),
      f"SAC ({config.actor_grad}) on {config.env_id}")
  return {"eval_returns": np.array([r["return_mean"] for r in rows]),
          "step": rows[0]["step"] if rows else 0}


def make_program(config, agent: learner.Agent,
                 collector: sac_collector.Collector, eval_env
                 ) -> training_loop.Program:
  """SAC's step, train.csv rows, evaluation and schedules."""
  seeds = collector.seeds
  eval_policy = learner.make_eval_policy(agent)

  def log(means: dict, step: int, steps_per_sec: float) -> list[dict]:
    return [{"step": step, "seed": seed,
             **{name: float(means[name][s]) for name in learner.METRIC_NAMES},
             "episode_return": float(collector.last_return[s]),
             "steps_per_sec": steps_per_sec}
            for s, seed in enumerate(seeds)]

  def evaluate(state, step: int, scheduled: bool, _) -> list[dict]:
    returns, _ = evaluation.evaluate(
        eval_env, eval_policy, state.actor_params, seeds,
        config.eval_episodes, collector.eval_round, collector.scaler)
    # Only scheduled evaluations advance the round (it seeds the episodes),
    # so a run extended past an off-schedule final evaluation evaluates on
    # the same episodes as a run given the longer budget from the start.
    collector.eval_round += int(scheduled)
    return [{"step": step, "seed": seed, "return_mean": returns[s].mean(),
             "return_std": returns[s].std(), "episodes": config.eval_episodes}
            for s, seed in enumerate(seeds)]

  return training_loop.Program(
      stride=config.num_envs, step=collector.step, evaluate=evaluate,
      eval_columns=evaluation.EVAL_COLUMNS, loss_names=learner.METRIC_NAMES,
      evaluate_every=training_loop.Every(config.eval_every),
      checkpoint_every=training_loop.Every(
          config.checkpoint_every,
          on_steps=tuple(config.keep_checkpoint_steps)),
      log=log, log_columns=TRAIN_COLUMNS,
      log_every=training_loop.Every(config.log_every, at_end=False),
      host=collector, seeds=seeds, pipelined=True,
      layouts=state_layouts.layouts(config.buffer_size),
      postfix=lambda rows: {
          "eval": f"{np.mean([r['return_mean'] for r in rows]):.1f}"},
      desc=f"sac {config.env_id}")
