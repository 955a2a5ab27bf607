"""DLS's layer methods: gradient saliency taken at the selected layer (``layer_method``).

DLS scores position ``i`` of a layer with hidden states ``H`` by ``g(G_i, H_i)``
(:func:`~captum_layer_saliency.attr.decoding.position_saliency`). A layer method
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
  ``e ~ N(0, (noise * std(H))^2)`` (``std`` per example, over its real positions), times ``H``:
  Captum's ``NoiseTunnel`` over ``Saliency``.
* ``"gradient_shap"``: Captum's ``GradientShap`` at the layer: ``G`` averaged at ``n_steps``
  random points ``H0 + a (H + e - H0)`` (``a ~ U(0, 1)``, ``e`` as for SmoothGrad), times
  ``H - H0``.

The noise comes from torch's global generator and the GradientSHAP points from NumPy's (as in
Captum), drawn for the whole batch: seed both for reproducible scores
(:func:`captum_layer_saliency._utils.seeded` does; the registry's ``dls_*`` methods use it), and
explain one example at a time if its scores must not depend on the batch it comes in.

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

When the call names the explained class (``target`` given; ``compare`` always does), the
prediction is not needed, and for a layer in the lower part of the network the input's own
forward stops at the layer instead (``l/L`` in place of the leading 1) and each step runs the
whole network forward with the state put in at the layer (``n_steps`` in place of
``n_steps * u``; backward still ``n_steps * u``), whichever costs fewer forwards
(:meth:`LayerMethod.stops_first_forward`). At block 2 of SmolLM2's 30 blocks, the default
costs 1.13 forwards and 0.93 backwards that way, instead of 2.0 and 0.93.
This "upper part only" path needs a model whose embeddings and blocks
:func:`~captum_layer_saliency.models.surgery.find_model_parts` knows (every family there)
and a layer that is one of them; otherwise (any other module, ``attribute_to_layer_input=True``, or
``upper_only=False``) each step runs the whole network with the layer's output replaced by the
step's state, as Captum's layer methods do (forwards ``1 (+1) + n_steps``, backwards
``n_steps``). Both paths give the same attributions (a test checks it).

**How they run.** :func:`layer_method_attributions` makes one forward for the input's states
and the prediction, the baseline's states (PAD) up to the deepest layer, then hands the rest to
Captum: its own ``IntegratedGradients``, ``NoiseTunnel`` and ``GradientShap`` run on a
:class:`LayerRunner` (``multiply_by_inputs=False``: they return ``G``; the aggregation
multiplies), with Captum's quadrature, expansion of the batch and ``internal_batch_size``. A
runner maps a layer state to the logits: an :class:`~._upper_model.UpperModel` (the blocks
above the layer only) where possible, else the whole network with a thread-keyed hook that
replaces the layer's output; :func:`states_until` runs the network only as far as the deepest
layer needed (the PAD baseline's states).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from captum._utils.common import _run_forward, _select_targets
from captum._utils.typing import TargetType
from torch import Tensor, nn

from captum_layer_saliency.attr._upper_model import (
    UpperModel,
    capture_block_calls,
    capture_layers,
    layer_depth,
    layer_gradients_and_outputs,
    ordered_states,
    replaced_layer_output,
    share_above,
    thread_keyed,
    upper_model_reason,
)
from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.surgery import ModelParts, find_model_parts

__all__ = [
    "DEFAULT_STEPS",
    "INTEGRATION_METHODS",
    "LAYER_BASELINES",
    "LAYER_METHODS",
    "LayerMethod",
    "LayerRunner",
    "layer_method_attributions",
    "states_until",
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
        if (
            self.name == "integrated_gradients"
            and self.steps == 1
            and self.integration
            not in (
                "riemann_middle",
                "gausslegendre",
            )
        ):
            # Captum's Riemann rules need 2 steps; one Gauss-Legendre node is the midpoint.
            raise ValueError(
                f"integration={self.integration!r} needs n_steps >= 2 (one step is the "
                "midpoint: 'riemann_middle' or 'gausslegendre')"
            )
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
        """Whether the method starts from a baseline state (integrated gradients, GradientSHAP)."""
        return self.name in ("integrated_gradients", "gradient_shap")

    def cost(
        self, depth: int | None, n_blocks: int | None, target_given: bool = False
    ) -> dict[str, float]:
        """Forward and backward passes per example, in full-pass equivalents.

        The one formula for a layer method's cost: DLS reports its ``last_cost_`` with it
        (through :meth:`cost_of`) and ``compare``'s plan estimates its passes with it, so the
        two cannot drift.

        Args:
            depth: the layer's index among ``[embeddings, block 1, ..., block L]``, or ``None``
                when the steps run the whole network (the generic path).
            n_blocks: ``L``.
            target_given: the call names the explained class (``compare`` always does), so the
                input's own forward need not reach the output (:meth:`stops_first_forward`).

        Returns:
            ``{"forwards": f, "backwards": b}`` (see the table in the module docstring).
        """
        if depth is None or not n_blocks:
            return self.cost_of([1.0], 1.0)
        above = share_above(depth, n_blocks)
        below = depth / n_blocks
        stop = self.stops_first_forward([depth], n_blocks, target_given)
        return self.cost_of([above], below, first=below if stop else None)

    def stops_first_forward(self, depths: Sequence[int], n_blocks: int, target_given: bool) -> bool:
        """Whether the input's own forward stops at the deepest layer (cheaper when it is low).

        Without a prediction to take (``target_given``), the input's forward is needed only for
        its states at the layers: it can stop at the deepest one (``l/L`` of a pass instead of
        1), but then no upper model can be built (the blocks above never ran), and each step
        runs the whole network with the layer's state put in (the lower blocks again, ``l/L``
        more per step). That is cheaper when ``l/L + n_steps * layers < 1 + n_steps * sum(u)``,
        e.g. for one layer and one step when the layer lies in the lower half of the network
        (block 2 of SmolLM2's 30); the maps are the same either way (a test checks it).

        Args:
            depths: the layers' depths among ``[embeddings, block 1, ..., block L]``.
            n_blocks: ``L``.
            target_given: the explained class is given (no prediction is needed).

        Returns:
            True where stopping the input's forward costs fewer forwards.
        """
        if self.name == "gradient" or not target_given or self.upper_only or not depths:
            return False
        above = sum(share_above(depth, n_blocks) for depth in depths)
        return max(depths) / n_blocks + self.steps * len(depths) < 1.0 + self.steps * above

    def cost_of(
        self, above: Sequence[float], below: float, first: float | None = None
    ) -> dict[str, float]:
        """Passes per example for steps that run ``above`` of the network at each layer.

        Args:
            above: per attributed layer, the share of the network its steps run, and go back
                through (1.0 on the generic path).
            below: the share the PAD baseline's forward runs (up to the deepest layer).
            first: ``None`` when the input's own forward runs the whole network (the steps
                then run only ``above``); else the share it ran, stopped at the deepest layer
                (each step then runs the whole network forward, and ``above`` backward).

        Returns:
            ``{"forwards": f, "backwards": b}`` in full-pass equivalents.
        """
        if self.name == "gradient":
            return {"forwards": 1.0, "backwards": 1.0}
        baseline = below if self.needs_baseline and self.baseline == "pad" else 0.0
        backwards = sum(self.steps * share for share in above)
        if first is None:
            return {"forwards": 1.0 + baseline + backwards, "backwards": backwards}
        return {"forwards": first + baseline + self.steps * len(above), "backwards": backwards}


class _StopForward(Exception):
    """Raised inside a hook once every needed layer has run: the rest of the network is skipped."""


def states_until(
    forward: Callable[..., Any],
    layers: Sequence[nn.Module],
    inputs: Tensor | tuple[Tensor, ...],
    additional_forward_args: Any,
    to_input: bool,
) -> list[Tensor]:
    """The layers' hidden states, running the network only until the last of them has run.

    Args:
        forward: the forward function (any output; it is cut short).
        layers: the layers whose outputs (or inputs) are wanted.
        inputs: the forward's inputs.
        additional_forward_args: its further positional arguments.
        to_input: take the layers' inputs instead of their outputs.

    Returns:
        One detached state per layer, in the order of ``layers``.
    """
    handles = []
    with torch.no_grad(), capture_layers(layers, to_input=to_input) as saved:

        def stop(*_: Any) -> None:
            if len(saved) == len(layers):
                raise _StopForward

        try:
            for layer in layers:
                if to_input:
                    handles.append(layer.register_forward_pre_hook(thread_keyed(stop)))
                else:
                    handles.append(layer.register_forward_hook(thread_keyed(stop)))
            _run_forward(forward, inputs, additional_forward_args=additional_forward_args)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
    return ordered_states(saved, len(layers))


class LayerRunner:
    """Runs the network from a given state at one layer to the output.

    The fast path is an :class:`~._upper_model.UpperModel`: only the blocks above the layer,
    the final norm and the head run, called with the arguments the model gave them on the
    input's own forward. The generic path runs the whole network with a forward hook (keyed to
    the calling thread, removed after the call) that replaces the layer's output (or input) by
    the state. Neither changes the model.

    Args:
        forward: the forward the steps run (returns logits).
        layer: the layer whose state is given.
        model: the Hugging Face model (its parts give the fast path); ``None`` for the
            generic path.
        to_input: the state replaces the layer's input (generic path only).
        upper_only: ``None`` (fast path when possible), ``True`` (required: ``ValueError``
            otherwise) or ``False`` (always the generic path).
        parts: ``model``'s parts when already found (else they are looked up).

    Raises:
        ValueError: ``upper_only=True`` where the fast path is not possible (the message says
            why).
    """

    def __init__(
        self,
        forward: Callable[..., Any],
        layer: nn.Module,
        model: nn.Module | None,
        to_input: bool,
        upper_only: bool | None,
        parts: ModelParts | None = None,
    ) -> None:
        self.forward_func = forward
        self.layer = layer
        self.to_input = to_input
        self.model = model
        self._parts = parts
        self.upper: UpperModel | None = None
        reason = upper_model_reason(model, layer, to_input, parts)
        if reason is not None and upper_only:
            raise ValueError(f"upper_only=True, but {reason}")
        self.possible = reason is None and upper_only is not False
        self.required = bool(upper_only)
        #: the share of the network above the layer when known on the generic path (a step then
        #: books the whole forward, but only this share backward: the state is put in there).
        self.above: float | None = None

    def build(self, calls: list[Any] | None, ids: Tensor) -> None:
        """Build the upper model from the blocks' arguments captured on the input's forward."""
        if self.possible and calls is not None and all(c is not None for c in calls):
            assert self.model is not None
            self.upper = UpperModel(self.model, self.layer, calls, ids, self._parts)
        elif self.required:
            raise ValueError(
                "upper_only=True, but the inputs are not the token ids (the upper model's "
                "head pools by them)"
            )

    @property
    def fast(self) -> bool:
        """Whether a step runs only the blocks above the layer."""
        return self.upper is not None

    @property
    def depth(self) -> int | None:
        """The layer's index among the model's layers on the fast path, else ``None``."""
        return self.upper.depth if self.upper is not None else None

    @property
    def n_blocks(self) -> int | None:
        """The model's number of blocks on the fast path, else ``None``."""
        return self.upper.n_blocks if self.upper is not None else None

    @property
    def fraction(self) -> float:
        """The share of the network a step runs."""
        return self.upper.fraction if self.upper is not None else 1.0

    def __call__(self, states: Tensor, index: Tensor, inputs: Any, args: Any) -> Tensor:
        """The forward's output with the layer's output (or input) replaced by ``states``.

        Args:
            states: ``(rows, n, K)`` the layer's states, one row per expanded example.
            index: ``(rows,)`` the example each row belongs to (the upper model picks each
                row's masks and positions by it).
            inputs: the forward's inputs, expanded to ``rows`` (the hook fallback runs them).
            args: its further positional arguments, expanded to ``rows``.

        Returns:
            The forward's output (logits) for the ``rows`` states.
        """
        if self.upper is not None:
            out: Tensor = self.upper(states, index)
            return out
        above = self.above if _passes.LISTENERS.get() else None
        with ExitStack() as stack:
            stack.enter_context(replaced_layer_output(self.layer, states, self.to_input))
            if above is not None:  # booked as `above` forward and backward, the rest forward
                stack.enter_context(_passes.partial_passes(above))
            result: Tensor = _run_forward(self.forward_func, inputs, additional_forward_args=args)
        if above is not None:
            _passes.report_passes(states.shape[0] * (1.0 - above))
        return result


def _pad_ids(ids: Tensor, candidates: Tensor, pad_token_id: int | None) -> Tensor:
    if pad_token_id is None:
        raise ValueError(
            "layer_baseline='pad' needs the padding token id: pass pad_token_id= to the "
            "constructor, build DLS with for_model(..., tokenizer=...), or use "
            "layer_baseline='zeros'"
        )
    return torch.where(candidates, torch.full_like(ids, pad_token_id), ids)


def _noise_scale(hidden: Tensor, mask: Tensor) -> Tensor:
    """``(B,)`` each example's standard deviation over its real positions and hidden units.

    Floored at a tiny value: a constant state gets (almost) no noise.
    """
    real = mask.to(hidden.dtype)[..., None]
    count = (real.sum((1, 2)) * hidden.shape[-1]).clamp_min(1)
    mean = (hidden * real).sum((1, 2)) / count
    std = ((((hidden - mean[:, None, None]) * real) ** 2).sum((1, 2)) / count).sqrt()
    return std.clamp_min(torch.finfo(hidden.dtype).tiny ** 0.5)


def _explained(out: Tensor, weights: Tensor | None) -> Tensor:
    """The output Captum's target picks from: the logits, or the label-weighted sum ``(rows,)``.

    A floating-point ``(B, C)`` target holds label weights (a multi-label prediction): the
    explained output is then ``sum_c w_bc * logit_bc``.
    """
    return out if weights is None else (out * weights.to(out)).sum(-1)


def _captum_gradients(
    method: LayerMethod,
    runner: LayerRunner,
    hidden: Tensor,
    base: Tensor,
    mask: Tensor,
    target: TargetType,
    inputs: Any,
    args: Any,
    grad_kwargs: dict[str, Any] | None,
) -> Tensor:
    """The effective gradient ``G`` ``(B, n, K)`` at one layer, from Captum's own methods.

    Captum's :class:`~captum.attr.IntegratedGradients`, :class:`~captum.attr.NoiseTunnel` over
    :class:`~captum.attr.Saliency` (SmoothGrad) and :class:`~captum.attr.GradientShap` run on
    the runner's forward from the layer's state, with ``multiply_by_inputs=False`` (the
    aggregation multiplies). Each row of their expanded batches carries its example's index
    (an additional forward argument that Captum expands as it expands the states), so the upper
    model and the hook fallback pick each row's masks and inputs whatever Captum's order. The
    noise methods run in units of each example's standard deviation (``z = h / s``, so that
    Captum's one ``stdevs`` is ``noise * s_b`` for every example ``b``), and the gradient is
    brought back to the state's units.
    """
    from captum.attr import GradientShap, IntegratedGradients, NoiseTunnel, Saliency

    batch = hidden.shape[0]
    rows = torch.arange(batch, device=hidden.device)
    weights = target if isinstance(target, Tensor) and target.is_floating_point() else None
    captum_target = None if weights is not None else target
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs or ())
    args = () if args is None else (args if isinstance(args, tuple) else (args,))
    # The noise methods' units (per-example scale) and GradientSHAP's origin; integrated
    # gradients runs on the states themselves (None: Captum passes it through unexpanded).
    scale = None
    if method.name != "integrated_gradients":
        scale = _noise_scale(hidden.float(), mask).to(hidden.dtype)[:, None, None]
    shift = base.to(hidden.dtype) if method.name == "gradient_shap" else None

    def forward(
        states: Tensor, index: Tensor, unit: Tensor | None, origin: Tensor | None, *rest: Any
    ) -> Tensor:
        row_weights = None if weights is None else weights.to(states.device)[index]
        ins, more = rest[: len(inputs)], rest[len(inputs) :]
        if unit is not None:
            states = states * unit
        if origin is not None:
            states = origin + states
        out = runner(states, index, ins, more or None)
        return _explained(out, row_weights)

    extra = (rows, scale, shift, *inputs, *args)
    common: dict[str, Any] = {"target": captum_target, "additional_forward_args": extra}
    if method.name == "integrated_gradients":
        ig = IntegratedGradients(forward, multiply_by_inputs=False)
        _with_grad_kwargs(ig, grad_kwargs)
        steps, rule = method.steps, method.integration
        if steps == 1:  # Captum's Riemann rules need 2 steps; Gauss-Legendre's one is the midpoint
            rule = "gausslegendre"
        grads: Tensor = ig.attribute(
            hidden,
            baselines=base.to(hidden.dtype),
            n_steps=steps,
            method=rule,
            internal_batch_size=method.internal_batch_size,
            **common,
        )
        return grads.detach()
    assert scale is not None
    if method.name == "smoothgrad":
        saliency = Saliency(forward)
        _with_grad_kwargs(saliency, grad_kwargs)
        grads = NoiseTunnel(saliency).attribute(
            hidden / scale,
            nt_type="smoothgrad",
            nt_samples=method.steps,
            nt_samples_batch_size=_per_call(method, batch),
            stdevs=float(method.noise),
            abs=False,
            **common,
        )
    else:
        assert shift is not None
        shap = GradientShap(forward, multiply_by_inputs=False)
        _with_grad_kwargs(shap, grad_kwargs)
        grads = shap.attribute(
            (hidden - shift) / scale,
            baselines=torch.zeros_like(hidden[:1]),
            n_samples=method.steps,
            stdevs=float(method.noise),
            **common,
        )
    return (grads / scale).detach()


def _per_call(method: LayerMethod, batch: int) -> int | None:
    """Noise samples per forward call under ``internal_batch_size`` (rows per call)."""
    if method.internal_batch_size is None:
        return None
    return max(1, method.internal_batch_size // batch)


def _with_grad_kwargs(attribution: Any, grad_kwargs: dict[str, Any] | None) -> None:
    """Pass ``grad_kwargs`` to ``torch.autograd.grad`` in the Captum method's gradients."""
    if grad_kwargs:
        gradient_func = attribution.gradient_func
        attribution.gradient_func = lambda *a, **k: gradient_func(*a, **k, grad_kwargs=grad_kwargs)


def _convergence_delta(
    runner: LayerRunner,
    hidden: Tensor,
    base: Tensor,
    attributions: Tensor,
    inputs: Any,
    args: Any,
    target: TargetType,
) -> Tensor:
    """Captum's convergence delta at the layer: ``sum(attributions) - (F(H) - F(H0))``, ``(B,)``."""
    inputs = (inputs,) if isinstance(inputs, Tensor) else inputs
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    weights = target if isinstance(target, Tensor) and target.is_floating_point() else None
    with torch.no_grad():
        ends = []
        for state in (hidden, base.to(hidden.dtype)):
            out = _explained(runner(state, rows, inputs, args), weights)
            ends.append((out if weights is not None else _select_targets(out, target)).float())
    return attributions.sum((1, 2)) - (ends[0] - ends[1])


def _input_states(
    method: LayerMethod,
    forward: Callable[..., Any],
    runners: list[LayerRunner],
    inputs: Tensor | tuple[Tensor, ...],
    additional_forward_args: Any,
    *,
    ids: Tensor,
    target_given: bool,
    model: nn.Module | None,
    parts: ModelParts | None,
) -> tuple[list[Tensor], float | None, int | None, int | None]:
    """The input's states at the runners' layers, and the runners made ready for the steps.

    The input's forward runs the whole network (it gives the prediction, and the blocks'
    arguments for the upper models), or, where :meth:`LayerMethod.stops_first_forward` says so,
    only up to the deepest layer (the runners then take the generic path, knowing the share of
    the network above their layer). ``model`` is ``None`` where the inputs are not the ids.

    Returns:
        ``(hidden, stopped_at, deepest, n_blocks)``: the states; the share of the network the
        input's forward ran when it stopped (``None`` when it ran through); the deepest layer's
        depth and the number of blocks where known.
    """
    layers = [runner.layer for runner in runners]
    to_input = runners[0].to_input
    upper = model is not None and any(r.possible for r in runners)
    if upper and model is not None and parts is None:
        parts = find_model_parts(model)
    known: list[int] = []
    if upper and parts is not None:
        known = [d for d in (layer_depth(parts, layer) for layer in layers) if d is not None]
        n_blocks = len(parts.blocks)
        if len(known) == len(layers) and method.stops_first_forward(known, n_blocks, target_given):
            hidden = states_until(forward, layers, inputs, additional_forward_args, to_input)
            for runner, depth in zip(runners, known, strict=True):
                runner.above = share_above(depth, n_blocks)
            if _passes.LISTENERS.get():  # a pass counter listens (the stopped forward is hidden)
                _passes.report_passes(ids.shape[0] * max(known) / n_blocks)
            return hidden, max(known) / n_blocks, max(known), n_blocks
    blocks = parts.blocks if upper and parts is not None else []
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        calls = stack.enter_context(capture_block_calls(blocks))
        with capture_layers(layers, to_input=to_input) as saved:
            _run_forward(forward, inputs, additional_forward_args=additional_forward_args)
        hidden = ordered_states(saved, len(layers))
    for runner in runners:
        runner.build(calls if upper else None, ids)
    deepest = max((r.depth for r in runners if r.depth is not None), default=None)
    return hidden, None, deepest, next((r.n_blocks for r in runners if r.n_blocks), None)


def layer_method_attributions(
    method: LayerMethod,
    forward: Callable[..., Any],
    logits_forward: Callable[..., Any],
    layers: Sequence[nn.Module],
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any,
    *,
    resolve_target: Callable[[], TargetType],
    ids: Tensor,
    mask: Tensor,
    candidates: Tensor,
    pad_token_id: int | None,
    model: nn.Module | None = None,
    parts: ModelParts | None = None,
    to_input: bool = False,
    grad_kwargs: dict[str, Any] | None = None,
    baseline: Tensor | None = None,
    deltas: list[Tensor] | None = None,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], dict[str, float]]:
    """The gradients and activations each layer's aggregation sees, under a layer method.

    Args:
        method: the layer method (``"gradient"`` is one plain forward and backward of
            ``forward`` for ``target``).
        forward: the forward whose first call gives the hidden states and the prediction (DLS's
            checked forward).
        logits_forward: the forward the steps run, returning logits.
        layers: the layers to attribute at.
        inputs: the forward's inputs, as for Captum.
        target: the target of ``forward``'s backward (``"gradient"``), as for Captum; the other
            methods' steps explain ``resolve_target()``.
        additional_forward_args: the forward's further positional arguments.
        resolve_target: called after the first forward; the target the steps explain (the
            prediction when ``target`` is None): class indices, or ``(B, C)`` float label
            weights (a multi-label prediction: the weighted sum of the logits is explained).
        ids: ``(B, n)`` token ids.
        mask: ``(B, n)`` attention mask.
        candidates: ``(B, n)`` bool, the positions the PAD baseline replaces (real,
            non-special).
        pad_token_id: the padding id (``baseline="pad"``).
        model: the Hugging Face model, for the upper-part-only path.
        parts: ``model``'s parts when already found (else they are looked up).
        to_input: attribute to the layers' inputs.
        grad_kwargs: passed to ``torch.autograd.grad``.
        baseline: an explicit baseline instead of ``method.baseline``: integer token ids shaped
            like ``ids`` (their states are the baseline, as for the PAD baseline), or a
            floating-point layer state broadcastable to the layer's ``(B, n, K)``.
        deltas: where given, each layer's convergence delta ``(B,)`` is appended
            (integrated gradients only): ``sum(G * (H - H0)) - (F(H) - F(H0))``.

    Returns:
        ``(gradients, activations, hidden_states, cost)``: per layer, the effective gradient
        ``G`` and activation (``H`` or ``H - H0``) for the aggregation and the hidden state ``H``
        (for decoding), all ``(B, n, K)`` and detached; and the passes per example.

    Raises:
        ValueError: a PAD baseline without the padding id or with inputs that are not the ids,
            a layer whose output is not ``(B, n, K)``, or ``upper_only=True`` where only the
            generic path is possible.
    """
    if method.name == "gradient":
        grads, hidden = layer_gradients_and_outputs(
            forward,
            layers,
            inputs,
            target,
            additional_forward_args,
            to_input=to_input,
            grad_kwargs=grad_kwargs,
        )
        return grads, hidden, hidden, method.cost(None, None)
    batch = ids.shape[0]
    runners = [
        LayerRunner(logits_forward, layer, model, to_input, method.upper_only, parts)
        for layer in layers
    ]
    first = inputs if isinstance(inputs, Tensor) else (inputs[0] if inputs else None)
    hidden, stopped_at, reached, n_blocks = _input_states(
        method,
        forward,
        runners,
        inputs,
        additional_forward_args,
        ids=ids,
        target_given=target is not None,
        model=model if first is ids else None,
        parts=parts,
    )
    step_target = resolve_target()
    baselines: list[Tensor]
    share = 0.0
    if baseline is not None and baseline.is_floating_point():
        try:
            baselines = [baseline.to(h).expand_as(h) for h in hidden]
        except RuntimeError:
            raise ValueError(
                f"baselines: a layer state of shape {tuple(baseline.shape)} does not fit the "
                f"layer's states {tuple(hidden[0].shape)}"
            ) from None
    elif method.needs_baseline and (baseline is not None or method.baseline == "pad"):
        if first is not ids:
            raise ValueError(
                "layer_baseline='pad' needs the token ids as the (first) input; with other "
                "inputs (embeddings) use layer_baseline='zeros'"
            )
        pad_ids = (
            _pad_ids(ids, candidates, pad_token_id)
            if baseline is None
            else baseline.to(ids).expand_as(ids)
        )
        base_inputs = pad_ids if isinstance(inputs, Tensor) else (pad_ids, *inputs[1:])
        baselines = states_until(
            logits_forward, layers, base_inputs, additional_forward_args, to_input
        )
        share = (
            reached / n_blocks
            if reached is not None and n_blocks and all(r.fast or r.above for r in runners)
            else 1.0
        )
        if _passes.LISTENERS.get():  # a pass counter is listening (the stopped forward is hidden)
            _passes.report_passes(batch * share)
    else:
        baselines = [torch.zeros_like(h) for h in hidden]
    grads, acts = [], []
    for k, (runner, h) in enumerate(zip(runners, hidden, strict=True)):
        if h.dim() != 3:
            raise ValueError(
                f"a candidate layer returned shape {tuple(h.shape)}; layer methods need hidden "
                "states of shape (batch, seq, hidden)"
            )
        g = _captum_gradients(
            method,
            runner,
            h,
            baselines[k],
            mask,
            step_target,
            inputs,
            additional_forward_args,
            grad_kwargs,
        )
        # In float32 (a half-precision model's states subtract and average exactly there).
        grads.append(g.float())
        acts.append(h if method.name == "smoothgrad" else h.float() - baselines[k].float())
        if deltas is not None:
            deltas.append(
                _convergence_delta(
                    runner,
                    h,
                    baselines[k],
                    grads[-1] * acts[-1],
                    inputs,
                    additional_forward_args,
                    step_target,
                )
            )
    above = [runner.above or runner.fraction for runner in runners]
    cost = method.cost_of(above, share, first=stopped_at)
    return grads, acts, hidden, cost
