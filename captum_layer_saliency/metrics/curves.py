"""Deletion and insertion curves: the area under ``p(target)`` as tokens go, or come, in order.

Arguments and rules as every faithfulness metric (see :mod:`.faithfulness`): deletion by default,
ties by position, specials kept, the model's other inputs by keyword, NaN without a valid token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.metrics.deletion import (
    DELETE,
    ForwardFunc,
    Replacement,
    nan_where_empty,
    prepare,
    ranks_of,
)

__all__ = ["deletion_auc", "insertion_auc"]


def _curve_auc(
    insertion: bool,
    args: tuple[ForwardFunc, Tensor, Tensor, Tensor, Tensor, Tensor],
    steps: int | None,
    options: dict[str, Any],
    model_inputs: dict[str, Tensor],
) -> Tensor:
    """Normalised trapezoid area under ``p(target)`` as tokens are removed or inserted in order."""
    forward, input_ids, attention_mask, scores, target, special_mask = args
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    ranks, n_valid = ranks_of(scores, pert), pert.n_valid
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be a positive int or None, got {steps}")
    batch, device = input_ids.shape[0], input_ids.device
    grid = int(n_valid.max().item()) if steps is None else steps
    j = torch.arange(grid + 1, device=device)[None, :]
    n = n_valid[:, None]
    # k tokens removed (inserted) at step j. Without `steps` every token is a step and rows shorter
    # than the longest repeat their last point, which adds no area.
    k = torch.minimum(j, n) if steps is None else torch.round(j * n / grid).long()
    # Evaluate each distinct (example, k) once; k <= seq, so seq + 1 separates the examples.
    base = input_ids.shape[1] + 1
    key = torch.arange(batch, device=device)[:, None] * base + k
    uniq, inverse = torch.unique(key.reshape(-1), return_inverse=True)
    rows, k_u = uniq // base, uniq % base
    top = ranks[rows] < k_u[:, None]
    real = attention_mask.bool()[rows]
    keep = ((real & ~pert.valid[rows]) | top) if insertion else (real & ~top)
    probs = pert.log_probs(keep, rows).exp()[inverse].reshape(batch, grid + 1)
    x = k.to(torch.float64) / n.clamp(min=1)
    return nan_where_empty(torch.trapezoid(probs, x, dim=-1), n_valid)


def deletion_auc(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    replacement: Replacement = DELETE,
    steps: int | None = None,
    batch_size: int = 64,
    pad_token_id: int = 0,
    **model_inputs: Tensor,
) -> Tensor:
    """Area under ``p(target)`` as the valid tokens are removed, most important first.

    Lower is better. The x axis is the fraction of valid tokens removed, from 0 to 1, so the area
    lies in ``[0, 1]``. At the end only the special tokens are left (Petsiuk et al., "RISE",
    BMVC 2018, for images).

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes, or a ``(batch, classes)`` label set.
        special_mask: ``(batch, seq)`` True on special tokens.
        replacement: ``"delete"`` or the token id that replaces removed tokens (e.g. ``[PAD]``).
        steps: ``None`` evaluates after every token (``n + 1`` points); an int ``m`` evaluates at
            ``k = round(j * n / m)`` tokens for ``j = 0..m`` (cheaper on long inputs).
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``(batch,)`` float64 areas; NaN for examples without valid tokens.

    Raises:
        ValueError: a non-positive ``steps``, or as
            :func:`~captum_layer_saliency.metrics.faithfulness.aopc_curves`.
    """
    args = (forward, input_ids, attention_mask, scores, target, special_mask)
    options = {"batch_size": batch_size, "pad_token_id": pad_token_id, "replacement": replacement}
    return _curve_auc(False, args, steps, options, model_inputs)


def insertion_auc(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    replacement: Replacement = DELETE,
    steps: int | None = None,
    batch_size: int = 64,
    pad_token_id: int = 0,
    **model_inputs: Tensor,
) -> Tensor:
    """Area under ``p(target)`` as the valid tokens are inserted, most important first.

    Higher is better. The curve starts from the special tokens alone (or every valid token
    replaced) and ends at the full input.

    Args:
        forward: as :func:`deletion_auc`.
        input_ids: as :func:`deletion_auc`.
        attention_mask: as :func:`deletion_auc`.
        scores: as :func:`deletion_auc`.
        target: as :func:`deletion_auc`.
        special_mask: as :func:`deletion_auc`.
        replacement: as :func:`deletion_auc`.
        steps: as :func:`deletion_auc`.
        batch_size: as :func:`deletion_auc`.
        pad_token_id: as :func:`deletion_auc`.
        **model_inputs: as :func:`deletion_auc`.

    Returns:
        ``(batch,)`` float64 areas in ``[0, 1]``; NaN for examples without valid tokens.

    Raises:
        ValueError: as :func:`deletion_auc`.
    """
    args = (forward, input_ids, attention_mask, scores, target, special_mask)
    options = {"batch_size": batch_size, "pad_token_id": pad_token_id, "replacement": replacement}
    return _curve_auc(True, args, steps, options, model_inputs)
