"""Explaining a multi-label prediction: one rule, the same scalar in every method and metric.

The rule (``models.targets.predicted_target``): every label whose sigmoid is over 0.5, the most
probable where none is. DLS explains such a set as the sum of its labels' logits; every other
method (through ``models.label_sets``), LAFA, the harness and ``explain`` must explain the same
scalar. Gradient x input is linear in the output, so its map of a set is the sum of the labels'
maps: that is the hand-checkable value. The metrics read the set's probability as the product of
its labels' sigmoids.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import tiny_bert_config
from torch import Tensor

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.lafa import LAFA
from captum_layer_saliency.attr.neighbours import NeighbourIndex
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.metrics import comprehensiveness
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.label_sets import attribute_targets, label_set_output
from captum_layer_saliency.models.targets import (
    explained_log_probability,
    normalize_target,
    predicted_target,
    target_list,
)

TEXTS = ["the movie was very good", "boring .", "i think the acting was awful", "fun !"]


@pytest.fixture(scope="module")
def clf(tiny_tokenizer: T.BertTokenizer) -> TextClassifier:
    """A tiny 3-label head whose biases give: TEXTS[0] two labels, one a single label, one none
    (-> its top label)."""
    config = tiny_bert_config(num_labels=3)
    config.problem_type = "multi_label_classification"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = T.BertForSequenceClassification(config).eval()
        head = T.models.bert.modeling_bert.BertOnlyMLMHead(config).eval()
    out = TextClassifier(model, tiny_tokenizer, head, ["x", "y", "z"], "multi", max_length=32)
    z = _logits(out)
    with torch.no_grad():
        bias = out.model.classifier.bias
        # Label 0 on for every text; label 2 on for the text with the largest z2 only; label 1
        # on for none. Then TEXTS[...] with label 0 off: shift row-wise is impossible, so label
        # 0's threshold sits between the lowest z0 and the others.
        order0 = z[:, 0].sort().values
        bias[0] -= (order0[0] + order0[1]) / 2  # the lowest-z0 text has label 0 off
        order2 = z[:, 2].sort(descending=True).values
        bias[2] -= (order2[0] + order2[1]) / 2  # only the highest-z2 text has label 2 on
        bias[1] -= z[:, 1].max() + 1.0  # label 1 never on
    return out


def _logits(clf: TextClassifier) -> Tensor:
    enc = clf.encode(TEXTS)
    with torch.no_grad():
        return clf.forward_func(enc["input_ids"], enc["attention_mask"])


def _expected_sets(clf: TextClassifier) -> list[list[int]]:
    z = _logits(clf)
    return [(row > 0).nonzero().flatten().tolist() or [int(row.argmax())] for row in z]


def _sum_of_label_maps(clf: TextClassifier, method: str, sets: list[list[int]]) -> Tensor:
    enc = clf.encode(TEXTS)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    attributor = get_method(method, clf)
    out = torch.zeros(ids.shape)
    for b, labels in enumerate(sets):
        for label in labels:
            out[b] += attributor.attribute(ids[b : b + 1], mask[b : b + 1], [label])[0]
    return out


def test_the_fixture_covers_every_case(clf) -> None:
    sets = _expected_sets(clf)
    assert sorted(len(s) for s in sets)[-1] == 2  # a text with two labels over 0.5
    assert any(len(s) == 1 and _logits(clf)[i].max() < 0 for i, s in enumerate(sets))  # none


def test_the_rule_by_hand() -> None:
    logits = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -2.0, -3.0], [-1.0, 0.5, -3.0]])
    assert predicted_target(logits, "softmax").tolist() == [2, 0, 1]
    sets = predicted_target(logits, "sigmoid")
    assert sets.tolist() == [[1, 0, 1], [1, 0, 0], [0, 1, 0]]
    assert target_list(sets) == [[0, 2], [0], [1]]
    log_p = torch.nn.functional.logsigmoid(logits.double())
    p = explained_log_probability(log_p, sets).exp()

    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    assert p.tolist() == pytest.approx([sig(1) * sig(2), sig(-1), sig(0.5)])
    checked = normalize_target(sets.bool(), 3, 3, label_sets=True)
    assert checked is not None and torch.equal(checked, sets)
    for bad, match in (
        (torch.tensor([[1, 0, 1], [0, 0, 0]]), "at least one label"),
        (torch.tensor([[2.0, 0.0, 1.0]]), "0/1"),
        (torch.ones(1, 4), "columns"),
    ):
        with pytest.raises(ValueError, match=match):
            normalize_target(bad, 2, 3, label_sets=True)
    with pytest.raises(ValueError, match="one int per example"):
        normalize_target(sets.long(), 3, 3)  # only where label sets are meant


def test_methods_explain_a_set_as_dls_does(clf) -> None:
    sets = _expected_sets(clf)
    enc = clf.encode(TEXTS)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    target = predicted_target(_logits(clf), clf.activation)
    assert target_list(target) == sets
    attributor = get_method("input_x_gradient", clf)
    got = attribute_targets(attributor.attribute, clf.model, ids, mask, target)
    assert torch.allclose(got, _sum_of_label_maps(clf, "input_x_gradient", sets), atol=1e-5)
    # A registry method takes the label sets as its target directly, with the same result.
    assert torch.allclose(attributor.attribute(ids, mask, target), got, atol=1e-6)
    # DLS's own target=None and DLS through the same path agree on the set.
    layer = clf.model.bert.encoder.layer[0]
    dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer, layers=layer)
    own = dls.attribute(ids, attention_mask=mask)
    through = attribute_targets(
        lambda i, m, t: dls.attribute(i, target=t, attention_mask=m), clf.model, ids, mask, target
    )
    assert torch.allclose(own, through, atol=1e-5)
    # Batched == one at a time.
    for b in range(len(TEXTS)):
        alone = attribute_targets(
            attributor.attribute, clf.model, ids[b : b + 1], mask[b : b + 1], target[b : b + 1]
        )
        assert torch.allclose(alone[0], got[b], atol=1e-5)


def test_the_output_hook_goes_even_after_an_error(clf) -> None:
    enc = clf.encode(TEXTS[:1])
    with torch.no_grad():
        before = clf.model(**enc).logits
    with (
        pytest.raises(RuntimeError, match="boom"),
        label_set_output(clf.model, torch.tensor([0, 2])),
    ):
        with torch.no_grad():
            inside = clf.model(**enc).logits
        assert inside[0, 0] == pytest.approx(float(before[0, 0] + before[0, 2]), abs=1e-5)
        assert inside[0, 1:].tolist() == pytest.approx(before[0, 1:].tolist())
        raise RuntimeError("boom")
    assert not clf.model._forward_hooks
    with torch.no_grad():
        assert torch.equal(clf.model(**enc).logits, before)


def test_metrics_score_the_set_by_hand(clf) -> None:
    enc = clf.encode(TEXTS)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = clf.special_mask(ids)
    scores = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
    target = predicted_target(_logits(clf), clf.activation)
    got = comprehensiveness(clf.forward_func, ids, mask, scores, target, special, bins=(0.5,))
    b = next(i for i, s in enumerate(target_list(target)) if len(s) == 2)
    labels = target_list(target)[b]
    # By hand: delete the top half of the valid tokens, read sigmoid(z0) * sigmoid(z2).
    valid = (mask[b].bool() & ~special[b]).nonzero().flatten()
    k = math.ceil(0.5 * len(valid))
    top = valid[scores[b, valid].argsort(descending=True, stable=True)[:k]]
    keep = mask[b].bool().clone()
    keep[top] = False
    with torch.no_grad():
        full = torch.sigmoid(clf.forward_func(ids[b : b + 1], mask[b : b + 1]).double())[0]
        cut = torch.sigmoid(clf.forward_func(ids[b : b + 1, keep], mask[b : b + 1, keep]).double())
    want = full[labels].prod() - cut[0, labels].prod()
    assert got[b].item() == pytest.approx(want.item(), abs=1e-6)


def test_harness_scores_and_records_the_set(clf, tmp_path: Path) -> None:
    from captum_layer_saliency.compare import load_rows
    from captum_layer_saliency.compare.runner import run_comparison

    sets = _expected_sets(clf)
    rows = [{"text": t, "label": 0} for t in TEXTS]
    out = run_comparison(
        clf, rows, ["input_x_gradient"], tmp_path / "run", metrics=["comprehensiveness"],
        batch_size=4, progress=False, report=False,
    )  # fmt: skip
    got = sorted(load_rows(out), key=lambda r: r["index"])
    assert [r["target"] for r in got] == sets
    enc = clf.encode(TEXTS)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    expected = _sum_of_label_maps(clf, "input_x_gradient", sets)
    target = predicted_target(_logits(clf), clf.activation)
    comp = comprehensiveness(clf.forward_func, ids, mask, expected, target, clf.special_mask(ids))
    for i, row in enumerate(got):
        real = mask[i].bool()
        assert torch.allclose(torch.tensor(row["attributions"]), expected[i][real], atol=1e-5)
        assert row["metrics"]["comprehensiveness"] == pytest.approx(float(comp[i]), abs=1e-5)


def test_explain_names_the_set(clf) -> None:
    from captum_layer_saliency.explaining import explain

    sets = _expected_sets(clf)
    got = explain(clf, TEXTS, method="input_x_gradient")
    expected = _sum_of_label_maps(clf, "input_x_gradient", sets)
    mask = clf.encode(TEXTS)["attention_mask"]
    p = torch.sigmoid(_logits(clf).double())
    for i, e in enumerate(got):
        assert e.target_label == "+".join("xyz"[j] for j in sets[i])
        assert e.target == e.predicted == sets[i]
        assert e.target_probability == pytest.approx(float(p[i, sets[i]].prod()), abs=1e-6)
        assert torch.allclose(torch.tensor(e.scores), expected[i][mask[i].bool()], atol=1e-5)
    # An explicit label explains that label alone.
    [one] = explain(clf, TEXTS[:1], method="input_x_gradient", target="y")
    assert one.target == [1] and one.target_label == "y"
    only = _sum_of_label_maps(clf, "input_x_gradient", [[1]] * len(TEXTS))[0]
    assert torch.allclose(torch.tensor(one.scores), only[mask[0].bool()], atol=1e-5)


def test_lafa_explains_the_set(clf) -> None:
    sets = _expected_sets(clf)
    corpus = ["the movie was good", "a boring film", "the acting was fun"]

    def encoder(texts: list[str]) -> Tensor:
        return torch.stack([torch.tensor([len(t), t.count(" ") + 1.0]) for t in texts])

    index = NeighbourIndex.build(corpus, encoder, progress=False)
    base = get_method("input_x_gradient", clf)
    enc = clf.encode(TEXTS)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    plain = LAFA(clf.model, clf.tokenizer, base, index, encoder=encoder, k=0)
    got = plain.attribute(ids, attention_mask=mask, texts=TEXTS)
    assert torch.allclose(got, _sum_of_label_maps(clf, "input_x_gradient", sets), atol=1e-5)
    assert target_list(plain.last_target_) == sets
    options = {"encoder": encoder, "k": 1, "aggregation": "weighted_mean", "min_similarity": -1.0}
    lafa = LAFA(clf.model, clf.tokenizer, base, index, **options)
    sets_map = lafa.attribute(ids, attention_mask=mask, texts=TEXTS)
    alone = [
        LAFA(clf.model, clf.tokenizer, base, index, **options).attribute(
            ids[b : b + 1], attention_mask=mask[b : b + 1], texts=TEXTS[b : b + 1]
        )[0]
        for b in range(len(TEXTS))
    ]
    assert torch.allclose(sets_map, torch.stack(alone), atol=1e-5)
    assert not clf.model._forward_hooks
    # The neighbours' cache of single classes is not polluted by the sets' summed logits.
    single = lafa.attribute(ids, target=0, attention_mask=mask, texts=TEXTS)
    fresh = LAFA(clf.model, clf.tokenizer, base, index, **options)
    assert torch.allclose(single, fresh.attribute(ids, target=0, attention_mask=mask, texts=TEXTS))


def test_cli_explain_prints_and_saves_the_set(
    clf, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from captum_layer_saliency.cli import app as cli
    from captum_layer_saliency.cli import common
    from captum_layer_saliency.viz.explanation import load_explanations

    monkeypatch.setattr(common, "load_model", lambda name: clf)
    sets = _expected_sets(clf)
    names = ["+".join("xyz"[j] for j in s) for s in sets]
    p = torch.sigmoid(_logits(clf).double())
    out = tmp_path / "run"
    assert cli.main(["explain", *TEXTS, "--method", "ixg", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for i, name in enumerate(names):
        assert f"[{i}] {name} (p={float(p[i, sets[i]].prod()):.2f})" in printed
    assert [e.target_label for e in load_explanations(out / "explanations.jsonl")] == names
    # An explicit label that is part of the predicted set: the prediction is still shown.
    two = next(i for i, s in enumerate(sets) if len(s) == 2)
    label = "xyz"[sets[two][0]]
    argv = ["explain", TEXTS[two], "--method", "ixg", "--target", label]
    assert cli.main(argv) == 0
    assert f"predicted {names[two]}" in capsys.readouterr().out


@pytest.mark.parametrize("layer_method", ["gradient", "integrated_gradients"])
def test_dls_takes_a_label_set_target(clf, layer_method: str) -> None:
    enc = clf.encode(TEXTS)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    target = predicted_target(_logits(clf), clf.activation)
    layers = [clf.model.bert.encoder.layer[0], clf.model.bert.encoder.layer[1]]
    dls = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layers=layers, selector=None,
        layer_method=layer_method,
    )  # fmt: skip
    own = dls.attribute(ids, attention_mask=mask)
    assert dls.last_target_ is not None and torch.equal(dls.last_target_, target)
    for as_given in (target, target.bool(), target.long()):
        given = dls.attribute(ids, target=as_given, attention_mask=mask)
        assert dls.last_target_ is not None and torch.equal(dls.last_target_, target)
        for a, b in zip(own, given, strict=True):
            assert torch.allclose(a, b, atol=1e-6)
    # The set {y} alone (a label no text predicts) == target=1; one row broadcasts.
    one = torch.tensor([[0, 1, 0]])
    alone = dls.attribute(ids, target=one, attention_mask=mask)
    assert dls.last_target_ is not None and dls.last_target_.shape == (len(TEXTS), 3)
    plain = dls.attribute(ids, target=1, attention_mask=mask)
    assert dls.last_target_ is not None and dls.last_target_.tolist() == [1] * len(TEXTS)
    for a, b in zip(alone, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # Batched == one at a time.
    for b in range(len(TEXTS)):
        one_row = {"target": target[b : b + 1], "attention_mask": mask[b : b + 1]}
        row = dls.attribute(ids[b : b + 1], **one_row)
        for a, whole in zip(row, own, strict=True):
            assert torch.allclose(a[0], whole[b], atol=1e-5)
    for bad, match in (
        (torch.ones(len(TEXTS), 4), "columns"),
        (torch.tensor([[1, 0, 1]] * 3 + [[0, 0, 0]]), "at least one label"),
        (torch.full((len(TEXTS), 3), 0.5), "0/1"),
    ):
        with pytest.raises(ValueError, match=match):
            dls.attribute(ids, target=bad, attention_mask=mask)
    assert not clf.model._forward_hooks


def test_explanations_carry_the_set(clf, tmp_path: Path) -> None:
    from captum_layer_saliency.explaining import explain
    from captum_layer_saliency.viz.explanation import (
        Explanation,
        explanations_html,
        load_explanations,
        save_explanations,
    )

    got = explain(clf, TEXTS, method="input_x_gradient")
    sets = target_list(predicted_target(_logits(clf), clf.activation))
    assert [e.target for e in got] == [e.predicted for e in got] == sets
    path = save_explanations(tmp_path / "explanations.jsonl", got)
    loaded = load_explanations(path)
    assert loaded == got
    two = next(i for i, s in enumerate(sets) if len(s) == 2)
    name = "+".join("xyz"[j] for j in sets[two])
    e = loaded[two]
    assert e.target_label == e.predicted_label == name and e.explains_prediction
    assert e.title() == f"input_x_gradient: {name} (p={e.target_probability:.2f})"
    assert f"explains {name} (p=" in e.to_html() and "predicted" not in e.to_html()
    record = e.to_visualization_record()
    assert record.pred_class == record.attr_class == name
    assert record.pred_prob == pytest.approx(e.probability)
    # One label of the set explained alone: the titles name the predicted set.
    [one] = explain(clf, TEXTS[two], method="input_x_gradient", target=sets[two][0])
    assert one.target == [sets[two][0]] and one.predicted == sets[two]
    assert not one.explains_prediction
    assert one.title().endswith(f"; predicted {name} (p={one.probability:.2f})")
    assert f"predicted {name} (p=" in explanations_html([one])
    # A file written before label sets were lists (the set's first label) still loads.
    old = {**got[two].to_dict(), "target": sets[two][0], "predicted": sets[two][0]}
    assert Explanation.from_dict(old).target == sets[two][0]
    with pytest.raises(ValueError, match="class index"):
        Explanation.from_dict({**old, "target": []})
    with pytest.raises(ValueError, match="class index"):
        Explanation.from_dict({**old, "target": [0, 1.5]})
