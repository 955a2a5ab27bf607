"""Bad inputs around the model: odd outputs, wrappers, modes, targets, lengths, the CLI's sources.

Each case asserts the error type and what its message tells the user (docs/reliability.md).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import SENTENCES, VOCAB, tiny_bert_config
from torch import nn

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.cli import sources as _sources
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.metrics import comprehensiveness
from captum_layer_saliency.models.targets import normalize_target, prediction_weights


def test_normalize_target_accepts_ints_and_refuses_the_rest() -> None:
    assert normalize_target(None, 3) is None
    assert normalize_target(1, 3).tolist() == [1, 1, 1]
    assert normalize_target((2,), 2).tolist() == [2, 2]
    assert normalize_target([0, 1, 1], 3, 2).tolist() == [0, 1, 1]
    assert normalize_target(torch.tensor([[1], [0]]), 2).tolist() == [1, 0]
    cases = [
        (1.0, "float"),
        ([0, 1.5], "float"),
        (torch.tensor([0.0, 1.0]), "float"),
        (True, "bool"),
        ([0, 1], "2 entries for a batch of 3"),
        ((0, 1), "multi-dimensional"),
        ([], "empty"),
        ("1", "must be None, an int"),
        (3, "out of range for an output of 2 classes"),
        ([0, -1, 0], "target -1 is out of range"),
    ]
    for target, match in cases:
        with pytest.raises(ValueError, match=match):
            normalize_target(target, 3, 2)


def test_prediction_weights_single_and_multi_label() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -1.0, -2.0]])
    assert prediction_weights(logits).tolist() == [[1, 0, 0], [0, 1, 0]]
    # Multi-label: every label over 0.5 (logit > 0); the top label when none is.
    assert prediction_weights(logits, "sigmoid").tolist() == [[1, 0, 1], [0, 1, 0]]


def _dls(clf, **options) -> DecodedLayerSaliency:
    return DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layers=clf.model.bert.embeddings, **options
    )


@pytest.mark.parametrize("method", ["dls", "lafa_base", "registry", "metric"])
def test_float_and_out_of_range_targets_are_refused_everywhere(
    tiny_classifier, tiny_batch, method: str
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    special = tiny_classifier.special_mask(ids)

    def run(target):
        if method == "dls":
            return _dls(tiny_classifier).attribute(ids, target=target, attention_mask=mask)
        if method == "registry":
            return get_method("input_x_gradient", tiny_classifier).attribute(ids, mask, target)
        if method == "lafa_base":
            return get_method("saliency", tiny_classifier).attribute(ids, mask, target)
        scores = torch.ones(ids.shape)
        return comprehensiveness(tiny_classifier.forward_func, ids, mask, scores, target, special)

    with pytest.raises(ValueError, match="float"):
        run(torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="float"):
        run(0.7)
    with pytest.raises(ValueError, match="target 2 is out of range for an output of 2 classes"):
        run(2)


def test_forward_returning_a_tuple_is_a_clear_error(tiny_classifier, tiny_batch) -> None:
    model = tiny_classifier.model
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]

    def forward(input_ids, attention_mask):
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits, out.logits.sum()

    dls = DecodedLayerSaliency(forward, model.bert.embeddings, tiny_classifier.lm_head)
    with pytest.raises(TypeError, match=r"returned a tuple \(Tensor, Tensor\).*only the logits"):
        dls.attribute(ids, target=0, additional_forward_args=(mask,), attention_mask=mask)


def test_encode_beyond_the_model_positions_names_both_lengths(tiny_classifier) -> None:
    with pytest.raises(ValueError, match=r"max_length=600 .* 64 positions.*truncation='truncate'"):
        tiny_classifier.encode(SENTENCES, max_length=600)
    # Ids built by hand, past the 64 positions, stop before the embeddings, in every method.
    ids = torch.full((1, 65), VOCAB.index("good"))
    mask = torch.ones_like(ids)
    for run in (
        lambda: _dls(tiny_classifier).attribute(ids, target=0, attention_mask=mask),
        lambda: get_method("occlusion", tiny_classifier).attribute(ids, mask, 0),
        lambda: tiny_classifier.forward_func(ids, mask),
    ):
        with pytest.raises(ValueError, match=r"65 tokens .* 64 positions.*truncation='truncate'"):
            run()
    long_text = " ".join(["good"] * 100)
    with pytest.raises(ValueError, match="102 tokens, more than max_length=32.*truncation"):
        tiny_classifier.encode(long_text)


def test_head_of_another_width_with_the_plain_constructor(tiny_classifier, tiny_batch) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    model = tiny_classifier.model
    head = nn.Linear(8, len(VOCAB))
    # A model: checked at construction.
    with pytest.raises(ValueError, match="hidden size 8 but the model's hidden size is 16"):
        DecodedLayerSaliency(model, model.bert.embeddings, head)
    # A plain forward function: on the first batch, before any decoding (the identity mapping
    # never decodes, yet the head would choose the layer).
    dls = DecodedLayerSaliency(
        lambda i, m: model(input_ids=i, attention_mask=m).logits, model.bert.embeddings, head
    )
    with pytest.raises(ValueError, match="hidden size 8 but this layer's hidden size is 16"):
        dls.attribute(ids, target=0, additional_forward_args=(mask,), attention_mask=mask)


def test_data_parallel_gets_advice_that_works(tiny_classifier) -> None:
    wrapped = nn.DataParallel(tiny_classifier.model)
    for build in (
        lambda: DecodedLayerSaliency.for_model(wrapped, tiny_classifier.lm_head),
        lambda: DecodedLayerSaliency(wrapped, wrapped.module.bert.embeddings, nn.Linear(16, 4)),
    ):
        with pytest.raises(ValueError, match=r"DataParallel.*`model.module`.*torchrun"):
            build()
    with pytest.raises(ValueError, match="device_ids .* must be None"):
        DecodedLayerSaliency(
            tiny_classifier.model, tiny_classifier.model.bert.embeddings, nn.Linear(16, 4),
            device_ids=[0],
        )  # fmt: skip
    # The advice works: the bare model explains.
    dls = DecodedLayerSaliency.for_model(wrapped.module, tiny_classifier.lm_head, layers=[0])
    enc = tiny_classifier.encode(SENTENCES[:1])
    assert dls.attribute(enc["input_ids"], target=0, attention_mask=enc["attention_mask"])[0].shape


def test_inference_mode_is_a_clear_error_and_no_grad_is_fine(tiny_classifier, tiny_batch) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    dls = _dls(tiny_classifier)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode.*autograd"):
        dls.attribute(ids, target=0, attention_mask=mask)
    attributor = get_method("input_x_gradient", tiny_classifier)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        attributor.attribute(ids, mask, 0)
    with torch.no_grad():
        assert dls.attribute(ids, target=0, attention_mask=mask).abs().sum() > 0


def test_training_mode_warns(tiny_classifier, tiny_batch) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    tiny_classifier.model.train()
    try:
        with pytest.warns(UserWarning, match="training mode: dropout"):
            get_method("saliency", tiny_classifier).attribute(ids, mask, 0)
    finally:
        tiny_classifier.model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("saliency", tiny_classifier).attribute(ids, mask, 0)


# -- the CLI's sources -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_clf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clf")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        T.BertForSequenceClassification(tiny_bert_config()).save_pretrained(root)
    T.BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}).save_pretrained(root)
    data = root / "data.jsonl"
    data.write_text('{"text": "the movie was good", "label": 1}\n', encoding="utf-8")
    return root


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().err


def test_compare_dls_without_an_lm_head_is_one_line(saved_clf, tmp_path, capsys) -> None:
    args = ["compare", "--model", str(saved_clf), "--data-file", str(saved_clf / "data.jsonl"),
            "--methods", "dls", "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    code, err = _cli(args, capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--lm-head" in errors[0] and "Traceback" not in err
    code, err = _cli([*args, "--lm-head", "./no/such/head"], capsys)
    assert code == 2
    assert "no such file or directory" in err and "Repo id" not in err
    code, err = _cli([*args[:2], str(tmp_path / "missing"), *args[3:]], capsys)
    assert code == 2 and "no such file or directory" in err


def test_an_unreachable_hub_turns_offline_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    start = time.perf_counter()
    assert _sources.prepare_hub() is False
    assert time.perf_counter() - start < 5
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _sources.prepare_hub() is False  # already offline: no network touched


def test_looks_like_path() -> None:
    assert _sources.looks_like_path("./x") and _sources.looks_like_path("a/b/c")
    assert not _sources.looks_like_path("bert-base-uncased")
    assert not _sources.looks_like_path("org/name")
