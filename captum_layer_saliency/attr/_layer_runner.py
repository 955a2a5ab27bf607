"""Running the network from a given hidden state at one layer (for DLS's layer methods).

A layer method (:mod:`._layer_methods`) takes gradients at many states of one layer. The fast
path runs only the blocks *above* the layer per state, on an
:class:`~._upper_model.UpperModel`, which books the partial pass with
:func:`~captum_layer_saliency.models.passes.partial_passes`. The generic path (any other module,
attributions to the layer's input) runs the whole network with a hook that replaces the layer's
output, as Captum's layer methods do. :func:`states_until` runs the network only as far as the
deepest layer needed (the PAD baseline's states).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum._utils.common import _run_forward
from torch import Tensor, nn

from captum_layer_saliency.attr._upper_model import (
    UpperModel,
    replaced_layer_output,
    upper_model_reason,
)
from captum_layer_saliency.models.capture import _ordered, capture_layers, thread_keyed

__all__ = ["LayerRunner", "states_until"]


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
    return _ordered(saved, len(layers))


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
    ) -> None:
        self.forward = forward
        self.layer = layer
        self.to_input = to_input
        self.model = model
        self.upper: UpperModel | None = None
        reason = upper_model_reason(model, layer, to_input)
        if reason is not None and upper_only:
            raise ValueError(f"upper_only=True, but {reason}")
        self.possible = reason is None and upper_only is not False
        self.required = bool(upper_only)

    def build(self, calls: list[Any] | None, ids: Tensor) -> None:
        """Build the upper model from the blocks' arguments captured on the input's forward."""
        if self.possible and calls is not None and all(c is not None for c in calls):
            assert self.model is not None
            self.upper = UpperModel(self.model, self.layer, calls, ids)
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

    def __call__(self, states: Tensor, template: Any, inputs: Any, args: Any) -> Tensor:
        """The forward's output with the layer's output (or input) replaced by ``states``.

        Args:
            states: ``(rows, n, K)`` the layer's states, one row per expanded example.
            template: the layer's own output in the first forward (unused; kept for callers).
            inputs: the forward's inputs, expanded to ``rows``.
            args: its further positional arguments, expanded to ``rows``.

        Returns:
            The forward's output (logits) for the ``rows`` states.
        """
        if self.upper is not None:
            out: Tensor = self.upper(states)
            return out
        with replaced_layer_output(self.layer, states, self.to_input):
            result: Tensor = _run_forward(self.forward, inputs, additional_forward_args=args)
        return result
