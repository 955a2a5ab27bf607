"""Half-precision models: DLS keeps its decoding maths in float32, and the harness runs them.

On CPU, bfloat16 is the half type every kernel supports; float16 takes the same code paths (the
casts are dtype-generic), and on a GPU both run natively.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from compare_fakes import toy_dataset
from torch.nn.functional import cosine_similarity

from captum_layer_saliency.attr.decoded_layer_saliency import (
    DecodedLayerSaliency,
    position_saliency,
)
from captum_layer_saliency.attr.decoding import candidate_mask, decode_layer
from captum_layer_saliency.compare import load_rows, run_comparison
from captum_layer_saliency.models.classifier import TextClassifier


@pytest.fixture(scope="module")
def bf16_classifier(tiny_classifier: TextClassifier) -> TextClassifier:
    """A bfloat16 copy of the tiny classifier and its head (the fixture itself is untouched)."""
    assert tiny_classifier.lm_head is not None
    return TextClassifier(
        model=copy.deepcopy(tiny_classifier.model).to(torch.bfloat16),
        tokenizer=tiny_classifier.tokenizer,
        lm_head=copy.deepcopy(tiny_classifier.lm_head).to(torch.bfloat16),
        labels=list(tiny_classifier.labels),
        name="tiny-bert-bf16",
        max_length=tiny_classifier.max_length,
    )


def _dls(clf: TextClassifier, batch: dict[str, torch.Tensor], **options: Any) -> torch.Tensor:
    assert clf.lm_head is not None
    dls = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, tokenizer=clf.tokenizer, mapping="decoded", **options
    )
    out = dls.attribute(
        batch["input_ids"], target=batch["target"], attention_mask=batch["attention_mask"]
    )
    assert isinstance(out, torch.Tensor)
    return out


@pytest.mark.parametrize("options", [{}, {"layer_method": "gradient"}], ids=["default", "gradient"])
def test_bf16_dls_is_float32_and_close_to_fp32(
    tiny_classifier: TextClassifier,
    bf16_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    options: dict[str, Any],
) -> None:
    full = _dls(tiny_classifier, tiny_batch, **options)
    half = _dls(bf16_classifier, tiny_batch, **options)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    # bf16 keeps ~3 significant digits in the model; the maps must still point the same way.
    assert (cosine_similarity(half, full, dim=-1) > 0.99).all()
    assert torch.allclose(half, full, atol=0.15 * float(full.abs().max()))


def test_decoding_and_position_saliency_run_in_float32(
    bf16_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    assert bf16_classifier.lm_head is not None
    encoder: Any = bf16_classifier.model.get_submodule("bert")
    with torch.no_grad():
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.dtype == torch.bfloat16
    decoded = decode_layer(
        hidden,
        ids,
        mask,
        candidate_mask(ids, mask, bf16_classifier.special_token_ids),
        bf16_classifier.lm_head,
    )
    for tensor in (decoded.contributions, decoded.own_prob, decoded.entropy):
        assert tensor.dtype == torch.float32
    # Each real row of A is a (partial) probability distribution: it sums to at most 1.
    assert (decoded.contributions.sum(-1) <= 1 + 1e-5).all()
    for aggregation in ("grad_x_act", "gradcam", "grad_norm"):
        scores = position_saliency(hidden, hidden, mask, aggregation)
        assert scores.dtype == torch.float32


def test_the_harness_runs_a_bf16_model_like_the_fp32_one(
    tiny_classifier: TextClassifier, bf16_classifier: TextClassifier, tmp_path: Path
) -> None:
    data = toy_dataset(["the movie was very good", "boring .", "a great film"], rationales=False)
    for clf, name in ((tiny_classifier, "fp32"), (bf16_classifier, "bf16")):
        run_comparison(
            clf,
            data,
            ["dls", "input_x_gradient"],
            tmp_path / name,
            metrics=["comprehensiveness"],
            batch_size=3,
            progress=False,
            # The gradient path: on this tiny random model, bf16 reorders the two near-equal
            # small scores of "boring ." under the default (integrated gradients), which moves
            # comprehensiveness by 0.19; the default's bf16 maps are checked above.
            method_options={"dls": {"layer_method": "gradient"}},
        )
    full, half = load_rows(tmp_path / "fp32"), load_rows(tmp_path / "bf16")
    assert [r["prediction"] for r in half] == [r["prediction"] for r in full]
    for a, b in zip(full, half, strict=True):
        assert all(v is not None for v in b["attributions"])
        assert b["metrics"]["comprehensiveness"] == pytest.approx(
            a["metrics"]["comprehensiveness"], abs=0.05
        )
