"""Expert parallelism equals the single-device layer (4 forced CPU devices).

The check runs in a subprocess because the host device count must be set
before JAX initialises (`XLA_FLAGS=--xla_force_host_platform_device_count=4`).
When nothing overflows, the output, the auxiliary loss and all gradients equal
the single-device layer's; a small capacity drops a counted fraction.
"""

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent('''
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax
    import jax.numpy as jnp
    import numpy as np
    from moe.layer import MoE

    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("expert",))
    T, D, H, E, K = 64, 8, 16, 8, 2
    x = jax.random.normal(jax.random.key(0), (T, D))
    kw = dict(num_experts=E, k=K, expert_hidden=H)
    single = MoE(**kw, block_sizes=(8, 2))
    variables = jax.jit(single.init, static_argnames="train")(
        jax.random.key(1), x, train=False)
    params = dict(variables["params"])
    params["w_gate"] = jax.random.normal(jax.random.key(2), (D, E))
    params["w_noise"] = 0.3 * jax.random.normal(jax.random.key(3), (D, E))
    variables = {"params": params}
    rngs = {"gating": jax.random.key(4)}
    c = jax.random.normal(jax.random.key(5), (T, D))

    def loss_fn(layer):
        def loss(v, x):
            y, aux = layer.apply(v, x, train=True, rngs=rngs)
            return jnp.sum(c * jnp.sin(y)) + aux.loss, (y, aux)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    # Capacity large enough that nothing overflows on any device.
    sharded = MoE(**kw, capacity_factor=float(E), expert_mesh=mesh)
    (l1, (y1, a1)), g1 = loss_fn(single)(variables, x)
    (l2, (y2, a2)), g2 = loss_fn(sharded)(variables, x)
    assert float(a2.fraction_dropped) == 0.0
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    np.testing.assert_allclose(a2.cv_load, a1.cv_load, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # A small capacity drops slots; the fraction is counted over all devices.
    tight = MoE(**kw, capacity_factor=0.5, expert_mesh=mesh)
    (_, (y3, a3)), _ = loss_fn(tight)(variables, x)
    assert 0.0 < float(a3.fraction_dropped) < 1.0
    assert float(jnp.abs(y3 - y1).max()) > 1e-4
    print("OK")
''')


def test_expert_parallel_equals_single_device():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.strip().endswith("OK"), result.stdout
