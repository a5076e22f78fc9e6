"""Monte-Carlo gradient estimators in JAX: the public interface.

Pure, jit-able functions in the manner of rlax/optax: one concept per function,
PRNG key first, options keyword-only, inputs checked on entry (wrong types
raise TypeError, wrong values ValueError). The quantity estimated throughout is

    g(theta) = grad_theta E_{x ~ p(x; theta)} [f(x)]

(Mohamed, Rosca, Figurnov & Mnih 2020, "Monte Carlo Gradient Estimation in
Machine Learning", JMLR 21, Eq. 1). Shapes: `S` is the number of Monte-Carlo
samples, `A` an action/event dimension, `...` any batch shape.

The families, implemented in `common/_estimators/` (one module each; each
function's docstring gives its equation, paper, shapes and an example):

  reparameterization  `gaussian_reparameterize`, the tanh-squashed Gaussian of
                      SAC (`tanh_gaussian_sample_and_log_prob`,
                      `tanh_gaussian_log_prob`).
  pathwise_score      `pathwise_grad` (reparameterization, implicit for
                      Gamma/Beta/Dirichlet), `score_function_grad` and
                      `score_function_surrogate` (REINFORCE).
  baselines           `leave_one_out_baseline`, `moving_average_baseline`.
  relaxations         `gumbel_softmax`, `straight_through`.
  control_variates    `rebar_grad`, `relax_grad`.
  rejection           Gamma gradients through a standardizing transform:
                      `gamma_rejection_grad` (RSVI, Marsaglia-Tsang
                      proposal), `gamma_generalized_reparam_grad` (G-REP).
  measure_valued      `measure_valued_grad` (weak derivatives of the
                      Gaussian; f is never differentiated).
  multi_sample        `iwae_grad`: the IWAE bound with the "iwae", "stl"
                      (sticking the landing) or "dreg" (doubly
                      reparameterized) gradient.
  diagnostics         `grad_moments`.
  antithetic          `arm_grad`, `disarm_grad` (Bernoulli variables).
  vimco               `vimco_surrogate` (the K-sample bound, VIMCO's
                      gradient).

Example:
  >>> import distrax, jax
  >>> from common import estimators as E
  >>> dist_fn = lambda p: distrax.Normal(p["mu"], p["sigma"])
  >>> g = E.pathwise_grad(lambda x: x ** 2, dist_fn, {"mu": 1.0, "sigma": 1.0},
  ...                     jax.random.key(0), num_samples=100)
  >>> sorted(g)
  ['mu', 'sigma']
"""

from common._estimators.baselines import (
    LEAVE_ONE_OUT,
    MovingAverageState,
    init_moving_average_baseline,
    leave_one_out_baseline,
    moving_average_baseline,
)
from common._estimators.checks import Array, PRNGKey, PyTree
from common._estimators.control_variates import (
    BERNOULLI,
    CATEGORICAL,
    rebar_grad,
    relax_grad,
)
from common._estimators.diagnostics import GradMoments, grad_moments
from common._estimators.measure_valued import measure_valued_grad
from common._estimators.multi_sample import iwae_grad
from common._estimators.pathwise_score import (
    Baseline,
    pathwise_grad,
    score_function_grad,
    score_function_surrogate,
)
from common._estimators.rejection import (
    gamma_generalized_reparam_grad,
    gamma_rejection_grad,
)
from common._estimators.relaxations import gumbel_softmax, straight_through
from common._estimators.reparameterization import (
    gaussian_reparameterize,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample_and_log_prob,
)
from common._estimators.antithetic import arm_grad, disarm_grad
from common._estimators.vimco import vimco_surrogate

__all__ = (
    "BERNOULLI",
    "CATEGORICAL",
    "LEAVE_ONE_OUT",
    "Array",
    "Baseline",
    "GradMoments",
    "MovingAverageState",
    "PRNGKey",
    "PyTree",
    "gamma_generalized_reparam_grad",
    "gamma_rejection_grad",
    "gaussian_reparameterize",
    "grad_moments",
    "gumbel_softmax",
    "init_moving_average_baseline",
    "iwae_grad",
    "leave_one_out_baseline",
    "measure_valued_grad",
    "moving_average_baseline",
    "pathwise_grad",
    "rebar_grad",
    "relax_grad",
    "score_function_grad",
    "score_function_surrogate",
    "straight_through",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_sample_and_log_prob",
    "arm_grad",
    "disarm_grad",
    "vimco_surrogate",
)
