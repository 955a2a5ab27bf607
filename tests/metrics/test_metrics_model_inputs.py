"""The metrics take the model's other inputs by keyword, and those follow their tokens.

The model is the bag of tokens of the faithfulness tests with one more input, ``scale``
``(batch, seq)``: the class-1 logit is ``sum(weight[token] * scale[token])`` over the real tokens.
No ids-derived input can stand in for ``scale``, so every value below is wrong unless the input
reaches each perturbed copy aligned with its tokens. The reference gives each (token, scale) pair
its own id in a scale-free bag, so the same metric on it is the hand-checkable truth.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from test_metrics_faithfulness import CLS, PAD, SEP, WEIGHTS, bag_forward, batch, sig
from torch import Tensor, nn

from captum_layer_saliency.metrics import (
    METRICS,
    aopc_curves,
    comprehensiveness,
    leave_one_out,
    metrics_of_kind,
)
from captum_layer_saliency.metrics.deletion import full_log_probs, perturb_with_inputs
from captum_layer_saliency.models.inputs import ClassifierForward


class ScaledBag(nn.Module):
    """Logits ``[0, sum(weight * scale)]``; ``scale`` is a forward keyword with no default."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor, scale: Tensor) -> Tensor:
        logit = (WEIGHTS[input_ids] * scale * attention_mask).sum(-1)
        return torch.stack([torch.zeros_like(logit), logit], dim=-1)


FORWARD = ClassifierForward(ScaledBag())

ROW_1 = ([CLS, 3, 4, 5, 6, SEP], [0.0, 0.1, 0.9, 0.5, 0.2, 0.0])
SCALE_1 = [0.0, 2.0, 1.0, -1.0, 4.0, 0.0]  # contributions 2, 2, 1, 2: total 7
ROW_2 = ([CLS, 8, 3, SEP], [0.0, 0.3, 0.4, 0.0])
SCALE_2 = [0.0, -1.0, 0.5, 0.0]  # contributions -3, 0.5: total -2.5


def scaled_batch() -> tuple[dict[str, Tensor], Tensor]:
    data = batch(ROW_1, ROW_2)
    width = data["input_ids"].shape[1]
    scale = torch.tensor([SCALE_1 + [0.0] * (width - 6), SCALE_2 + [0.0] * (width - 4)])
    return data, scale


def reference(data: dict[str, Tensor], scale: Tensor) -> tuple[dict[str, Tensor], Any]:
    """The same batch with one id per (token, scale) and a bag whose weights hold the scale."""
    ids = data["input_ids"]
    flat = torch.arange(ids.numel()).reshape(ids.shape) + 10
    new_ids = torch.where(data["special_mask"], ids, flat)
    weights = torch.zeros(10 + ids.numel())
    weights[:10] = WEIGHTS
    weights[flat.reshape(-1)] = (WEIGHTS[ids] * scale).reshape(-1)

    def forward(i: Tensor, m: Tensor) -> Tensor:
        return bag_forward(i, m, weights)

    return {**data, "input_ids": new_ids}, forward


def run(name: str, data: dict[str, Tensor], forward: Any, **kw: Any) -> Tensor:
    fn = METRICS[name].fn
    assert fn is not None
    args = [data["input_ids"], data["attention_mask"], data["scores"], data["target"]]
    if name == "leave_one_out":
        args.pop(2)
    out: Tensor = fn(forward, *args, data["special_mask"], **kw)
    return out


def test_comprehensiveness_reads_the_keyword_input_by_hand() -> None:
    data, scale = scaled_batch()
    comp = comprehensiveness(FORWARD, **_named(data), bins=(0.5,), scale=scale)
    # Row 1: ranks 4 > 5 > 6 > 3, k = 2: 4 (2) and 5 (1) deleted, 3 and 6 (2 + 2) stay.
    assert comp[0].item() == pytest.approx(sig(7.0) - sig(4.0))
    # Row 2: ranks 3 > 8, k = 1: 3 (0.5) deleted, 8 (-3) stays.
    assert comp[1].item() == pytest.approx(sig(-2.5) - sig(-3.0))
    # Without the keyword the model cannot run: it is a required input.
    with pytest.raises(TypeError):
        comprehensiveness(FORWARD, **_named(data), bins=(0.5,))


@pytest.mark.parametrize("name", [m.name for m in metrics_of_kind("faithfulness")])
def test_every_faithfulness_metric_equals_the_reference_batched_and_alone(name: str) -> None:
    data, scale = scaled_batch()
    ref_data, ref_forward = reference(data, scale)
    want = run(name, ref_data, ref_forward)
    got = run(name, data, FORWARD, scale=scale)
    torch.testing.assert_close(got, want, equal_nan=True)
    for b in range(2):
        n = int(data["attention_mask"][b].sum())
        one = {k: v[b : b + 1, :n] if v.dim() == 2 else v[b : b + 1] for k, v in data.items()}
        alone = run(name, one, FORWARD, scale=scale[b : b + 1, :n], batch_size=1)
        torch.testing.assert_close(alone[0], got[b], equal_nan=True)


def test_curves_leave_one_out_and_replacement_follow_the_tokens() -> None:
    data, scale = scaled_batch()
    ref_data, ref_forward = reference(data, scale)
    # Replacement keeps every slot and its inputs: by [PAD] (weight 0) both sides read 0.
    for kw in ({}, {"replacement": PAD}):
        curves = aopc_curves(FORWARD, **_named(data), scale=scale, **kw)
        want = aopc_curves(ref_forward, **_named(ref_data), **kw)
        for key in ("comprehensiveness", "sufficiency"):
            torch.testing.assert_close(curves[key], want[key], equal_nan=True)
    loo = leave_one_out(
        FORWARD, data["input_ids"], data["attention_mask"], data["target"], data["special_mask"],
        scale=scale,
    )  # fmt: skip
    p = sig(7.0)
    assert loo[0, 1:5].tolist() == pytest.approx([p - sig(5), p - sig(5), p - sig(6), p - sig(5)])


def test_repacking_moves_the_inputs_and_renumbers_positions() -> None:
    ids = torch.tensor([[CLS, 3, 4, 5, SEP, PAD]])
    mask = (ids != PAD).long()
    keep = torch.tensor([[1, 0, 1, 0, 1, 1]]).bool()
    inputs = {
        "scale": torch.tensor([[10.0, 11.0, 12.0, 13.0, 14.0, 15.0]]),
        "position_ids": torch.tensor([[3, 4, 5, 6, 7, 0]]),
        "features": torch.arange(12.0).reshape(1, 6, 2),
    }
    new_ids, new_mask, moved = perturb_with_inputs(ids, mask, keep, "delete", PAD, inputs)
    assert new_ids.tolist() == [[CLS, 4, SEP]]
    assert moved["scale"].tolist() == [[10.0, 12.0, 14.0]]
    # A shorter input's positions: consecutive from the first kept token's position.
    assert moved["position_ids"].tolist() == [[3, 4, 5]]
    assert moved["features"].tolist() == [[[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]]]
    # Padding of a re-packed batch gets 0.
    two = torch.cat([ids, torch.tensor([[CLS, 6, SEP, PAD, PAD, PAD]])])
    two_inputs = {"scale": torch.cat([inputs["scale"], inputs["scale"]])}
    keep2 = torch.ones(2, 6, dtype=torch.bool)
    _, m2, moved2 = perturb_with_inputs(two, (two != PAD).long(), keep2, "delete", PAD, two_inputs)
    assert m2[1].tolist() == [1, 1, 1, 0, 0] and moved2["scale"][1, 3:].tolist() == [0.0, 0.0]


def test_model_inputs_are_checked() -> None:
    data, scale = scaled_batch()
    with pytest.raises(ValueError, match="takes no input named 'scal'"):
        comprehensiveness(FORWARD, **_named(data), scal=scale)
    with pytest.raises(ValueError, match="must start with the ids' shape"):
        comprehensiveness(FORWARD, **_named(data), scale=scale[:, :3])
    with pytest.raises(TypeError, match="must be a tensor"):
        comprehensiveness(FORWARD, **_named(data), scale=[1.0])


def test_full_log_probs_take_them_too() -> None:
    data, scale = scaled_batch()
    log_p = full_log_probs(
        FORWARD, data["input_ids"], data["attention_mask"], data["target"], scale=scale
    )
    assert log_p.tolist() == pytest.approx([math.log(sig(7.0)), math.log(sig(-2.5))])


def _named(data: dict[str, Tensor]) -> dict[str, Tensor]:
    keys = ("input_ids", "attention_mask", "scores", "target", "special_mask")
    return {k: data[k] for k in keys}
