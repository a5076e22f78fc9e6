"""Shared library code for stochgrad: gradient estimators, checkpoints, logs.

`common.estimators` and `common.csv_logs` need only the core install
(`pip install stochgrad`); `common.checkpointing` needs orbax, which every
system extra (`[sac]`, `[moe]`, `[vae]`) installs.
"""
