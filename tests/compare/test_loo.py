"""Leave-one-out: hand-computed drops, word units, the replacement token, batching, bad options."""

from __future__ import annotations

import pytest
import torch

from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.compare.plan import method_passes
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.words import word_index
from captum_layer_saliency.zoo.load import load_default


def _logit(clf: TextClassifier, ids: torch.Tensor, mask: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(clf.forward_func(ids, mask)[0, target])


def test_each_token_scores_the_drop_when_masked(tiny_classifier: TextClassifier) -> None:
    enc = tiny_classifier.encode(["the movie was good"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    scores = get_method("loo", tiny_classifier, unit="token").attribute(ids, mask, 1)
    mask_id = tiny_classifier.tokenizer.mask_token_id
    full = _logit(tiny_classifier, ids, mask, 1)
    assert scores[0, 0] == 0 and scores[0, -1] == 0  # [CLS], [SEP]
    for i in range(1, ids.shape[1] - 1):
        left_out = ids.clone()
        left_out[0, i] = mask_id
        drop = full - _logit(tiny_classifier, left_out, mask, 1)
        assert float(scores[0, i]) == pytest.approx(drop)


def test_pad_replaces_where_asked_and_batches_agree(tiny_classifier: TextClassifier) -> None:
    enc = tiny_classifier.encode(["the movie was very good", "boring ."])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    method = get_method("loo", tiny_classifier, baseline_token_id=0, batch_size=2)
    assert method.token_id == 0
    both = method.attribute(ids, mask, torch.tensor([1, 0]))
    n = int(mask[1].sum())
    one = method.attribute(ids[1:, :n], mask[1:, :n], torch.tensor([0]))
    torch.testing.assert_close(both[1:, :n], one, atol=1e-5, rtol=1e-4)
    left_out = ids[:1].clone()
    left_out[0, 1] = 0
    drop = _logit(tiny_classifier, ids[:1], mask[:1], 1) - _logit(
        tiny_classifier, left_out, mask[:1], 1
    )
    assert float(both[0, 1]) == pytest.approx(drop, abs=1e-5)


def test_a_word_is_left_out_whole_and_its_drop_shared() -> None:
    clf = load_default("sst2")
    enc = clf.encode(["an unbelievably dull film"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    words = word_index(clf.tokenizer, ids, mask)[0]
    pieces = (words == 1).nonzero().flatten()
    assert len(pieces) > 1  # "unbelievably" is several word pieces
    scores = get_method("loo", clf).attribute(ids, mask, 0)[0]
    left_out = ids.clone()
    left_out[0, pieces] = clf.tokenizer.mask_token_id
    drop = _logit(clf, ids, mask, 0) - _logit(clf, left_out, mask, 0)
    assert float(scores[pieces].sum()) == pytest.approx(drop, abs=1e-4)
    assert torch.allclose(scores[pieces], scores[pieces[0]])


def test_word_index_numbers_words_and_skips_specials() -> None:
    clf = load_default("sst2")
    enc = clf.encode(["an unbelievably good , film", "ok"])
    words = word_index(clf.tokenizer, enc["input_ids"], enc["attention_mask"])
    tokens = clf.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    expected = [-1 if t in ("[CLS]", "[SEP]") else None for t in tokens]
    assert words[0, 0] == -1 and int(words[0].max()) == 4  # an, unbelievably, good, ",", film
    assert [w for w, e in zip(words[0].tolist(), expected, strict=True) if e == -1] == [-1, -1]
    assert words[1].tolist()[: int(enc["attention_mask"][1].sum())] == [-1, 0, -1]


def test_bad_options_and_the_plan(tiny_classifier: TextClassifier) -> None:
    with pytest.raises(ValueError, match="unit must be one of"):
        get_method("loo", tiny_classifier, unit="sentence")
    with pytest.raises(ValueError, match="batch_size"):
        get_method("loo", tiny_classifier, batch_size=0)
    assert method_passes("loo", 7) == 8.0
