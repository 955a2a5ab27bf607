"""The task registry the comparison CLI uses.

Runs offline against the project's shared data directory (``../shared/data``); skipped without it.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from captum_layer_saliency.data import DATA_DIR_ENV
from captum_layer_saliency.data.sst2 import load_sst2
from captum_layer_saliency.data.tasks import (
    ERASER_MAX_WORDS,
    TASKS,
    EmptyDatasetError,
    available_tasks,
    get_task,
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


def test_registry_lists_the_tasks() -> None:
    assert available_tasks() == [
        "ag_news",
        "eraser_movies",
        "hatexplain",
        "hatexplain_toxic",
        "imdb",
        "rte_pairs",
        "sst2",
        "sst2_words",
    ]
    assert {n: TASKS[n].model for n in TASKS} == {
        "sst2": "sst2",
        "sst2_words": "sst2",
        "ag_news": "ag_news",
        "eraser_movies": "sst2",
        "imdb": "sst2",
        "hatexplain": "hatexplain",
        "hatexplain_toxic": "hatexplain",
        "rte_pairs": None,
    }
    assert [n for n in available_tasks() if TASKS[n].is_pair] == ["rte_pairs"]
    assert [n for n in available_tasks() if TASKS[n].has_rationales] == [
        "eraser_movies",
        "hatexplain",
        "hatexplain_toxic",
        "sst2",
        "sst2_words",
    ]
    for spec in TASKS.values():
        assert spec.default_split in spec.splits


def test_get_task_normalises_and_suggests() -> None:
    assert get_task("SST2") is TASKS["sst2"]
    assert get_task(" eraser-movies ") is TASKS["eraser_movies"]
    with pytest.raises(ValueError, match="Did you mean 'hatexplain'") as info:
        get_task("hatexplian")
    assert "ag_news, eraser_movies, hatexplain, hatexplain_toxic, imdb, rte_pairs, sst2" in str(
        info.value
    )
    with pytest.raises(ValueError, match="unknown task 'zzz'. Valid tasks"):
        get_task("zzz")


def test_a_task_without_a_default_model_says_what_to_pass() -> None:
    assert get_task("sst2").default_model() == "sst2"
    assert get_task("hatexplain").default_model() == "hatexplain"
    orphan = dataclasses.replace(get_task("hatexplain"), model=None)
    with pytest.raises(ValueError, match="no default classifier.*hatespeech.*--model"):
        orphan.default_model()


@pytest.mark.parametrize(
    "name", ["sst2", "ag_news", "eraser_movies", "hatexplain", "hatexplain_toxic"]
)
def test_every_task_loads_with_its_schema(data_dir: Path, name: str) -> None:
    spec = get_task(name)
    ds = spec.load(limit=5)
    assert len(ds) == 5
    assert tuple(ds.features["label"].names) == spec.label_names
    expected = ["idx", "text", "label"]
    if spec.has_rationales:
        expected += ["words", "rationale"]
        for text, words, rationale in zip(ds["text"], ds["words"], ds["rationale"], strict=True):
            assert text == " ".join(words) and len(rationale) == len(words)
    assert set(expected) <= set(ds.column_names)


def test_sst2_task_is_the_dev_set_with_rationales(data_dir: Path) -> None:
    ds = get_task("sst2").load()
    dev = load_sst2("validation")
    assert len(ds) == 872
    assert ds["idx"] == dev["idx"] and ds["label"] == dev["label"]
    assert get_task("sst2").load(limit=3)["idx"] == [0, 1, 2]  # dev order, no shuffle


def test_eraser_task_truncates_visibly_and_shuffles_reproducibly(data_dir: Path) -> None:
    spec = get_task("eraser_movies")
    ds = spec.load()
    assert len(ds) == 199
    assert max(len(w) for w in ds["words"]) == ERASER_MAX_WORDS
    assert sum(n > ERASER_MAX_WORDS for n in ds["n_words_original"]) == 179
    assert sorted(ds["idx"]) == list(range(199))
    first = spec.load(limit=20)
    assert first["idx"] == ds["idx"][:20] == spec.load(limit=20)["idx"]
    assert set(first["label"]) == {0, 1}  # the source is sorted by label; the prefix is not


def test_hatexplain_toxic_is_the_test_posts_with_a_rationale(data_dir: Path) -> None:
    everything = get_task("hatexplain").load()
    toxic = get_task("hatexplain_toxic").load()
    assert len(everything) == 1924 and len(toxic) == 1106
    pairs = zip(everything["idx"], everything["rationale"], strict=True)
    with_rationale = [i for i, r in pairs if any(r)]
    assert toxic["idx"] == with_rationale  # same posts, same order, same idx
    assert "normal" not in {toxic.features["label"].int2str(x) for x in set(toxic["label"])}


def test_imdb_task_limit_holds_both_classes(data_dir: Path) -> None:
    ds = get_task("imdb").load(limit=40)
    assert len(ds) == 40 and set(Counter(ds["label"])) == {0, 1}


def test_load_rejects_bad_arguments_and_empty_data(data_dir: Path) -> None:
    spec = get_task("sst2")
    with pytest.raises(ValueError, match="no split 'test'.*validation"):
        spec.load(split="test")
    with pytest.raises(ValueError, match="limit"):
        spec.load(limit=0)
    assert len(get_task("hatexplain").load(split="validation", limit=10_000)) == 1922

    features = Features(
        {"idx": Value("int64"), "text": Value("string"), "label": ClassLabel(names=["a", "b"])}
    )
    empty = replace(
        spec,
        loader=lambda split, data_dir: Dataset.from_dict(
            {"idx": [], "text": [], "label": []}, features=features
        ),
        label_names=("a", "b"),
    )
    with pytest.raises(EmptyDatasetError, match="no examples"):
        empty.load()
    with pytest.raises(RuntimeError, match="loader labels"):
        replace(empty, label_names=("x", "y")).load()
