"""Normalised AOPC (Edin et al., 2024): AOPC scaled between its per-example bounds.

Raw AOPC (ERASER comprehensiveness and sufficiency) mixes how good an explanation is with how
much the model's output *can* move on that example: a short, confidently classified sentence
allows less than a long, borderline one. Edin et al. ("Normalized AOPC: Fixing Misleading
Faithfulness Metrics for Feature Attribution Explainability", ACL 2024) divide that out:

    NAOPC(x) = (AOPC(x) - AOPC_min(x)) / (AOPC_max(x) - AOPC_min(x)),

where ``AOPC_min`` and ``AOPC_max`` are the lowest and highest AOPC that *any* ordering of the
example's tokens reaches. So 1 is the best ordering there is for comprehensiveness (higher is
better) and 0 the best for sufficiency (lower is better, as for the raw value), whatever the
example and the model; numbers then compare across models and datasets.

**The bounds here are an approximation.** The exact bounds search every ordering (the paper
uses exhaustive search for short inputs and beam search otherwise); that costs hundreds of
forwards per example. This module takes the orderings by **leave-one-out importance**
(``p(x) - p(x without token i)``), most important first and least important first, as the
candidate extremes: ``n + 2 x n_bins`` forwards per example (the leave-one-out forwards are
shared with Kendall tau against leave-one-out). With the ERASER bins, wherever a bin holds one
token the descending ordering is the exact comprehensiveness optimum. Because the candidate
orderings can be beaten, the bounds are widened, per example and method, to include the scored
method's own AOPC: the value lies in ``[0, 1]``, and a method that beats the leave-one-out
ordering on an example scores exactly 1 (comprehensiveness) or 0 (sufficiency) there. Report
how often that happens (:func:`beyond_bounds`). An example whose bounds coincide (the output
does not move) gets NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.metrics._perturb import DELETE, ForwardFunc, Replacement
from captum_layer_saliency.metrics.faithfulness import ERASER_BINS, aopc_curves, leave_one_out

__all__ = [
    "aopc_bounds",
    "beyond_bounds",
    "normalise_aopc",
    "normalised_comprehensiveness",
    "normalised_sufficiency",
]

#: Bounds closer than this (in probability) leave nothing to normalise: NaN.
MIN_RANGE = 1e-6


def aopc_bounds(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float] = ERASER_BINS,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
    loo: Tensor | None = None,
) -> dict[str, Tensor]:
    """Approximate per-example lower and upper bounds of comprehensiveness and sufficiency.

    Args:
        forward, input_ids, attention_mask, target, special_mask, bins, batch_size,
            pad_token_id, replacement: as for
            :func:`~captum_layer_saliency.metrics.aopc_curves`.
        loo: precomputed :func:`~captum_layer_saliency.metrics.leave_one_out` ``(batch, seq)``,
            to share its forwards with other metrics.

    Returns:
        ``{"comprehensiveness": (batch, 2), "sufficiency": (batch, 2)}``: ``[:, 0]`` the lower
        and ``[:, 1]`` the upper bound, in probability units (AOPC's), NaN for examples without
        a valid token.
    """
    common: dict[str, Any] = {"bins": bins, "batch_size": batch_size, "pad_token_id": pad_token_id}
    if loo is None:
        loo = leave_one_out(
            forward,
            input_ids,
            attention_mask,
            target,
            special_mask,
            batch_size=batch_size,
            pad_token_id=pad_token_id,
            replacement=replacement,
        )
    scores = loo.float()
    args = (forward, input_ids, attention_mask)
    rest = (target, special_mask)
    first = aopc_curves(*args, scores, *rest, replacement=replacement, **common)
    last = aopc_curves(*args, -scores, *rest, replacement=replacement, **common)
    out = {}
    for key in ("comprehensiveness", "sufficiency"):
        a, b = first[key].mean(-1), last[key].mean(-1)
        out[key] = torch.stack([torch.minimum(a, b), torch.maximum(a, b)], dim=-1)
    return out


def normalise_aopc(values: Tensor, bounds: Tensor) -> Tensor:
    """``(v - lo) / (hi - lo)`` with the bounds widened to include ``v``.

    Args:
        values: ``(batch,)`` raw AOPC values (comprehensiveness or sufficiency).
        bounds: ``(batch, 2)`` lower and upper bounds from :func:`aopc_bounds`.

    Returns:
        ``(batch,)`` in ``[0, 1]``; NaN where the value is NaN or the range is below
        :data:`MIN_RANGE`.
    """
    if bounds.shape != (*values.shape, 2):
        raise ValueError(f"bounds must be {(*values.shape, 2)}, got {tuple(bounds.shape)}")
    bounds = bounds.to(values)
    lo = torch.minimum(bounds[..., 0], values)
    hi = torch.maximum(bounds[..., 1], values)
    span = hi - lo
    out = (values - lo) / span.clamp_min(MIN_RANGE)
    return out.masked_fill(~(span >= MIN_RANGE), float("nan"))


def beyond_bounds(values: Tensor, bounds: Tensor) -> Tensor:
    """Whether each value lies outside its approximate bounds (the bound was beaten)."""
    bounds = bounds.to(values)
    return (values < bounds[..., 0]) | (values > bounds[..., 1])


def _normalised(
    key: str,
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float],
    batch_size: int,
    pad_token_id: int,
    replacement: Replacement,
    bounds: dict[str, Tensor] | None,
    loo: Tensor | None,
) -> Tensor:
    common: dict[str, Any] = {
        "bins": bins,
        "batch_size": batch_size,
        "pad_token_id": pad_token_id,
        "replacement": replacement,
    }
    curves = aopc_curves(forward, input_ids, attention_mask, scores, target, special_mask, **common)
    if bounds is None:
        bounds = aopc_bounds(
            forward, input_ids, attention_mask, target, special_mask, loo=loo, **common
        )
    return normalise_aopc(curves[key].mean(-1), bounds[key])


def normalised_comprehensiveness(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float] = ERASER_BINS,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
    bounds: dict[str, Tensor] | None = None,
    loo: Tensor | None = None,
) -> Tensor:
    """Comprehensiveness scaled to its per-example bounds: 1 = the best ordering (↑ better).

    Arguments as for :func:`~captum_layer_saliency.metrics.comprehensiveness`, plus
    precomputed ``bounds`` (:func:`aopc_bounds`) or ``loo``. Returns ``(batch,)`` in
    ``[0, 1]``, NaN where undefined.
    """
    return _normalised(
        "comprehensiveness",
        forward,
        input_ids,
        attention_mask,
        scores,
        target,
        special_mask,
        bins,
        batch_size,
        pad_token_id,
        replacement,
        bounds,
        loo,
    )


def normalised_sufficiency(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float] = ERASER_BINS,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
    bounds: dict[str, Tensor] | None = None,
    loo: Tensor | None = None,
) -> Tensor:
    """Sufficiency scaled to its per-example bounds: 0 = the best ordering (↓ better).

    Arguments as for :func:`normalised_comprehensiveness`.
    """
    return _normalised(
        "sufficiency",
        forward,
        input_ids,
        attention_mask,
        scores,
        target,
        special_mask,
        bins,
        batch_size,
        pad_token_id,
        replacement,
        bounds,
        loo,
    )
