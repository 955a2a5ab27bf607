"""Running the network from a given hidden state at one layer (for DLS's layer methods).

A layer method (:mod:`._layer_methods`) takes gradients at many states of one layer. The fast
path runs only the blocks *above* the layer per state: it stubs out the embeddings and every
block up to the layer, so the model's own forward (with its masks, positions and head) starts
from the given state, and books the partial pass with
:func:`~captum_layer_saliency.models.passes.partial_passes`. The generic path (any other module,
attributions to the layer's input) runs the whole network with a hook that replaces the layer's
output, as Captum's layer methods do. :func:`states_until` runs the network only as far as the
deepest layer needed (the PAD baseline's states).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from captum._utils.common import _run_forward
from torch import Tensor, nn

from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.capture import _ordered, _with_hidden, capture_layers
from captum_layer_saliency.models.surgery import UnsupportedModelError, find_model_parts

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


class LayerRunner:
    """Runs the network from a given state at one layer to the output.

    The fast path stubs out the embeddings and every block up to the layer (their ``forward``
    returns the given state, in the layer's output format), so the model's own forward runs only
    the blocks above it, with its own masks, positions and head. The generic path runs the whole
    network with a hook that replaces the layer's output (or input) by the state.

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
        """Whether a step runs only the blocks above the layer."""
        return self.depth is not None

    @property
    def fraction(self) -> float:
        """The share of the network a step runs."""
        if self.depth is None or not self.n_blocks:
            return 1.0
        return max((self.n_blocks - self.depth) / self.n_blocks, 1e-6)

    def __call__(self, states: Tensor, template: Any, inputs: Any, args: Any) -> Tensor:
        """The forward's output with the layer's output (or input) replaced by ``states``.

        Args:
            states: ``(rows, n, K)`` the layer's states, one row per expanded example.
            template: the layer's own output in the first forward (its format: a tensor or a
                tuple whose first item is the hidden state).
            inputs: the forward's inputs, expanded to ``rows``.
            args: its further positional arguments, expanded to ``rows``.

        Returns:
            The forward's output (logits) for the ``rows`` states.
        """
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
