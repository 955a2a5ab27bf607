"""The network from one layer's hidden state upward, as a module of its own: the "upper model".

DLS's layer methods take gradients at many states ``H`` of one layer. Only the blocks *above*
the layer depend on ``H``, so each step runs those: :class:`UpperModel` calls the family's
blocks from the layer upward, its final norm and its classification head, with the arguments
the model itself gave each block on the input's own forward (masks, positions, rotary
embeddings), captured by :func:`capture_block_calls`. It never changes the user's model: it
only calls its modules, and the capture is a forward pre-hook keyed to the calling thread and
removed in a ``finally``
(:func:`thread_keyed`).

Where the upper model cannot be built (a family or head it does not know, attributions to the
layer's input, inputs that are not the token ids), :func:`replaced_layer_output` is the
fallback: each step runs the whole network with a forward hook, registered for that call,
keyed to the calling thread and removed in a ``finally``, that replaces the layer's output (or
input) by the step's state, as Captum's layer methods do. Two threads may then explain with one
model at once: each sees only its own hooks.

Reading layers is the same craft: :func:`capture_layers`, :func:`layer_outputs` and
:func:`layer_gradients_and_outputs` take several layers' hidden states (and their gradients) in
one forward (and one backward). Captum's ``compute_layer_gradients_and_eval`` does this too,
but it requires every element of a layer's output tuple to be a tensor, and DeBERTa and Llama
blocks return ``(hidden, None)``: here only the hidden state (the first element) is captured and
the rest passes through untouched. Every hook acts only in the thread that registered it
(:func:`thread_keyed`) and is removed in a ``finally``, whatever happens in between.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from captum._utils.common import _run_forward, _select_targets
from captum._utils.typing import TargetType
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.models.passes import partial_passes
from captum_layer_saliency.models.surgery import (
    ModelParts,
    UnsupportedModelError,
    find_model_parts,
)

__all__ = [
    "UPPER_HEADS",
    "LayerNotRunError",
    "UpperModel",
    "capture_block_calls",
    "capture_layers",
    "layer_depth",
    "layer_gradients_and_outputs",
    "layer_outputs",
    "ordered_states",
    "replaced_layer_output",
    "share_above",
    "thread_keyed",
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
    if layer_depth(parts, layer) is None:
        return "the layer is not the embeddings or a block of the model"
    if model._forward_pre_hooks:
        return "the model has forward pre-hooks, which only its own forward can run"
    return None


def share_above(depth: int, n_blocks: int) -> float:
    """The share of a network's ``n_blocks`` blocks above depth ``depth`` (at least 1e-6)."""
    return max((n_blocks - depth) / n_blocks, 1e-6)


def layer_depth(parts: ModelParts, layer: nn.Module) -> int | None:
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


def _rows(value: Any, batch: int, index: Tensor) -> Any:
    """``value`` with every ``(batch, ...)`` tensor taken at the rows' examples ``index``."""
    if isinstance(value, Tensor):
        if value.dim() > 0 and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value
    if isinstance(value, tuple):
        return tuple(_rows(v, batch, index) for v in value)
    if isinstance(value, list):
        return [_rows(v, batch, index) for v in value]
    if isinstance(value, dict):
        return {k: _rows(v, batch, index) for k, v in value.items()}
    return value


class UpperModel(nn.Module):
    """Logits from the hidden state at one layer: the blocks above it, final norm and head.

    Built per call, after the input's own forward captured the blocks' arguments
    (:func:`capture_block_calls`); ``forward(states, index)`` takes ``(rows, n, K)`` states and
    the example ``index`` ``(rows,)`` of each row (in whatever order Captum expanded the batch),
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
        depth = layer_depth(parts, layer)
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
        return share_above(self.depth, self.n_blocks)

    def forward(self, states: Tensor, index: Tensor | None = None) -> Tensor:
        """``(rows, C)`` logits for the ``(rows, n, K)`` states at the layer.

        ``index`` ``(rows,)``: the example of the input batch each row belongs to (default: the
        rows are the batch itself).
        """
        (model,) = self._held
        batch = self._ids.shape[0]
        if index is None:
            index = torch.arange(states.shape[0], device=states.device)
        hidden = states
        for block, call in zip(
            self._parts.blocks[self.depth :], self._calls[self.depth :], strict=True
        ):
            args, kwargs = call
            kwargs = {
                k: (False if k == "use_cache" else _rows(v, batch, index))
                for k, v in kwargs.items()
                if k not in _STATEFUL
            }
            rest = tuple(None if type(a).__name__.endswith("Cache") else a for a in args[1:])
            if args:
                out = block(hidden, *_rows(rest, batch, index), **kwargs)
            else:
                name = "hidden_states" if "hidden_states" in kwargs else "x"
                out = block(**{**kwargs, name: hidden})
            hidden = out[0] if isinstance(out, (tuple, list)) else out
        if self._parts.final_norm is not None:
            hidden = self._parts.final_norm(hidden)
        logits = self._head(model, hidden, _rows(self._ids, batch, index))
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


# -- reading layers ------------------------------------------------------------------------------


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


def ordered_states(saved: dict[int, Tensor], count: int) -> list[Tensor]:
    """The states :func:`capture_layers` saved, in layer order; an error names a layer not run."""
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
    return ordered_states(saved, len(layers))


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
        hidden = ordered_states(saved, len(layers))
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
