"""DLS's layer methods at work: the effective gradient and activation each layer's aggregation sees.

:class:`~captum_layer_saliency.attr._layer_methods.LayerMethod` says what a method is and costs;
this module computes it: one forward for the input's states and the prediction, the baseline's
states (PAD) up to the deepest layer, then every step's gradient, the steps batched, each run by
a :class:`~captum_layer_saliency.attr._layer_runner.LayerRunner` (the blocks above the layer
only, where possible).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
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

from captum_layer_saliency.attr._layer_methods import LayerMethod
from captum_layer_saliency.attr._layer_runner import LayerRunner, states_until
from captum_layer_saliency.attr._upper_model import capture_block_calls
from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.capture import (
    _ordered,
    capture_layers,
    layer_gradients_and_outputs,
    thread_keyed,
)
from captum_layer_saliency.models.surgery import find_model_parts

__all__ = ["layer_method_attributions"]


def _pad_ids(ids: Tensor, candidates: Tensor, pad_token_id: int | None) -> Tensor:
    if pad_token_id is None:
        raise ValueError(
            "layer_baseline='pad' needs the padding token id: pass pad_token_id= to the "
            "constructor, build DLS with for_model(..., tokenizer=...), or use "
            "layer_baseline='zeros'"
        )
    return torch.where(candidates, torch.full_like(ids, pad_token_id), ids)


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


def _explained(out: Tensor, target: TargetType, k: int) -> Tensor:
    """The explained output per row of ``k`` stacked copies of the batch.

    A floating-point ``(B, C)`` target holds label weights (a multi-label prediction): the
    explained output is then ``sum_c w_bc * logit_bc``.
    """
    if isinstance(target, Tensor) and target.is_floating_point():
        return (out * target.repeat(k, 1).to(out)).sum(-1)
    return _select_targets(out, _expand_target(target, k, ExpansionTypes.repeat))


def _convergence_delta(
    runner: LayerRunner,
    hidden: Tensor,
    base: Tensor,
    attributions: Tensor,
    template: Any,
    inputs: Any,
    args: Any,
    target: TargetType,
) -> Tensor:
    """Captum's convergence delta at the layer: ``sum(attributions) - (F(H) - F(H0))``, ``(B,)``."""
    expanded_inputs = (inputs,) if isinstance(inputs, Tensor) else inputs
    with torch.no_grad():
        ends = [
            _explained(runner(state, template, expanded_inputs, args), target, 1).float()
            for state in (hidden, base.to(hidden.dtype))
        ]
    return attributions.sum((1, 2)) - (ends[0] - ends[1])


def _step_gradients(
    runner: LayerRunner,
    points: Tensor,
    template: Any,
    inputs: Any,
    args: Any,
    target: TargetType,
    internal_batch_size: int | None,
    grad_kwargs: dict[str, Any] | None,
) -> Tensor:
    """``dy_target/dH`` at every point ``(S, B, n, K)``, the steps batched together.

    A floating-point ``(B, C)`` target holds label weights (a multi-label prediction): the
    explained output is then ``sum_c w_bc * logit_bc``.
    """
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
        with torch.enable_grad():
            # A clone: in-place ops downstream must not touch the leaf.
            out = runner(leaf.clone(), template, expanded_inputs, expanded_args)
            selected = _explained(out, target, k)
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
        LayerRunner(logits_forward, layer, model, to_input, method.upper_only) for layer in layers
    ]
    first = inputs if isinstance(inputs, Tensor) else (inputs[0] if inputs else None)
    upper = model is not None and first is ids and any(r.possible for r in runners)
    blocks = find_model_parts(model).blocks if upper and model is not None else []
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        templates: dict[int, Any] = {}
        for i, layer in enumerate(layers):
            if not to_input:
                handle = layer.register_forward_hook(
                    thread_keyed(lambda m, a, o, i=i: templates.__setitem__(i, o))
                )
                stack.callback(handle.remove)
        calls = stack.enter_context(capture_block_calls(blocks))
        with capture_layers(layers, to_input=to_input) as saved:
            _run_forward(forward, inputs, additional_forward_args=additional_forward_args)
        hidden = _ordered(saved, len(layers))
    for runner in runners:
        runner.build(calls if upper else None, ids)
    step_target = resolve_target()
    baselines: list[Tensor]
    reached = max((r.depth for r in runners if r.depth is not None), default=None)
    n_blocks = next((r.n_blocks for r in runners if r.n_blocks), None)
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
            if reached is not None and n_blocks and all(r.fast for r in runners)
            else 1.0
        )
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
        # In float32 (a half-precision model's states subtract and average exactly there).
        grads.append(torch.einsum("s,sbnk->bnk", weights.float(), g.float()))
        acts.append(h if method.name == "smoothgrad" else h.float() - baselines[k].float())
        if deltas is not None:
            deltas.append(
                _convergence_delta(
                    runner,
                    h,
                    baselines[k],
                    grads[-1] * acts[-1],
                    templates.get(k, h),
                    inputs,
                    additional_forward_args,
                    step_target,
                )
            )
    cost = method.cost_of([runner.fraction for runner in runners], share)
    return grads, acts, hidden, cost
