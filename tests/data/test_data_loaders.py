"""The SST-2 and AG News loaders: offline, with a failing hub, and with nothing available."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from captum_layer_saliency.data import DataUnavailableError, ag_news, load_ag_news, load_sst2, sst2


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hub_down(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The hub is allowed but every ``load_dataset`` call fails, as it does without a network."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls: list[tuple] = []

    def fail(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise ConnectionError("simulated: huggingface.co unreachable")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    return calls


@pytest.fixture
def no_vendored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sst2, "_VENDORED_DIR", tmp_path / "no-vendored")
    monkeypatch.setattr(ag_news, "_VENDORED", tmp_path / "no-vendored" / "ag_news_test.csv.gz")


@pytest.mark.usefixtures("offline")
def test_sst2_offline() -> None:
    dev = load_sst2()
    assert len(dev) == 872
    assert dev.column_names == ["idx", "text", "label"]
    assert dev.features["label"].names == ["negative", "positive"]
    assert dev[0] == {
        "idx": 0,
        "text": "it 's a charming and often affecting journey . ",
        "label": 1,
    }
    assert sum(dev["label"]) == 444
    train = load_sst2("train")
    assert len(train) == 67349 and sum(train["label"]) == 37569
    test = load_sst2("test")
    assert len(test) == 1821 and set(test["label"]) == {-1}  # unlabelled, as in GLUE
    assert test[0] == {"idx": 0, "text": "uneasy mishmash of styles and genres .", "label": -1}
    with pytest.raises(ValueError, match="validation"):
        load_sst2("dev")


@pytest.mark.usefixtures("offline")
def test_ag_news_splits_are_disjoint_stratified_and_deterministic() -> None:
    test = load_ag_news("test")
    part, held = load_ag_news("train_part"), load_ag_news("heldout")
    assert (len(test), len(part), len(held)) == (7600, 6000, 1600)
    assert test.features["label"].names == ["World", "Sports", "Business", "Sci/Tech"]
    assert set(part["idx"]).isdisjoint(held["idx"])
    assert set(part["idx"]) | set(held["idx"]) == set(test["idx"])
    assert [held["label"].count(c) for c in range(4)] == [400] * 4
    assert held["idx"] == load_ag_news("heldout")["idx"]
    assert held["idx"] == sorted(held["idx"])
    first = test[0]
    assert first["text"].startswith("Fears for T N pension after talks Unions representing")
    assert first["label"] == 2  # Business
    assert held[0]["text"] == test[held[0]["idx"]]["text"]


def test_hub_failure_falls_back_to_vendored(hub_down: list[tuple]) -> None:
    assert len(load_sst2("validation")) == 872
    assert len(load_ag_news("heldout")) == 1600
    assert hub_down[0][:2] == ("glue", "sst2")
    assert hub_down[1][:1] == ("ag_news",)


def test_hub_is_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    hub = datasets.Dataset.from_dict(
        {"sentence": ["good", "bad"], "label": [1, 0], "idx": [0, 1]},
        features=datasets.Features(
            {
                "sentence": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["negative", "positive"]),
                "idx": datasets.Value("int32"),
            }
        ),
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: hub)
    ds = load_sst2("validation")
    assert ds.column_names == ["idx", "text", "label"]
    assert ds["text"] == ["good", "bad"]


@pytest.mark.usefixtures("hub_down", "no_vendored")
def test_data_dir_is_the_last_fallback(tmp_path: Path) -> None:
    (tmp_path / "sst2_glue").mkdir()
    (tmp_path / "sst2_glue" / "dev.tsv").write_text(
        "sentence\tlabel\na gem . \t1\na mess . \t0\n", encoding="utf-8"
    )
    (tmp_path / "ag_news").mkdir()
    (tmp_path / "ag_news" / "test.csv").write_text(
        '"2","Title","Body, with a comma."\n', encoding="utf-8"
    )
    ds = load_sst2("validation", data_dir=tmp_path)
    assert ds["text"] == ["a gem . ", "a mess . "] and ds["label"] == [1, 0]
    assert load_ag_news("test", data_dir=tmp_path)[0] == {
        "idx": 0,
        "text": "Title Body, with a comma.",
        "label": 1,
    }


@pytest.mark.usefixtures("hub_down", "no_vendored")
def test_nothing_available_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAPTUM_LAYER_SALIENCY_DATA", str(tmp_path))
    with pytest.raises(DataUnavailableError) as err:
        load_sst2("validation")
    message = str(err.value)
    assert "ConnectionError" in message
    assert "CAPTUM_LAYER_SALIENCY_DATA" in message and "sst2_glue/dev.tsv" in message
    with pytest.raises(DataUnavailableError, match="ag_news/test.csv"):
        load_ag_news()
