r"""Noisy top-k MoE on the synthetic mixture-of-domains task.

Run:
  python -m launch.train_moe --config=launch/configs/moe.py --workdir=/tmp/moe
Tiny CI variant:
  python -m launch.train_moe --config=launch/configs/moe.py:test \
      --workdir=/tmp/t
Ablations (Shazeer et al. 2017, Table 6):
  --config.w_importance=0 --config.w_load=0   (no balancing)
  --config.noise=False  --config.k=1  --config.num_experts=16

Measured results of these settings, with their commands, dates and commits:
docs/results.md (`python -m launch.ablate --study=moe_table6`) and
docs/moe.md. Every field is checked in `moe.train.check_config`.
"""

import ml_collections
from ml_collections import config_dict


PRESETS = ("default", "test")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  """The config of `preset`: "default", or "test" (tiny, for tests and CI)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of "
                     f"{PRESETS}.")
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds the task, the initialisation, data and noise.

  # Task: mixture of Markov-chain domains (moe/task.py).
  config.num_domains = 8  # M domains, each its own token process.
  config.vocab_size = 32  # V tokens.
  config.context_length = 8  # L context tokens per example.
  config.concentration = 0.1  # Dirichlet concentration of transition rows.

  # Model: embeddings -> Dense -> x + MoE(x) -> logits (moe/train.py).
  config.d_model = 64  # Width of the token representation entering the MoE.
  config.num_experts = 8  # E experts.
  config.k = 2  # Experts per token.
  config.expert_hidden = 64  # Hidden width of each expert FFN.
  # None = dropless dispatch; a float > 0 = capacity-limited dispatch.
  config.capacity_factor = config_dict.placeholder(float)
  # Rows per block of the dropless dispatcher (decreasing sizes).
  config.block_sizes = (64, 16)
  config.noise = True  # Gating noise in training (Shazeer Eq. 4).
  # Routing from moe.gating.ROUTINGS: "paper" (Shazeer Eq. 3-5, load from
  # Eq. 8-10), "straight_through", or "gumbel" (Gumbel-perturbed logits
  # pick the experts; the load uses the Gumbel form of Eq. 9).
  config.routing_gradient = "paper"
  # Temperature tau of the relaxed Gumbel-softmax sample that routes and
  # carries the gradient when routing_gradient="gumbel" (Jang et al. 2017,
  # Eq. 1; moe/gating.py); finite and > 0, unused by the other routings.
  config.gumbel_temperature = 1.0

  # Auxiliary losses.
  config.w_importance = 0.1  # Shazeer Eq. 7, weight of CV(Importance)^2.
  config.w_load = 0.1  # Shazeer Eq. 10, weight of CV(Load)^2.
  # Switch balance loss (Fedus Eq. 4); 1e-2 typical. It and the z-loss are
  # computed on the clean router logits x W_g under every routing.
  config.switch_alpha = 0.0
  config.z_loss = 0.0  # ST-MoE router z-loss (Zoph Eq. 5); 1e-3 typical.

  # Optimisation.
  config.learning_rate = 3e-3  # Adam step size.
  config.batch_size = 256  # Examples (tokens into the MoE) per update.
  config.num_steps = 4000  # Updates in total (a multiple of eval_every).
  config.eval_every = 250  # Updates between evaluations (one jit call).
  config.eval_batch_size = 4096  # Fixed seeded evaluation set size.

  # Logging.
  config.tensorboard = True  # Write TensorBoard events to workdir.
  config.progress_bar = True  # tqdm progress bar.

  if preset == "test":
    config.num_domains = 4
    config.vocab_size = 16
    config.context_length = 6
    config.d_model = 16
    config.num_experts = 4
    config.expert_hidden = 16
    config.block_sizes = (16, 4)
    config.batch_size = 64
    config.num_steps = 40
    config.eval_every = 20
    config.eval_batch_size = 256
    config.tensorboard = False
    config.progress_bar = False
  return config
