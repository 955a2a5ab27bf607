"""Word-level scores: the tokenizer's own words, special tokens dropped, sums kept, batch-free."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, tiny_bert_config
from transformers import BertForSequenceClassification, BertTokenizer
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from captum_layer_saliency.explaining import explain
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.words import (
    WordAlignmentError,
    aggregate_to_words,
    align_words,
    reduce_to_words,
)

PIECES = ["un", "##fl", "##in", "##ching", "##ly", "boiler", "##plate", "isn", "'", "t"]
TEXTS = [
    "Unflinchingly bleak, isn't it?",
    "the plot is boilerplate",
    "a very good movie , not boring !",
]


@pytest.fixture(scope="module")
def piece_tokenizer() -> BertTokenizer:
    """A slow word-piece tokenizer whose words split into several tokens."""
    vocab = VOCAB + PIECES
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


@pytest.fixture(scope="module")
def piece_classifier(piece_tokenizer: BertTokenizer) -> TextClassifier:
    config = tiny_bert_config(vocab_size=len(VOCAB) + len(PIECES))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = BertForSequenceClassification(config).eval()
        head = BertOnlyMLMHead(config).eval()
    return TextClassifier(
        model=model,
        tokenizer=piece_tokenizer,
        lm_head=head,
        labels=["negative", "positive"],
        name="tiny-pieces",
        max_length=32,
    )


def test_reduce_by_hand() -> None:
    # tokens: [CLS] un ##fl bleak [SEP] -> words "unfl" (0), "bleak" (1)
    scores = [9.0, 2.0, 3.0, -4.0, 7.0]
    words = [-1, 0, 0, 1, -1]
    assert reduce_to_words(scores, words, 2, "sum") == [5.0, -4.0]
    assert reduce_to_words(scores, words, 2, "mean") == [2.5, -4.0]
    assert reduce_to_words(scores, words, 2, "max") == [3.0, -4.0]
    assert reduce_to_words(scores, [-1, -1, -1, -1, 0], 2, "mean") == [7.0, 0.0]
    with pytest.raises(ValueError, match="unknown word reduction"):
        reduce_to_words(scores, words, 2, "median")
    with pytest.raises(ValueError, match="5 token scores for 4 tokens"):
        reduce_to_words(scores, words[:4], 2)


def test_words_are_the_tokenizers_words_with_their_original_text(
    piece_tokenizer: BertTokenizer,
) -> None:
    alignment = align_words(piece_tokenizer, TEXTS[0])
    tokens = piece_tokenizer.tokenize(TEXTS[0])
    assert tokens[:5] == ["un", "##fl", "##in", "##ching", "##ly"]
    # The original casing and characters, from the offsets; punctuation is its own word.
    assert alignment.words == ["Unflinchingly", "bleak", ",", "isn", "'", "t", "it", "?"]
    assert alignment.token_words[0] == alignment.token_words[-1] == -1  # [CLS], [SEP]
    assert alignment.token_words[1:6] == [0, 0, 0, 0, 0]
    pair = align_words(piece_tokenizer, "the plot", "is boilerplate")
    assert pair.words == ["the", "plot", "is", "boilerplate"]
    assert pair.segments == [0, 0, 1, 1]
    assert pair.token_words.count(-1) == 3  # [CLS], [SEP], [SEP]


@pytest.mark.parametrize("method", ["dls_layer1", "input_x_gradient"])
def test_word_scores_sum_to_the_token_scores(piece_classifier: TextClassifier, method: str) -> None:
    explanations = explain(piece_classifier, TEXTS, method=method, words=True)
    for e in explanations:
        assert e.words is not None and e.word_scores is not None and e.token_words is not None
        real = [s for s, w in zip(e.scores, e.token_words, strict=True) if w >= 0]
        assert sum(e.word_scores) == pytest.approx(sum(real), abs=1e-9)
        for k, word_score in enumerate(e.word_scores):
            pieces = [s for s, w in zip(e.scores, e.token_words, strict=True) if w == k]
            assert word_score == pytest.approx(sum(pieces), abs=1e-12)
        # Special tokens score 0 and belong to no word.
        specials = [s for s, w in zip(e.scores, e.token_words, strict=True) if w < 0]
        assert specials == [0.0] * len(specials)
    assert explanations[0].words[0] == "Unflinchingly"
    assert any(s != 0 for s in explanations[0].word_scores or [])


def test_mean_and_max_in_the_api(piece_classifier: TextClassifier) -> None:
    [by_sum] = explain(piece_classifier, TEXTS[0], method="ixg", words="sum")
    [by_mean] = explain(piece_classifier, TEXTS[0], method="ixg", words="mean")
    [by_max] = explain(piece_classifier, TEXTS[0], method="ixg", words="max")
    pieces = by_sum.scores[1:6]  # the five pieces of "Unflinchingly"
    assert by_mean.word_scores is not None and by_max.word_scores is not None
    assert by_mean.word_scores[0] == pytest.approx(sum(pieces) / 5)
    assert by_max.word_scores[0] == pytest.approx(max(pieces))
    with pytest.raises(ValueError, match="unknown word reduction"):
        explain(piece_classifier, TEXTS[0], method="ixg", words="median")


def test_batched_equals_one_at_a_time_and_padding_side_does_not_matter(
    piece_classifier: TextClassifier, piece_tokenizer: BertTokenizer
) -> None:
    batched = explain(piece_classifier, TEXTS, method="ixg", words=True, batch_size=3)
    single = explain(piece_classifier, TEXTS, method="ixg", words=True, batch_size=1)
    for b, s in zip(batched, single, strict=True):
        assert b.words == s.words and b.tokens == s.tokens
        assert b.word_scores == pytest.approx(s.word_scores, abs=1e-5)
    # The same scores placed in a left-padded batch give the same words.
    enc = piece_classifier.encode(TEXTS)
    scores = torch.randn(enc["input_ids"].shape) * enc["attention_mask"]
    right = aggregate_to_words(
        scores, TEXTS, piece_tokenizer, enc["input_ids"], enc["attention_mask"]
    )
    lengths = enc["attention_mask"].sum(1)
    left_ids, left_mask, left_scores = (torch.zeros_like(t) for t in (enc["input_ids"],) * 3)
    left_scores = torch.zeros_like(scores)
    width = enc["input_ids"].shape[1]
    for row, n in enumerate(lengths.tolist()):
        left_ids[row, width - n :] = enc["input_ids"][row, :n]
        left_mask[row, width - n :] = 1
        left_scores[row, width - n :] = scores[row, :n]
    left = aggregate_to_words(left_scores, TEXTS, piece_tokenizer, left_ids, left_mask)
    for r, l_ in zip(right, left, strict=True):
        assert r.words == l_.words
        assert r.scores == pytest.approx(l_.scores)


def test_rows_of_other_texts_are_refused(piece_classifier: TextClassifier) -> None:
    enc = piece_classifier.encode(TEXTS[:2])
    scores = torch.zeros(enc["input_ids"].shape)
    with pytest.raises(WordAlignmentError, match="not the tokenizer's encoding"):
        aggregate_to_words(
            scores,
            list(reversed(TEXTS[:2])),
            piece_classifier.tokenizer,
            enc["input_ids"],
            enc["attention_mask"],
        )
    with pytest.raises(ValueError, match="3 texts for a batch of 2"):
        aggregate_to_words(scores, TEXTS, piece_classifier.tokenizer, enc["input_ids"])


def test_a_truncated_row_keeps_the_words_it_has(piece_classifier: TextClassifier) -> None:
    [e] = explain(
        piece_classifier, TEXTS[2], method="ixg", words=True, max_length=5, truncation="truncate"
    )
    assert e.truncated
    assert e.words == ["a", "very", "good"]
    assert len(e.tokens) == 5


def test_a_byte_level_bpe_tokenizer_gives_the_words_without_their_spaces() -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["the movie was good", "the plot was bad"] * 20, vocab_size=300, min_frequency=1,
        special_tokens=["<s>", "</s>", "<pad>"],
    )  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    text = "the movie was unflinchingly bleak"
    alignment = align_words(tokenizer, text)
    assert alignment.words == ["the", "movie", "was", "unflinchingly", "bleak"]
    tokens = tokenizer.tokenize(text)  # no special tokens: one word index per token
    pieces = [t for t, w in zip(tokens, alignment.token_words, strict=True) if w == 3]
    assert len(pieces) > 1  # an unseen word: several byte-level pieces, one word
