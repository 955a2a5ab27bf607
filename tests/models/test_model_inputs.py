"""Every input a classifier takes reaches it: sentence pairs, left padding, multi-label heads.

Each test compares with the model called directly on the tokenizer's full encoding, or with the
same example explained alone, so a dropped ``token_type_ids`` or a shifted position shows as a
wrong value, not only as an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import tiny_bert_config
from torch import Tensor, nn

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.lafa import LAFA
from captum_layer_saliency.attr.neighbours import NeighbourIndex
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.metrics import comprehensiveness
from captum_layer_saliency.metrics.deletion import full_log_probs
from captum_layer_saliency.models.classifier import TextClassifier, classifier_forward
from captum_layer_saliency.models.inputs import position_ids_from_mask, segment_ids

sys.path.insert(0, str(Path(__file__).parents[1]))
from tiny_models import CAUSAL, family_configs  # noqa: E402

PREMISES = ["the food was very bad", "the movie was good"]
HYPOTHESES = ["but the acting was so fun !", "it is boring"]


@pytest.fixture(scope="module")
def pair_clf(tiny_tokenizer: T.BertTokenizer) -> TextClassifier:
    """A tiny BERT whose segment embeddings matter (wide random init), with its MLM head."""
    config = tiny_bert_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = T.BertForSequenceClassification(config).eval()
        head = T.models.bert.modeling_bert.BertOnlyMLMHead(config).eval()
    return TextClassifier(model, tiny_tokenizer, head, ["a", "b"], "pair", max_length=32)


def _true_logits(clf: TextClassifier, enc: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        return clf.model(**enc).logits


def test_encode_takes_pairs_and_the_forward_derives_their_segments(pair_clf) -> None:
    enc = pair_clf.encode(PREMISES, HYPOTHESES)
    ref = pair_clf.tokenizer(PREMISES, HYPOTHESES, padding=True, return_tensors="pt")
    assert torch.equal(enc["token_type_ids"], ref["token_type_ids"])
    assert enc["token_type_ids"].sum() > 0  # the second sentences are segment 1
    derived = segment_ids(enc["input_ids"], enc["attention_mask"], pair_clf.tokenizer.sep_token_id)
    assert torch.equal(derived, ref["token_type_ids"] * ref["attention_mask"])
    truth = _true_logits(pair_clf, enc)
    with torch.no_grad():
        got = pair_clf.forward_func(enc["input_ids"], enc["attention_mask"])
        dropped = pair_clf.model(enc["input_ids"], enc["attention_mask"]).logits
    assert torch.allclose(got, truth, atol=1e-6)
    assert not torch.allclose(dropped, truth, atol=1e-3)  # segments change the output
    assert pair_clf.token_lengths(PREMISES, HYPOTHESES) == enc["attention_mask"].sum(-1).tolist()
    with pytest.raises(ValueError, match="2 texts but 1 text pairs"):
        pair_clf.encode(PREMISES, HYPOTHESES[:1])


def _dls(clf: TextClassifier, **options) -> DecodedLayerSaliency:
    layer = clf.model.bert.encoder.layer[0]
    return DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layers=layer, selector=None, **options
    )


def test_dls_on_a_pair_equals_explicit_segments_and_differs_without_them(pair_clf) -> None:
    enc = pair_clf.encode(PREMISES, HYPOTHESES)
    ids, mask, tt = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    dls = _dls(pair_clf)
    derived = dls.attribute(ids, target=1, attention_mask=mask)
    explicit = dls.attribute(ids, target=1, attention_mask=mask, token_type_ids=tt)
    zeros = dls.attribute(ids, target=1, attention_mask=mask, token_type_ids=torch.zeros_like(tt))
    assert torch.allclose(derived, explicit, atol=1e-7)
    assert not torch.allclose(derived, zeros, atol=1e-4)
    # The prediction it explains is the model's on the whole pair.
    dls.attribute(ids, attention_mask=mask, token_type_ids=tt)
    assert torch.equal(dls.last_target_, _true_logits(pair_clf, enc).argmax(-1))
    with pytest.raises(ValueError, match="takes no input named 'segment_ids'"):
        dls.attribute(ids, target=1, attention_mask=mask, segment_ids=tt)
    with pytest.raises(ValueError, match="must start with the ids' shape"):
        dls.attribute(ids, target=1, attention_mask=mask, token_type_ids=tt[:, :3])


@pytest.mark.parametrize(
    "method",
    ["saliency", "input_x_gradient", "integrated_gradients", "deeplift", "occlusion",
     "attention_cls", "dls"],
)  # fmt: skip
def test_registry_methods_see_the_pair_segments(pair_clf, method: str) -> None:
    enc = pair_clf.encode(PREMISES, HYPOTHESES)
    ids, mask, tt = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    options = {"layers": [1]} if method == "dls" else {}
    attributor = get_method(method, pair_clf, **options)
    target = torch.tensor([1, 0])
    derived = attributor.attribute(ids, mask, target)
    explicit = attributor.attribute(ids, mask, target, token_type_ids=tt)
    zeros = attributor.attribute(ids, mask, target, token_type_ids=torch.zeros_like(tt))
    assert torch.allclose(derived, explicit, atol=1e-6)
    assert not torch.allclose(derived, zeros, atol=1e-5)


def test_metrics_read_the_pair_with_its_segments(pair_clf) -> None:
    enc = pair_clf.encode(PREMISES, HYPOTHESES)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    target = torch.tensor([0, 1])
    log_p = full_log_probs(pair_clf.forward_func, ids, mask, target)
    truth = torch.log_softmax(_true_logits(pair_clf, enc).double(), -1).gather(1, target[:, None])
    assert torch.allclose(log_p, truth.squeeze(1), atol=1e-6)


def test_lafa_takes_model_inputs_by_keyword(pair_clf) -> None:
    corpus = ["the movie was good", "a boring film", "the acting was fun"]

    def encoder(texts: list[str]) -> Tensor:
        return torch.stack([torch.tensor([len(t), t.count(" ") + 1.0]) for t in texts])

    index = NeighbourIndex.build(corpus, encoder, progress=False)
    lafa = LAFA(
        pair_clf.model,
        pair_clf.tokenizer,
        get_method("input_x_gradient", pair_clf),
        index,
        encoder=encoder,
        k=1,
        aggregation="weighted_mean",
        min_similarity=-1.0,
    )
    enc = pair_clf.encode(PREMISES, HYPOTHESES)
    ids, mask, tt = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    derived = lafa.attribute(ids, target=1, attention_mask=mask, texts=PREMISES)
    explicit = lafa.attribute(ids, target=1, attention_mask=mask, texts=PREMISES, token_type_ids=tt)
    zeros = lafa.attribute(
        ids, target=1, attention_mask=mask, texts=PREMISES, token_type_ids=torch.zeros_like(tt)
    )
    assert torch.allclose(derived, explicit, atol=1e-6)
    assert not torch.allclose(derived, zeros, atol=1e-5)
    for bad, match in ((2, "out of range"), (1.0, "float"), ([0.5, 1.0], "float")):
        with pytest.raises(ValueError, match=match):
            lafa.attribute(ids, target=bad, attention_mask=mask, texts=PREMISES)


# -- left padding -------------------------------------------------------------------------------


def _family_model(name: str, config: T.PretrainedConfig) -> nn.Module:
    config.num_labels = 2
    config.pad_token_id = 0
    config._attn_implementation = "eager"
    for key in ("initializer_range",):
        if hasattr(config, key):
            setattr(config, key, 0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return T.AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("family", sorted(family_configs()))
def test_left_padded_batch_equals_each_example_alone(family: str) -> None:
    """Decoders: a left-padded row == the example alone (positions follow the mask). Encoders
    read [CLS] at position 0, so left padding is refused with what to do instead."""
    config = family_configs()[family]
    model = _family_model(family, config)
    forward = classifier_forward(model)
    short = torch.tensor([[5, 9, 14, 7]])
    long = torch.tensor([[5, 11, 12, 13, 9, 8, 7]])
    pad = long.shape[1] - short.shape[1]
    ids = torch.cat([torch.cat([torch.zeros(1, pad, dtype=torch.long), short], 1), long])
    mask = (torch.arange(ids.shape[1]) >= torch.tensor([[pad], [0]])).long()
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or config.n_embd
    head = nn.Linear(hidden, config.vocab_size)
    if family not in CAUSAL:
        assert forward.pools_first_token
        with pytest.raises(ValueError, match="left-padded.*padding_side"):
            forward(ids, mask)
        if family != "albert":  # one shared block: no layer attribution for ALBERT
            dls = DecodedLayerSaliency.for_model(model, head, layers=[-1], selector=None)
            with pytest.raises(ValueError, match="left-padded"):
                dls.attribute(ids, target=1, attention_mask=mask)
        # Right padding: the row equals the example alone.
        ids = torch.cat([torch.cat([short, torch.zeros(1, pad, dtype=torch.long)], 1), long])
        mask = mask.flip(-1).roll(0)
        mask[1] = 1
        with torch.no_grad():
            batched, alone = forward(ids, mask), forward(short, torch.ones_like(short))
        assert torch.allclose(batched[0], alone[0], atol=1e-5), family
        return
    assert forward.derives_positions
    dls = DecodedLayerSaliency.for_model(model, head, layers=[-1], selector=None)
    with torch.no_grad():
        batched = forward(ids, mask)
        alone = forward(short, torch.ones_like(short))
        # Without position ids from the mask, the padded row would be another input.
        shifted = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(batched[0], alone[0], atol=1e-5), family
    if family == "gpt2":  # learned absolute positions: shifted by the padding
        assert not torch.allclose(shifted[0], alone[0], atol=1e-4)
    padded_map = dls.attribute(ids, target=1, attention_mask=mask)[0]
    alone_map = dls.attribute(short, target=1, attention_mask=torch.ones_like(short))[0]
    assert torch.allclose(padded_map[0, pad:], alone_map[0], atol=1e-5), family
    assert torch.all(padded_map[0, :pad] == 0)


def test_position_ids_follow_the_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


# -- multi-label heads --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi_label(tiny_tokenizer: T.BertTokenizer) -> TextClassifier:
    config = tiny_bert_config(num_labels=3)
    config.problem_type = "multi_label_classification"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = T.BertForSequenceClassification(config).eval()
        head = T.models.bert.modeling_bert.BertOnlyMLMHead(config).eval()
    return TextClassifier(model, tiny_tokenizer, head, ["x", "y", "z"], "multi", max_length=32)


def test_multi_label_prediction_is_every_label_over_one_half(multi_label) -> None:
    texts = ["the movie was very good", "boring .", "i think the acting was awful"]
    enc = multi_label.encode(texts)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        logits = multi_label.forward_func(ids, mask)
    on = logits > 0
    dls = _dls(multi_label)
    explained = dls.attribute(ids, attention_mask=mask)
    # Gradient x activation is linear in the output: the map of the predicted labels' summed
    # logit is the sum of each predicted label's map (the top label where none is over 0.5).
    expected = torch.zeros_like(explained)
    for b in range(ids.shape[0]):
        labels = on[b].nonzero().flatten().tolist() or [int(logits[b].argmax())]
        for label in labels:
            expected[b] += dls.attribute(
                ids[b : b + 1], target=label, attention_mask=mask[b : b + 1]
            )[0]
    assert torch.allclose(explained, expected, atol=1e-6)
    assert dls.last_target_ is not None
    probs = multi_label.predict_proba(texts)
    assert torch.allclose(probs, torch.sigmoid(logits), atol=1e-6)
    assert probs.sum(-1).sub(1).abs().max() > 1e-3  # not a softmax


def test_multi_label_metrics_use_the_sigmoid(multi_label) -> None:
    enc = multi_label.encode(["the movie was very good and fun", "i think it is boring"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = multi_label.special_mask(ids)
    scores = torch.randn(ids.shape, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 2])
    forward = multi_label.forward_func
    got = comprehensiveness(forward, ids, mask, scores, target, special)

    # softmax([z, 0])[0] = sigmoid(z): per example, a two-class softmax of the target's logit.
    want = _reference_comprehensiveness(forward, ids, mask, scores, target, special)
    # float32 forwards batched differently: equal to float32 precision.
    assert torch.allclose(got, want, atol=1e-6)
    softmax_value = comprehensiveness(_plain(forward), ids, mask, scores, target, special)
    assert not torch.allclose(got, softmax_value, atol=1e-4)


def _plain(forward):
    """The same logits, with no ``activation`` attribute: read with a softmax."""
    return lambda ids, mask: forward(ids, mask)


def _reference_comprehensiveness(forward, ids, mask, scores, target, special) -> Tensor:
    """Comprehensiveness with the per-label sigmoid, through a two-column softmax per example."""
    values = []
    for b in range(ids.shape[0]):
        label = int(target[b])

        def two_class(i: Tensor, m: Tensor, label: int = label) -> Tensor:
            z = forward(i, m)[:, label : label + 1]
            return torch.cat([z, torch.zeros_like(z)], 1)

        values.append(
            comprehensiveness(
                two_class,
                ids[b : b + 1],
                mask[b : b + 1],
                scores[b : b + 1],
                torch.tensor([0]),
                special[b : b + 1],
            )
        )
    return torch.cat(values)


# -- the comparison harness -----------------------------------------------------------------------


def _attributions(out: Path) -> dict[tuple[int, str], list[float]]:
    from captum_layer_saliency.compare import load_rows

    return {(r["index"], r["method"]): r["attributions"] for r in load_rows(out)}


def test_harness_explains_pairs_with_their_segments(pair_clf, tmp_path: Path) -> None:
    from captum_layer_saliency.compare import load_rows
    from captum_layer_saliency.compare.runner import run_comparison

    rows = [
        {"text": p, "text_pair": h, "label": i % 2}
        for i, (p, h) in enumerate(zip(PREMISES, HYPOTHESES, strict=True))
    ]
    out = run_comparison(
        pair_clf, rows, ["input_x_gradient"], tmp_path / "run", metrics=["comprehensiveness"],
        batch_size=2, progress=False, report=False,
    )  # fmt: skip
    enc = pair_clf.encode(PREMISES, HYPOTHESES)
    truth = _true_logits(pair_clf, enc).argmax(-1).tolist()
    got = sorted(load_rows(out), key=lambda r: r["index"])
    assert [r["prediction"] for r in got] == truth
    assert all(r["tokens"].count("[SEP]") == 2 for r in got)
    # The scores are the method's on the full pair encoding, segments included.
    method = get_method("input_x_gradient", pair_clf)
    expected = method.attribute(
        enc["input_ids"],
        enc["attention_mask"],
        torch.tensor(truth),
        **{"token_type_ids": enc["token_type_ids"]},
    )
    for i, row in enumerate(got):
        real = enc["attention_mask"][i].bool()
        assert torch.allclose(torch.tensor(row["attributions"]), expected[i][real], atol=1e-5)


def test_harness_on_a_left_padding_decoder_does_not_depend_on_batch_size(
    tiny_tokenizer: T.BertTokenizer, tmp_path: Path
) -> None:
    import copy

    from captum_layer_saliency.compare.runner import run_comparison

    config = family_configs()["gpt2"]
    model = _family_model("gpt2", config)
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.padding_side = "left"
    clf = TextClassifier(model, tokenizer, None, ["a", "b"], "gpt2", max_length=32)
    texts = ["the movie was very good", "boring .", "i think the acting was awful but fun !"]
    rows = [{"text": t, "label": 0} for t in texts]
    runs = {}
    for size in (1, 3):
        out = run_comparison(
            clf, rows, ["input_x_gradient", "occlusion"], tmp_path / f"b{size}",
            metrics=["comprehensiveness"], batch_size=size, progress=False, report=False,
        )  # fmt: skip
        runs[size] = _attributions(out)
    assert runs[1].keys() == runs[3].keys()
    for key in runs[1]:
        assert torch.allclose(torch.tensor(runs[1][key]), torch.tensor(runs[3][key]), atol=1e-5)


def _flipped_segments(tokenizer: T.BertTokenizer) -> T.BertTokenizer:
    """The tokenizer with another segment convention (first sentence 1, second 0): its segment
    ids cannot be derived from [SEP], so they must travel with the batch."""
    import copy

    class Flipped(type(tokenizer)):  # type: ignore[misc]
        def __call__(self, *args, **kwargs):
            enc = super().__call__(*args, **kwargs)
            if isinstance(enc.get("token_type_ids"), Tensor):
                enc["token_type_ids"] = enc["attention_mask"] - enc["token_type_ids"]
            return enc

    flipped = copy.deepcopy(tokenizer)
    flipped.__class__ = Flipped
    return flipped


def test_harness_passes_inputs_it_cannot_derive(pair_clf, tmp_path: Path) -> None:
    from captum_layer_saliency.compare import load_rows
    from captum_layer_saliency.compare.runner import run_comparison
    from captum_layer_saliency.metrics import METRICS

    clf = TextClassifier(
        pair_clf.model, _flipped_segments(pair_clf.tokenizer), None, ["a", "b"], "flip", 32
    )
    with pytest.warns(UserWarning, match="segment ids do not follow"):
        enc = clf.encode(PREMISES, HYPOTHESES)
    assert clf.forward_func.underivable(enc["input_ids"], enc["attention_mask"], enc) != {}
    rows = [
        {"text": p, "text_pair": h, "label": 0} for p, h in zip(PREMISES, HYPOTHESES, strict=True)
    ]
    names = ["comprehensiveness", "deletion_auc", "kendall_tau_loo"]
    with pytest.warns(UserWarning, match="segment ids do not follow"):
        out = run_comparison(
            clf, rows, ["input_x_gradient"], tmp_path / "run", metrics=names, batch_size=2,
            progress=False, report=False,
        )  # fmt: skip
    got = sorted(load_rows(out), key=lambda r: r["index"])
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    truth = _true_logits(clf, enc).argmax(-1)
    assert [r["prediction"] for r in got] == truth.tolist()
    scores = get_method("input_x_gradient", clf).attribute(ids, mask, truth, token_type_ids=types)
    special = clf.special_mask(ids)
    for name in names:
        fn = METRICS[name].fn
        want = fn(clf.forward_func, ids, mask, scores, truth, special, token_type_ids=types)
        derived = fn(clf.forward_func, ids, mask, scores, truth, special)
        assert not torch.allclose(want, derived, atol=1e-6)  # the segments matter
        for i, row in enumerate(got):
            assert row["metrics"][name] == pytest.approx(float(want[i]), abs=1e-5)
    for i, row in enumerate(got):
        real = mask[i].bool()
        assert torch.allclose(torch.tensor(row["attributions"]), scores[i][real], atol=1e-5)


def test_explain_passes_inputs_it_cannot_derive(pair_clf) -> None:
    from captum_layer_saliency.explaining import explain

    clf = TextClassifier(
        pair_clf.model, _flipped_segments(pair_clf.tokenizer), None, ["a", "b"], "flip", 32
    )
    with pytest.warns(UserWarning, match="segment ids do not follow"):
        got = explain(clf, PREMISES, text_pairs=HYPOTHESES, method="input_x_gradient")
        enc = clf.encode(PREMISES, HYPOTHESES)
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    truth = _true_logits(clf, enc).argmax(-1)
    assert [e.predicted for e in got] == truth.tolist()
    scores = get_method("input_x_gradient", clf).attribute(ids, mask, truth, token_type_ids=types)
    for i, e in enumerate(got):
        assert torch.allclose(torch.tensor(e.scores), scores[i][mask[i].bool()], atol=1e-5)
