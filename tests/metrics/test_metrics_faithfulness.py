"""Faithfulness metrics against hand-computed values on hand-built forwards.

The main forward is a bag of tokens: the class-1 logit is the sum of a weight per real token and
the class-0 logit is 0, so ``p(1 | x) = sigmoid(sum of the weights)`` and every expected value
below is a few sigmoids of small sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
import torch
from torch import Tensor

from captum_layer_saliency.metrics import (
    ERASER_BINS,
    METRICS,
    aopc_curves,
    comprehensiveness,
    deletion_auc,
    insertion_auc,
    kendall_tau_b,
    kendall_tau_loo,
    leave_one_out,
    log_odds,
    metrics_of_kind,
    sufficiency,
    tokens_for_fraction,
)
from captum_layer_saliency.metrics.deletion import perturb, token_ranks

PAD, CLS, SEP, REPL = 0, 1, 2, 7
#: Token weights: ids 3..6 and 8 carry content; 7 is a replacement token worth 0.25.
WEIGHTS = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, -1.0, 0.5, 0.25, 3.0, 0.0])


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def bag_forward(input_ids: Tensor, attention_mask: Tensor, weights: Tensor = WEIGHTS) -> Tensor:
    """Two-class logits ``[0, sum of the real tokens' weights]``."""
    logit = (weights[input_ids] * attention_mask).sum(-1)
    return torch.stack([torch.zeros_like(logit), logit], dim=-1)


def first_token_forward(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits ``[0, weight of the token right after [CLS]]``: sensitive to re-packing."""
    logit = WEIGHTS[input_ids[:, 1]] * attention_mask[:, 1]
    return torch.stack([torch.zeros_like(logit), logit], dim=-1)


def batch(*rows: tuple[list[int], list[float]]) -> dict[str, Tensor]:
    """Right-pad ``(ids, scores)`` rows into a batch, with target 1 and the special mask."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r, _ in rows])
    scores = torch.tensor([s + [0.0] * (width - len(s)) for _, s in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "scores": scores,
        "target": torch.ones(len(rows), dtype=torch.long),
        "special_mask": torch.isin(ids, torch.tensor([PAD, CLS, SEP])),
    }


# A: 4 tokens ranked 4 > 5 > 6 > 3 (weights 2, -1, 0.5, 1; total 2.5)
ROW_A = ([CLS, 3, 4, 5, 6, SEP], [0.0, 0.1, 0.9, 0.5, 0.2, 0.0])
# B: one token (weight 3)
ROW_B = ([CLS, 8, SEP], [0.0, 5.0, 0.0])
# C: special tokens only
ROW_C = ([CLS, SEP], [0.0, 0.0])
# D: two tokens with tied scores: the earlier one (3, weight 1) ranks first
ROW_D = ([CLS, 3, 4, SEP], [0.0, 0.7, 0.7, 0.0])


def call(
    fn: Callable[..., Any],
    data: dict[str, Tensor],
    forward: Callable[[Tensor, Tensor], Tensor] = bag_forward,
    **kwargs: Any,
) -> Any:
    """Call a faithfulness metric on a batch built by :func:`batch`."""
    return fn(
        forward,
        data["input_ids"],
        data["attention_mask"],
        data["scores"],
        data["target"],
        data["special_mask"],
        **kwargs,
    )


@pytest.fixture
def abcd() -> dict[str, Tensor]:
    return batch(ROW_A, ROW_B, ROW_C, ROW_D)


def test_bins_are_ceil_of_the_fraction_with_at_least_one_token() -> None:
    n = torch.tensor([0, 1, 4, 10, 30, 200])
    assert tokens_for_fraction(0.01, n).tolist() == [0, 1, 1, 1, 1, 2]
    assert tokens_for_fraction(0.5, n).tolist() == [0, 1, 2, 5, 15, 100]
    # 0.1 * 30 is 3.0000000000000004 in floating point: still 3 tokens.
    assert tokens_for_fraction(0.1, n).tolist() == [0, 1, 1, 1, 3, 20]
    with pytest.raises(ValueError):
        tokens_for_fraction(0.0, n)


def test_ranks_break_ties_by_position_and_put_invalid_last() -> None:
    scores = torch.tensor([[9.0, 1.0, 2.0, 2.0, 1.0]])
    valid = torch.tensor([[False, True, True, True, True]])
    assert token_ranks(scores, valid).tolist() == [[5, 2, 0, 1, 3]]
    with pytest.raises(ValueError, match="finite"):
        token_ranks(torch.tensor([[0.0, float("nan")]]), torch.tensor([[True, True]]))


def test_perturb_deletes_and_repacks_or_replaces() -> None:
    ids = torch.tensor([[CLS, 3, 4, 5, SEP, PAD], [CLS, 6, SEP, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    keep = torch.tensor([[1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]]).bool()
    new_ids, new_mask = perturb(ids, mask, keep)
    assert new_ids.tolist() == [[CLS, 4, SEP], [CLS, 6, SEP]]
    assert new_mask.tolist() == [[1, 1, 1], [1, 1, 1]]
    rep_ids, rep_mask = perturb(ids, mask, keep, replacement=REPL)
    assert rep_ids.tolist() == [[CLS, REPL, 4, REPL, SEP, PAD], [CLS, 6, SEP, PAD, PAD, PAD]]
    assert torch.equal(rep_mask, mask)
    with pytest.raises(ValueError):
        perturb(ids, mask, keep, replacement="mask")


def test_comprehensiveness_and_sufficiency_by_hand(abcd: dict[str, Tensor]) -> None:
    comp, suff = call(comprehensiveness, abcd), call(sufficiency, abcd)
    # A: k = 1,1,1,1,2 over the five bins; the top token is 4, then 5.
    p = sig(2.5)
    assert comp[0].item() == pytest.approx((4 * (p - sig(0.5)) + (p - sig(1.5))) / 5)
    assert suff[0].item() == pytest.approx((4 * (p - sig(2.0)) + (p - sig(1.0))) / 5)
    # B: one token, removed (kept) in every bin.
    assert comp[1].item() == pytest.approx(sig(3.0) - 0.5)
    assert suff[1].item() == pytest.approx(0.0)
    # C: nothing to explain.
    assert math.isnan(comp[2].item()) and math.isnan(suff[2].item())
    # D: the tie goes to the earlier token (3, weight 1); k = 1 in every bin.
    assert comp[3].item() == pytest.approx(sig(3.0) - sig(2.0))
    assert suff[3].item() == pytest.approx(sig(3.0) - sig(1.0))


def test_target_zero_flips_the_sign(abcd: dict[str, Tensor]) -> None:
    flipped = {**abcd, "target": torch.zeros(4, dtype=torch.long)}
    torch.testing.assert_close(
        call(comprehensiveness, flipped), -call(comprehensiveness, abcd), equal_nan=True
    )


def test_aopc_curves_match_and_batch_size_does_not_matter(abcd: dict[str, Tensor]) -> None:
    curves = call(aopc_curves, abcd)
    assert curves["comprehensiveness"].shape == (4, len(ERASER_BINS))
    assert curves["k"][0].tolist() == [1, 1, 1, 1, 2]
    torch.testing.assert_close(
        curves["comprehensiveness"].mean(-1), call(comprehensiveness, abcd), equal_nan=True
    )
    torch.testing.assert_close(
        curves["sufficiency"].mean(-1), call(sufficiency, abcd, batch_size=1), equal_nan=True
    )


def test_padding_and_batch_neighbours_do_not_matter(abcd: dict[str, Tensor]) -> None:
    alone = call(comprehensiveness, batch(ROW_D))
    assert alone.item() == pytest.approx(call(comprehensiveness, abcd)[3].item())


def test_tokens_are_deleted_not_masked() -> None:
    """Deleting the first token moves the next one into its place; replacing it does not."""
    data = batch(([CLS, 3, 4, SEP], [0.0, 1.0, 0.0, 0.0]))
    comp = call(comprehensiveness, data, forward=first_token_forward, bins=(0.5,))
    assert comp.item() == pytest.approx(sig(1.0) - sig(2.0))
    replaced = call(
        comprehensiveness, data, forward=first_token_forward, bins=(0.5,), replacement=REPL
    )
    assert replaced.item() == pytest.approx(sig(1.0) - sig(0.25))


def test_special_tokens_are_kept() -> None:
    weights = WEIGHTS.clone()
    weights[CLS] = 0.3

    def forward(ids: Tensor, mask: Tensor) -> Tensor:
        return bag_forward(ids, mask, weights)

    data = batch(ROW_D)
    # Sufficiency's 0-content end and insertion's start: only [CLS] and [SEP] remain.
    assert call(insertion_auc, data, forward=forward, steps=1).item() == pytest.approx(
        (sig(0.3) + sig(3.3)) / 2
    )


def test_deletion_and_insertion_auc_by_hand(abcd: dict[str, Tensor]) -> None:
    dele, ins = call(deletion_auc, abcd), call(insertion_auc, abcd)
    # A: remove 4, 5, 6, 3 in turn: sums 2.5, 0.5, 1.5, 1.0, 0.0 at x = 0, .25, .5, .75, 1.
    ys = [sig(z) for z in (2.5, 0.5, 1.5, 1.0, 0.0)]
    assert dele[0].item() == pytest.approx(sum(0.125 * (a + b) for a, b in pairwise(ys)))
    # A inserted: 0, 2, 1, 1.5, 2.5.
    ys = [sig(z) for z in (0.0, 2.0, 1.0, 1.5, 2.5)]
    assert ins[0].item() == pytest.approx(sum(0.125 * (a + b) for a, b in pairwise(ys)))
    # B: a single token: two points.
    assert dele[1].item() == pytest.approx((sig(3.0) + 0.5) / 2)
    assert ins[1].item() == pytest.approx((0.5 + sig(3.0)) / 2)
    assert math.isnan(dele[2].item()) and math.isnan(ins[2].item())
    # D: tie -> 3 goes first: sums 3, 2, 0.
    assert dele[3].item() == pytest.approx(0.25 * (sig(3) + sig(2)) + 0.25 * (sig(2) + 0.5))
    assert ins[3].item() == pytest.approx(0.25 * (0.5 + sig(1)) + 0.25 * (sig(1) + sig(3)))


def test_auc_steps_and_replacement(abcd: dict[str, Tensor]) -> None:
    # One step: only the two end points.
    dele = call(deletion_auc, abcd, steps=1)
    assert dele[0].item() == pytest.approx((sig(2.5) + 0.5) / 2)
    # Two steps on A: k = 0, 2, 4.
    dele = call(deletion_auc, abcd, steps=2)
    assert dele[0].item() == pytest.approx(0.25 * (sig(2.5) + sig(1.5)) + 0.25 * (sig(1.5) + 0.5))
    # Replacement by token 7 (weight 0.25) on D: sums 3, 2 + 0.25, 0.5.
    dele = call(deletion_auc, abcd, replacement=REPL)
    expected = 0.25 * (sig(3) + sig(2.25)) + 0.25 * (sig(2.25) + sig(0.5))
    assert dele[3].item() == pytest.approx(expected)


def test_log_odds_by_hand(abcd: dict[str, Tensor]) -> None:
    lo = call(log_odds, abcd)
    # A: ceil(0.2 * 4) = 1 token: 4 removed.
    assert lo[0].item() == pytest.approx(math.log(sig(0.5)) - math.log(sig(2.5)))
    assert lo[1].item() == pytest.approx(math.log(0.5) - math.log(sig(3.0)))
    assert math.isnan(lo[2].item())
    half = call(log_odds, abcd, fraction=0.5, replacement=REPL)
    # 4 and 5 (weights 2 and -1) replaced by two 0.25s.
    assert half[0].item() == pytest.approx(math.log(sig(1.0 + 0.5 + 0.5)) - math.log(sig(2.5)))


def loo_of(data: dict[str, Tensor]) -> Tensor:
    return leave_one_out(
        bag_forward,
        data["input_ids"],
        data["attention_mask"],
        data["target"],
        data["special_mask"],
    )


def test_leave_one_out_by_hand(abcd: dict[str, Tensor]) -> None:
    loo = loo_of(abcd)
    p = sig(2.5)
    expected = [0.0, p - sig(1.5), p - sig(0.5), p - sig(3.5), p - sig(2.0), 0.0]
    torch.testing.assert_close(loo[0], torch.tensor(expected, dtype=torch.float64))
    assert (loo[2] == 0).all()


def test_kendall_tau_loo_by_hand(abcd: dict[str, Tensor]) -> None:
    tau = call(kendall_tau_loo, abcd)
    # A: scores rank 4 > 5 > 6 > 3, leave-one-out (the weights) 4 > 3 > 6 > 5: C = D = 3.
    assert tau[0].item() == pytest.approx(0.0)
    assert math.isnan(tau[1].item())  # one token
    assert math.isnan(tau[2].item())  # all special
    assert math.isnan(tau[3].item())  # constant scores
    perfect = batch(([CLS, 3, 4, 5, 6, SEP], [0.0, 1.0, 2.0, -1.0, 0.5, 0.0]))
    assert call(kendall_tau_loo, perfect).item() == pytest.approx(1.0)
    reverse = {**perfect, "scores": -perfect["scores"]}
    assert call(kendall_tau_loo, reverse).item() == pytest.approx(-1.0)
    # Ties in the scores: pairs (3,4) and (5,6) tied: tau_b = 4 / sqrt(4 * 6).
    tied = batch(([CLS, 3, 4, 5, 6, SEP], [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    assert call(kendall_tau_loo, tied).item() == pytest.approx(4 / math.sqrt(24))


def test_kendall_tau_b_by_hand() -> None:
    # (1,2) and (1,3) concordant, (2,3) discordant: (2 - 1) / 3.
    assert kendall_tau_b(torch.tensor([1.0, 2, 3]), torch.tensor([1.0, 3, 2])) == pytest.approx(
        1 / 3
    )
    # x ties the first pair: C - D = 2 over sqrt((3 - 1) * 3).
    assert kendall_tau_b(torch.tensor([1.0, 1, 2]), torch.tensor([1.0, 2, 3])) == pytest.approx(
        2 / math.sqrt(6)
    )
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randint(0, 4, (12,), generator=gen).double()
        y = torch.randint(0, 5, (12,), generator=gen).double()
        assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert math.isnan(kendall_tau_b(torch.ones(3), torch.arange(3)))
    assert math.isnan(kendall_tau_b(torch.ones(1), torch.ones(1)))


def test_shape_errors(abcd: dict[str, Tensor]) -> None:
    with pytest.raises(ValueError, match="batch, seq"):
        comprehensiveness(
            bag_forward,
            abcd["input_ids"],
            abcd["attention_mask"],
            abcd["scores"][:, :2],
            abcd["target"],
            abcd["special_mask"],
        )
    with pytest.raises(ValueError, match="target"):
        comprehensiveness(
            bag_forward,
            abcd["input_ids"],
            abcd["attention_mask"],
            abcd["scores"],
            torch.ones(3).long(),
            abcd["special_mask"],
        )


def test_metric_metadata() -> None:
    assert {m.name for m in metrics_of_kind("faithfulness")} == {
        "comprehensiveness",
        "sufficiency",
        "loo_bounded_comprehensiveness",
        "loo_bounded_sufficiency",
        "deletion_auc",
        "insertion_auc",
        "log_odds",
        "kendall_tau_loo",
    }
    directions = {name: m.higher_is_better for name, m in METRICS.items()}
    assert directions["comprehensiveness"] and directions["insertion_auc"]
    assert not directions["sufficiency"] and not directions["deletion_auc"]
    assert not directions["log_odds"] and directions["kendall_tau_loo"]
    assert all(callable(m.fn) and m.description for m in METRICS.values())


def test_kendall_tau_loo_reuses_a_given_leave_one_out(abcd: dict[str, Tensor]) -> None:
    loo = loo_of(abcd)
    fresh = call(kendall_tau_loo, abcd)
    reused = call(kendall_tau_loo, abcd, loo=loo)
    torch.testing.assert_close(reused, fresh, equal_nan=True)
    # A given leave-one-out is used as is, not recomputed: reversing it reverses tau.
    perfect = batch(([CLS, 3, 4, 5, 6, SEP], [0.0, 1.0, 2.0, -1.0, 0.5, 0.0]))
    perfect_loo = loo_of(perfect)
    assert call(kendall_tau_loo, perfect, loo=perfect_loo).item() == pytest.approx(1.0)
    assert call(kendall_tau_loo, perfect, loo=-perfect_loo).item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="loo has shape"):
        call(kendall_tau_loo, abcd, loo=loo[:, :2])
