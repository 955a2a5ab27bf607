"""Gradient saliency methods applied at DLS's selected layer (the ``layer_method`` option).

DLS scores position ``i`` of a layer with hidden states ``H`` by ``g(G_i, H_i)``
(:func:`~captum_layer_saliency.attr.decoded_layer_saliency.position_saliency`). A layer method
decides which ``G`` and ``H`` that aggregation sees:

* ``"gradient"`` (the default): ``G = dy/dH`` at the input, ``H`` itself — gradient x activation
  for ``aggregation="grad_x_act"``. One forward and one backward.
* ``"integrated_gradients"``: integrated gradients *at the layer* (Sundararajan et al. 2017,
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
in full-pass equivalents (what :class:`~captum_layer_saliency.compare.methods.registry.PassCounter`
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
2 steps costs 2.2 forwards and 0.33 backwards, about the cost of one forward and one backward.
This "upper part only" path needs a model whose embeddings and blocks
:func:`~captum_layer_saliency.models.surgery.find_model_parts` knows (every family there)
and a layer that is one of them; otherwise (any other module, ``attribute_to_layer_input=True``, or
``upper_only=False``) each step runs the whole network with the layer's output replaced by the
step's state, as Captum's layer methods do (forwards ``1 (+1) + n_steps``, backwards
``n_steps``). Both paths give the same attributions (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from captum._utils.common import (
    ExpansionTypes,
    _expand_additional_forward_args,
    _expand_target,
    _run_forward,
    _select_targets,
)
from captum._utils.typing import TargetType
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.capture import _ordered, _with_hidden, capture_layers
from captum_layer_saliency.models.surgery import UnsupportedModelError, find_model_parts

__all__ = [
    "INTEGRATION_METHODS",
    "LAYER_BASELINES",
    "LAYER_METHODS",
    "DEFAULT_STEPS",
    "LayerMethod",
    "layer_method_attributions",
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
DEFAULT_STEPS = {"gradient": 1, "integrated_gradients": 2, "smoothgrad": 4, "gradient_shap": 4}


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
        if self.integration == "riemann_trapezoid" and self.n_steps == 1:
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

        Args:
            depth: the layer's index among ``[embeddings, block 1, ..., block L]``, or ``None``
                when the steps run the whole network (the generic path).
            n_blocks: ``L``.
        """
        if self.name == "gradient":
            return {"forwards": 1.0, "backwards": 1.0}
        fast = depth is not None and n_blocks
        above = (n_blocks - depth) / n_blocks if fast else 1.0  # type: ignore[operator]
        below = depth / n_blocks if fast else 1.0  # type: ignore[operator]
        forwards = 1.0 + self.steps * above
        if self.needs_baseline and self.baseline == "pad":
            forwards += below
        return {"forwards": forwards, "backwards": self.steps * above}


def _pad_ids(ids: Tensor, candidates: Tensor, pad_token_id: int | None) -> Tensor:
    if pad_token_id is None:
        raise ValueError(
            "layer_baseline='pad' needs the padding token id: build DLS with "
            "for_model(..., tokenizer=...) or use layer_baseline='zeros'"
        )
    return torch.where(candidates, torch.full_like(ids, pad_token_id), ids)


class _StopForward(Exception):
    """Raised inside a hook once every needed layer has run: the rest of the network is skipped."""


def _states_until(
    forward: Callable[..., Any],
    layers: Sequence[nn.Module],
    inputs: Tensor | tuple[Tensor, ...],
    additional_forward_args: Any,
    to_input: bool,
) -> list[Tensor]:
    """The layers' hidden states, running the network only until the last of them has run."""
    handles = []
    with torch.no_grad(), capture_layers(layers, to_input=to_input) as saved:

        def stop(*_: Any) -> None:
            if len(saved) == len(layers):
                raise _StopForward

        try:
            for layer in layers:
                if to_input:
                    handles.append(layer.register_forward_pre_hook(stop))
                else:
                    handles.append(layer.register_forward_hook(stop))
            _run_forward(forward, inputs, additional_forward_args=additional_forward_args)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
    return _ordered(saved, len(layers))


@contextmanager
def _replaced_forward(module: nn.Module, fn: Callable[..., Any]) -> Iterator[None]:
    had = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = fn
    try:
        yield
    finally:
        if had:
            module.forward = old  # type: ignore[assignment]
        else:
            del module.forward


class _Runner:
    """Runs the network from a given state at one layer to the output.

    The fast path stubs out the embeddings and every block up to the layer (their ``forward``
    returns the given state, in the layer's output format), so the model's own forward runs only
    the blocks above it, with its own masks, positions and head. The generic path runs the whole
    network with a hook that replaces the layer's output (or input) by the state.
    """

    def __init__(
        self,
        forward: Callable[..., Any],
        layer: nn.Module,
        model: nn.Module | None,
        to_input: bool,
        upper_only: bool | None,
    ) -> None:
        self.forward = forward
        self.layer = layer
        self.to_input = to_input
        self.below: list[nn.Module] = []
        self.depth: int | None = None
        self.n_blocks: int | None = None
        reason = self._fast_path(model)
        if reason is not None and upper_only:
            raise ValueError(f"upper_only=True, but {reason}")
        if upper_only is False:
            self.below, self.depth = [], None

    def _fast_path(self, model: nn.Module | None) -> str | None:
        if self.to_input:
            return "the attributions are to the layer's input"
        if model is None:
            return "DLS was not built with for_model, so the model's parts are unknown"
        try:
            parts = find_model_parts(model)
        except UnsupportedModelError as err:
            return str(err)
        ids = [id(m) for m in parts.layers]
        if id(self.layer) not in ids:
            return "the layer is not the embeddings or a block of the model"
        self.depth = ids.index(id(self.layer))
        self.n_blocks = len(parts.blocks)
        self.below = parts.layers[: self.depth + 1]
        return None

    @property
    def fast(self) -> bool:
        return self.depth is not None

    @property
    def fraction(self) -> float:
        """The share of the network a step runs."""
        if self.depth is None or not self.n_blocks:
            return 1.0
        return max((self.n_blocks - self.depth) / self.n_blocks, 1e-6)

    def __call__(self, states: Tensor, template: Any, inputs: Any, args: Any) -> Tensor:
        if self.fast:
            with ExitStack() as stack:
                for module in self.below:
                    if module is self.below[0] and len(self.below) > 1:
                        # The embeddings: any tensor of the right shape, the blocks ignore it.
                        stack.enter_context(_replaced_forward(module, lambda *a, **k: states))
                    else:
                        stack.enter_context(
                            _replaced_forward(
                                module, lambda *a, **k: _with_hidden(template, states)
                            )
                        )
                stack.enter_context(_passes.partial_passes(self.fraction))
                out: Tensor = _run_forward(self.forward, inputs, additional_forward_args=args)
            return out

        def replace_output(module: nn.Module, a: Any, output: Any) -> Any:
            return _with_hidden(output, states)

        def replace_input(module: nn.Module, a: Any) -> Any:
            return _with_hidden(tuple(a), states)

        handle = (
            self.layer.register_forward_pre_hook(replace_input)
            if self.to_input
            else self.layer.register_forward_hook(replace_output)
        )
        try:
            result: Tensor = _run_forward(self.forward, inputs, additional_forward_args=args)
        finally:
            handle.remove()
        return result


def _points(
    method: LayerMethod, hidden: Tensor, base: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """The states ``(S, B, n, K)`` where gradients are taken, and their weights ``(S,)``."""
    steps = method.steps
    if method.name == "integrated_gradients":
        if steps == 1:  # Captum's rules need 2 steps; one point is the rule's own node
            alpha = {"riemann_left": 0.0, "riemann_right": 1.0}.get(method.integration, 0.5)
            alpha_list, size_list = [alpha], [1.0]
        else:
            sizes, alphas = approximation_parameters(method.integration)
            alpha_list, size_list = alphas(steps), sizes(steps)
        a = torch.tensor(alpha_list, dtype=hidden.dtype, device=hidden.device)
        w = torch.tensor(size_list, dtype=torch.float32, device=hidden.device)
        return base + a[:, None, None, None] * (hidden - base), w
    w = torch.full((steps,), 1.0 / steps, device=hidden.device)
    real = mask.to(hidden.dtype)[..., None]
    count = (real.sum((1, 2)) * hidden.shape[-1]).clamp_min(1)
    mean = (hidden * real).sum((1, 2)) / count
    std = ((((hidden - mean[:, None, None]) * real) ** 2).sum((1, 2)) / count).sqrt()
    noise = torch.randn((steps, *hidden.shape), dtype=hidden.dtype, device=hidden.device)
    noise = noise * (method.noise * std)[None, :, None, None]
    if method.name == "smoothgrad":
        return hidden[None] + noise, w
    a = torch.rand((steps, hidden.shape[0], 1, 1), dtype=hidden.dtype, device=hidden.device)
    return base + a * (hidden - base) + noise, w


def _step_gradients(
    runner: _Runner,
    points: Tensor,
    template: Any,
    inputs: Any,
    args: Any,
    target: TargetType,
    internal_batch_size: int | None,
    grad_kwargs: dict[str, Any] | None,
) -> Tensor:
    """``dy_target/dH`` at every point ``(S, B, n, K)``, the steps batched together."""
    steps, batch = points.shape[:2]
    per_call = steps if internal_batch_size is None else max(1, internal_batch_size // batch)
    grads = []
    for start in range(0, steps, per_call):
        chunk = points[start : start + per_call]
        k = chunk.shape[0]
        leaf = chunk.reshape(k * batch, *chunk.shape[2:]).detach().requires_grad_()
        # Step-major rows (step s, example b at s * B + b), as Captum expands its inputs.
        expanded_inputs = _expand_additional_forward_args(
            (inputs,) if isinstance(inputs, Tensor) else inputs, k, ExpansionTypes.repeat
        )
        expanded_args = _expand_additional_forward_args(args, k, ExpansionTypes.repeat)
        expanded_target = _expand_target(target, k, ExpansionTypes.repeat)
        with torch.enable_grad():
            # A clone: in-place ops downstream must not touch the leaf.
            out = runner(leaf.clone(), template, expanded_inputs, expanded_args)
            selected = _select_targets(out, expanded_target)
            kwargs = {"allow_unused": True, **(grad_kwargs or {})}
            (grad,) = torch.autograd.grad(selected.sum(), (leaf,), **kwargs)
        if grad is None:
            grad = torch.zeros_like(leaf)
        grads.append(grad.detach().reshape(k, batch, *chunk.shape[2:]))
    return torch.cat(grads)


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
    to_input: bool = False,
    grad_kwargs: dict[str, Any] | None = None,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], dict[str, float]]:
    """The gradients and activations each layer's aggregation sees, for a non-default method.

    Args:
        method: the layer method (not ``"gradient"``, which is one plain backward).
        forward: the forward whose first call gives the hidden states and the prediction (DLS's
            checked forward).
        logits_forward: the forward the steps run, returning logits.
        layers: the layers to attribute at.
        inputs, target, additional_forward_args: as for Captum.
        resolve_target: called after the first forward; the target the steps explain (the
            prediction when ``target`` is None).
        ids, mask, candidates: ``(B, n)`` token ids, attention mask, and the positions the PAD
            baseline replaces (real, non-special).
        pad_token_id: the padding id (``baseline="pad"``).
        model: the Hugging Face model, for the upper-part-only path.
        to_input: attribute to the layers' inputs.
        grad_kwargs: passed to ``torch.autograd.grad``.

    Returns:
        ``(gradients, activations, hidden_states, cost)``: per layer, the effective gradient
        ``G`` and activation (``H`` or ``H - H0``) for the aggregation and the hidden state ``H``
        (for decoding), all ``(B, n, K)`` and detached; and the passes per example.
    """
    batch = ids.shape[0]
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        templates: dict[int, Any] = {}
        for i, layer in enumerate(layers):
            if not to_input:
                handle = layer.register_forward_hook(
                    lambda m, a, o, i=i: templates.__setitem__(i, o)
                )
                stack.callback(handle.remove)
        with capture_layers(layers, to_input=to_input) as saved:
            _run_forward(forward, inputs, additional_forward_args=additional_forward_args)
        hidden = _ordered(saved, len(layers))
    step_target = resolve_target()
    baselines: list[Tensor]
    runners = [
        _Runner(logits_forward, layer, model, to_input, method.upper_only) for layer in layers
    ]
    reached = max((r.depth for r in runners if r.depth is not None), default=None)
    n_blocks = next((r.n_blocks for r in runners if r.n_blocks), None)
    cost = {"forwards": 1.0, "backwards": 0.0}
    if method.needs_baseline and method.baseline == "pad":
        first = inputs if isinstance(inputs, Tensor) else (inputs[0] if inputs else None)
        if first is not ids:
            raise ValueError(
                "layer_baseline='pad' needs the token ids as the (first) input; with other "
                "inputs (embeddings) use layer_baseline='zeros'"
            )
        pad_ids = _pad_ids(ids, candidates, pad_token_id)
        base_inputs = pad_ids if isinstance(inputs, Tensor) else (pad_ids, *inputs[1:])
        baselines = _states_until(
            logits_forward, layers, base_inputs, additional_forward_args, to_input
        )
        share = (
            reached / n_blocks
            if reached is not None and n_blocks and all(r.fast for r in runners)
            else 1.0
        )
        cost["forwards"] += share
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
        points, weights = _points(method, h, baselines[k], mask)
        g = _step_gradients(
            runner,
            points,
            templates.get(k, h),
            inputs,
            additional_forward_args,
            step_target,
            method.internal_batch_size,
            grad_kwargs,
        )
        grads.append(torch.einsum("s,sbnk->bnk", weights.to(g), g))
        acts.append(h if method.name == "smoothgrad" else h - baselines[k])
        cost["forwards"] += method.steps * runner.fraction
        cost["backwards"] += method.steps * runner.fraction
    return grads, acts, hidden, cost
