"""Leave-one-out importance and Kendall's τ-b of a method's scores against it.

Arguments and rules as every faithfulness metric (see :mod:`.faithfulness`). Leave-one-out costs
one forward per valid token and does not depend on the scores, so a comparison of many methods
computes it once per batch and passes it as ``loo=``.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy.stats import kendalltau
from torch import Tensor

from captum_layer_saliency.metrics.deletion import (
    DELETE,
    ForwardFunc,
    Replacement,
    prepare,
    ranks_of,
)

__all__ = ["kendall_tau_b", "kendall_tau_loo", "leave_one_out"]


def kendall_tau_b(x: Tensor, y: Tensor) -> float:
    """Kendall's τ-b between two 1-D vectors (``scipy.stats.kendalltau``).

    Args:
        x: ``(n,)`` values.
        y: ``(n,)`` values.

    Returns:
        τ-b in ``[-1, 1]``; NaN when ``n < 2`` or either vector is constant.
    """
    x = x.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    y = y.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    if x.numel() < 2 or bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return float("nan")
    return float(kendalltau(x.numpy(), y.numpy(), variant="b").statistic)


def leave_one_out(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Tensor,
    special_mask: Tensor,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
    **model_inputs: Tensor,
) -> Tensor:
    """Leave-one-out importance: ``p(x) - p(x without token i)`` for every valid token.

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        target: ``(batch,)`` explained classes, or a ``(batch, classes)`` label set.
        special_mask: ``(batch, seq)`` True on special tokens.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` or a token id.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``(batch, seq)`` float64 probability drops, 0 on special tokens and padding.

    Raises:
        ValueError: as :func:`~captum_layer_saliency.metrics.faithfulness.aopc_curves`.
    """
    options = {"batch_size": batch_size, "pad_token_id": pad_token_id, "replacement": replacement}
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    rows, cols = pert.valid.nonzero(as_tuple=True)
    keep = attention_mask.bool()[rows].clone()
    keep[torch.arange(rows.numel(), device=rows.device), cols] = False
    log_p = pert.log_probs(keep, rows)
    p_full = pert.full_log_probs().exp()
    loo = torch.zeros(input_ids.shape, dtype=torch.float64, device=input_ids.device)
    loo[rows, cols] = p_full[rows] - log_p.exp()
    return loo


def kendall_tau_loo(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
    loo: Tensor | None = None,
    **model_inputs: Tensor,
) -> Tensor:
    """Kendall τ-b between the scores and leave-one-out importance, over the valid tokens.

    Higher is better. Leave-one-out deletes one token at a time (see :func:`leave_one_out`).

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes, or a ``(batch, classes)`` label set.
        special_mask: ``(batch, seq)`` True on special tokens.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` or a token id.
        loo: the batch's :func:`leave_one_out` importance, when already computed. It does not
            depend on the scores, so a comparison of many methods on one batch computes it once
            (one forward per token) instead of once per method.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``(batch,)`` float64; NaN with fewer than two valid tokens or a constant side.

    Raises:
        ValueError: a ``loo`` of another shape than the inputs, or as :func:`leave_one_out`.
    """
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "pad_token_id": pad_token_id,
        "replacement": replacement,
    }
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    ranks_of(scores, pert)  # checks the scores' shape and values
    if loo is None:
        kwargs: dict[str, Any] = {**options, **model_inputs}
        loo = leave_one_out(forward, input_ids, attention_mask, pert.target, special_mask, **kwargs)
    elif loo.shape != input_ids.shape:
        raise ValueError(
            f"loo has shape {tuple(loo.shape)}; expected the inputs' {tuple(input_ids.shape)}"
        )
    # Kendall's tau runs on the host: copy the batch once rather than syncing per example.
    scores_host, loo_host, valid_host = scores.detach().cpu(), loo.cpu(), pert.valid.cpu()
    taus = [
        kendall_tau_b(scores_host[b][valid_host[b]], loo_host[b][valid_host[b]])
        for b in range(input_ids.shape[0])
    ]
    return torch.tensor(taus, dtype=torch.float64, device=input_ids.device)
