"""Plausibility metrics: agreement of token scores with human rationales.

All functions take ``scores`` ``(batch, seq)``, ``rationale`` ``(batch, seq)`` (1 on the tokens a
human marked, 0 elsewhere) and ``valid_mask`` ``(batch, seq)`` (True on the real, non-special
tokens; build it with :func:`captum_layer_saliency.metrics.valid_token_mask`). Positions outside
``valid_mask`` are ignored on both sides. Rankings break ties by position, earlier first.

**Edge cases**: an example with no valid token or no rationale token returns NaN (precision and
recall against an empty rationale are undefined); aggregate with ``nanmean`` and report the count.

**Discretisation** (token-F1 and IOU-F1): the predicted rationale is the top-``k`` valid tokens by
score. By default ``k`` is the number of human rationale tokens of that example, so a method is
compared with the human rationale at equal length (ERASER selects top-k for soft scores in the same
way, with k from the dataset's average rationale length; pass ``k`` to do that).
"""

from __future__ import annotations

import torch
from torch import Tensor

from captum_layer_saliency.metrics.deletion import top_k_mask


def _prepare(scores: Tensor, rationale: Tensor, valid_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes; return the rationale restricted to valid tokens and the valid mask (bool)."""
    if not scores.shape == rationale.shape == valid_mask.shape or scores.dim() != 2:
        raise ValueError(
            f"scores {tuple(scores.shape)}, rationale {tuple(rationale.shape)} and valid_mask "
            f"{tuple(valid_mask.shape)} must all be (batch, seq)"
        )
    valid = valid_mask.bool()
    return rationale.bool() & valid, valid


def _predicted(scores: Tensor, gold: Tensor, valid: Tensor, k: int | None) -> Tensor:
    """The top-k valid tokens, with ``k`` = the number of gold tokens when ``k`` is None."""
    if k is not None and k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    k_t = gold.sum(-1) if k is None else torch.full_like(gold.sum(-1), k)
    return top_k_mask(scores.to(gold.device), valid, k_t)


def _undefined(gold: Tensor, valid: Tensor) -> Tensor:
    """Examples where the metrics are undefined: no valid token or no rationale token."""
    return (valid.sum(-1) == 0) | (gold.sum(-1) == 0)


def token_f1_at_k(
    scores: Tensor, rationale: Tensor, valid_mask: Tensor, k: int | None = None
) -> Tensor:
    """Token-level F1 between the top-k tokens and the human rationale.

    Args:
        scores: ``(batch, seq)`` attributions.
        rationale: ``(batch, seq)`` 0/1 human rationale.
        valid_mask: ``(batch, seq)`` True on real, non-special tokens.
        k: tokens selected per example; ``None`` = the example's rationale length (then
            precision = recall = F1). More than an example has selects all its tokens.

    Returns:
        ``(batch,)`` float64 F1; NaN where undefined (see module docstring).
    """
    gold, valid = _prepare(scores, rationale, valid_mask)
    pred = _predicted(scores, gold, valid, k)
    tp = (pred & gold).sum(-1).to(torch.float64)
    denominator = (pred.sum(-1) + gold.sum(-1)).to(torch.float64)
    f1 = 2 * tp / denominator.clamp(min=1)
    return f1.masked_fill(_undefined(gold, valid), float("nan"))


def _spans(mask: list[bool]) -> list[tuple[int, int]]:
    """Maximal runs of True as half-open ``(start, end)`` position intervals."""
    spans, start = [], None
    for i, on in enumerate([*mask, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def iou_f1(
    scores: Tensor,
    rationale: Tensor,
    valid_mask: Tensor,
    threshold: float = 0.5,
    k: int | None = None,
) -> Tensor:
    """ERASER IOU-F1: span-level F1 where a span matches when its IOU reaches ``threshold``.

    The scores are discretised into the top-``k`` valid tokens (see the module docstring); spans
    are maximal runs of consecutive selected (or human-marked) positions, so a special token or
    an unselected token ends a span. A predicted span is matched when its IOU with some human
    span is ``>= threshold``, and a human span is recalled when some predicted span matches it
    that well. Precision = matched predicted spans / predicted spans, recall = recalled human
    spans / human spans (counting each side separately keeps recall at most 1).

    Args:
        scores: ``(batch, seq)`` attributions.
        rationale: ``(batch, seq)`` 0/1 human rationale.
        valid_mask: ``(batch, seq)`` True on real, non-special tokens.
        threshold: the IOU at which two spans match (ERASER: 0.5).
        k: tokens selected per example; ``None`` = the example's rationale length.

    Returns:
        ``(batch,)`` float64 F1; NaN where undefined, 0 when nothing is predicted.
    """
    gold, valid = _prepare(scores, rationale, valid_mask)
    pred = _predicted(scores, gold, valid, k)
    undefined = _undefined(gold, valid).tolist()
    out = []
    for b, (pred_row, gold_row) in enumerate(zip(pred.tolist(), gold.tolist(), strict=True)):
        if undefined[b]:
            out.append(float("nan"))
            continue
        p_spans, g_spans = _spans(pred_row), _spans(gold_row)
        if not p_spans:
            out.append(0.0)
            continue
        ious = [[_iou(p, g) for g in g_spans] for p in p_spans]
        precision = sum(max(row) >= threshold for row in ious) / len(p_spans)
        recall = sum(max(col) >= threshold for col in zip(*ious, strict=True)) / len(g_spans)
        total = precision + recall
        out.append(0.0 if total == 0 else 2 * precision * recall / total)
    return torch.tensor(out, dtype=torch.float64, device=scores.device)


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision (area under the precision-recall curve, step-wise) of one example.

    ``sklearn.metrics.average_precision_score``: tied scores form one threshold,
    ``AP = sum_t (R_t - R_{t-1}) * P_t`` over the distinct score thresholds ``t``, descending.

    Args:
        scores: ``(n,)`` scores.
        labels: ``(n,)`` 0/1 or bool relevance.

    Returns:
        AP in ``[0, 1]``; NaN without a positive label.
    """
    labels = labels.detach().to(device="cpu", dtype=torch.bool).reshape(-1)
    if not bool(labels.any()):
        return float("nan")
    scores = scores.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    try:  # scikit-learn comes with the `compare` extra (the plausibility metrics' usual home)
        from sklearn.metrics import average_precision_score
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "average precision needs scikit-learn: pip install 'captum-layer-saliency[compare]'"
        ) from exc
    return float(average_precision_score(labels.numpy(), scores.numpy()))


def auprc(scores: Tensor, rationale: Tensor, valid_mask: Tensor) -> Tensor:
    """Area under the precision-recall curve of the scores against the rationale, per example.

    Computed as average precision over the valid tokens (ties share a threshold; see
    :func:`average_precision`). It needs no discretisation.

    Args:
        scores: ``(batch, seq)`` attributions.
        rationale: ``(batch, seq)`` 0/1 human rationale.
        valid_mask: ``(batch, seq)`` True on real, non-special tokens.

    Returns:
        ``(batch,)`` float64 AUPRC; NaN where undefined.
    """
    gold, valid = _prepare(scores, rationale, valid_mask)
    values = [
        average_precision(scores[b][valid[b]], gold[b][valid[b]]) for b in range(scores.shape[0])
    ]
    return torch.tensor(values, dtype=torch.float64, device=scores.device)
