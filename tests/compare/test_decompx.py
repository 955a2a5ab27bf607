"""DecompX: completeness on tiny random BERT/RoBERTa/ELECTRA and the default models, batching,
the plan's pass count, the model left as found, and a clear error for other families."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from tiny_models import TINY, family_configs

from captum_layer_saliency.compare.methods.decomposition import decompose_logits
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.compare.plan import method_passes
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.surgery import UnsupportedModelError
from captum_layer_saliency.zoo.load import load_default

WIDE = {**TINY, "initializer_range": 0.5}


def _classifier(family: str) -> torch.nn.Module:
    torch.manual_seed(1)
    if family == "bert":
        return T.BertForSequenceClassification(T.BertConfig(**WIDE, num_labels=3)).eval()
    if family == "roberta":
        return T.RobertaForSequenceClassification(T.RobertaConfig(**WIDE, num_labels=3)).eval()
    config = T.ElectraConfig(embedding_size=8, **WIDE, num_labels=3)
    return T.ElectraForSequenceClassification(config).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 1  # the pad id
    return ids, mask


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_parts_sum_to_the_logits_and_batching_changes_nothing(family: str) -> None:
    model = _classifier(family)
    ids, mask = _batch()
    parts = decompose_logits(model, ids, mask)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.abs().max() > 0.5  # not a trivially flat model
    torch.testing.assert_close(parts.sum(1), logits, atol=1e-4, rtol=1e-4)
    assert (parts[1, 6:] == 0).all()  # padding gets nothing
    for row in range(3):
        n = int(mask[row].sum())
        one = decompose_logits(model, ids[row : row + 1, :n], mask[row : row + 1, :n])
        torch.testing.assert_close(one, parts[row : row + 1, :n], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("task", ["sst2", "ag_news", "hatexplain"])
def test_complete_on_the_default_models(task: str) -> None:
    clf = load_default(task)
    enc = clf.encode(["a gripping , funny and utterly charming film", "it is dull"])
    parts = decompose_logits(clf.model, enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        logits = clf.forward_func(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(parts.sum(1), logits, atol=1e-4, rtol=1e-4)


def test_registry_method_scores_the_target_part(tiny_classifier: TextClassifier) -> None:
    enc = tiny_classifier.encode(["the movie was very good", "boring ."])
    model = tiny_classifier.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    method = get_method("decompx", tiny_classifier)
    scores = method.attribute(enc["input_ids"], enc["attention_mask"], torch.tensor([1, 0]))
    parts = decompose_logits(model, enc["input_ids"], enc["attention_mask"])
    special = tiny_classifier.special_mask(enc["input_ids"])
    expected = torch.where(special, 0.0, parts[torch.arange(2), :, torch.tensor([1, 0])])
    torch.testing.assert_close(scores, expected)
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_one_forward_in_the_plan() -> None:
    assert method_passes("decompx", 40) == 1.0


@pytest.mark.parametrize("family", ["gpt2", "llama", "distilbert"])
def test_other_families_get_a_clear_error(family: str, tiny_tokenizer: object) -> None:
    config = family_configs()[family]
    config.num_labels = 2
    config.pad_token_id = 0
    model = T.AutoModelForSequenceClassification.from_config(config).eval()
    with pytest.raises(UnsupportedModelError, match="BERT family"):
        decompose_logits(model, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3))
    clf = TextClassifier(model=model, tokenizer=tiny_tokenizer, labels=["a", "b"])
    with pytest.raises(UnsupportedModelError, match="BERT family"):
        get_method("decompx", clf)


def test_relative_positions_are_refused() -> None:
    config = T.BertConfig(**WIDE, position_embedding_type="relative_key")
    model = T.BertForSequenceClassification(config).eval()
    with pytest.raises(UnsupportedModelError, match="absolute"):
        decompose_logits(model, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3))


def test_two_threads_at_once_get_the_one_thread_answer(tiny_classifier: TextClassifier) -> None:
    from concurrent.futures import ThreadPoolExecutor

    enc = tiny_classifier.encode(["the movie was very good", "boring ."])
    args = (tiny_classifier.model, enc["input_ids"], enc["attention_mask"])
    alone = decompose_logits(*args)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: decompose_logits(*args), range(4)))
    for result in results:
        torch.testing.assert_close(result, alone)
    assert not tiny_classifier.model.training
