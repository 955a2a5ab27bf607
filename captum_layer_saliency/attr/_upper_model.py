"""The network from one layer's hidden state upward, as a module of its own: the "upper model".

DLS's layer methods take gradients at many states ``H`` of one layer. Only the blocks *above*
the layer depend on ``H``, so each step runs those: :class:`UpperModel` calls the family's
blocks from the layer upward, its final norm and its classification head, with the arguments
the model itself gave each block on the input's own forward (masks, positions, rotary
embeddings), captured by :func:`capture_block_calls`. It never changes the user's model: it
only calls its modules, and the capture is a forward pre-hook keyed to the calling thread and
removed in a ``finally``
(:func:`~captum_layer_saliency.models.capture.thread_keyed`).

Where the upper model cannot be built (a family or head it does not know, attributions to the
layer's input, inputs that are not the token ids), :func:`replaced_layer_output` is the
fallback: each step runs the whole network with a forward hook, registered for that call,
keyed to the calling thread and removed in a ``finally``, that replaces the layer's output (or
input) by the step's state, as Captum's layer methods do. Two threads may then explain with one
model at once: each sees only its own hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

from captum_layer_saliency.models.capture import _with_hidden, thread_keyed
from captum_layer_saliency.models.passes import partial_passes
from captum_layer_saliency.models.surgery import (
    ModelParts,
    UnsupportedModelError,
    find_model_parts,
)

__all__ = [
    "UPPER_HEADS",
    "UpperModel",
    "capture_block_calls",
    "replaced_layer_output",
    "upper_model_reason",
]

#: The classification heads the upper model runs, by class name.
UPPER_HEADS = {
    "BertForSequenceClassification": "pooler",
    "RobertaForSequenceClassification": "sequence",
    "XLMRobertaForSequenceClassification": "sequence",
    "CamembertForSequenceClassification": "sequence",
    "ElectraForSequenceClassification": "sequence",
    "DistilBertForSequenceClassification": "first_token",
    "GPT2ForSequenceClassification": "last_token",
    "LlamaForSequenceClassification": "last_token",
    "MistralForSequenceClassification": "last_token",
    "Qwen2ForSequenceClassification": "last_token",
}
# Block arguments that carry state between calls (key/value caches): never replayed.
_STATEFUL = {"cache", "past_key_values", "past_key_value", "layer_past"}


def upper_model_reason(
    model: nn.Module | None, layer: nn.Module, to_input: bool, parts: ModelParts | None = None
) -> str | None:
    """Why no upper model runs from ``layer`` (``None`` when one does).

    ``parts`` are ``model``'s parts when already found (else they are looked up).
    """
    if to_input:
        return "the attributions are to the layer's input"
    if model is None:
        return "DLS was not built with for_model, so the model's parts are unknown"
    if type(model).__name__ not in UPPER_HEADS:
        return f"the upper model does not know the head of {type(model).__name__}"
    try:
        parts = parts if parts is not None else find_model_parts(model)
    except UnsupportedModelError as err:
        return str(err)
    if _depth(parts, layer) is None:
        return "the layer is not the embeddings or a block of the model"
    if model._forward_pre_hooks:
        return "the model has forward pre-hooks, which only its own forward can run"
    return None


def _depth(parts: ModelParts, layer: nn.Module) -> int | None:
    """The blocks below ``layer``'s state: 0 for the embeddings, ``l`` for block ``l``."""
    if layer is parts.embeddings:
        return 0
    return next((i + 1 for i, block in enumerate(parts.blocks) if block is layer), None)


@contextmanager
def capture_block_calls(blocks: Sequence[nn.Module]) -> Iterator[list[Any]]:
    """Record, on the next forward in this thread, the arguments each block is called with.

    Yields a list filled with one ``(args, kwargs)`` per block (the hidden state left out: it is
    the step's), in the order of ``blocks``.
    """
    calls: list[Any] = [None] * len(blocks)
    handles = []

    def record(index: int) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if calls[index] is None:
                calls[index] = (tuple(args), dict(kwargs))

        return hook

    try:
        for i, block in enumerate(blocks):
            handles.append(
                block.register_forward_pre_hook(thread_keyed(record(i)), with_kwargs=True)
            )
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _expand(value: Any, batch: int, rows: int) -> Any:
    """``value`` with every ``(batch, ...)`` tensor repeated to ``rows`` (step-major)."""
    if isinstance(value, Tensor):
        if value.dim() > 0 and value.shape[0] == batch and rows != batch:
            return value.repeat(rows // batch, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(_expand(v, batch, rows) for v in value)
    if isinstance(value, list):
        return [_expand(v, batch, rows) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, batch, rows) for k, v in value.items()}
    return value


class UpperModel(nn.Module):
    """Logits from the hidden state at one layer: the blocks above it, final norm and head.

    Built per call, after the input's own forward captured the blocks' arguments
    (:func:`capture_block_calls`); ``forward(states)`` takes ``(rows, n, K)`` states, ``rows``
    a multiple of the input's batch (steps stacked step-major, as Captum expands its inputs),
    and returns ``(rows, C)`` logits. The model is held, not registered as a submodule, so
    nothing done to this module (``train()``, ``requires_grad_``) reaches it.

    Args:
        model: the Hugging Face classifier (a head in :data:`UPPER_HEADS`).
        layer: the layer the states belong to (the embeddings or a block).
        calls: per block of the model, its captured ``(args, kwargs)``.
        ids: ``(B, n)`` the token ids of the input (the last-token heads pool by them).
        parts: ``model``'s parts when already found (else they are looked up).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module,
        calls: list[Any],
        ids: Tensor,
        parts: ModelParts | None = None,
    ) -> None:
        super().__init__()
        parts = parts if parts is not None else find_model_parts(model)
        depth = _depth(parts, layer)
        assert depth is not None, "the layer is not the embeddings or a block"
        self.depth = depth
        self.n_blocks = len(parts.blocks)
        self._parts = parts
        self._held = (model,)
        self._calls = calls
        self._ids = ids

    @property
    def fraction(self) -> float:
        """The share of the network's blocks one forward runs."""
        return max((self.n_blocks - self.depth) / self.n_blocks, 1e-6)

    def forward(self, states: Tensor) -> Tensor:
        """``(rows, C)`` logits for the ``(rows, n, K)`` states at the layer."""
        (model,) = self._held
        batch, rows = self._ids.shape[0], states.shape[0]
        hidden = states
        for block, call in zip(
            self._parts.blocks[self.depth :], self._calls[self.depth :], strict=True
        ):
            args, kwargs = call
            kwargs = {
                k: (False if k == "use_cache" else _expand(v, batch, rows))
                for k, v in kwargs.items()
                if k not in _STATEFUL
            }
            rest = tuple(None if type(a).__name__.endswith("Cache") else a for a in args[1:])
            if args:
                out = block(hidden, *_expand(rest, batch, rows), **kwargs)
            else:
                name = "hidden_states" if "hidden_states" in kwargs else "x"
                out = block(**{**kwargs, name: hidden})
            hidden = out[0] if isinstance(out, (tuple, list)) else out
        if self._parts.final_norm is not None:
            hidden = self._parts.final_norm(hidden)
        logits = self._head(model, hidden, _expand(self._ids, batch, rows))
        return self._model_hooks(model, logits)

    def _model_hooks(self, model: nn.Module, logits: Tensor) -> Tensor:
        """The logits after the forward hooks on the model itself, as its own forward would.

        A pass counter, or the library's label-set sum, hooks the model's output: they see this
        forward as the share of the network it runs
        (:func:`~captum_layer_saliency.models.passes.partial_passes`).
        """
        if not model._forward_hooks:
            return logits
        output: Any = SequenceClassifierOutput(logits=logits)
        with partial_passes(self.fraction):
            for key, hook in list(model._forward_hooks.items()):
                if key in model._forward_hooks_with_kwargs:
                    result = hook(model, (), {}, output)
                else:
                    result = hook(model, (), output)
                output = output if result is None else result
        out = getattr(output, "logits", None)
        if out is None:
            out = output[0] if isinstance(output, (tuple, list)) else output
        return out

    @staticmethod
    def _head(model: Any, hidden: Tensor, ids: Tensor) -> Tensor:
        kind = UPPER_HEADS[type(model).__name__]
        if kind == "sequence":
            logits: Tensor = model.classifier(hidden)
            return logits
        if kind == "pooler":
            pooler = model.base_model.pooler
            return model.classifier(model.dropout(pooler(hidden)))
        if kind == "first_token":
            pooled = torch.relu(model.pre_classifier(hidden[:, 0]))
            return model.classifier(model.dropout(pooled))
        logits = model.score(hidden)
        config = model.config.get_text_config()
        if config.pad_token_id is None:
            return logits[:, -1]
        real = (ids != config.pad_token_id).to(logits.device, torch.int32)
        positions = torch.arange(ids.shape[-1], device=logits.device, dtype=torch.int32)
        last = (positions * real).argmax(-1)
        return logits[torch.arange(ids.shape[0], device=logits.device), last]


@contextmanager
def replaced_layer_output(layer: nn.Module, states: Tensor, to_input: bool) -> Iterator[None]:
    """Inside the block, ``layer``'s output (or input) is ``states``, in this thread only."""

    def replace_output(module: nn.Module, a: Any, output: Any) -> Any:
        return _with_hidden(output, states)

    def replace_input(module: nn.Module, a: Any) -> Any:
        return _with_hidden(tuple(a), states)

    handle = (
        layer.register_forward_pre_hook(thread_keyed(replace_input))
        if to_input
        else layer.register_forward_hook(thread_keyed(replace_output))
    )
    try:
        yield
    finally:
        handle.remove()
