"""Capture several layers' hidden states, and their gradients, in one forward and one backward.

Captum's ``compute_layer_gradients_and_eval`` does this too, but it requires every element of a
layer's output tuple to be a tensor, and DeBERTa and Llama blocks return ``(hidden, None)``.
Here only the hidden state (the first element) is captured; the rest passes through untouched.
Hooks act only in the thread that registered them (:func:`thread_keyed`) and are removed in a
``finally``, whatever happens in between.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from captum._utils.common import _run_forward, _select_targets
from captum._utils.typing import TargetType
from torch import Tensor, nn

from captum_layer_saliency.errors import CaptumLayerSaliencyError

__all__ = [
    "LayerNotRunError",
    "capture_layers",
    "layer_gradients_and_outputs",
    "layer_outputs",
    "thread_keyed",
]


class LayerNotRunError(CaptumLayerSaliencyError, ValueError):
    """A hooked layer was never run by the forward function."""


def _hidden(value: Any) -> Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def _with_hidden(value: Any, hidden: Tensor) -> Any:
    if isinstance(value, tuple):
        return (hidden, *value[1:])
    if isinstance(value, list):
        return [hidden, *value[1:]]
    return hidden


def _grad_ready(tensor: Tensor) -> Tensor:
    # A clone keeps in-place ops downstream from changing what we saved; a frozen model's
    # hidden states do not require grad, so give them a leaf that does.
    return tensor.clone() if tensor.requires_grad else tensor.detach().requires_grad_()


def thread_keyed(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook``, acting only in the thread that made it (elsewhere it returns ``None``).

    A hook on a user's module is seen by every thread that runs the module; keyed to the
    calling thread, it changes only that thread's forward.
    """
    owner = threading.get_ident()

    def keyed(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        return hook(*args, **kwargs)

    return keyed


@contextmanager
def capture_layers(
    layers: Sequence[nn.Module], *, to_input: bool = False, for_grad: bool = False
) -> Any:
    """Hook ``layers`` and yield a dict ``{index: hidden state}`` filled by the next forward.

    Args:
        layers: the modules to capture.
        to_input: capture each layer's input rather than its output.
        for_grad: make the captured tensors part of the graph, so gradients can be taken
            with respect to them.
    """
    saved: dict[int, Tensor] = {}
    handles = []

    def output_hook(index: int) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            hidden = _hidden(output)
            if for_grad:
                hidden = _grad_ready(hidden)
                saved[index] = hidden
                return _with_hidden(output, hidden)
            saved[index] = hidden
            return None

        return hook

    def input_hook(index: int) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any) -> Any:
            hidden = _hidden(args)
            if for_grad:
                hidden = _grad_ready(hidden)
                saved[index] = hidden
                return _with_hidden(tuple(args), hidden)
            saved[index] = hidden
            return None

        return hook

    try:
        for i, layer in enumerate(layers):
            if to_input:
                handles.append(layer.register_forward_pre_hook(thread_keyed(input_hook(i))))
            else:
                handles.append(layer.register_forward_hook(thread_keyed(output_hook(i))))
        yield saved
    finally:
        for handle in handles:
            handle.remove()


def _ordered(saved: dict[int, Tensor], count: int) -> list[Tensor]:
    missing = [i for i in range(count) if i not in saved]
    if missing:
        raise LayerNotRunError(
            f"candidate layer(s) {missing} were never run by the forward function: they are "
            "not part of the model being explained (a torch.compile'd model runs its layers in "
            "compiled code: explain the model before compiling, model._orig_mod, which has the "
            "same weights)"
        )
    return [saved[i] for i in range(count)]


def layer_outputs(
    forward_func: Callable[..., Any],
    layers: Sequence[nn.Module],
    inputs: Tensor | tuple[Tensor, ...],
    additional_forward_args: Any = None,
    to_input: bool = False,
) -> list[Tensor]:
    """The layers' hidden states on ``inputs``, from one forward pass without gradients."""
    with torch.no_grad(), capture_layers(layers, to_input=to_input) as saved:
        _run_forward(forward_func, inputs, additional_forward_args=additional_forward_args)
    return _ordered(saved, len(layers))


def layer_gradients_and_outputs(
    forward_func: Callable[..., Any],
    layers: Sequence[nn.Module],
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    to_input: bool = False,
    grad_kwargs: dict[str, Any] | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Gradients of the target output with respect to each layer's hidden state, and the states.

    One forward and one backward, whatever the number of layers. The output is reduced with
    Captum's target semantics, then summed over the batch (examples do not interact, so each
    example's gradient is its own).

    Returns:
        ``(gradients, hidden_states)``, one ``(B, n, K)`` tensor each per layer, detached.
    """
    with torch.enable_grad(), capture_layers(layers, to_input=to_input, for_grad=True) as saved:
        output = _run_forward(forward_func, inputs, additional_forward_args=additional_forward_args)
        selected = _select_targets(output, target)
        hidden = _ordered(saved, len(layers))
        kwargs = {"allow_unused": True, **(grad_kwargs or {})}
        grads = torch.autograd.grad(selected.sum(), hidden, **kwargs)
    # A layer the target does not depend on has zero gradient, not an error.
    return (
        [
            torch.zeros_like(h) if g is None else g.detach()
            for g, h in zip(grads, hidden, strict=True)
        ],
        [h.detach() for h in hidden],
    )
