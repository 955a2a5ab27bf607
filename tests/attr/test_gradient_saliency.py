"""The gradient baselines at the embeddings: integrated gradients' steps run in chunks whose
size does not grow with ``batch x n_steps`` (a 30-block model ran out of memory at batch 8)."""

from __future__ import annotations

import pytest
import torch

from captum_layer_saliency.attr import gradient_saliency
from captum_layer_saliency.attr.gradient_saliency import (
    IntegratedGradientsAttributor,
    auto_internal_batch_size,
)
from captum_layer_saliency.models.classifier import TextClassifier


def test_auto_rows_keep_the_token_budget_and_never_split_a_batch() -> None:
    ids = torch.zeros(8, 128, dtype=torch.long)
    assert auto_internal_batch_size(ids) == 4096 // 128 == 32
    assert auto_internal_batch_size(ids, tokens=512) == 8  # at least the batch
    assert auto_internal_batch_size(torch.zeros(2, 10, dtype=torch.long), tokens=100) == 10


def test_ig_runs_its_steps_in_chunks_with_the_maps_of_one_call(
    tiny_classifier: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = tiny_classifier.encode(["the movie was good", "bad", "a fine film"])
    ids, mask, target = enc["input_ids"], enc["attention_mask"], torch.tensor([1, 0, 1])
    rows_seen: list[int] = []
    handle = tiny_classifier.model.register_forward_hook(
        lambda module, args, out: rows_seen.append(int(out.logits.shape[0]))
    )
    try:
        whole = IntegratedGradientsAttributor(tiny_classifier, internal_batch_size=None)
        at_once = whole.attribute(ids, mask, target)
        assert max(rows_seen) == 3 * 25  # Captum's default: every step in one call
        rows_seen.clear()
        monkeypatch.setattr(gradient_saliency, "IG_TOKENS_PER_CALL", 12 * ids.shape[1])
        chunked = IntegratedGradientsAttributor(tiny_classifier).attribute(ids, mask, target)
    finally:
        handle.remove()
    assert max(rows_seen) <= 12 and sum(rows_seen) >= 3 * 25
    torch.testing.assert_close(chunked, at_once, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, "all", 2.5])
def test_a_bad_internal_batch_size_is_named(tiny_classifier: TextClassifier, bad: object) -> None:
    with pytest.raises(ValueError, match="internal_batch_size must be 'auto', None or a positive"):
        IntegratedGradientsAttributor(tiny_classifier, internal_batch_size=bad)  # type: ignore[arg-type]
