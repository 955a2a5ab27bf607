"""Leave-one-out-bounded AOPC on the bag-of-tokens forward of the faithfulness tests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from test_metrics_faithfulness import CLS, SEP, bag_forward, batch, sig

from captum_layer_saliency.metrics import (
    METRICS,
    aopc_bounds,
    aopc_curves,
    leave_one_out,
    loo_bounded_comprehensiveness,
    loo_bounded_sufficiency,
    normalise_aopc,
)
from captum_layer_saliency.metrics.normalised import beyond_bounds

# Weights 2, -1, 0.5, 1 (ids 4, 5, 6, 3): the leave-one-out order is 4 > 3 > 6 > 5.
ROW = [CLS, 3, 4, 5, 6, SEP]


def _args(scores: list[float]) -> tuple[Any, ...]:
    b = batch((ROW, scores))
    return (bag_forward, b["input_ids"], b["attention_mask"], b["scores"], b["target"])


def _special(scores: list[float]) -> torch.Tensor:
    return batch((ROW, scores))["special_mask"]


def test_bounds_are_the_leave_one_out_orderings_by_hand() -> None:
    # 4 tokens, ERASER bins give k = 1, 1, 1, 1, 2. p(x) = sig(2.5).
    # Most important first: remove {4} x4 then {4, 3}: p = sig(0.5) x4, sig(-0.5).
    # Least important first (5 then 6): remove {5} x4, then {5, 6}: sig(3.5) x4, sig(3).
    scores = [0.0] * 6
    forward, ids, mask, _, target = _args(scores)
    bounds = aopc_bounds(forward, ids, mask, target, _special(scores))
    p = sig(2.5)
    best = p - (4 * sig(0.5) + sig(-0.5)) / 5
    worst = p - (4 * sig(3.5) + sig(3.0)) / 5
    assert bounds["comprehensiveness"][0].tolist() == pytest.approx([worst, best])
    # Sufficiency keeps the top-k: keeping {4} x4, {4, 3}: sig(2) x4, sig(3) (the lowest
    # sufficiency); keeping {5} x4, {5, 6}: sig(-1) x4, sig(-0.5).
    low = p - (4 * sig(2.0) + sig(3.0)) / 5
    high = p - (4 * sig(-1.0) + sig(-0.5)) / 5
    assert bounds["sufficiency"][0].tolist() == pytest.approx([low, high])


def test_leave_one_out_order_scores_one_and_its_reverse_zero() -> None:
    good = [0.0, 0.3, 0.9, 0.1, 0.2, 0.0]  # 4 > 3 > 6 > 5
    bad = [0.0, 0.3, 0.1, 0.9, 0.5, 0.0]  # 5 > 6 > 3 > 4
    for scores, comp, suff in ((good, 1.0, 0.0), (bad, 0.0, 1.0)):
        forward, ids, mask, s, target = _args(scores)
        args = (forward, ids, mask, s, target, _special(scores))
        assert loo_bounded_comprehensiveness(*args).item() == pytest.approx(comp)
        assert loo_bounded_sufficiency(*args).item() == pytest.approx(suff)


def test_a_middle_ordering_is_between_and_matches_the_formula() -> None:
    scores = [0.0, 0.9, 0.3, 0.1, 0.2, 0.0]  # 3 first: remove {3} x4, {3, 4}
    forward, ids, mask, s, target = _args(scores)
    args = (forward, ids, mask, s, target, _special(scores))
    raw = aopc_curves(*args)["comprehensiveness"].mean(-1)
    bounds = aopc_bounds(forward, ids, mask, target, _special(scores))["comprehensiveness"]
    expected = (raw - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0])
    value = loo_bounded_comprehensiveness(*args)
    assert 0.0 < value.item() < 1.0
    torch.testing.assert_close(value, expected.to(value))


def test_normalise_widens_the_bounds_and_refuses_bad_shapes() -> None:
    values = torch.tensor([0.5, 2.0, -1.0, 0.3, float("nan")])
    bounds = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.3, 0.3], [0.0, 1.0]])
    out = normalise_aopc(values, bounds)
    assert out[:3].tolist() == [0.5, 1.0, 0.0]
    assert math.isnan(out[3].item()) and math.isnan(out[4].item())  # no range; NaN in
    assert beyond_bounds(values[:3], bounds[:3]).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="bounds must be"):
        normalise_aopc(values, bounds[:, 0])


def test_precomputed_loo_gives_the_same_bounds() -> None:
    scores = [0.0] * 6
    forward, ids, mask, _, target = _args(scores)
    special = _special(scores)
    loo = leave_one_out(forward, ids, mask, target, special)
    a = aopc_bounds(forward, ids, mask, target, special)
    b = aopc_bounds(forward, ids, mask, target, special, loo=loo)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_registered_with_their_direction() -> None:
    assert METRICS["loo_bounded_comprehensiveness"].higher_is_better
    assert not METRICS["loo_bounded_sufficiency"].higher_is_better


def test_the_compare_harness_reports_them(tiny_classifier: Any, tmp_path: Path) -> None:
    from captum_layer_saliency.compare.results import load_rows
    from captum_layer_saliency.compare.runner import run_comparison

    data = [
        {"text": t, "label": 0} for t in ("the movie was very good", "boring .", "a great film")
    ]
    import datasets

    names = ["comprehensiveness", "loo_bounded_comprehensiveness", "loo_bounded_sufficiency"]
    run_comparison(
        tiny_classifier,
        datasets.Dataset.from_list(data),
        ["random", "input_x_gradient"],
        tmp_path,
        metrics=names,
        batch_size=2,
        progress=False,
    )
    rows = load_rows(tmp_path)
    assert len(rows) == 6
    for row in rows:
        value = row["metrics"]["loo_bounded_comprehensiveness"]
        assert value is None or 0.0 <= value <= 1.0


def test_the_old_names_still_work_with_a_deprecation_warning() -> None:
    from captum_layer_saliency.compare.checks import check_metrics
    from captum_layer_saliency.metrics import normalised_comprehensiveness

    scores = [0.0, 3.0, 1.0, 2.0, 0.5, 0.0]
    args = (*_args(scores), _special(scores))
    with pytest.warns(DeprecationWarning, match="loo_bounded_comprehensiveness"):
        old = normalised_comprehensiveness(*args)
    assert old.item() == pytest.approx(loo_bounded_comprehensiveness(*args).item())
    with pytest.warns(DeprecationWarning, match="now called 'loo_bounded_sufficiency'"):
        assert check_metrics(["normalised_sufficiency"], False) == ["loo_bounded_sufficiency"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("normalised_comprehensiveness", "loo_bounded_comprehensiveness"),
        ("normalised_sufficiency", "loo_bounded_sufficiency"),
    ],
)
def test_each_old_name_warns_at_its_caller_and_equals_the_new(old: str, new: str) -> None:
    from captum_layer_saliency import metrics

    scores = [0.0, 3.0, 1.0, 2.0, 0.5, 0.0]
    args = (*_args(scores), _special(scores))
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new} ") as record:
        value = getattr(metrics, old)(*args)
    assert record[0].filename == __file__
    assert getattr(metrics, old).__name__ == old
    assert value.item() == pytest.approx(getattr(metrics, new)(*args).item())
