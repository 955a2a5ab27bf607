"""Gradient saliency methods applied at DLS's selected layer (the ``layer_method`` option).

DLS scores position ``i`` of a layer with hidden states ``H`` by ``g(G_i, H_i)``
(:func:`~captum_layer_saliency.attr.decoded_layer_saliency.position_saliency`). A layer method
decides which ``G`` and ``H`` that aggregation sees:

* ``"gradient"`` (the paper's method): ``G = dy/dH`` at the input, ``H`` itself — gradient x
  activation for ``aggregation="grad_x_act"``. One forward and one backward.
* ``"integrated_gradients"`` (DLS's default, 1 step from the PAD baseline): integrated
  gradients *at the layer* (Sundararajan et al. 2017,
  applied to the hidden state as Captum's ``LayerIntegratedGradients`` does), from a baseline
  state ``H0``: ``G = sum_s w_s dy/dH (H0 + a_s (H - H0))`` with Captum's quadrature
  (``integration``: ``"riemann_middle"`` by default, the midpoint rule), and ``H - H0`` in place
  of ``H``. With ``grad_x_act``, the attributions summed over positions and hidden units
  approximate ``y(H) - y(H0)`` (completeness at the layer).
* ``"smoothgrad"``: ``G`` averaged over ``n_steps`` noisy copies ``H + e``,
  ``e ~ N(0, (noise * std(H))^2)`` (``std`` per example, over its real positions), times ``H``.
  The noise comes from torch's global generator, drawn for the whole batch: seed it for
  reproducible scores (the registry's ``dls_*`` methods do), and explain one example at a time
  if its scores must not depend on the batch it comes in.
* ``"gradient_shap"``: GradientSHAP at the layer: ``G`` averaged at ``n_steps`` random points
  ``H0 + a (H - H0) + e`` (``a ~ U(0, 1)``), times ``H - H0``.

Baselines ``H0`` (``baseline``): ``"pad"``, the layer's hidden states for the same input with
every real non-special token replaced by the padding token (special tokens, padding and the
attention mask unchanged; the PAD baseline of the library's IG, taken at the layer), or
``"zeros"``.

**Cost.** The network below the layer runs once; each step runs only the blocks *above* it, and
all steps run as one batch (``internal_batch_size`` caps the rows per call). For a layer at
depth ``l`` of ``L`` blocks (``u = (L - l) / L`` of the network above it), per explained example,
in full-pass equivalents (what :class:`~captum_layer_saliency.models.passes.PassCounter`
books):

================================  ============================  ====================
layer method                      forwards                      backwards
================================  ============================  ====================
gradient                          1                             1
integrated_gradients, pad         1 + l/L + n_steps * u         n_steps * u
integrated_gradients, zeros       1 + n_steps * u               n_steps * u
smoothgrad                        1 + n_steps * u               n_steps * u
gradient_shap                     as integrated_gradients       as integrated_gradients
================================  ============================  ====================

(the first forward is the input's own pass, which gives ``H`` and the prediction; a backward
costs about two forwards). At block 5 of the 6-block default models, integrated gradients with
1 step (the default) costs 2 forwards and 0.17 backwards, with 2 steps 2.2 and 0.33: about the
cost of one forward and one backward.
This "upper part only" path needs a model whose embeddings and blocks
:func:`~captum_layer_saliency.models.surgery.find_model_parts` knows (every family there)
and a layer that is one of them; otherwise (any other module, ``attribute_to_layer_input=True``, or
``upper_only=False``) each step runs the whole network with the layer's output replaced by the
step's state, as Captum's layer methods do (forwards ``1 (+1) + n_steps``, backwards
``n_steps``). Both paths give the same attributions (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_STEPS",
    "INTEGRATION_METHODS",
    "LAYER_BASELINES",
    "LAYER_METHODS",
    "LayerMethod",
]


LAYER_METHODS = ("gradient", "integrated_gradients", "smoothgrad", "gradient_shap")
LAYER_BASELINES = ("pad", "zeros")
INTEGRATION_METHODS = (
    "riemann_middle",
    "riemann_left",
    "riemann_right",
    "riemann_trapezoid",
    "gausslegendre",
)
#: Steps (integrated gradients) or samples (SmoothGrad, GradientSHAP) when ``n_steps`` is None.
#: One step of integrated gradients (the midpoint) scores as 2, 4 or 8 do (within 0.002 of
#: comprehensiveness on the SST-2 and AG News confirmation sets, 0.005 on the tuning rows;
#: BENCHMARKS.md section 7) at the least cost.
DEFAULT_STEPS = {"gradient": 1, "integrated_gradients": 1, "smoothgrad": 4, "gradient_shap": 4}


@dataclass(frozen=True)
class LayerMethod:
    """How saliency is taken at the layer (see the module docstring for each method's maths).

    Attributes:
        name: one of :data:`LAYER_METHODS`.
        n_steps: integration steps or noise samples; ``None`` for :data:`DEFAULT_STEPS`.
        baseline: ``"pad"`` or ``"zeros"`` (integrated gradients and GradientSHAP).
        integration: Captum's quadrature rule for integrated gradients.
        noise: SmoothGrad/GradientSHAP noise standard deviation, as a fraction of the standard
            deviation of the example's hidden state at the layer.
        upper_only: run only the blocks above the layer per step (``None``: when possible;
            ``True``: required, error otherwise; ``False``: always the whole network).
        internal_batch_size: at most this many rows per forward call of the steps (``None``:
            all the steps of the batch at once).
    """

    name: str = "gradient"
    n_steps: int | None = None
    baseline: str = "pad"
    integration: str = "riemann_middle"
    noise: float = 0.1
    upper_only: bool | None = None
    internal_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.name not in LAYER_METHODS:
            raise ValueError(f"unknown layer_method {self.name!r}; choose from {LAYER_METHODS}")
        if self.n_steps is not None and (
            not isinstance(self.n_steps, int) or isinstance(self.n_steps, bool) or self.n_steps < 1
        ):
            raise ValueError(f"n_steps must be a positive int or None, got {self.n_steps!r}")
        if self.name == "gradient" and self.n_steps not in (None, 1):
            raise ValueError("n_steps applies to the other layer methods, not to 'gradient'")
        if self.baseline not in LAYER_BASELINES:
            raise ValueError(
                f"unknown layer_baseline {self.baseline!r}; choose from {LAYER_BASELINES}"
            )
        if self.integration not in INTEGRATION_METHODS:
            raise ValueError(
                f"unknown integration {self.integration!r}; choose from {INTEGRATION_METHODS}"
            )
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise)) or (
            self.noise < 0
        ):
            raise ValueError(f"noise must be a finite number >= 0, got {self.noise!r}")
        if self.integration == "riemann_trapezoid" and self.steps == 1:
            raise ValueError("integration='riemann_trapezoid' needs n_steps >= 2")
        if self.internal_batch_size is not None and self.internal_batch_size < 1:
            raise ValueError(
                f"internal_batch_size must be positive or None, got {self.internal_batch_size}"
            )

    @property
    def steps(self) -> int:
        """The number of gradient evaluations per example."""
        return self.n_steps if self.n_steps is not None else DEFAULT_STEPS[self.name]

    @property
    def needs_baseline(self) -> bool:
        return self.name in ("integrated_gradients", "gradient_shap")

    def cost(self, depth: int | None, n_blocks: int | None) -> dict[str, float]:
        """Forward and backward passes per example, in full-pass equivalents.

        The one formula for a layer method's cost: DLS reports its ``last_cost_`` with it
        (through :meth:`cost_of`) and ``compare``'s plan estimates its passes with it, so the
        two cannot drift.

        Args:
            depth: the layer's index among ``[embeddings, block 1, ..., block L]``, or ``None``
                when the steps run the whole network (the generic path).
            n_blocks: ``L``.

        Returns:
            ``{"forwards": f, "backwards": b}`` (see the table in the module docstring).
        """
        fast = depth is not None and n_blocks
        above = max((n_blocks - depth) / n_blocks, 1e-6) if fast else 1.0  # type: ignore[operator]
        below = depth / n_blocks if fast else 1.0  # type: ignore[operator]
        return self.cost_of([above], below)

    def cost_of(self, above: Sequence[float], below: float) -> dict[str, float]:
        """Passes per example for steps that run ``above`` of the network at each layer.

        Args:
            above: per attributed layer, the share of the network its steps run (1.0 on the
                generic path).
            below: the share the PAD baseline's forward runs (up to the deepest layer).

        Returns:
            ``{"forwards": f, "backwards": b}`` in full-pass equivalents.
        """
        if self.name == "gradient":
            return {"forwards": 1.0, "backwards": 1.0}
        forwards = 1.0 + (below if self.needs_baseline and self.baseline == "pad" else 0.0)
        steps = sum(self.steps * share for share in above)
        return {"forwards": forwards + steps, "backwards": steps}
