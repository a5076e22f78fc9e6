"""stochgrad: stochastic-gradient estimation in JAX, with SAC and noisy top-k MoE."""

from setuptools import find_packages, setup

# Lower bounds are the versions the test suite was run with (2026-11-23).
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "chex>=0.1.92",
    "distrax>=0.1.9",
    "gymnasium[mujoco]>=1.4.0",
    "absl-py>=2.5.1",
    "ml-collections>=1.1.0",
    "orbax-checkpoint>=0.12.8",
    "tensorboardX>=2.6.5",
    "tqdm>=4.70.1",
    "matplotlib>=3.11.2",
    "numpy>=2.4",
]

setup(
    name="stochgrad",
    version="0.1.0",
    description=("Stochastic-gradient estimators in JAX, and the SAC agent and "
                 "noisy top-k MoE layer built on them."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["common", "common.*", "sac", "sac.*", "moe",
                                    "moe.*", "launch", "launch.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=9.0", "scipy>=1.17"],
    },
)
