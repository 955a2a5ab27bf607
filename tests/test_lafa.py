"""LAFA: hand-computed aggregation, reduction to its base at k = 0, batching, errors, registry."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from captum_layer_saliency.attr.lafa import LAFA, local_aggregate
from captum_layer_saliency.baselines import available_methods, embedding_layer, get_method
from captum_layer_saliency.hf import TextClassifier
from captum_layer_saliency.neighbours import NeighbourIndex

CORPUS = [
    "the film was good",
    "a boring and dull story",
    "i think it is fun",
    "the acting was terrible",
    "this movie is great",
    "not funny , too slow",
]


def bag_of_words(texts: list[str]) -> Tensor:
    """A deterministic toy sentence encoder: hashed bag of words in 8 dimensions."""
    out = torch.zeros(len(texts), 8)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 8] += 1
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTUM_LAYER_SALIENCY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def index() -> NeighbourIndex:
    return NeighbourIndex.build(CORPUS, bag_of_words, progress=False)


# -- the aggregation by hand --------------------------------------------------------------------


def test_local_aggregate_by_hand() -> None:
    # Input: 2 tokens with representations e0 = (1, 0), e1 = (0, 1) and attributions 1, 2.
    scores, reprs, valid = torch.tensor([[1.0, 2.0]]), torch.eye(2)[None], torch.ones(1, 2).bool()
    # One neighbour: (1, 0) -> 3, (0.6, 0.8) -> 5, and an invalid (0, 1) -> 100 never matched.
    nb_scores = torch.tensor([[[3.0, 5.0, 100.0]]])
    nb_reprs = torch.tensor([[[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]]])
    nb_valid = torch.tensor([[[True, True, False]]])
    args = (scores, reprs, valid, nb_scores, nb_reprs, nb_valid)

    out = local_aggregate(*args, sigma=0.5, top_matches=1, min_similarity=0.5)
    w = math.exp((0.8 - 1) / 0.5)  # token 1's best valid match has cos 0.8
    expected = torch.tensor([[(1 + 1 * 3) / 2, (2 + w * 5) / (1 + w)]])
    torch.testing.assert_close(out, expected)

    # A stricter threshold leaves token 1 without a match: its own attribution.
    out = local_aggregate(*args, sigma=0.5, top_matches=1, min_similarity=0.9)
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0]]))

    # Two matches per neighbour: token 0 also takes (0.6, 0.8) at cos 0.6.
    out = local_aggregate(*args, sigma=0.5, top_matches=2, min_similarity=0.5)
    w6 = math.exp((0.6 - 1) / 0.5)
    torch.testing.assert_close(out[0, 0], torch.tensor((1 + 3 + w6 * 5) / (2 + w6)))

    # A wide kernel tends to the plain mean of own and matched attributions.
    out = local_aggregate(*args, sigma=1e6, top_matches=1, min_similarity=0.5)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.5]]))
    # A narrow one keeps only exact matches (cos = 1).
    out = local_aggregate(*args, sigma=1e-3, top_matches=1, min_similarity=0.5)
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0]]))


class SquareModel(nn.Module):
    """``logit_1 = (sum_i m_i x_i . w)^2 / 2``, ``logit_0 = 0`` over embeddings ``x_i = E[t_i]``.

    Input×Gradient at the embeddings is then ``(x_i . w) * sum_j m_j x_j . w``: it depends on the
    context, so a token's attribution differs between the input and a neighbour.
    """

    def __init__(self, vocab: list[str], vectors: dict[str, list[float]]) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(len(vocab), 2)
        with torch.no_grad():
            self.embeddings.weight.zero_()
            for word, vector in vectors.items():
                self.embeddings.weight[vocab.index(word)] = torch.tensor(vector)
        self.w = torch.tensor([1.0, 0.5])

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        s = ((self.embeddings(input_ids) @ self.w) * attention_mask).sum(-1)
        return torch.stack([torch.zeros_like(s), s**2 / 2], dim=-1)


def test_lafa_end_to_end_by_hand(tiny_tokenizer: object) -> None:
    from conftest import VOCAB

    vectors = {"good": [1.0, 0.0], "fun": [0.6, 0.8], "movie": [0.0, 1.0], "bad": [-1.0, 0.0]}
    model = SquareModel(VOCAB, vectors)
    table = {"movie good": [1.0, 0.0, 0.0], "good fun": [0.9, 0.1, 0.0], "bad movie": [0, 1, 0]}

    def encoder(texts: list[str]) -> Tensor:
        return torch.tensor([table[t] for t in texts], dtype=torch.float)

    # The input is itself in the corpus: it must not be its own neighbour.
    index = NeighbourIndex.build(["movie good", "good fun", "bad movie"], encoder, progress=False)
    lafa = LAFA(
        model,
        model.embeddings,
        encoder,
        index,
        tokenizer=tiny_tokenizer,
        k=1,
        sigma=0.5,
        token_repr="embedding",
        base="input_x_gradient",
    )
    enc = tiny_tokenizer(["movie good"], return_tensors="pt")  # type: ignore[operator]
    out = lafa.attribute(enc["input_ids"], target=1, attention_mask=enc["attention_mask"])
    assert lafa.last_neighbours_ == [["good fun"]]
    # Input: x.w = 0.5 (movie), 1 (good), sum 1.5 -> IxG 0.75, 1.5.
    # Neighbour "good fun": x.w = 1, 1, sum 2 -> IxG 2, 2.
    # "movie" (0, 1) best matches "fun" at cos 0.8; "good" matches "good" at cos 1.
    w = math.exp((0.8 - 1) / 0.5)
    expected = torch.tensor([[0.0, (0.75 + w * 2) / (1 + w), (1.5 + 2) / 2, 0.0]])
    torch.testing.assert_close(out, expected)
    # Decoding the ids gives the same text, hence the same neighbours and scores.
    again = lafa.attribute(enc["input_ids"], target=1, attention_mask=enc["attention_mask"])
    torch.testing.assert_close(again, expected)


# -- reduction to the base method ----------------------------------------------------------------


@pytest.mark.parametrize("base", ["input_x_gradient", "saliency", "integrated_gradients"])
def test_k0_is_exactly_the_base_method(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor], index: NeighbourIndex, base: str
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    expected = get_method(base, tiny_classifier).attribute(ids, mask, target)
    via_registry = get_method(
        "lafa", tiny_classifier, index=index, encoder=bag_of_words, k=0, base=base
    )
    assert torch.equal(via_registry.attribute(ids, mask, target), expected)
    raw = LAFA(
        tiny_classifier.forward_func,
        embedding_layer(tiny_classifier.model),
        bag_of_words,
        index,
        tokenizer=tiny_classifier.tokenizer,
        k=0,
        base=base,
    )
    assert torch.equal(raw.attribute(ids, target=target, attention_mask=mask), expected)


# -- behaviour --------------------------------------------------------------------------------


@pytest.mark.parametrize("token_repr", ["embedding", "contextual"])
def test_batched_equals_one_at_a_time_and_zeros(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, Tensor],
    index: NeighbourIndex,
    token_repr: str,
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    lafa = get_method(
        "lafa", tiny_classifier, index=index, encoder=bag_of_words, k=3, token_repr=token_repr
    )
    batched = lafa.attribute(ids, mask, target)
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        one = lafa.attribute(ids[b : b + 1, real], mask[b : b + 1, real], target[b : b + 1])
        torch.testing.assert_close(batched[b, real], one[0], atol=1e-5, rtol=1e-4)
    valid = mask.bool() & ~tiny_classifier.special_mask(ids)
    assert (batched[~valid] == 0).all()
    assert (batched[valid] != 0).any()
    # Smoothing changes the scores of the base method.
    plain = get_method("input_x_gradient", tiny_classifier).attribute(ids, mask, target)
    assert not torch.allclose(batched, plain)


def test_target_none_is_the_predicted_class(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor], index: NeighbourIndex
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    lafa = LAFA.for_model(
        tiny_classifier.model, tiny_classifier.tokenizer, index=index, encoder=bag_of_words, k=2
    )
    out = lafa.attribute(ids, attention_mask=mask)
    assert lafa.last_target_ is not None and torch.equal(lafa.last_target_, tiny_batch["target"])
    explicit = lafa.attribute(ids, target=tiny_batch["target"], additional_forward_args=(mask,))
    assert torch.equal(out, explicit)
    assert out.shape == ids.shape
    assert lafa.last_neighbours_ is not None and all(len(n) == 2 for n in lafa.last_neighbours_)


def test_errors(tiny_classifier: TextClassifier, index: NeighbourIndex) -> None:
    model, tok = tiny_classifier.model, tiny_classifier.tokenizer
    forward, layer = tiny_classifier.forward_func, embedding_layer(model)
    with pytest.raises(ValueError, match="k must be"):
        LAFA(forward, layer, bag_of_words, index, tokenizer=tok, k=-1)
    with pytest.raises(ValueError, match="sigma"):
        LAFA(forward, layer, bag_of_words, index, tokenizer=tok, sigma=0)
    with pytest.raises(ValueError, match="unknown base"):
        LAFA(forward, layer, bag_of_words, index, tokenizer=tok, base="lime")
    with pytest.raises(ValueError, match="token_repr"):
        LAFA(forward, layer, bag_of_words, index, tokenizer=tok, token_repr="attention")
    with pytest.raises(ValueError, match="repr_layer"):
        LAFA(forward, layer, bag_of_words, index, tokenizer=tok, token_repr="contextual")
    with pytest.raises(ValueError, match="tokenizer"):
        LAFA(forward, layer, bag_of_words, index, k=2)
    with pytest.raises(ValueError, match="corpus of 6 texts"):
        LAFA(forward, layer, bag_of_words, index, tokenizer=tok, k=7)

    class Wide:
        name, dim = "wide", 16

        def __call__(self, texts: list[str]) -> Tensor:
            return torch.ones(len(texts), 16)

    with pytest.raises(ValueError, match="16-dim vectors but the index holds 8-dim"):
        LAFA(forward, layer, Wide(), index, tokenizer=tok)
    with pytest.raises(ValueError, match="corpus is empty"):
        LAFA.for_model(model, tok, [], encoder=bag_of_words)
    with pytest.raises(ValueError, match="reference corpus"):
        LAFA.for_model(model, tok, encoder=bag_of_words)
    with pytest.raises(ValueError, match="pass it as encoder="):
        LAFA.for_model(model, tok, index=index)
    lafa = LAFA(forward, layer, bag_of_words, index, tokenizer=tok, token_repr="embedding")
    ids = torch.tensor([[2, 10, 3]])
    with pytest.raises(ValueError, match="token ids"):
        lafa.attribute(ids.float())
    with pytest.raises(ValueError, match="additional_forward_args"):
        lafa.attribute(ids, additional_forward_args=(torch.ones_like(ids), 3))
    with pytest.raises(ValueError, match="texts for"):
        lafa.attribute(ids, target=0, texts=["a", "b"])


def test_registry(tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]) -> None:
    assert "lafa" in available_methods()
    with pytest.raises(ValueError, match="bad options"):
        get_method("lafa", tiny_classifier, reference_texts=CORPUS, nope=1)
    with pytest.raises(ValueError, match="needs a reference corpus"):
        get_method("lafa", tiny_classifier)
    lafa = get_method(
        "locally_aggregated_feature_attribution",
        tiny_classifier,
        reference_texts=CORPUS,
        encoder=bag_of_words,
        k=2,
    )
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    assert lafa.attribute(ids, mask, target).shape == ids.shape
