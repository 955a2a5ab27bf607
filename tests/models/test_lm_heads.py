"""LM-head resolution for every supported family, from tiny random checkpoints on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T
from tiny_models import CAUSAL, family_configs

from captum_layer_saliency import (
    DecodedLayerSaliency,
    HeadMismatchError,
    UnsupportedModelError,
    find_model_parts,
    load_lm_head,
)

FAMILIES = family_configs()


def lm_class(family: str) -> type:
    return T.AutoModelForCausalLM if family in CAUSAL else T.AutoModelForMaskedLM


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("heads")
    paths = {}
    for family, config in FAMILIES.items():
        torch.manual_seed(0)
        model = lm_class(family).from_config(config)
        paths[family] = root / family
        model.save_pretrained(paths[family])
    return paths


def last_block_output(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The last block's output, taken with a hook: before any final norm."""
    family = model.config.model_type
    if family == "albert":
        return model.albert(ids).last_hidden_state
    blocks = find_model_parts(model).blocks
    seen: list[torch.Tensor] = []
    hook = blocks[-1].register_forward_hook(
        lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o)
    )
    try:
        model(ids)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_head_reproduces_the_models_own_logits(checkpoints, family: str) -> None:
    head = load_lm_head(checkpoints[family])
    model = lm_class(family).from_pretrained(checkpoints[family]).eval()
    ids = torch.tensor([[3, 7, 11, 5, 9]])
    with torch.no_grad():
        expected = model(ids).logits
        got = head(last_block_output(model, ids))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert head.vocab_size == 60 and head.family == family
    assert not head.training
    if family in CAUSAL:  # pre-norm: the final norm is part of the head
        assert len(head.parts) == 2


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if f != "albert"))
def test_for_model_on_each_family_classifier(checkpoints, family: str) -> None:
    config = FAMILIES[family]
    config.num_labels = 2
    config.pad_token_id = 0
    torch.manual_seed(0)
    clf = T.AutoModelForSequenceClassification.from_config(config).eval()
    dls = DecodedLayerSaliency.for_model(clf, str(checkpoints[family]), special_token_ids=[0])
    ids = torch.tensor([[4, 7, 11, 5, 9], [4, 8, 9, 0, 0]])
    out = dls.attribute(ids, target=1, attention_mask=(ids != 0).long())
    assert out.shape == ids.shape and torch.isfinite(out).all()
    assert out[1, 3:].eq(0).all()


def test_albert_classifier_is_refused_clearly() -> None:
    config = FAMILIES["albert"]
    clf = T.AlbertForSequenceClassification(config)
    with pytest.raises(UnsupportedModelError, match="shared block"):
        find_model_parts(clf)


def test_checkpoint_without_a_head_fails_loudly(tmp_path: Path) -> None:
    T.BertModel(FAMILIES["bert"]).save_pretrained(tmp_path)
    with pytest.raises(HeadMismatchError, match="no pre-trained masked LM head"):
        load_lm_head(tmp_path)


def test_classifier_passed_as_head_is_refused() -> None:
    clf = T.BertForSequenceClassification(FAMILIES["bert"])
    with pytest.raises(UnsupportedModelError, match="carries no masked language-model head"):
        load_lm_head(clf)


def test_unknown_family_and_explicit_module() -> None:
    config = T.T5Config(vocab_size=60, d_model=16, num_layers=1, num_heads=2, d_ff=32)
    with pytest.raises(UnsupportedModelError, match="not supported"):
        load_lm_head(T.T5ForConditionalGeneration(config))
    module = torch.nn.Linear(16, 60)
    head = load_lm_head(module)
    assert head.hidden_size == 16 and head.vocab_size == 60
    torch.testing.assert_close(head(torch.ones(2, 16)), module(torch.ones(2, 16)))


def test_mismatched_head_and_classifier(checkpoints) -> None:
    clf = T.BertForSequenceClassification(
        T.BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(HeadMismatchError, match="vocabulary of 60.*99"):
        load_lm_head(checkpoints["bert"], model=clf)


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if f != "albert"))
def test_a_head_of_another_family_is_refused_at_construction(checkpoints, family: str) -> None:
    """Every tiny family has vocabulary 60 and hidden size 16: only the family tells a GPT-2
    head from a Llama head, and the classifier must refuse it before any explanation."""
    config = FAMILIES[family]
    config.num_labels = 2
    config.pad_token_id = 0
    clf = T.AutoModelForSequenceClassification.from_config(config).eval()
    for other in sorted(f for f in FAMILIES if f != family):
        with pytest.raises(HeadMismatchError, match=f"comes from a '{other}' model"):
            DecodedLayerSaliency.for_model(clf, str(checkpoints[other]))
        head = load_lm_head(checkpoints[other])
        with pytest.raises(HeadMismatchError, match="must come from the classifier's"):
            DecodedLayerSaliency(clf, find_model_parts(clf).blocks[0], head)
