"""Edin et al.'s protocol: a hand-computed 3-word curve, exact bounds against brute force over
every ordering, beam bounds inside the exact ones, batching, and bad inputs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from captum_layer_saliency.metrics.edin import (
    edin_bounds,
    edin_comprehensiveness,
    edin_curves,
    edin_sufficiency,
    naopc_comprehensiveness,
    naopc_sufficiency,
)
from captum_layer_saliency.models.classifier import TextClassifier

MASK = 2
TINY_MASK = 4  # [MASK] in the tiny vocabulary
#: The toy's logit of class 1 adds one weight per token: [CLS] 0, [MASK] 0, words 3, 4, 5.
WEIGHTS = torch.tensor([0.0, 0.0, 0.0, 2.0, -1.0, 0.5])


def toy_forward(ids: torch.Tensor, mask: torch.Tensor, *extra: object) -> torch.Tensor:
    """``logits = (0, sum of weights)``: p(class 1) = sigmoid(sum of the tokens' weights)."""
    total = (WEIGHTS[ids] * mask).sum(-1)
    return torch.stack([torch.zeros_like(total), total], dim=-1)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


IDS = torch.tensor([[1, 3, 4, 5]])
ONES = torch.ones_like(IDS)
SPECIAL = torch.tensor([[True, False, False, False]])


def test_hand_computed_curve_on_three_words() -> None:
    scores = torch.tensor([[0.0, 0.3, 0.1, 0.2]])  # order: 3 (w 2), 5 (w .5), 4 (w -1)
    curves = edin_curves(toy_forward, IDS, ONES, scores, 1, SPECIAL, mask_token_id=MASK)
    full = sig(1.5)
    comp = [full - sig(-0.5), full - sig(-1.0), full - sig(0.0)]
    suff = [full - sig(2.0), full - sig(2.5), full - sig(1.5)]
    assert curves["comprehensiveness"][0].tolist() == pytest.approx(comp)
    assert curves["sufficiency"][0].tolist() == pytest.approx(suff)
    args = (toy_forward, IDS, ONES, scores, 1, SPECIAL)
    assert edin_comprehensiveness(*args, mask_token_id=MASK).item() == pytest.approx(sum(comp) / 3)
    assert edin_sufficiency(*args, mask_token_id=MASK).item() == pytest.approx(sum(suff) / 3)


def test_sub_word_scores_are_summed_into_words() -> None:
    words = torch.tensor([[-1, 0, 0, 1]])  # tokens 3 and 4 form one word
    scores = torch.tensor([[0.0, 0.1, 0.1, 0.15]])  # word 0: 0.2 > word 1: 0.15
    curves = edin_curves(
        toy_forward, IDS, ONES, scores, 1, SPECIAL, word_ids=words, mask_token_id=MASK
    )
    full = sig(1.5)
    assert curves["n_words"].tolist() == [2]
    assert curves["comprehensiveness"][0].tolist() == pytest.approx(
        [full - sig(0.5), full - sig(0.0)]
    )


def _aopc_of_every_order(clf: TextClassifier, enc: dict, target: torch.Tensor, n: int):
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = clf.special_mask(ids)
    valid = (mask.bool() & ~special)[0]
    comp, suff = [], []
    for order in itertools.permutations(range(n)):
        scores = torch.zeros(ids.shape)
        positions = valid.nonzero().flatten()
        for rank, word in enumerate(order):
            scores[0, positions[word]] = float(n - rank)
        curves = edin_curves(
            clf.forward_func, ids, mask, scores, target, special, mask_token_id=TINY_MASK
        )
        comp.append(curves["comprehensiveness"].nanmean().item())
        suff.append(curves["sufficiency"].nanmean().item())
    return comp, suff


@pytest.mark.parametrize("text", ["boring .", "the movie was good", "it is not fun !"])
def test_exact_bounds_equal_brute_force_over_all_orders(
    tiny_classifier: TextClassifier, text: str
) -> None:
    enc = tiny_classifier.encode([text])
    n = len(text.split())
    special = tiny_classifier.special_mask(enc["input_ids"])
    target = torch.tensor([1])
    comp, suff = _aopc_of_every_order(tiny_classifier, enc, target, n)
    bounds = edin_bounds(
        tiny_classifier.forward_func,
        enc["input_ids"],
        enc["attention_mask"],
        target,
        special,
        mask_token_id=TINY_MASK,
    )
    assert bool(bounds["exact"][0]) and int(bounds["n_words"][0]) == n
    assert bounds["comprehensiveness"][0].tolist() == pytest.approx([min(comp), max(comp)])
    assert bounds["sufficiency"][0].tolist() == pytest.approx([min(suff), max(suff)])


def test_beam_bounds_lie_inside_the_exact_ones(tiny_classifier: TextClassifier) -> None:
    enc = tiny_classifier.encode(["i think the acting was awful but fun"])
    args = (
        tiny_classifier.forward_func,
        enc["input_ids"],
        enc["attention_mask"],
        torch.tensor([0]),
        tiny_classifier.special_mask(enc["input_ids"]),
    )
    exact = edin_bounds(*args, mask_token_id=TINY_MASK)
    beam = edin_bounds(*args, mask_token_id=TINY_MASK, exact_max_words=3)
    assert bool(exact["exact"][0]) and not bool(beam["exact"][0])
    for key in ("comprehensiveness", "sufficiency"):
        lo, hi = exact[key][0].tolist()
        b_lo, b_hi = beam[key][0].tolist()
        assert lo - 1e-9 <= b_lo <= b_hi <= hi + 1e-9


def test_naopc_batched_equals_one_at_a_time(tiny_classifier: TextClassifier) -> None:
    texts = ["the movie was very good", "boring ."]
    enc = tiny_classifier.encode(texts)
    special = tiny_classifier.special_mask(enc["input_ids"])
    scores = torch.randn(enc["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 0])
    args = (tiny_classifier.forward_func, enc["input_ids"], enc["attention_mask"], scores)
    both = naopc_comprehensiveness(*args, target, special, mask_token_id=TINY_MASK)
    suff = naopc_sufficiency(*args, target, special, mask_token_id=TINY_MASK)
    assert ((both >= 0) & (both <= 1)).all() and ((suff >= 0) & (suff <= 1)).all()
    n = int(enc["attention_mask"][1].sum())
    one = naopc_comprehensiveness(
        tiny_classifier.forward_func,
        enc["input_ids"][1:, :n],
        enc["attention_mask"][1:, :n],
        scores[1:, :n],
        target[1:],
        special[1:, :n],
        mask_token_id=TINY_MASK,
    )
    assert one.item() == pytest.approx(both[1].item(), abs=1e-6)


def test_bad_inputs_are_refused() -> None:
    scores = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="word_ids"):
        edin_curves(toy_forward, IDS, ONES, scores, 1, SPECIAL, word_ids=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="exact_max_words"):
        edin_bounds(toy_forward, IDS, ONES, 1, SPECIAL, exact_max_words=25)
    with pytest.raises(ValueError, match="scores"):
        edin_curves(toy_forward, IDS, ONES, torch.zeros(1, 3), 1, SPECIAL)


def test_compare_runs_under_the_edin_protocol(
    tiny_classifier: TextClassifier, tmp_path: object
) -> None:
    import datasets

    from captum_layer_saliency.compare.checks import InvalidComparisonError
    from captum_layer_saliency.compare.results import load_rows
    from captum_layer_saliency.compare.runner import run_comparison

    data = datasets.Dataset.from_list(
        [{"text": t, "label": 0} for t in ("the movie was very good", "boring .")]
    )
    out = run_comparison(
        tiny_classifier,
        data,
        ["random", "loo"],
        tmp_path,
        batch_size=2,
        progress=False,
        protocol="edin",
    )
    rows = load_rows(out)
    assert len(rows) == 4
    for row in rows:
        assert set(row["metrics"]) == {
            "comprehensiveness",
            "sufficiency",
            "naopc_comprehensiveness",
            "naopc_sufficiency",
        }
        assert 0.0 <= row["metrics"]["naopc_comprehensiveness"] <= 1.0
    with pytest.raises(InvalidComparisonError, match="protocol must be one of"):
        run_comparison(tiny_classifier, data, ["random"], tmp_path, protocol="ferret")


def test_the_plan_counts_the_edin_bounds_once_per_text() -> None:
    from captum_layer_saliency.compare.plan import edin_bound_passes, plan_comparison

    assert edin_bound_passes(3) == 8  # every subset of 3 words
    assert edin_bound_passes(14) == 4 * 5 * 14 * 15 // 2  # four beam searches, beam 5
    plan = plan_comparison(
        ["random", "loo"],
        ["comprehensiveness", "naopc_comprehensiveness"],
        [3, 14],
        protocol="edin",
    )
    assert plan.shared == 2 + 8 + edin_bound_passes(14)  # predictions, then the bounds
    assert plan.metrics == {"comprehensiveness": 2 * 17.0, "naopc_comprehensiveness": 0.0}
