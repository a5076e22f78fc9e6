"""A tiny VAE of the `test` preset and the gradient moments the VAE
estimator tests compare (shared by test_vae_gamma.py and test_vae_iwae.py).
"""

import jax
import optax

from common import estimators
from launch.configs import vae as vae_config
from vae import data as vae_data
from vae import train as vae_train

NUM_REPEATS = 1500


def setup(**overrides):
  """(model, initial params, 3 test digits) of the tiny config + overrides."""
  config = vae_config.get_config("test")
  config.hidden = (4,)
  config.num_latents = 2
  for name, value in overrides.items():
    config[name] = value
  model = vae_train.make_model(config)
  state = vae_train.init_state(model, config, jax.random.key(0),
                               optax.adam(1.0), optax.adam(1.0))
  x = vae_data.load_mnist(seed=0, num_train=10, num_test=10).test[:3]
  return model, state.params, x


def checked(grads):
  """The encoder's output layer and the decoder's first layer."""
  return {"enc_out": grads["encoder"]["Dense_1"],
          "dec_in": grads["decoder"]["Dense_0"]}


def moments(grad_fn, seed):
  """grad_moments of `checked(grad_fn(key))` over NUM_REPEATS keys."""
  return jax.jit(lambda k: estimators.grad_moments(
      lambda kk: checked(grad_fn(kk)), k, num_repeats=NUM_REPEATS))(
          jax.random.key(seed))
