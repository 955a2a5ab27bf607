"""Explanation objects: save and load equal, escaped HTML, PNG heatmaps, Captum records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from captum_layer_saliency.explaining import explain, resolve_target
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.viz.explanation import (
    Explanation,
    ExplanationFileError,
    explanations_html,
    load_explanations,
    save_explanations,
)

SCRIPT = "the movie <script>alert('x')</script> was good & fun"


def _hand_made(**changes: object) -> Explanation:
    values: dict[str, object] = dict(
        text="not bad at all",
        tokens=["[CLS]", "not", "bad", "at", "all", "[SEP]"],
        scores=[0.0, 0.5, -0.25, 0.125, 1.0, 0.0],
        predicted=1,
        predicted_label="positive",
        probability=0.75,
        target=1,
        target_label="positive",
        target_probability=0.75,
        method="dls",
        model="tiny",
        version="0.1.0",
        words=["not", "bad", "at", "all"],
        word_scores=[0.5, -0.25, 0.125, 1.0],
        token_words=[-1, 0, 1, 2, 3, -1],
        word_reduce="sum",
        layer="bert.encoder.layer.4",
        id=7,
    )
    values.update(changes)
    return Explanation(**values)  # type: ignore[arg-type]


def test_a_saved_explanation_loads_back_equal(
    tmp_path: Path, tiny_classifier: TextClassifier
) -> None:
    computed = explain(tiny_classifier, ["the movie was very good", "boring ."], words=True)
    explanations = [_hand_made(), *computed]
    path = save_explanations(tmp_path / "e.jsonl", explanations)
    assert load_explanations(path) == explanations
    # One JSON object per line, with the documented keys.
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    for key in ("text", "tokens", "words", "scores", "predicted_label", "probability"):
        assert key in first
    for key in ("target", "method", "layer", "model", "version"):
        assert key in first
    # Appending, and a write cut short by an interruption.
    save_explanations(path, [_hand_made(id=8)], append=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"text": "half a li')
    with pytest.raises(ExplanationFileError, match="line 5"):
        load_explanations(path)
    assert [e.id for e in load_explanations(path, skip_partial_last=True)][-1] == 8


def test_bad_explanations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="6 tokens but 2 scores"):
        _hand_made(scores=[0.0, 1.0])
    with pytest.raises(ValueError, match="words and word_scores come together"):
        _hand_made(word_scores=None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(ExplanationFileError, match="missing tokens"):
        load_explanations(bad)
    with pytest.raises(ExplanationFileError, match="cannot read"):
        load_explanations(tmp_path / "absent.jsonl")


def test_top_units_and_views() -> None:
    e = _hand_made()
    assert e.top(2) == [("all", 1.0), ("not", 0.5)]
    assert e.units(words=False) == (["not", "bad", "at", "all"], [0.5, -0.25, 0.125, 1.0])
    plain = _hand_made(words=None, word_scores=None, token_words=None, word_reduce=None)
    assert plain.top(1) == [("all", 1.0)]  # the special tokens are left out
    with pytest.raises(ValueError, match="no word scores"):
        plain.units(words=True)


def test_script_in_a_text_is_escaped_in_the_html(tiny_classifier: TextClassifier) -> None:
    explanations = explain(tiny_classifier, [SCRIPT], words=True)
    explanations.append(_hand_made(text=SCRIPT, model="<b>m</b>", id="<i>"))
    page = explanations_html(explanations, title="<script>t</script>", images=['a"b.png', None])
    assert "<script" not in page.lower().replace("&lt;script", "")
    assert "&lt;script&gt;" in page or "&lt;" in page
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt;" in page
    assert "<i>" not in page
    assert 'src="a&quot;b.png"' in page
    assert "script-src" in page or "default-src 'none'" in page  # the CSP
    fragment = explanations[0].to_html()
    assert "&lt;" in fragment and "<script" not in fragment


def test_words_keep_the_texts_spacing_in_html() -> None:
    e = _hand_made(
        text="isn't it, really",
        tokens=["[CLS]", "isn", "'", "t", "it", ",", "really", "[SEP]"],
        scores=[0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.25, 0.0],
        words=["isn", "'", "t", "it", ",", "really"],
        word_scores=[1.0, 0.0, 0.0, 0.5, 0.0, 0.25],
        token_words=[-1, 0, 1, 2, 3, 4, 5, -1],
    )
    assert e._glued() == [False, True, True, False, True, False]
    html = e.to_html()
    assert html.count("</span> <span") == 2  # spaces only before "it" and "really"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    figure = _hand_made().plot(save=tmp_path / "one.png")
    assert isinstance(figure, Figure)
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    assert figure.axes[0].get_xlabel().startswith("words")
    assert _hand_made().plot(words=False).axes[0].get_xlabel().startswith("tokens")


def test_the_captum_record_is_scaled_escaped_and_renders() -> None:
    from captum_layer_saliency.viz import safe_visualize_text

    record = _hand_made(words=["<b>not</b>", "bad", "at", "all"]).to_visualization_record()
    assert record.word_attributions.tolist() == [0.5, -0.25, 0.125, 1.0]
    assert record.raw_input_ids[0] == "<b>not</b>"  # escaped once, when rendered
    assert (record.pred_class, record.attr_class) == ("positive", "positive")
    assert record.pred_prob == pytest.approx(0.75)
    assert record.attr_score == pytest.approx(1.375)
    html = safe_visualize_text([record]).data
    assert "<b>not</b>" not in html and "&lt;b&gt;not" in html and "&amp;lt;" not in html
    assert "positive" in html


def test_targets_by_index_and_name() -> None:
    labels = ["negative", "positive"]
    assert resolve_target(None, labels, 2) is None
    assert resolve_target("Positive", labels, 2) == 1
    assert resolve_target("0", labels, 2) == 0
    assert resolve_target(1, labels, 2) == 1
    with pytest.raises(ValueError, match="'negative', 'positive'"):
        resolve_target("neutral", labels, 2)
    with pytest.raises(ValueError, match="out of range"):
        resolve_target(2, labels, 2)
    with pytest.raises(ValueError, match="class index or a label name"):
        resolve_target(True, labels, 2)


def test_explaining_another_class(tiny_classifier: TextClassifier) -> None:
    [pred] = explain(tiny_classifier, "the movie was very good", method="ixg")
    other = 1 - pred.predicted
    [e] = explain(tiny_classifier, "the movie was very good", method="ixg", target=other)
    assert e.target == other and e.predicted == pred.predicted
    assert e.target_probability == pytest.approx(1 - pred.probability, abs=1e-6)
    assert "predicted" in e.title()
    assert e.layer == "embeddings"
    with pytest.raises(ValueError, match="DLS decodes with the LM head"):
        explain(
            TextClassifier(tiny_classifier.model, tiny_classifier.tokenizer, labels=["a", "b"]),
            "good",
        )


def _chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless chromium to render the page")
def test_the_page_renders_in_a_browser_with_the_script_shown_as_text(
    tmp_path: Path, tiny_classifier: TextClassifier
) -> None:
    import subprocess

    explanations = explain(tiny_classifier, [SCRIPT, "the movie was very good"], words=True)
    explanations[0].plot(save=tmp_path / "one.png")
    page = tmp_path / "page.html"
    page.write_text(explanations_html(explanations, images=["one.png", None]), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"]
    browser = str(_chromium())
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "<script" not in dom.lower()  # nothing became an element
    assert "&lt;script&gt;" in dom or "&lt;" in dom  # the text is shown as text
    assert dom.count('class="tok"') == sum(len(e.words or []) for e in explanations)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000


def test_a_method_prepares_once_on_the_texts_before_the_first_batch(
    tiny_classifier: TextClassifier,
) -> None:
    from captum_layer_saliency.explaining import make_attributor

    base = make_attributor(tiny_classifier, "ixg")
    seen: list[list[str]] = []

    class Preparing:
        options = base.options

        def prepare(self, texts: list[str]) -> None:
            seen.append(texts)

        def attribute(self, *args: object) -> object:
            assert seen, "attribute before prepare"
            return base.attribute(*args)  # type: ignore[arg-type]

    texts = ["the movie was very good", "boring .", "fun !"]
    out = explain(tiny_classifier, texts, attributor=Preparing(), method="ixg", batch_size=2)
    assert seen == [texts] and len(out) == 3
