"""Leave-one-out-bounded AOPC: AOPC scaled between the AOPCs of the leave-one-out orderings.

(Until issue 23 these were ``normalised_comprehensiveness`` and ``normalised_sufficiency``; the
old names remain as deprecated aliases. Edin et al.'s NAOPC, with the exact or beam-searched
best and worst orderings as the bounds, is :mod:`captum_layer_saliency.metrics.edin`.)

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

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.metrics.deletion import DELETE, ForwardFunc, Replacement
from captum_layer_saliency.metrics.faithfulness import ERASER_BINS, aopc_curves
from captum_layer_saliency.metrics.kendall_loo import leave_one_out

__all__ = [
    "aopc_bounds",
    "beyond_bounds",
    "loo_bounded_comprehensiveness",
    "loo_bounded_sufficiency",
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
    **model_inputs: Tensor,
) -> dict[str, Tensor]:
    """Approximate per-example lower and upper bounds of comprehensiveness and sufficiency.

    Args:
        forward: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        input_ids: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        attention_mask: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        target: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        special_mask: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        bins: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        batch_size: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        pad_token_id: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        replacement: as for :func:`~captum_layer_saliency.metrics.aopc_curves`.
        loo: precomputed :func:`~captum_layer_saliency.metrics.leave_one_out` ``(batch, seq)``,
            to share its forwards with other metrics.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``{"comprehensiveness": (batch, 2), "sufficiency": (batch, 2)}``: ``[:, 0]`` the lower
        and ``[:, 1]`` the upper bound, in probability units (AOPC's), NaN for examples without
        a valid token.
    """
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "pad_token_id": pad_token_id,
        "replacement": replacement,
        **model_inputs,
    }
    args = (forward, input_ids, attention_mask)
    rest = (target, special_mask)
    if loo is None:
        loo = leave_one_out(*args, *rest, **common)
    scores = loo.float()
    first = aopc_curves(*args, scores, *rest, bins, **common)
    last = aopc_curves(*args, -scores, *rest, bins, **common)
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
    """Whether each value lies outside its approximate bounds (the bound was beaten).

    Args:
        values: ``(batch,)`` raw AOPC values.
        bounds: ``(batch, 2)`` from :func:`aopc_bounds`.

    Returns:
        ``(batch,)`` bool.
    """
    bounds = bounds.to(values)
    return (values < bounds[..., 0]) | (values > bounds[..., 1])


def _normalised(
    key: str,
    args: tuple[ForwardFunc, Tensor, Tensor, Tensor, Tensor, Tensor],
    bins: Sequence[float],
    common: dict[str, Any],
    bounds: dict[str, Tensor] | None,
    loo: Tensor | None,
) -> Tensor:
    forward, input_ids, attention_mask, scores, target, special_mask = args
    curves = aopc_curves(
        forward, input_ids, attention_mask, scores, target, special_mask, bins, **common
    )
    if bounds is None:
        bounds = aopc_bounds(
            forward, input_ids, attention_mask, target, special_mask, bins, loo=loo, **common
        )
    return normalise_aopc(curves[key].mean(-1), bounds[key])


def loo_bounded_comprehensiveness(
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
    **model_inputs: Tensor,
) -> Tensor:
    """Comprehensiveness scaled to its per-example bounds: 1 = the best ordering (↑ better).

    Args:
        forward: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        input_ids: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        attention_mask: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        scores: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        target: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        special_mask: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        bins: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        batch_size: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        pad_token_id: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        replacement: as for :func:`~captum_layer_saliency.metrics.comprehensiveness`.
        bounds: precomputed :func:`aopc_bounds` (computed when ``None``).
        loo: precomputed leave-one-out importance, for the bounds.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``(batch,)`` in ``[0, 1]``, NaN where undefined.
    """
    args = (forward, input_ids, attention_mask, scores, target, special_mask)
    common = {"batch_size": batch_size, "pad_token_id": pad_token_id, "replacement": replacement}
    return _normalised("comprehensiveness", args, bins, {**common, **model_inputs}, bounds, loo)


def loo_bounded_sufficiency(
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
    **model_inputs: Tensor,
) -> Tensor:
    """Sufficiency scaled to its per-example bounds: 0 = the best ordering (↓ better).

    Args:
        forward: as for :func:`loo_bounded_comprehensiveness`.
        input_ids: as for :func:`loo_bounded_comprehensiveness`.
        attention_mask: as for :func:`loo_bounded_comprehensiveness`.
        scores: as for :func:`loo_bounded_comprehensiveness`.
        target: as for :func:`loo_bounded_comprehensiveness`.
        special_mask: as for :func:`loo_bounded_comprehensiveness`.
        bins: as for :func:`loo_bounded_comprehensiveness`.
        batch_size: as for :func:`loo_bounded_comprehensiveness`.
        pad_token_id: as for :func:`loo_bounded_comprehensiveness`.
        replacement: as for :func:`loo_bounded_comprehensiveness`.
        bounds: as for :func:`loo_bounded_comprehensiveness`.
        loo: as for :func:`loo_bounded_comprehensiveness`.
        **model_inputs: as for :func:`loo_bounded_comprehensiveness`.

    Returns:
        ``(batch,)`` in ``[0, 1]``, NaN where undefined.
    """
    args = (forward, input_ids, attention_mask, scores, target, special_mask)
    common = {"batch_size": batch_size, "pad_token_id": pad_token_id, "replacement": replacement}
    return _normalised("sufficiency", args, bins, {**common, **model_inputs}, bounds, loo)


def _renamed(new: Callable[..., Tensor], old: str, bounds: str) -> Callable[..., Tensor]:
    """The deprecated name ``old`` of ``new``: warns, then calls ``new``."""
    message = (
        f"{old} is now {new.__name__} (its bounds are the leave-one-out orderings; Edin et al.'s "
        f"NAOPC is {bounds})"
    )

    def alias(*args: Any, **kwargs: Any) -> Tensor:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated name of :func:`{new.__name__}` (renamed in issue 23)."
    return alias


normalised_comprehensiveness = _renamed(
    loo_bounded_comprehensiveness, "normalised_comprehensiveness", "naopc_comprehensiveness"
)
normalised_sufficiency = _renamed(
    loo_bounded_sufficiency, "normalised_sufficiency", "naopc_sufficiency"
)
