"""Plausibility metrics against hand-computed values, edge cases included."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from captum_layer_saliency.metrics import (
    METRICS,
    auprc,
    average_precision,
    iou_f1,
    metrics_of_kind,
    token_f1_at_k,
    valid_token_mask,
)


def rows(*items: tuple[list[float], list[int], list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack ``(scores, rationale, valid)`` rows of equal length."""
    scores = torch.tensor([s for s, _, _ in items])
    rationale = torch.tensor([r for _, r, _ in items])
    valid = torch.tensor([v for _, _, v in items]).bool()
    return scores, rationale, valid


# Position 0 and 6 are special; the rationale is tokens 1-2.
VALID = [0, 1, 1, 1, 1, 1, 0]
GOLD = [0, 1, 1, 0, 0, 0, 0]


def test_token_f1_at_k_by_hand() -> None:
    scores, rationale, valid = rows(
        ([9.0, 5.0, -1.0, 4.0, 0.0, 0.0, 9.0], GOLD, VALID),  # top-2: 1, 3 -> tp 1
        ([0.0, 5.0, 4.0, 1.0, 0.0, 0.0, 0.0], GOLD, VALID),  # top-2: 1, 2 -> perfect
    )
    f1 = token_f1_at_k(scores, rationale, valid)
    assert f1.tolist() == pytest.approx([0.5, 1.0])
    # k = 3: precision 1/3, recall 1/2 -> F1 = 2 * 1 / (3 + 2) = 0.4; second: 2*2/5 = 0.8.
    assert token_f1_at_k(scores, rationale, valid, k=3).tolist() == pytest.approx([0.4, 0.8])
    # k larger than the example selects all 5 valid tokens: F1 = 2 * 2 / (5 + 2).
    assert token_f1_at_k(scores, rationale, valid, k=50)[1].item() == pytest.approx(4 / 7)
    assert token_f1_at_k(scores, rationale, valid, k=0).tolist() == [0.0, 0.0]


def test_token_f1_ties_go_to_the_earlier_token() -> None:
    scores, rationale, valid = rows(([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0], GOLD, VALID))
    assert token_f1_at_k(scores, rationale, valid).item() == pytest.approx(1.0)
    late = [0, 0, 0, 0, 1, 1, 0]
    scores, rationale, valid = rows(([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0], late, VALID))
    assert token_f1_at_k(scores, rationale, valid).item() == pytest.approx(0.0)


def test_edge_cases_are_nan_and_specials_are_ignored() -> None:
    scores, rationale, valid = rows(
        ([1.0, 0.0, 0.0], [0, 0, 0], [0, 1, 1]),  # no rationale
        ([1.0, 0.0, 0.0], [1, 0, 0], [0, 0, 0]),  # all special: nothing valid
        ([5.0, 1.0, 0.0], [1, 1, 0], [0, 1, 1]),  # a rationale mark on a special is dropped
    )
    for fn in (token_f1_at_k, iou_f1, auprc):
        out = fn(scores, rationale, valid)
        assert math.isnan(out[0].item()) and math.isnan(out[1].item()), fn.__name__
        assert out[2].item() == pytest.approx(1.0), fn.__name__


def test_single_token() -> None:
    scores, rationale, valid = rows(([0.0, 0.3, 0.0], [0, 1, 0], [0, 1, 0]))
    for fn in (token_f1_at_k, iou_f1, auprc):
        assert fn(scores, rationale, valid).item() == pytest.approx(1.0), fn.__name__


def test_iou_f1_by_hand() -> None:
    gold = [0, 1, 1, 1, 0, 0, 1, 0]  # spans [1, 4) and [6, 7)
    valid = [0, 1, 1, 1, 1, 1, 1, 0]
    # Top-4 = positions 2, 3, 4, 6 -> spans [2, 5) (IOU with [1, 4): 2/4 = 0.5) and [6, 7).
    scores = [0.0, 0.0, 0.9, 0.8, 0.7, 0.1, 0.6, 0.0]
    s, r, v = rows((scores, gold, valid))
    assert iou_f1(s, r, v).item() == pytest.approx(1.0)  # 0.5 reaches the threshold
    assert iou_f1(s, r, v, threshold=0.6).item() == pytest.approx(0.5)  # P = R = 1/2
    # k = 1: only position 2, span [2, 3): IOU 1/3 with [1, 4) -> no match.
    assert iou_f1(s, r, v, k=1).item() == pytest.approx(0.0)
    # k = 2: span [2, 4): IOU 2/3 -> P = 1, R = 1/2, F1 = 2/3.
    assert iou_f1(s, r, v, k=2).item() == pytest.approx(2 / 3)


def test_iou_spans_are_broken_by_special_tokens() -> None:
    # Gold covers positions 1 and 3 around a [SEP] at 2: two one-token spans.
    s, r, v = rows(([0.0, 1.0, 9.0, 1.0, 0.0], [0, 1, 0, 1, 0], [0, 1, 0, 1, 1]))
    assert iou_f1(s, r, v).item() == pytest.approx(1.0)


def test_average_precision_by_hand() -> None:
    # Ranked labels 1, 0, 1, 0: AP = 1/2 * 1 + 1/2 * 2/3.
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([1, 0, 1, 0])) == (
        pytest.approx(0.5 + 1 / 3)
    )
    # Ties form one threshold: {0.5: one positive of two}, then 0.1: AP = 1/2 * 1/2 + 1/2 * 2/3.
    assert average_precision(torch.tensor([0.5, 0.5, 0.1]), torch.tensor([1, 0, 1])) == (
        pytest.approx(0.25 + 1 / 3)
    )
    assert math.isnan(average_precision(torch.tensor([0.5, 0.1]), torch.tensor([0, 0])))


def test_auprc_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (6, 10), generator=gen).float()
    rationale = torch.randint(0, 2, (6, 10), generator=gen)
    rationale[:, 1] = 1
    valid = torch.ones(6, 10, dtype=torch.bool)
    valid[:, 0] = False
    ours = auprc(scores, rationale, valid)
    for b in range(6):
        expected = metrics.average_precision_score(rationale[b, 1:], scores[b, 1:])
        assert ours[b].item() == pytest.approx(expected)


def test_valid_token_mask() -> None:
    mask = torch.tensor([[1, 1, 1, 0]])
    special = torch.tensor([[True, False, True, True]])
    assert valid_token_mask(mask, special).tolist() == [[False, True, False, False]]


def test_shape_errors_and_bad_k() -> None:
    with pytest.raises(ValueError, match="batch, seq"):
        auprc(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        token_f1_at_k(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 3), k=-1)


def test_plausibility_metadata() -> None:
    names = {"token_f1", "iou_f1", "auprc", "word_sentiment_r"}
    assert {m.name for m in metrics_of_kind("plausibility")} == names
    assert all(METRICS[name].higher_is_better for name in names)
    with pytest.raises(ValueError):
        metrics_of_kind("speed")
