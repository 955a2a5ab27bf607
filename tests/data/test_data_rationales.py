"""The rationale datasets: SST phrase rationales, HateXplain, ERASER movies, and IMDB.

Runs offline against the project's shared data directory (``../shared/data``); skipped without it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pytest
from datasets import Dataset

from captum_layer_saliency.data import DATA_DIR_ENV, DataUnavailableError, mean_rationale_fraction
from captum_layer_saliency.data.eraser_movies import load_eraser_movies
from captum_layer_saliency.data.hatexplain import (
    combine_rationales,
    load_hatexplain,
    majority_label,
)
from captum_layer_saliency.data.imdb import load_imdb
from captum_layer_saliency.data.sst2 import load_sst2
from captum_layer_saliency.data.sst_phrases import (
    load_sst2_phrases,
    parse_tree,
    phrase_rationale,
    tokenize_tree,
)

#: $CAPTUM_LAYER_SALIENCY_DATA, else the data folder beside the clone (as CI lays it out)
SHARED_DATA = Path(
    os.environ.get("CAPTUM_LAYER_SALIENCY_DATA")
    or Path(__file__).resolve().parents[3] / "shared" / "data"
)


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the loaders at the shared data through the environment, with the hub off."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data directory {SHARED_DATA} not found")
    monkeypatch.setenv(DATA_DIR_ENV, str(SHARED_DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return SHARED_DATA


@pytest.fixture
def hub_on(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Let the loaders try the hub (each test replaces ``datasets.load_dataset``)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    return data_dir


def _hub_down(*args: Any, **kwargs: Any) -> Dataset:
    raise ConnectionError("simulated: the hub is unreachable")


def _assert_rationale_schema(ds: Dataset) -> None:
    assert ds.column_names[:5] == ["idx", "text", "words", "rationale", "label"]
    for text, words, rationale in zip(ds["text"], ds["words"], ds["rationale"], strict=True):
        assert text == " ".join(words)
        assert len(rationale) == len(words)
        assert set(rationale) <= {0, 1}


# --- SST trees -------------------------------------------------------------------------------


def test_tokenize_tree_keeps_non_breaking_space_inside_a_leaf() -> None:
    assert tokenize_tree("(2 (2 8\u00a01\\/2) (2 x))") == [
        "(", "2", "(", "2", "8\u00a01\\/2", ")", "(", "2", "x", ")", ")",
    ]  # fmt: skip


def test_parse_tree_by_hand() -> None:
    root, words = parse_tree("(3 (2 (2 The) (2 Rock)) (4 (3 (2 is) (4 great)) (2 .)))")
    assert words == ["the", "rock", "is", "great", "."]
    assert (root.label, root.start, root.end) == (3, 0, 5)
    subject, predicate = root.children
    assert (subject.label, subject.start, subject.end) == (2, 0, 2)
    assert (predicate.label, predicate.start, predicate.end) == (4, 2, 5)
    verb_phrase, period = predicate.children
    assert [(c.label, c.start, c.end) for c in verb_phrase.children] == [(2, 2, 3), (4, 3, 4)]
    assert (period.label, period.children) == (2, ())


def test_parse_tree_undoes_ptb_escapes_and_splits_nbsp() -> None:
    root, words = parse_tree("(2 (2 -LRB-) (2 (2 8\u00a01\\/2) (2 -RRB-)))")
    assert words == ["(", "8", "1/2", ")"]
    nbsp_leaf = root.children[1].children[0]
    assert (nbsp_leaf.start, nbsp_leaf.end) == (1, 3)  # one leaf, two words


@pytest.mark.parametrize("bad", ["", "(3 a b)", "(x (2 a))", "(2 (2 a)", "(2 (2 a)) (2 b)", "(2 )"])
def test_parse_tree_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_tree(bad)


def test_phrase_rationale_takes_the_smallest_polar_phrases() -> None:
    # "lovely" alone carries the positive sentiment of "a lovely film".
    root, _ = parse_tree("(4 (2 a) (4 (3 lovely) (2 film)))")
    assert phrase_rationale(root, 5) == [0, 1, 0]
    # Negation: "good" is positive, so the smallest negative phrase is "not good".
    root, _ = parse_tree("(1 (2 (2 a) (2 movie)) (1 (2 not) (3 good)))")
    assert phrase_rationale(root, 5) == [0, 0, 1, 1]
    # Two separate polar words; the neutral words between them stay out.
    root, _ = parse_tree("(0 (0 (0 awful) (2 and)) (1 dull))")
    assert phrase_rationale(root, 5) == [1, 0, 1]


def test_phrase_rationale_lifts_the_cap_when_no_small_phrase_is_polar() -> None:
    root, _ = parse_tree("(1 (2 (2 a) (2 b)) (1 (2 c) (2 d)))")
    assert phrase_rationale(root, 2) == [0, 0, 1, 1]
    assert phrase_rationale(root, 1) == [0, 0, 1, 1]  # no word is negative: the cap is lifted
    root, _ = parse_tree("(1 (2 (2 a) (2 b)) (2 (2 c) (2 d)))")
    assert phrase_rationale(root, 3) == [1, 1, 1, 1]  # only the root is polar
    with pytest.raises(ValueError, match="neutral"):
        phrase_rationale(parse_tree("(2 (2 a) (3 b))")[0], 5)


def test_sst2_phrases_align_with_sst2_dev(data_dir: Path) -> None:
    ds = load_sst2_phrases()
    dev = load_sst2("validation")
    assert len(ds) == 872
    assert ds["idx"] == dev["idx"] == list(range(872))
    assert ds["text"] == [t.strip() for t in dev["text"]]
    assert ds["label"] == dev["label"]
    assert ds.features["label"].names == ["negative", "positive"]
    _assert_rationale_schema(ds)
    assert all(any(r) for r in ds["rationale"])
    assert mean_rationale_fraction(ds) == pytest.approx(0.2346, abs=5e-4)
    assert ds[0]["words"][3] == "charming" and ds[0]["rationale"] == [0, 0, 0, 1, 0, 0, 0, 0, 0]


def test_sst2_phrases_work_from_the_vendored_copies(tmp_path: Path, data_dir: Path) -> None:
    # An empty data directory: a fresh install has only the copies vendored in the package.
    from_vendored = load_sst2_phrases(data_dir=tmp_path)
    assert from_vendored.to_dict() == load_sst2_phrases().to_dict()
    vendored = Path(__file__).resolve().parents[2] / "captum_layer_saliency" / "data" / "vendored"
    with gzip.open(vendored / "sst_dev_trees.txt.gz", "rb") as handle:
        assert handle.read() == (data_dir / "sst" / "trees" / "dev.txt").read_bytes()


# --- HateXplain ------------------------------------------------------------------------------


def test_majority_label_and_rationale_votes() -> None:
    assert majority_label(["normal", "offensive", "normal"]) == "normal"
    assert majority_label(["normal", "offensive", "hatespeech"]) is None
    assert majority_label([]) is None
    two = [[1, 1, 0, 0], [0, 1, 1, 0]]
    assert combine_rationales(two, 4) == [0, 1, 0, 0]  # a majority of 2 is both
    assert combine_rationales(two, 4, "union") == [1, 1, 1, 0]
    three = [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]]
    assert combine_rationales(three, 4) == [1, 1, 0, 0]
    assert combine_rationales([], 3) == [0, 0, 0]
    with pytest.raises(ValueError, match="3 values for 4 tokens"):
        combine_rationales([[1, 0, 0]], 4)
    with pytest.raises(ValueError, match="rationale_mode"):
        combine_rationales([], 0, "any")  # type: ignore[arg-type]


def test_hatexplain_test_counts_and_rationales(data_dir: Path) -> None:
    ds = load_hatexplain("test")
    assert len(ds) == 1924  # no post lacks a majority label in test
    assert ds.features["label"].names == ["hatespeech", "normal", "offensive"]
    assert Counter(ds["label"]) == {0: 594, 1: 782, 2: 548}
    _assert_rationale_schema(ds)
    normal = [r for r, y in zip(ds["rationale"], ds["label"], strict=True) if y == 1]
    assert not any(any(r) for r in normal)
    toxic = ds.filter(lambda row: row["label"] != 1)
    assert sum(not any(r) for r in toxic["rationale"]) == 36  # annotators with no overlap
    assert mean_rationale_fraction(toxic) == pytest.approx(0.165, abs=1e-3)
    assert len(load_hatexplain("test", rationale_only=True)) == 1142 - 36
    assert len(load_hatexplain("validation")) == 1922


def test_hatexplain_union_reproduces_the_eraser_evidence(data_dir: Path) -> None:
    union = load_hatexplain("test", rationale_mode="union")
    majority = load_hatexplain("test")
    lines = (data_dir / "hatexplain" / "eraser_test.jsonl").read_text(encoding="utf-8")
    evidence: dict[str, set[int]] = {}
    for line in lines.splitlines():
        row = json.loads(line)
        marked = evidence.setdefault(row["annotation_id"], set())
        for group in row["evidences"]:
            for span in group:
                marked.update(range(span["start_token"], span["end_token"]))
    for post_id, u, m in zip(
        union["post_id"], union["rationale"], majority["rationale"], strict=True
    ):
        assert {i for i, v in enumerate(u) if v} == evidence[post_id]
        assert all(a <= b for a, b in zip(m, u, strict=True))  # majority within the union


def test_hatexplain_falls_back_to_local_when_the_hub_fails(
    hub_on: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "load_dataset", _hub_down)
    assert len(load_hatexplain("test")) == 1924


def test_hatexplain_maps_hub_rows_to_the_schema(
    hub_on: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_rows = Dataset.from_list(
        [
            {
                "id": "p1",
                "annotators": {"label": [0, 2, 0], "annotator_id": [1, 2, 3], "target": [[]] * 3},
                "rationales": [[1, 0, 1], [1, 0, 0], [0, 0, 1]],
                "post_tokens": ["you", "are", "x"],
            },
            {
                "id": "p2",
                "annotators": {"label": [1, 1, 2], "annotator_id": [1, 2, 3], "target": [[]] * 3},
                "rationales": [],
                "post_tokens": ["hello"],
            },
        ]
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: hub_rows)
    ds = load_hatexplain("test")
    assert ds.to_dict() == {
        "idx": [0, 1],
        "text": ["you are x", "hello"],
        "words": [["you", "are", "x"], ["hello"]],
        "rationale": [[1, 0, 1], [0]],
        "label": [0, 1],
        "post_id": ["p1", "p2"],
    }


# --- ERASER movies ---------------------------------------------------------------------------


def test_eraser_movies_test_split(data_dir: Path) -> None:
    ds = load_eraser_movies("test")
    assert len(ds) == 199
    assert Counter(ds["label"]) == {0: 100, 1: 99}
    assert ds.features["label"].names == ["negative", "positive"]
    _assert_rationale_schema(ds)
    assert ds["n_words_original"] == [len(w) for w in ds["words"]]
    assert mean_rationale_fraction(ds) == pytest.approx(0.314, abs=1e-3)
    assert ds[0]["annotation_id"].startswith("neg") and ds[0]["label"] == 0
    assert [len(load_eraser_movies(s)) for s in ("validation", "train")] == [200, 1600]


def test_eraser_movies_truncation_is_recorded_and_logged(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = load_eraser_movies("test")
    with caplog.at_level(logging.WARNING):
        cut = load_eraser_movies("test", max_words=300)
    _assert_rationale_schema(cut)
    assert cut["n_words_original"] == full["n_words_original"]
    n_cut = sum(n > 300 for n in full["n_words_original"])
    assert n_cut > 150
    assert max(len(w) for w in cut["words"]) == 300
    for short, long in zip(cut, full, strict=True):
        assert short["words"] == long["words"][:300]
        assert short["rationale"] == long["rationale"][:300]
    assert f"truncated {n_cut} of 199 reviews to 300 words" in caplog.text
    with pytest.raises(ValueError, match="max_words"):
        load_eraser_movies("test", max_words=0)


def test_missing_local_data_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="movies.tar.gz"):
        load_eraser_movies("test", data_dir=tmp_path)
    # HateXplain falls back on the copy vendored in the package: the same rows as the data dir.
    vendored = load_hatexplain("test", data_dir=tmp_path)
    assert len(vendored) == 1924 and vendored[:5] == load_hatexplain("test", data_dir=data_dir)[:5]
    with pytest.raises(ValueError, match="split"):
        load_hatexplain("train")


# --- IMDB ------------------------------------------------------------------------------------


def test_imdb_falls_back_to_local_when_the_hub_fails(
    hub_on: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "load_dataset", _hub_down)
    ds = load_imdb("test")
    assert len(ds) == 25_000
    assert ds.column_names == ["idx", "text", "label"]
    assert ds.features["label"].names == ["negative", "positive"]
    assert Counter(ds["label"]) == {0: 12_500, 1: 12_500}
    assert ds[0]["text"].startswith("Once again Mr. Costner")


def test_imdb_maps_hub_rows_to_the_schema(hub_on: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Dataset.from_dict({"text": ["bad<br />film", "great"], "label": [0, 1]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: hub)
    ds = load_imdb("train")
    assert ds.to_dict() == {"idx": [0, 1], "text": ["bad<br />film", "great"], "label": [0, 1]}
    with pytest.raises(ValueError, match="split"):
        load_imdb("unsupervised")
