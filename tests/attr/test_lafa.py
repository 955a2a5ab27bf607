"""LAFA: the paper's aggregation by hand, reduction to its base, batching, errors, registry."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from captum_layer_saliency.attr.lafa import LAFA
from captum_layer_saliency.attr.lafa_aggregation import (
    kernel_weights,
    local_aggregate,
    paper_aggregate,
)
from captum_layer_saliency.attr.lafa_setup import base_method
from captum_layer_saliency.attr.layer_index import LayerIndex, cached_layer_index, layer_vectors
from captum_layer_saliency.attr.neighbours import NeighbourIndex
from captum_layer_saliency.compare.methods.lafa import lafa_for_model
from captum_layer_saliency.compare.methods.registry import available_methods, get_method
from captum_layer_saliency.models.classifier import TextClassifier

CORPUS = [
    "the film was good",
    "a boring and dull story",
    "i think it is fun",
    "the acting was terrible",
    "this movie is great",
    "not funny , too slow",
    "the movie was very good",  # a copy of the first tiny_batch sentence: never its neighbour
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
def layer_index(
    tiny_classifier: TextClassifier, tmp_path_factory: pytest.TempPathFactory
) -> LayerIndex:
    return cached_layer_index(
        tiny_classifier.model,
        tiny_classifier.tokenizer,
        CORPUS,
        layer=1,
        cache_dir=str(tmp_path_factory.mktemp("index")),
        progress=False,
    )


# -- the aggregations by hand -------------------------------------------------------------------


def test_paper_aggregate_by_hand() -> None:
    # Input: tokens with word embeddings (1, 0), (0, 1) and saliencies 1, 2.
    scores, words, valid = torch.tensor([[1.0, 2.0]]), torch.eye(2)[None], torch.ones(1, 2).bool()
    # Neighbour A (3 tokens, T' = 3): (1, 0) -> 3, (1, 0) -> 6, (0.6, 0.8) -> 9.
    # Neighbour B (1 valid token, T' = 1): (0, 1) -> 4, then an invalid (1, 0) -> 100.
    nb_scores = torch.tensor([[[3.0, 6.0, 9.0], [4.0, 100.0, 0.0]]])
    nb_words = torch.tensor(
        [[[[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]]]
    )
    nb_valid = torch.tensor([[[True, True, True], [True, False, False]]])
    args = (scores, words, valid, nb_scores, nb_words, nb_valid)
    out = paper_aggregate(*args, lam=0.5)  # indicator kernel: the same word only
    # token 0: A gives (3 + 6) / 3 = 3, B gives 0 -> E = 1.5;  token 1: A 0, B 4 / 1 -> E = 2.
    torch.testing.assert_close(out, torch.tensor([[1 + 0.5 * 1.5, 2 + 0.5 * 2.0]]))
    # The exp kernel also lets (0.6, 0.8) in: cos 0.6 to token 0, 0.8 to token 1.
    out = paper_aggregate(*args, lam=1.0, kernel="exp", sigma=0.5, min_similarity=0.1)
    w6, w8 = math.exp(-0.4 / 0.5), math.exp(-0.2 / 0.5)
    e0 = ((3 + 6 + w6 * 9) / 3 + 0) / 2
    e1 = ((w8 * 9) / 3 + 4) / 2
    torch.testing.assert_close(out, torch.tensor([[1 + e0, 2 + e1]]))
    # An absent neighbour slot (no valid token) does not count in |N|.
    absent = torch.tensor([[[True, True, True], [False, False, False]]])
    out = paper_aggregate(scores, words, valid, nb_scores, nb_words, absent, lam=1.0)
    torch.testing.assert_close(out, torch.tensor([[1 + 3.0, 2.0]]))
    # lambda = 0, or no neighbour at all, is the base; invalid input tokens get 0.
    torch.testing.assert_close(paper_aggregate(*args, lam=0.0), scores)
    none = paper_aggregate(
        scores, words, valid, nb_scores[:, :0], nb_words[:, :0], nb_valid[:, :0], lam=1.0
    )
    torch.testing.assert_close(none, scores)
    half = paper_aggregate(scores, words, torch.tensor([[True, False]]), *args[3:], lam=0.5)
    assert half[0, 1] == 0


def test_kernel_weights() -> None:
    cos = torch.tensor([1.0, 0.9995, 0.8, -0.2])
    ind = kernel_weights(cos, "indicator", sigma=1.0, min_similarity=0.999)
    torch.testing.assert_close(ind, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    exp = kernel_weights(cos, "exp", sigma=0.5, min_similarity=0.0)
    expected = torch.tensor([1.0, math.exp(-0.0005 / 0.5), math.exp(-0.2 / 0.5), 0.0])
    torch.testing.assert_close(exp, expected)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_weights(cos, "box", sigma=1.0, min_similarity=0.0)


def test_local_aggregate_by_hand() -> None:
    # The first variant: a normalised exp(cos / sigma)-weighted mean.
    scores, reprs, valid = torch.tensor([[1.0, 2.0]]), torch.eye(2)[None], torch.ones(1, 2).bool()
    nb_scores = torch.tensor([[[3.0, 5.0, 100.0]]])
    nb_reprs = torch.tensor([[[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]]])
    nb_valid = torch.tensor([[[True, True, False]]])
    args = (scores, reprs, valid, nb_scores, nb_reprs, nb_valid)
    out = local_aggregate(*args, sigma=0.5, top_matches=1, min_similarity=0.5)
    w = math.exp((0.8 - 1) / 0.5)
    torch.testing.assert_close(out, torch.tensor([[(1 + 3) / 2, (2 + w * 5) / (1 + w)]]))
    out = local_aggregate(*args, sigma=0.5, top_matches=1, min_similarity=0.9)
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0]]))


# -- the layer index ------------------------------------------------------------------------------


def test_layer_index_cutoff_and_search_by_hand() -> None:
    texts = ["a", "b", "c", "d"]
    vectors = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [6.0, 8.0]])
    index = LayerIndex(texts, vectors, torch.tensor([0, 1, 0, 0]), layer=2)
    # Pairwise distances: 3, 4, 10, 5, 8.544, 6.708 -> sorted 3 4 5 6.708 8.544 10.
    assert index.cutoff(0.0) == pytest.approx(3.0)
    assert index.cutoff(1.0) == pytest.approx(10.0)
    assert index.cutoff(0.4) == pytest.approx(5.0)
    query = torch.tensor([[0.0, 0.0], [3.0, 0.5]])
    assert index.search(query, 3) == [[0, 1, 2], [1, 0, 2]]
    assert index.search(query, 3, radius=3.5) == [[0, 1], [1, 0]]
    assert index.search(query, 3, classes=torch.tensor([0, 0])) == [[0, 2, 3], [0, 2, 3]]
    assert index.search(query, 2, exclude_texts=["A", "x"]) == [[1, 2], [1, 0]]
    assert index.search(query, 0) == [[], []]
    with pytest.raises(ValueError, match="layer width"):
        index.search(torch.zeros(1, 3), 1)
    with pytest.raises(ValueError, match="quantile"):
        index.cutoff(1.5)
    with pytest.raises(ValueError, match="empty"):
        LayerIndex([], torch.zeros(0, 2), torch.zeros(0), layer=0)


def test_layer_index_never_returns_the_query_decoded_from_its_ids() -> None:
    """A tokenizer decodes "it 's good ." to "it's good." : still the same text."""
    texts = ["it 's good .", "a dull film", "fun"]
    vectors = torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
    index = LayerIndex(texts, vectors, torch.zeros(3, dtype=torch.long), layer=1)
    query = torch.tensor([[1.0, 0.0]])
    assert index.search(query, 1) == [[0]]
    assert index.search(query, 1, exclude_texts=["It's good."]) == [[1]]


def test_cached_layer_index_builds_once_and_resumes(
    tiny_classifier: TextClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import captum_layer_saliency.attr.layer_index as li

    model, tok = tiny_classifier.model, tiny_classifier.tokenizer
    calls = {"n": 0}
    real = li.layer_vectors

    def counting(*args: object, **kwargs: object) -> tuple[Tensor, Tensor]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # interrupted in the second chunk
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(li, "layer_vectors", counting)
    build = dict(layer=1, cache_dir=str(tmp_path), batch_size=2, chunk_size=4, progress=False)
    with pytest.raises(KeyboardInterrupt):
        cached_layer_index(model, tok, CORPUS, **build)  # type: ignore[arg-type]
    assert len(list(tmp_path.rglob("chunk-*.safetensors"))) == 1
    index = cached_layer_index(model, tok, CORPUS, **build)  # type: ignore[arg-type]
    assert calls["n"] == 3 + 2  # the first chunk (2 batches) was not recomputed
    assert not list(tmp_path.rglob("chunk-*.safetensors"))
    # Every layer is cached together: another layer costs no forward.
    other = cached_layer_index(model, tok, CORPUS, **{**build, "layer": 2})  # type: ignore[arg-type]
    assert calls["n"] == 5 and other.layer == 2
    # The vectors are the model's layer, mean-pooled, in corpus order.
    enc = tok(CORPUS, padding=True, return_tensors="pt")
    expected, classes = real(model, enc["input_ids"], enc["attention_mask"], 1, "mean")
    torch.testing.assert_close(index.vectors, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(index.classes, classes)
    assert index.texts == CORPUS and len(index) == len(CORPUS)


def test_layer_vectors_pooling(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    out = tiny_classifier.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    cls, _ = layer_vectors(tiny_classifier.model, ids, mask, 2, "cls")
    torch.testing.assert_close(cls, out.hidden_states[2][:, 0])
    mean, _ = layer_vectors(tiny_classifier.model, ids, mask, 0, "mean")
    row = out.hidden_states[0][1, : int(mask[1].sum())].mean(0)
    torch.testing.assert_close(mean[1], row)
    with pytest.raises(ValueError, match="layer must be"):
        layer_vectors(tiny_classifier.model, ids, mask, 9)
    with pytest.raises(ValueError, match="pooling"):
        layer_vectors(tiny_classifier.model, ids, mask, 1, "max")


# -- LAFA end to end ------------------------------------------------------------------------------


def test_lafa_equals_its_definition(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor], layer_index: LayerIndex
) -> None:
    """LAFA = base + lambda * E, with E from the base scores of the neighbours found by hand."""
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    base = base_method(tiny_classifier, "saliency", reduction="squared_l2")
    lafa = LAFA(
        tiny_classifier.model,
        tiny_classifier.tokenizer,
        base,
        layer_index,
        k=3,
        epsilon=0.8,
        lam=0.7,
    )
    out = lafa.attribute(ids, target=target, attention_mask=mask)
    texts = tiny_classifier.tokenizer.batch_decode(ids, skip_special_tokens=True)
    queries, _ = layer_vectors(tiny_classifier.model, ids, mask, 1)
    eps = layer_index.cutoff(0.8)
    words = tiny_classifier.model.get_input_embeddings().weight
    own = base.attribute(ids, mask, target)
    valid = mask.bool() & ~tiny_classifier.special_mask(ids)
    for b in range(ids.shape[0]):
        dist = (layer_index.vectors - queries[b]).norm(dim=-1)
        allowed = [
            i
            for i in dist.argsort().tolist()
            if dist[i] <= eps and layer_index.classes[i] == target[b] and CORPUS[i] != texts[b]
        ][:3]
        assert lafa.last_neighbours_[b] == [CORPUS[i] for i in allowed]  # type: ignore[index]
        for t in valid[b].nonzero().flatten().tolist():
            evidence = 0.0
            for i in allowed:
                enc = tiny_classifier.encode([CORPUS[i]])
                sc = base.attribute(enc["input_ids"], enc["attention_mask"], target[b : b + 1])[0]
                nb_valid = ~tiny_classifier.special_mask(enc["input_ids"])[0]
                same = enc["input_ids"][0] == ids[b, t]
                evidence += float((sc * (same & nb_valid)).sum()) / int(nb_valid.sum())
            evidence /= max(len(allowed), 1)
            expected = float(own[b, t]) + 0.7 * evidence
            assert float(out[b, t]) == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert (out[~valid] == 0).all()
    assert words is not None
    # Some input has a neighbour that shares a word, so the scores moved.
    assert not torch.allclose(out, own)


@pytest.mark.parametrize(
    "base", ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad"]
)
def test_k0_and_lambda0_are_exactly_the_base_method(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, Tensor],
    layer_index: LayerIndex,
    base: str,
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    expected = base_method(tiny_classifier, base, n_samples=3).attribute(ids, mask, target)
    for options in ({"k": 0}, {"lam": 0.0}):
        lafa = get_method(
            "lafa", tiny_classifier, index=layer_index, base=base, n_samples=3, **options
        )
        assert torch.equal(lafa.attribute(ids, mask, target), expected)
    # base_method is the registry method with the paper's reduction.
    name = {"saliency": "saliency"}.get(base, base)
    opt = {"norm": "squared_l2"} if base == "saliency" else {"reduction": "squared_l2"}
    if base == "smoothgrad":
        opt["n_samples"] = 3
    assert torch.equal(
        get_method(name, tiny_classifier, **opt).attribute(ids, mask, target), expected
    )


@pytest.mark.parametrize("aggregation", ["paper", "weighted_mean"])
def test_batched_equals_one_at_a_time_and_zeros(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, Tensor],
    layer_index: LayerIndex,
    aggregation: str,
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    lafa = get_method(
        "lafa",
        tiny_classifier,
        index=layer_index,
        k=3,
        epsilon=None,
        aggregation=aggregation,
        base="saliency",
    )
    batched = lafa.attribute(ids, mask, target)
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        one = lafa.attribute(ids[b : b + 1, real], mask[b : b + 1, real], target[b : b + 1])
        torch.testing.assert_close(batched[b, real], one[0], atol=1e-6, rtol=1e-4)
    valid = mask.bool() & ~tiny_classifier.special_mask(ids)
    assert (batched[~valid] == 0).all() and (batched[valid] != 0).any()


def test_same_class_and_no_self_neighbour(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor], layer_index: LayerIndex
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    base = base_method(tiny_classifier, "saliency")
    for same_class in (True, False):
        lafa = LAFA(
            tiny_classifier.model,
            tiny_classifier.tokenizer,
            base,
            layer_index,
            k=len(CORPUS),
            epsilon=None,
            same_class=same_class,
        )
        lafa.attribute(ids, attention_mask=mask)
        assert lafa.last_target_ is not None
        for b, row in enumerate(lafa.last_neighbours_ or []):
            assert "the movie was very good" not in row or b != 0
            classes = {int(layer_index.classes[CORPUS.index(t)]) for t in row}
            if same_class:
                assert classes <= {int(lafa.last_target_[b])}
            else:
                assert len(row) == len(CORPUS) - (b == 0)


def test_first_variant_with_a_sentence_encoder(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    index = NeighbourIndex.build(CORPUS, bag_of_words, progress=False)
    lafa = get_method(
        "lafa",
        tiny_classifier,
        index=index,
        encoder=bag_of_words,
        k=2,
        aggregation="weighted_mean",
        token_repr="contextual",
        base="input_x_gradient",
        reduction="sum",
    )
    out = lafa.attribute(ids, mask, target)
    plain = get_method("input_x_gradient", tiny_classifier).attribute(ids, mask, target)
    assert out.shape == ids.shape and not torch.allclose(out, plain)
    with pytest.raises(ValueError, match="encoder"):
        lafa_for_model(tiny_classifier, index=index)


def test_target_none_is_the_predicted_class(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor], layer_index: LayerIndex
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    lafa = lafa_for_model(tiny_classifier, index=layer_index, base="saliency", k=2, epsilon=None)
    out = lafa.attribute(ids, attention_mask=mask)
    assert lafa.last_target_ is not None and torch.equal(lafa.last_target_, tiny_batch["target"])
    explicit = lafa.attribute(ids, target=tiny_batch["target"], additional_forward_args=(mask,))
    assert torch.equal(out, explicit)


def test_errors(tiny_classifier: TextClassifier, layer_index: LayerIndex) -> None:
    model, tok = tiny_classifier.model, tiny_classifier.tokenizer
    base = base_method(tiny_classifier, "saliency")
    bad = [
        ({"k": -1}, "k must be"),
        ({"epsilon": 1.5}, "quantile"),
        ({"aggregation": "mean"}, "unknown aggregation"),
        ({"kernel": "box"}, "unknown kernel"),
        ({"lam": -1.0}, "lam must be"),
        ({"sigma": 0.0}, "sigma"),
        ({"min_similarity": 2.0}, "min_similarity"),
        ({"top_matches": 0}, "top_matches"),
        ({"token_repr": "attention"}, "token_repr"),
        ({"aggregation": "weighted_mean", "token_repr": "contextual"}, "repr_layer"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            LAFA(model, tok, base, layer_index, **{"k": 3, **options})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index must be"):
        LAFA(model, tok, base, object(), k=3)
    with pytest.raises(ValueError, match="base must"):
        LAFA(model, tok, object(), layer_index, k=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown base"):
        base_method(tiny_classifier, "lime")
    lafa = LAFA(model, tok, base, layer_index, k=3)
    ids = torch.tensor([[2, 10, 3]])
    with pytest.raises(ValueError, match="token ids"):
        lafa.attribute(ids.float())
    with pytest.raises(ValueError, match="additional_forward_args"):
        lafa.attribute(ids, additional_forward_args=(torch.ones_like(ids), 3))
    with pytest.raises(ValueError, match="texts for"):
        lafa.attribute(ids, target=0, texts=["a", "b"])
    with pytest.raises(ValueError, match="out of range"):
        lafa.attribute(ids, target=5)
    with pytest.raises(ValueError, match="no real token"):  # the mask rule DLS applies too
        lafa.attribute(ids, target=0, attention_mask=torch.zeros_like(ids))


def test_registry(tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]) -> None:
    assert "lafa" in available_methods() and "smoothgrad" in available_methods()
    with pytest.raises(ValueError, match="bad options"):
        get_method("lafa", tiny_classifier, reference_texts=CORPUS, nope=1)
    with pytest.raises(ValueError, match="reference corpus"):
        get_method("lafa", tiny_classifier)
    lafa = get_method(
        "locally_aggregated_feature_attribution",
        tiny_classifier,
        reference_texts=CORPUS,
        layer=2,
        k=2,
        n_samples=2,
    )
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    assert lafa.attribute(ids, mask, target).shape == ids.shape


def test_registry_reads_the_task_a_default_model_records(
    tiny_classifier: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy
    import dataclasses

    from captum_layer_saliency.data import corpora

    asked: list[tuple[str, int | None]] = []

    def fake_corpus(task: str, size: int | None = None) -> list[str]:
        asked.append((task, size))
        return CORPUS

    monkeypatch.setattr(corpora, "default_corpus", fake_corpus)
    clf = dataclasses.replace(tiny_classifier, model=copy.deepcopy(tiny_classifier.model))
    clf.model.config.dls_default_task = "sst2"  # as load_default records it
    lafa = get_method("lafa", clf, layer=1, k=2, n_samples=2)
    assert asked == [("sst2", 5000)] and len(lafa.explainer.index) == len(CORPUS)  # type: ignore[attr-defined]
    get_method("lafa", clf, task="ag_news", corpus_size=7, layer=1, k=2, n_samples=2)
    assert asked[-1] == ("ag_news", 7)
