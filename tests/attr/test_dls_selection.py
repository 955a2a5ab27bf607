"""One label-free layer per model: stored selections, calibration at construction or on the
first calls, its freeze, the exclusion of layers the gradient cannot reach, per-example
selection on sampled positions, and the warnings for degenerate heads and maps."""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
from conftest import SENTENCES
from tiny_models import tiny_bert
from torch import nn

from captum_layer_saliency import DecodedLayerSaliency, LayerCoherenceSelector
from captum_layer_saliency.attr import layer_selection as cal

SPECIAL = [0, 1, 2]


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, nn.Module]:
    """A tiny BERT and a head tied to its word embeddings: coherent at the lower layers
    (about a third of the word tokens decode back to themselves), unlike a random head."""
    clf, _ = tiny_bert()
    head = nn.Linear(16, 60, bias=False)
    with torch.no_grad():
        head.weight.copy_(clf.bert.embeddings.word_embeddings.weight)
    return clf, head


def build(models, **options) -> DecodedLayerSaliency:
    clf, mlm = models
    options.setdefault("special_token_ids", SPECIAL)
    return DecodedLayerSaliency.for_model(clf, mlm, **options)


def words_batch(n_words: int, batch: int = 1, offset: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` examples of [CLS] + ``n_words`` distinct words + [SEP]."""
    rows = [[1, *range(offset + b, offset + b + n_words), 2] for b in range(batch)]
    ids = torch.tensor(rows)
    return ids, torch.ones_like(ids)


def explain(dls: DecodedLayerSaliency, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return dls.attribute(ids, attention_mask=mask)


def test_calibration_freezes_after_its_budget_and_logs_once(models, caplog, layer_runs) -> None:
    dls = build(models, calibration_tokens=10)
    assert dls.selection_ is None and dls.layer_selection.mode() == "calibrate"
    caplog.set_level(logging.INFO, logger="captum_layer_saliency")
    for n_seen in (4, 8):
        explain(dls, *words_batch(4))
        assert dls.layer_selection.calibrator.seen == n_seen and dls.selection_ is None
        assert dls.selector is not None and dls.selector.n_positions_ == n_seen
    ids, mask = words_batch(4, offset=20)
    dls.attribute(ids, attention_mask=mask)
    assert dls.layer_selection.calibrator.seen == 12 and dls.layer_selection.mode() == "frozen"
    selection = dls.selection_
    assert selection is not None and selection.n_positions == 12
    assert "auto-calibration" in selection.calibration
    assert selection.layer in dls.layer_indices and len(selection.scores) == 3
    records = [r for r in caplog.records if "DLS uses" in r.getMessage()]
    assert len(records) == 1
    assert selection.name in records[0].getMessage() and "embeddings" in records[0].getMessage()
    # Frozen: more calls neither move the scores nor run the other layers.
    layer_runs.clear()
    explain(dls, *words_batch(6, batch=2))
    assert layer_runs == [1] and dls.selector.n_positions_ == 12
    assert dls.last_selected_ == [[selection.layer]] * 2
    assert len([r for r in caplog.records if "DLS uses" in r.getMessage()]) == 1


def test_batched_equals_one_at_a_time_after_the_freeze(models) -> None:
    dls = build(models, calibration_tokens=5)
    explain(dls, *words_batch(6))
    assert dls.layer_selection.mode() == "frozen"
    ids = torch.tensor(
        [[1, 5, 6, 7, 5, 2, 0, 0], [1, 8, 9, 10, 11, 12, 13, 2], [1, 20, 2, 0, 0, 0, 0, 0]]
    )
    mask = (ids != 0).long()
    together = dls.attribute(ids, attention_mask=mask)
    for b in range(3):
        n = int(mask[b].sum())
        alone = dls.attribute(ids[b : b + 1, :n], attention_mask=mask[b : b + 1, :n])
        torch.testing.assert_close(together[b : b + 1, :n], alone, rtol=1e-4, atol=1e-6)


def test_the_last_block_under_a_cls_pooler_is_detected_from_gradients_and_never_chosen(
    models,
) -> None:
    dls = build(models, selection="example", position_sample=None)
    ids, mask = words_batch(5, batch=3)
    dls.attribute(ids, attention_mask=mask)
    # BERT's pooler reads only [CLS]: every word position of the last block gets zero gradient.
    assert dls.unreachable_layers_ == [2]
    assert dls.selector is not None and dls.selector.excluded_ == {2}
    assert all(2 not in picked for picked in dls.last_selected_)
    # A curve that never falls would pick the last layer; the exclusion moves it back one.
    dls.selector.restore([0.1, 0.2, 0.3], 10)
    assert dls.selector.selected_ == [1]
    # Per-model calibration excludes it too, and records it.
    frozen = build(models, calibration_tokens=1)
    frozen.attribute(ids, attention_mask=mask)
    assert frozen.selection_ is not None and frozen.selection_.unreachable == [2]
    assert frozen.selection_.layer != 2
    assert "(unreachable)" in frozen.selection_.curve()


def test_reachability_is_read_from_the_gradients() -> None:
    words = torch.tensor([[False, True, True, False]])
    grads = [torch.zeros(1, 4, 3) for _ in range(3)]
    grads[0][0, 1] = 1.0  # reaches a word
    grads[1][0, 0] = 1.0  # only [CLS]
    grads[2][0, 0], grads[2][0, 2] = 1.0, 1e-9  # a word, but below the tolerance
    assert cal.unreachable_candidates(grads, words) == [1, 2]


def test_an_explicit_last_block_warns_that_its_map_is_zero(models) -> None:
    ids, mask = words_batch(4)
    with pytest.warns(UserWarning, match=r"zero at every word of example\(s\) \[0\] at block 2"):
        out = build(models, layers=2).attribute(ids, target=0, attention_mask=mask)
    assert out.eq(0).all()


def test_a_random_head_warns_at_calibration(tiny_classifier) -> None:
    clf = tiny_classifier
    with pytest.warns(UserWarning, match="decodes at most .* of the input tokens"):
        DecodedLayerSaliency.for_model(
            clf.model, clf.lm_head, clf.tokenizer, calibration_texts=SENTENCES * 3
        )


def test_a_coherent_head_does_not_warn(models) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dls = build(models, calibration_tokens=5)
        explain(dls, *words_batch(6))
    assert dls.selection_ is not None and max(dls.selection_.scores) > cal.DEGENERATE_COHERENCE


def test_calibration_texts_fit_at_construction(tiny_classifier, caplog) -> None:
    clf = tiny_classifier
    caplog.set_level(logging.INFO, logger="captum_layer_saliency")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's head is random
        dls = DecodedLayerSaliency.for_model(
            clf.model, clf.lm_head, clf.tokenizer, calibration_texts=SENTENCES
        )
    assert dls.layer_selection.mode() == "frozen" and dls.selection_ is not None
    assert dls.selection_.calibration.startswith("3 unlabelled texts")
    assert dls.selection_.n_positions == 19  # the sentences' word tokens
    assert sum("DLS uses" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ValueError, match="tokenizer"):
        DecodedLayerSaliency.for_model(clf.model, clf.lm_head, calibration_texts=SENTENCES)


def test_a_stored_selection_survives_save_pretrained(models, tmp_path) -> None:
    import transformers as T

    clf, mlm = models
    dls = build(models, calibration_tokens=3)
    explain(dls, *words_batch(4))
    dls.store_selection()
    clf.save_pretrained(tmp_path)
    delattr(clf.config, cal.CONFIG_KEY)  # leave the shared fixture as found
    reloaded = T.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    again = DecodedLayerSaliency.for_model(reloaded, mlm, special_token_ids=SPECIAL)
    assert again.layer_selection.mode() == "frozen" and again.layer_selection.calibrator.seen == 0
    assert again.selection_ is not None and dls.selection_ is not None
    assert again.selection_.layer == dls.selection_.layer
    assert again.selection_.scores == dls.selection_.scores
    ids, mask = words_batch(5, batch=2)
    torch.testing.assert_close(
        again.attribute(ids, attention_mask=mask), dls.attribute(ids, attention_mask=mask)
    )
    # Other candidate layers than those scored: the stored choice does not apply.
    subset = DecodedLayerSaliency.for_model(reloaded, mlm, layers=[0, 1], special_token_ids=SPECIAL)
    assert subset.layer_selection.mode() == "calibrate"


def test_per_example_selection_scores_a_sample_of_positions(models) -> None:
    words = torch.zeros(2, 40, dtype=torch.bool)
    words[0, 1:33] = True  # 32 words: a quarter is 8
    words[1, 1:4] = True  # 3 words: all of them
    rows = cal.sample_positions(words, 0.25)
    assert rows.sum(-1).tolist() == [8, 3] and not (rows & ~words).any()
    dls = build(models, selection="example")
    ids = torch.tensor([[1, *range(5, 25), 2], [1, 30, 31, 2, *[0] * 18]])
    mask = (ids != 0).long()
    together = dls.attribute(ids, attention_mask=mask)
    picks = dls.last_selected_
    for b in range(2):
        n = int(mask[b].sum())
        alone = dls.attribute(ids[b : b + 1, :n], attention_mask=mask[b : b + 1, :n])
        assert dls.last_selected_ == [picks[b]]
        torch.testing.assert_close(together[b : b + 1, :n], alone, rtol=1e-4, atol=1e-6)


def test_sampled_scores_equal_the_full_scores_at_the_sampled_positions(models) -> None:
    from captum_layer_saliency import load_lm_head
    from captum_layer_saliency.attr.coherence import layer_position_coherence
    from captum_layer_saliency.attr.decoding import candidate_mask

    clf, mlm = models
    head = load_lm_head(mlm)
    ids = torch.tensor([[1, *range(5, 25), 2], [1, 30, 31, 2, *[0] * 18]])
    mask = (ids != 0).long()
    words = candidate_mask(ids, mask, SPECIAL)
    with torch.no_grad():
        hidden = clf.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    full = layer_position_coherence(hidden, ids, mask, words, head, "self_recovery")
    rows = cal.sample_positions(words, 0.25)
    embedded = clf.bert.embeddings(input_ids=ids).detach()
    first = layer_position_coherence(embedded, ids, mask, words, head, "self_recovery")
    for chunk in (7, 64):
        sampled = cal.sampled_self_recovery([embedded, hidden], ids, rows, head, chunk)
        torch.testing.assert_close(sampled[0], first * rows)
        torch.testing.assert_close(sampled[1], full * rows)


def test_bad_selection_options(models) -> None:
    with pytest.raises(ValueError, match="selection must be one of"):
        build(models, selection="batch")
    with pytest.raises(ValueError, match="calibration_tokens"):
        build(models, calibration_tokens=0)
    with pytest.raises(ValueError, match="position_sample"):
        build(models, position_sample=1.5)


def test_excluded_layers_keep_their_place_in_the_curve() -> None:
    sel = LayerCoherenceSelector(rule="elbow")
    sel.exclude([6])
    curve = torch.tensor([0.76, 0.79, 0.78, 0.70, 0.65, 0.67, 0.57])
    assert sel.select(curve)[0] == [5]  # the fall into block 6 still marks block 5
    for rule, expected in (("argmax", [2]), ("deepest", [5])):
        other = LayerCoherenceSelector(rule=rule, theta=0.8)
        other.exclude([1, 6])
        assert other.select(curve)[0] == expected
    every = LayerCoherenceSelector(rule="argmax")
    every.exclude(range(7))
    assert every.select(curve)[0] == [1]  # all excluded: the exclusion is ignored


@pytest.mark.filterwarnings("ignore:the LM head decodes at most")  # the fixture's head is random
def test_compare_records_the_layer_and_a_finished_run_never_recalibrates(
    tiny_classifier, tmp_path, monkeypatch
) -> None:
    import json

    from compare_fakes import toy_dataset

    from captum_layer_saliency.compare import run_comparison

    def run() -> None:
        run_comparison(
            tiny_classifier,
            toy_dataset(),
            ["dls"],
            tmp_path,
            batch_size=4,
            progress=False,
            metrics=["comprehensiveness"],
        )

    run()
    config = json.loads((tmp_path / "run.json").read_text())
    sel = config["layer_selection"]["dls"]
    assert sel["layer"] in sel["layer_indices"] and sel["calibration_seconds"] > 0
    # Never the run's own texts: DLS's built-in ones (the layer is the model's).
    assert "built-in" in sel["calibration"] and len(sel["scores"]) == 3
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert rows and all(r["method"] == "dls" for r in rows)
    summary = (tmp_path / "summary.md").read_text()
    assert "Layer selection (cost notes)" in summary and sel["name"] in summary
    assert "one-off calibration" in summary and "embeddings" in summary
    assert "Layer selection" in (tmp_path / "report.html").read_text()
    # A finished run is not recalibrated (the check comes after the resume check).
    calls: list[int] = []
    monkeypatch.setattr(DecodedLayerSaliency, "calibrate", lambda *a, **k: calls.append(1))
    run()
    assert calls == []
    assert json.loads((tmp_path / "run.json").read_text())["layer_selection"]["dls"] == sel


@pytest.mark.parametrize("selection", ["model", "example"])
def test_the_default_method_chooses_the_layer_before_attributing(
    models, layer_runs, selection: str
) -> None:
    # Calibrating (or choosing per example) under integrated gradients runs the method only at
    # the chosen layers, with the maps it would give at every layer and choosing afterwards.
    from captum_layer_saliency.models.passes import PassCounter

    clf, mlm = models
    dls = build(models, selection=selection, calibration_tokens=10_000)
    every = build(models, selector=None)  # the same method at every candidate layer
    ids = torch.tensor([[1, *range(5, 15), 2], [1, 30, 31, 32, 2, *[0] * 7]])
    mask = (ids != 0).long()
    layer_runs.clear()
    with PassCounter(clf) as counter:
        out = dls.attribute(ids, attention_mask=mask)
    maps = every.attribute(ids, attention_mask=mask)
    assert dls.last_selected_ is not None and isinstance(maps, list)
    chosen = sorted({layer for picks in dls.last_selected_ for layer in picks})
    assert layer_runs[0] == len(chosen) < len(dls.layer_indices)
    for b, picks in enumerate(dls.last_selected_):
        assert len(picks) == 1  # the elbow rule picks one layer
        expected = maps[dls.layer_indices.index(picks[0])][b]
        torch.testing.assert_close(out[b], expected)
    assert counter.per_example(2) == pytest.approx(dls.last_cost_)
    assert dls.last_cost_ is not None and dls.last_cost_["backwards"] < 2  # not 7 layers' steps


def test_few_calibration_texts_warn_once_with_the_counts(models, tiny_tokenizer) -> None:
    model, head = models
    texts = SENTENCES * 3  # a few hundred word tokens, far below the 2,000 recommended
    with pytest.warns(UserWarning, match="calibration texts") as record:
        dls = DecodedLayerSaliency.for_model(model, head, tiny_tokenizer, calibration_texts=texts)
    small = [w for w in record if "calibration texts" in str(w.message)]
    n = dls.selection_.n_positions
    assert 0 < n < cal.DEFAULT_CALIBRATION_TOKENS
    assert len(small) == 1 and small[0].filename == __file__
    message = str(small[0].message)
    assert f"on {n} word tokens ({len(texts)} calibration texts)" in message
    assert "fewer than the 2000 recommended" in message and "BENCHMARKS.md" in message
    # Enough tokens for the budget asked for: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DecodedLayerSaliency.for_model(
            model, head, tiny_tokenizer, calibration_texts=texts, calibration_tokens=n
        )
    with pytest.warns(UserWarning, match=f"on {n} word tokens"):
        dls.calibrate(texts)  # calibrate() itself warns too


def test_the_layer_is_the_models_not_the_batchs(tiny_classifier, caplog) -> None:
    """No stored selection: the layer is chosen once, on the built-in texts, before the first
    explanation; the same sentence alone or beside others gets the same map."""
    clf = tiny_classifier
    model = copy.deepcopy(clf.model)
    model.config.__dict__.pop(cal.CONFIG_KEY, None)  # no stored selection
    assert cal.stored_selection(model) is None
    alone_enc = clf.encode(["the movie was very good"])
    batch_enc = clf.encode(["a boring and dull story", "the movie was very good", "not funny"])
    caplog.set_level(logging.INFO, logger="captum_layer_saliency")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny random head warns at calibration
        first = DecodedLayerSaliency.for_model(model, clf.lm_head, clf.tokenizer)
        alone = first.attribute(alone_enc["input_ids"], attention_mask=alone_enc["attention_mask"])
        second = DecodedLayerSaliency.for_model(model, clf.lm_head, clf.tokenizer)
        together = second.attribute(
            batch_enc["input_ids"], attention_mask=batch_enc["attention_mask"]
        )
    assert first.selection_ is not None and second.selection_ is not None
    assert first.selection_.layer == second.selection_.layer
    assert "built-in" in first.selection_.calibration
    n = int(alone_enc["attention_mask"].sum())
    torch.testing.assert_close(together[1:2, :n], alone, rtol=1e-4, atol=1e-6)
    # Logged once per explainer, at WARNING, with the layer's name.
    chosen = [r for r in caplog.records if "DLS uses" in r.getMessage()]
    assert len(chosen) == 2 and all(r.levelno == logging.WARNING for r in chosen)
    assert first.selection_.name in chosen[0].getMessage()
    # The user's calibration texts take the place of the built-in ones.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own = DecodedLayerSaliency.for_model(
            model, clf.lm_head, clf.tokenizer, calibration_texts=SENTENCES * 3
        )
    assert own.selection_ is not None and "given to calibrate" in own.selection_.calibration


def test_the_bare_constructor_chooses_on_the_builtin_texts_with_the_saved_tokenizer(
    tiny_classifier, tmp_path
) -> None:
    """Captum's way of building DLS (no for_model, no tokenizer given): the tokenizer saved
    beside the model encodes the built-in texts, so the layer is still the model's, and a
    sentence alone or in a batch gets the same map; a stored selection is used as is."""
    import transformers as T

    from captum_layer_saliency.models.surgery import find_model_parts

    clf = tiny_classifier
    model = copy.deepcopy(clf.model)
    model.config.__dict__.pop(cal.CONFIG_KEY, None)
    model.save_pretrained(tmp_path)
    clf.tokenizer.save_pretrained(tmp_path)
    loaded = T.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    layers = find_model_parts(loaded).layers
    alone_enc = clf.encode(["the movie was very good"])
    batch_enc = clf.encode(["a boring and dull story", "the movie was very good", "not funny"])

    def bare() -> DecodedLayerSaliency:
        selector = LayerCoherenceSelector(clf.lm_head)
        return DecodedLayerSaliency(
            loaded, layers, clf.lm_head, selector, special_token_ids=clf.tokenizer.all_special_ids
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny random head warns at calibration
        first, second = bare(), bare()
        alone = first.attribute(alone_enc["input_ids"], attention_mask=alone_enc["attention_mask"])
        together = second.attribute(
            batch_enc["input_ids"], attention_mask=batch_enc["attention_mask"]
        )
    assert first.selection_ is not None and second.selection_ is not None
    assert "built-in" in first.selection_.calibration
    assert first.selection_.layer == second.selection_.layer
    n = int(alone_enc["attention_mask"].sum())
    torch.testing.assert_close(together[1:2, :n], alone, rtol=1e-4, atol=1e-6)
    # Stored with the model: the bare constructor reads it instead of calibrating.
    first.layer_selection.store()
    third = bare()
    third.layer_selection.choose_before_explaining()
    assert third.selection_ is not None and third.selection_.layer == first.selection_.layer
    assert third.selection_.calibration == first.selection_.calibration
    assert third.layer_selection.calibrator.seen == 0
