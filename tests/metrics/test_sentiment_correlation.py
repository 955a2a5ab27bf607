"""The SST word-sentiment benchmark: word sentiments from trees, sub-word merging, Pearson r,
SmoothGrad and the hidden-dimension reductions, all on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from captum_layer_saliency.attr.reductions import reduce_hidden
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.data.sst_phrases import parse_tree
from captum_layer_saliency.data.sst_words import (
    leaf_labels,
    load_sst_word_sentiment,
    match_trees,
    word_sentiment,
)
from captum_layer_saliency.metrics import METRICS
from captum_layer_saliency.metrics.sentiment_correlation import (
    merge_to_words,
    sentiment_correlation,
    token_word_ids,
)
from captum_layer_saliency.models.classifier import TextClassifier

NAN = math.nan


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return cov / (sx * sy)


# -- word sentiment from the trees --------------------------------------------------------------


def test_leaf_labels_and_word_sentiment_by_hand() -> None:
    root, words = parse_tree("(3 (2 (2 a) (4 gorgeous)) (1 (0 awful) (2 8\u00a01\\/2)))")
    assert words == ["a", "gorgeous", "awful", "8", "1/2"]
    assert leaf_labels(root) == [2, 4, 0, 2, 2]  # a split leaf gives each word its label
    assert word_sentiment([2, 4, 0, 1, 3]) == [0.0, 2.0, 2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="0-4"):
        word_sentiment([5])


def test_match_trees_by_hand() -> None:
    trees = [parse_tree("(3 (2 a) (3 good))"), parse_tree("(2 (2 so) (2 so))")]
    matched, unmatched = match_trees(["a  good ", "so so", "other"], trees)
    assert [(i, w) for i, _, w in matched] == [(0, ["a", "good"])]  # neutral roots are not SST-2
    assert unmatched == ["so so", "other"]


def test_sst2_dev_and_test_match_their_trees() -> None:
    dev, dev_match = load_sst_word_sentiment("validation")
    assert (dev_match.sentences, dev_match.matched) == (872, 872)
    test, test_match = load_sst_word_sentiment("test")
    assert (test_match.sentences, test_match.matched, len(test_match.unmatched)) == (1821, 1815, 6)
    assert len(test) == 1815 and test[0]["text"] == "uneasy mishmash of styles and genres ."
    assert test[0]["word_sentiment"] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert test[0]["label"] == 0
    assert all(len(r["words"]) == len(r["word_sentiment"]) for r in dev)
    with pytest.raises(ValueError, match="unknown split"):
        load_sst_word_sentiment("train")


# -- merging and the correlation ----------------------------------------------------------------


def test_merge_to_words_by_hand() -> None:
    scores = torch.tensor([9.0, 1.0, 2.0, 4.0, 3.0, 9.0])
    word_ids = torch.tensor([-1, 0, 1, 1, 1, -1])  # [CLS] w0 w1 w1 w1 [SEP]; w2 has no token
    expected = {"sum": [1, 9, NAN], "mean": [1, 3, NAN], "max": [1, 4, NAN], "first": [1, 2, NAN]}
    for merge, values in expected.items():
        got = merge_to_words(scores, word_ids, 3, merge)
        torch.testing.assert_close(got, torch.tensor(values, dtype=torch.float64), equal_nan=True)
    with pytest.raises(ValueError, match="unknown merge"):
        merge_to_words(scores, word_ids, 3, "median")


def test_sentiment_correlation_by_hand() -> None:
    # Example 0: words w0 (tokens 1, 2), w1, w2, w3 -> sums 3, 1, 5, 2 against 2, 0, 2, 1.
    # Example 1: constant sentiment -> undefined. Example 2: one scored word -> undefined.
    scores = torch.tensor(
        [
            [0.0, 1.0, 2.0, 1.0, 5.0, 2.0, 0.0],
            [0.0, 1.0, 2.0, 3.0, 0, 0, 0],
            [0, 7.0, 0, 0, 0, 0, 0],
        ]
    )
    word_ids = torch.tensor(
        [[-1, 0, 0, 1, 2, 3, -1], [-1, 0, 1, 2, -1, -1, -1], [-1, 0, -1, -1, -1, -1, -1]]
    )
    sentiment = torch.tensor([[2.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, NAN], [2.0, NAN, NAN, NAN]])
    rho = sentiment_correlation(scores, word_ids, sentiment)
    assert rho[0].item() == pytest.approx(pearson([3, 1, 5, 2], [2, 0, 2, 1]))
    assert math.isnan(rho[1]) and math.isnan(rho[2])
    # "mean" merging: w0 = 1.5.
    mean = sentiment_correlation(scores[:1], word_ids[:1], sentiment[:1], merge="mean")
    assert mean[0].item() == pytest.approx(pearson([1.5, 1, 5, 2], [2, 0, 2, 1]))
    # Perfect agreement and constant scores.
    exact = sentiment_correlation(
        torch.tensor([[0.0, 4.0, 0.0, 2.0]]),
        torch.tensor([[-1, 0, 1, 2]]),
        torch.tensor([[2.0, 0, 1]]),
    )
    assert exact[0].item() == pytest.approx(1.0)
    flat = sentiment_correlation(
        torch.ones(1, 4), torch.tensor([[-1, 0, 1, 2]]), torch.tensor([[2.0, 0, 1]])
    )
    assert math.isnan(flat[0])
    with pytest.raises(ValueError, match="batch, seq"):
        sentiment_correlation(scores, word_ids[:, :3], sentiment)
    with pytest.raises(ValueError, match="batch, words"):
        sentiment_correlation(scores, word_ids, sentiment[:2])


def test_token_word_ids_merge_sub_words() -> None:
    from transformers import AutoTokenizer

    from captum_layer_saliency.zoo.load import encoder_path

    tok = AutoTokenizer.from_pretrained(str(encoder_path()))  # the bundled MiniLM tokenizer
    text = "it 's a gorgeously well-made film"
    words = ["it", "'s", "a", "gorgeously", "well-made", "film"]
    ids = tok(text)["input_ids"]
    # [CLS] it ' s a gorgeous ##ly well - made film [SEP]
    assert token_word_ids(tok, text, words, ids) == [-1, 0, 1, 1, 2, 3, 3, 4, 4, 4, 5, -1]
    with pytest.raises(ValueError, match="not found"):
        token_word_ids(tok, text, ["it", "xyz"], ids)
    with pytest.raises(ValueError, match="reproduce"):
        token_word_ids(tok, text, words, [*ids[:-1], 0])


def test_the_metric_is_registered() -> None:
    metric = METRICS["word_sentiment_r"]
    assert metric.higher_is_better and metric.kind == "plausibility"


# -- reductions and SmoothGrad ------------------------------------------------------------------


def test_reductions_by_hand() -> None:
    attr = torch.tensor([[[3.0, -4.0], [1.0, 1.0]]])
    torch.testing.assert_close(reduce_hidden(attr, "sum"), torch.tensor([[-1.0, 2.0]]))
    torch.testing.assert_close(reduce_hidden(attr, "l1"), torch.tensor([[7.0, 2.0]]))
    torch.testing.assert_close(reduce_hidden(attr, "l2"), torch.tensor([[5.0, math.sqrt(2)]]))
    torch.testing.assert_close(reduce_hidden(attr, "squared_l2"), torch.tensor([[25.0, 2.0]]))
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce_hidden(attr, "max")


def test_smoothgrad_without_noise_is_saliency_and_batch_independent(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    for reduction in ("l2", "squared_l2"):
        plain = get_method("saliency", tiny_classifier, norm=reduction).attribute(ids, mask, target)
        still = get_method(
            "smoothgrad", tiny_classifier, noise=0.0, n_samples=2, reduction=reduction
        ).attribute(ids, mask, target)
        torch.testing.assert_close(still, plain, atol=1e-6, rtol=1e-5)
    sg = get_method("smoothgrad", tiny_classifier, n_samples=4, noise=0.5, internal_batch_size=3)
    batched = sg.attribute(ids, mask, target)
    assert not torch.allclose(
        batched, get_method("saliency", tiny_classifier).attribute(ids, mask, target)
    )
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        one = sg.attribute(ids[b : b + 1, real], mask[b : b + 1, real], target[b : b + 1])
        torch.testing.assert_close(batched[b, real], one[0], atol=1e-6, rtol=1e-5)
    # The mean of per-sample maps: 4 samples in one chunk equal 4 in chunks of 3 and 1.
    whole = get_method("smoothgrad", tiny_classifier, n_samples=4, noise=0.5)
    torch.testing.assert_close(whole.attribute(ids, mask, target), batched, atol=1e-6, rtol=1e-5)
    for bad, message in (({"n_samples": 0}, "n_samples"), ({"noise": -1.0}, "noise")):
        with pytest.raises(ValueError, match=message):
            get_method("smoothgrad", tiny_classifier, **bad)
    with pytest.raises(ValueError, match="unknown reduction"):
        get_method("smoothgrad", tiny_classifier, reduction="max")


# -- the harness ----------------------------------------------------------------------------------


def test_the_harness_scores_word_sentiment_r(tiny_classifier: TextClassifier, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from compare_fakes import toy_dataset

    from captum_layer_saliency.compare import load_rows, run_comparison
    from captum_layer_saliency.compare.runner import InvalidComparisonError

    texts = ["the movie was very good", "boring .", "i think the acting was awful"]
    data = toy_dataset(texts)
    sentiment = [[0.0, 1.0, 0.0, 1.0, 2.0], [2.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0, 2.0]]
    data = data.add_column("word_sentiment", sentiment)
    run_comparison(
        tiny_classifier,
        data,
        ["saliency"],
        tmp_path / "a",
        metrics=["word_sentiment_r"],
        batch_size=2,
        progress=False,
        report=False,
    )
    rows = {r["index"]: r for r in load_rows(tmp_path / "a")}
    method = get_method("saliency", tiny_classifier)
    for i, text in enumerate(texts):
        enc = tiny_classifier.encode([text])
        ids, mask = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            target = tiny_classifier.forward_func(ids, mask).argmax(-1)
        scores = method.attribute(ids, mask, target)
        # One token per word here: the word scores are the token scores between [CLS] and [SEP].
        expected = pearson(scores[0, 1:-1].tolist(), sentiment[i])
        got = rows[data[i]["idx"]]["metrics"]["word_sentiment_r"]
        assert got == pytest.approx(expected, rel=1e-5)
    # Without the column, asking for the metric is a clear error; by default it is left out.
    with pytest.raises(InvalidComparisonError, match="word sentiments"):
        run_comparison(
            tiny_classifier,
            toy_dataset(texts),
            ["saliency"],
            tmp_path / "b",
            metrics=["word_sentiment_r"],
            progress=False,
            report=False,
        )
    run_comparison(
        tiny_classifier,
        toy_dataset(texts),
        ["saliency"],
        tmp_path / "c",
        metrics=None,
        batch_size=3,
        progress=False,
        report=False,
    )
    assert "word_sentiment_r" not in load_rows(tmp_path / "c")[0]["metrics"]
