"""What DLS explains: the token ids, the mask, the model's other inputs, the checked forward.

The checked forward yields the prediction in the same pass that is differentiated, and checks
the output and the target before Captum indexes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args
from torch import Tensor, nn

from captum_layer_saliency.errors import ModelOutputError
from captum_layer_saliency.models.inputs import check_model_inputs, forward_args, logits_of
from captum_layer_saliency.models.targets import check_target_range, prediction_weights

__all__ = [
    "attention_mask_of",
    "check_hidden_states",
    "checked_forward",
    "forward_arguments",
    "token_ids_of",
]


def token_ids_of(inputs: Tensor | tuple[Tensor, ...], token_ids: Tensor | None) -> Tensor:
    """The ``(B, n)`` token ids being explained.

    Args:
        inputs: the forward's inputs; the first is the ids unless ``token_ids`` is given.
        token_ids: the ids, when the inputs are something else (embeddings).

    Returns:
        ``(B, n)`` integer ids.

    Raises:
        ValueError: inputs that are not ids without ``token_ids``, ids that are not 2-D, or an
            empty batch.
    """
    if token_ids is None:
        first = inputs[0] if isinstance(inputs, tuple) else inputs
        if not isinstance(first, Tensor) or first.dtype.is_floating_point:
            raise ValueError(
                "inputs are not token ids: pass token_ids=(batch, seq) ids alongside them"
            )
        token_ids = first
    if token_ids.dim() != 2:
        raise ValueError(f"token ids must be (batch, seq), got shape {tuple(token_ids.shape)}")
    if token_ids.numel() == 0:
        raise ValueError(f"empty input: token ids of shape {tuple(token_ids.shape)}")
    return token_ids


def attention_mask_of(
    ids: Tensor, attention_mask: Tensor | None, pad_token_id: int | None
) -> Tensor:
    """The ``(B, n)`` attention mask: the given one (checked), else derived from the padding id.

    Args:
        ids: ``(B, n)`` token ids.
        attention_mask: ``(B, n)``, 0 at padding, or ``None``.
        pad_token_id: the padding id (then the default mask is ``ids != pad_token_id``), or
            ``None`` (then all ones).

    Returns:
        The mask, same shape as ``ids``.

    Raises:
        ValueError: a mask of another shape, or an example with no real token.
    """
    if attention_mask is None:
        if pad_token_id is not None:
            return (ids != pad_token_id).long()
        return torch.ones_like(ids)
    if attention_mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, the ids {tuple(ids.shape)}"
        )
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"example(s) {empty} have no real token (attention_mask all 0)")
    return attention_mask


def forward_arguments(
    additional_forward_args: Any,
    model_inputs: dict[str, Tensor],
    ids: Tensor,
    mask: Tensor,
    model: nn.Module | None,
    mask_is_forward_arg: bool,
) -> tuple[Any, ...] | None:
    """The forward's further positional arguments, Captum-formatted.

    Args:
        additional_forward_args: what the caller passed (or ``None``).
        model_inputs: the model's other inputs by their Hugging Face names
            (``token_type_ids=``...); only for a forward built by ``for_model``.
        ids: ``(B, n)`` token ids.
        mask: ``(B, n)`` attention mask.
        model: the Hugging Face model (checks the keyword inputs), or ``None``.
        mask_is_forward_arg: the forward is ``f(input_ids, attention_mask, ...)``
            (``for_model``): the mask (and the keyword inputs) are passed to it.

    Returns:
        The formatted arguments (``None`` when there are none).

    Raises:
        ValueError: keyword inputs without ``for_model``, both keyword inputs and
            ``additional_forward_args``, or a keyword input the model does not take.
    """
    if model_inputs:
        if not mask_is_forward_arg:
            raise ValueError(
                "model inputs by keyword (token_type_ids=...) need a model built with "
                "DecodedLayerSaliency.for_model; with your own forward, pass them through "
                "additional_forward_args"
            )
        if additional_forward_args is not None:
            raise ValueError("pass the model's inputs by keyword or additional_forward_args")
        additional_forward_args = forward_args(mask, check_model_inputs(model_inputs, ids, model))
    if additional_forward_args is None and mask_is_forward_arg:
        additional_forward_args = (mask,)
    formatted: tuple[Any, ...] | None = _format_additional_forward_args(additional_forward_args)
    return formatted


def checked_forward(
    user_forward: Callable[..., Any],
    activation: str,
    targets: Tensor | None,
    explain_prediction: bool,
) -> tuple[Callable[..., Tensor], list[Tensor]]:
    """Wrap the forward to check its output and the target before Captum indexes it.

    With ``explain_prediction`` the wrapper returns the explained scalar per example: the
    prediction's logit (the sum of the predicted labels' logits for a multi-label head), so the
    prediction comes from the very forward pass that is differentiated; or, when ``targets``
    are ``(B, C)`` label sets, the sum of each set's logits (the same scalar for a given set).

    Args:
        user_forward: the forward function (a tensor, or a Hugging Face output with ``logits``).
        activation: ``"softmax"`` or ``"sigmoid"`` (multi-label): what "the prediction" means.
        targets: ``(B,)`` normalised class indices, checked against the output's width,
            ``(B, C)`` 0/1 label sets (``normalize_target(..., label_sets=True)``), whose ``C``
            must be the output's width, or ``None``.
        explain_prediction: return the explained scalar (``target=None``, or label sets).

    Returns:
        ``(forward, predicted)``: the wrapped forward, and a list that each call with
        ``explain_prediction`` appends the explained target to: ``(B,)`` class indices, or
        ``(B, C)`` 0/1 label weights (a multi-label prediction, or the label sets given).

    Raises:
        ValueError: (when called) an output holding NaN or inf, a target out of range, or
            label sets of another width than the output.
        TypeError: (when called) an output that is not a tensor.
    """
    predicted: list[Tensor] = []
    label_sets = targets is not None and targets.dim() == 2

    def forward(*args: Any) -> Tensor:
        out = logits_of(user_forward(*args))
        if not torch.isfinite(out).all():
            rows = (~torch.isfinite(out.reshape(len(out), -1)).all(-1)).nonzero().flatten()
            raise ModelOutputError(
                f"the model's output holds NaN or inf for example(s) {rows.tolist()} of the "
                "batch; cannot attribute it"
            )
        if out.dim() == 2:
            if label_sets:
                assert targets is not None
                weights = _label_weights(targets, out)
            elif targets is not None:  # its length was checked; layer methods expand rows
                check_target_range(targets, out.shape[1])
            if explain_prediction:
                if not label_sets:
                    weights = prediction_weights(out, activation)
                    predicted.append(weights.argmax(-1) if activation == "softmax" else weights)
                else:
                    predicted.append(weights)
                return (out * weights.to(out)).sum(-1)
        return out

    return forward, predicted


def _label_weights(targets: Tensor, out: Tensor) -> Tensor:
    """``(rows, C)`` label-set weights for an output ``(rows, C)`` (step-major when expanded)."""
    if targets.shape[1] != out.shape[1]:
        raise ValueError(
            f"a label-set target has {targets.shape[1]} columns; the output has {out.shape[1]} "
            "classes"
        )
    if out.shape[0] != targets.shape[0] and out.shape[0] % targets.shape[0] == 0:
        return targets.repeat(out.shape[0] // targets.shape[0], 1)  # as Captum expands rows
    if out.shape[0] != targets.shape[0]:
        raise ValueError(f"{targets.shape[0]} label sets for an output of {out.shape[0]} rows")
    return targets


def check_hidden_states(hidden: list[Tensor], ids: Tensor, head: nn.Module) -> None:
    """Refuse layer outputs DLS cannot decode with ``head``.

    Args:
        hidden: each candidate layer's output.
        ids: ``(B, n)`` token ids.
        head: the LM head.

    Raises:
        ValueError: a state that is not ``(B, n, K)`` for the ids' ``(B, n)``, or whose ``K``
            is not the head's input width.
    """
    head_width = _head_in_features(head)
    for h in hidden:
        if h.dim() != 3 or h.shape[:2] != ids.shape:
            raise ValueError(
                f"a candidate layer returned shape {tuple(h.shape)}; DLS needs hidden "
                f"states of shape (batch, seq, hidden) matching the ids {tuple(ids.shape)}"
            )
        if head_width is not None and h.shape[-1] != head_width:
            raise ValueError(
                f"the LM head takes hidden size {head_width} but this layer's hidden size is "
                f"{h.shape[-1]}: the head belongs to another model (use the LM head of the "
                "classifier's own backbone, load_lm_head)"
            )


def _head_in_features(head: nn.Module) -> int | None:
    """The hidden size an LM head takes: its first linear layer's input width."""
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return int(module.in_features)
    return None
