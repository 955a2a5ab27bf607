"""Coherence for causal LMs: next-token recovery (the logit lens), the per-family default score,
and the classifier/backbone retention ratio; hand-computed cases and a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from tiny_models import family_configs
from torch import nn

from captum_layer_saliency import TextClassifier, find_model_parts, load_lm_head
from captum_layer_saliency.attr.coherence import (
    COHERENCE_SCORES,
    LayerCoherenceSelector,
    coherence_retention,
    default_coherence_score,
    layer_position_coherence,
    next_token_hits,
    position_coherence,
)
from captum_layer_saliency.attr.decoding import decode_layer

V = 6


def identity_head() -> nn.Linear:
    """Logits = the hidden state itself: a one-hot hidden state decodes to its index."""
    head = nn.Linear(V, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(V) * 5.0)
    return head


def one_hot(tokens: list[list[int]]) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(tokens), V).float()


# ids 1 2 3 1 [pad]; the hidden states decode to 2 3 1 3 5.
IDS = torch.tensor([[1, 2, 3, 1, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 0]])
DECODES_TO = [[2, 3, 1, 3, 5]]


def test_next_token_hits_by_hand() -> None:
    # positions 0, 1, 2 predict the next token (2, 3, 1); position 3's next is padding.
    hits = next_token_hits(torch.tensor(DECODES_TO), IDS, MASK.bool())
    assert hits.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0]]
    # a decoded pad (id 0) after the last real token is not a hit under right padding
    assert next_token_hits(torch.tensor([[0, 0, 0, 0, 0]]), IDS, MASK.bool()).sum() == 0
    # a special (non-candidate) next token is not a hit either
    special_last = torch.tensor([[True, True, True, False, False]])
    assert next_token_hits(torch.tensor(DECODES_TO), IDS, special_last).tolist() == [
        [1.0, 1.0, 0.0, 0.0, 0.0]
    ]


def test_fast_and_full_decoding_agree_by_hand() -> None:
    hidden = one_hot(DECODES_TO)
    rows = MASK.bool()
    fast = layer_position_coherence(hidden, IDS, MASK, rows, identity_head(), "next_token_recovery")
    decoded = decode_layer(hidden, IDS, MASK, rows, identity_head())
    full = position_coherence(decoded, IDS, "next_token_recovery")
    assert fast.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0]]
    torch.testing.assert_close(full, fast)
    # self-recovery of the same states: none of the four real positions decodes to itself
    own = layer_position_coherence(hidden, IDS, MASK, rows, identity_head(), "self_recovery")
    assert float((own * rows).sum()) == 0.0
    assert "next_token_recovery" in COHERENCE_SCORES


@pytest.mark.parametrize(
    ("family", "score"),
    [
        ("llama", "next_token_recovery"),
        ("gpt2", "next_token_recovery"),
        ("mistral", "next_token_recovery"),
        ("bert", "self_recovery"),
        ("distilbert", "self_recovery"),
        ("roberta", "self_recovery"),
        ("no-such-family", "self_recovery"),
    ],
)
def test_default_score_follows_the_family(family: str, score: str) -> None:
    assert default_coherence_score(family) == score


def test_default_score_of_models_and_configs() -> None:
    configs = family_configs()
    assert default_coherence_score(configs["llama"]) == "next_token_recovery"
    assert default_coherence_score(T.BertForMaskedLM(configs["bert"])) == "self_recovery"
    assert default_coherence_score(nn.Linear(2, 2)) == "self_recovery"  # no config at all


def test_retention_by_hand_and_its_errors() -> None:
    got = coherence_retention([0.05, 0.10, 0.02, 0.0], [0.05, 0.20, 0.20, 0.0])
    torch.testing.assert_close(got, torch.tensor([1.0, 0.5, 0.1, 0.0]))
    with pytest.raises(ValueError, match="same candidate layers"):
        coherence_retention([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="floor must be positive"):
        coherence_retention([0.1], [0.1], floor=0.0)


@pytest.fixture(scope="module")
def tiny_llama() -> tuple[nn.Module, nn.Module]:
    config = family_configs()["llama"]
    config.num_labels = 2
    config.pad_token_id = 0
    config.num_hidden_layers = 3
    torch.manual_seed(0)
    lm = T.LlamaForCausalLM(config).eval()
    clf = T.LlamaForSequenceClassification(config).eval()
    clf.model.load_state_dict(lm.model.state_dict())
    return clf, lm


def test_selector_fit_matches_a_hand_count_and_batches_alike(tiny_llama) -> None:
    clf, lm = tiny_llama
    head = load_lm_head(lm, model=clf)
    layers = find_model_parts(clf).layers
    forward = TextClassifier(clf, None).forward_func
    rows = [[5, 9, 13, 7, 22, 5, 9], [31, 4, 31, 4], [8, 8, 40, 8, 8]]
    padded = torch.tensor([r + [0] * (7 - len(r)) for r in rows])
    mask = (padded != 0).long()

    batched = LayerCoherenceSelector(head, score="next_token_recovery", rule="argmax")
    batched.fit(forward, layers, [(padded, mask)], special_token_ids=[0])
    alone = LayerCoherenceSelector(head, score="next_token_recovery", rule="argmax")
    alone.fit(
        forward,
        layers,
        [(torch.tensor([r]), torch.ones(1, len(r)).long()) for r in rows],
        special_token_ids=[0],
    )
    torch.testing.assert_close(batched.scores_, alone.scores_)
    assert batched.n_positions_ == sum(map(len, rows))

    # by hand, from transformers' own hidden states (the same weights as the classifier's
    # backbone); its last entry is after the final norm, so compare every layer but the last
    with torch.no_grad():
        states = lm.model(padded, attention_mask=mask, output_hidden_states=True).hidden_states
        expected = []
        for h in states[:-1]:
            top1 = head(h).argmax(-1)
            hits = (top1[:, :-1] == padded[:, 1:]) & mask[:, 1:].bool()
            expected.append(float(hits.sum()) / float(mask.sum()))
    torch.testing.assert_close(batched.scores_[:-1], torch.tensor(expected))


def test_for_model_picks_the_familys_score(tiny_llama) -> None:
    from tiny_models import tiny_bert

    from captum_layer_saliency import DecodedLayerSaliency

    clf, lm = tiny_llama
    dls = DecodedLayerSaliency.for_model(clf, load_lm_head(lm, model=clf))
    assert dls.selector is not None and dls.selector.score == "next_token_recovery"
    bert, mlm = tiny_bert()
    dls = DecodedLayerSaliency.for_model(bert, load_lm_head(mlm, model=bert))
    assert dls.selector is not None and dls.selector.score == "self_recovery"
