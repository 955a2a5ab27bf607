"""The neighbour index: MiniLM retrieval, self-exclusion, save/load, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captum_layer_saliency.attr.neighbours import (
    NeighbourIndex,
    SentenceEncoder,
    cached_index,
    text_key,
)

SPORTS = 1  # AG News label of "Sports"


class TableEncoder:
    """A toy encoder: fixed vectors for known texts (and a declared dimension)."""

    def __init__(self, table: dict[str, list[float]], name: str = "table") -> None:
        self.table = table
        self.name = name
        self.dim = len(next(iter(table.values())))
        self.calls = 0

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        return torch.tensor([self.table[t] for t in texts])


TABLE = {
    "the cat sat": [1.0, 0.0, 0.0],
    "a cat sat down": [0.9, 0.1, 0.0],
    "dogs bark": [0.0, 1.0, 0.0],
    "stocks fell": [0.0, 0.0, 1.0],
}


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture(scope="module")
def headlines() -> tuple[list[str], list[int]]:
    """40 AG News test rows, 10 per class."""
    from captum_layer_saliency.data.ag_news import load_ag_news

    data = load_ag_news("test")
    texts: list[str] = []
    labels: list[int] = []
    counts = [0, 0, 0, 0]
    for text, label in zip(data["text"][:400], data["label"][:400], strict=True):
        if counts[label] < 10:
            counts[label] += 1
            texts.append(text)
            labels.append(label)
    assert counts == [10, 10, 10, 10]
    return texts, labels


@pytest.mark.slow
def test_minilm_neighbours_of_a_sports_headline_are_sports(
    minilm: SentenceEncoder, headlines: tuple[list[str], list[int]]
) -> None:
    texts, labels = headlines
    index = NeighbourIndex.build(texts, minilm, progress=False)
    assert index.dim == minilm.dim == 384
    query = "Yankees rally in the ninth inning to beat the Red Sox as the playoff race tightens"
    idx, sims = index.search([query], 3, encoder=minilm)
    assert [labels[i] for i in idx[0].tolist()] == [SPORTS] * 3
    assert (sims[0, :-1] >= sims[0, 1:]).all()  # most similar first
    # A corpus headline is not its own neighbour, and its neighbours share its topic.
    sports = [i for i, label in enumerate(labels) if label == SPORTS]
    idx, _ = index.search([texts[sports[0]]], 3, encoder=minilm)
    assert sports[0] not in idx[0].tolist()
    assert sum(labels[i] == SPORTS for i in idx[0].tolist()) >= 2


def test_minilm_is_mean_pooled_and_normalised(minilm: SentenceEncoder) -> None:
    vectors = minilm(["a short text", "another, somewhat longer text about football"])
    assert vectors.shape == (2, 384)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2))
    # Padding does not change a text's embedding (mean over the attention mask only).
    alone = minilm(["a short text"])
    torch.testing.assert_close(alone[0], vectors[0], atol=1e-5, rtol=1e-5)


def test_self_exclusion_skips_every_copy_of_the_query_text() -> None:
    texts = ["the cat sat", "a cat sat down", "dogs bark", "stocks fell", "The  cat sat"]
    table = {**TABLE, "The  cat sat": [1.0, 0.0, 0.0]}
    index = NeighbourIndex.build(texts, TableEncoder(table), progress=False)
    idx, sims = index.search(["the cat sat"], 2, encoder=TableEncoder(table))
    assert idx[0].tolist() == [1, 2]  # neither copy of "the cat sat" (rows 0 and 4)
    idx, _ = index.search(["the cat sat"], 1, encoder=TableEncoder(table), exclude_self=False)
    assert idx[0].tolist() in ([0], [4])
    assert text_key("It 's  GOOD") == text_key("it's good")


def test_vector_queries_and_too_many_neighbours() -> None:
    index = NeighbourIndex.build(list(TABLE), TableEncoder(TABLE), progress=False)
    idx, _ = index.search(torch.tensor([[0.0, 0.9, 0.1]]), 1)
    assert index.texts[idx[0, 0]] == "dogs bark"
    with pytest.raises(ValueError, match="fewer"):
        index.search(["the cat sat"], 4, encoder=TableEncoder(TABLE))  # only 3 others
    with pytest.raises(ValueError, match="k=5"):
        index.search(["the cat sat"], 5, encoder=TableEncoder(TABLE), exclude_self=False)
    with pytest.raises(ValueError, match="non-negative"):
        index.search(["the cat sat"], -1, encoder=TableEncoder(TABLE))


def test_save_load_round_trip(tmp_path: Path) -> None:
    encoder = TableEncoder(TABLE)
    index = NeighbourIndex.build(list(TABLE), encoder, progress=False)
    index.save(tmp_path / "idx")
    loaded = NeighbourIndex.load(tmp_path / "idx")
    assert loaded.texts == index.texts
    assert loaded.encoder_name == "table" and loaded.dim == 3
    torch.testing.assert_close(loaded.embeddings, index.embeddings, rtol=0, atol=0)
    for a, b in zip(
        index.search(["dogs bark"], 2, encoder=encoder),
        loaded.search(["dogs bark"], 2, encoder=encoder),
        strict=True,
    ):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError):
        NeighbourIndex.load(tmp_path / "missing")


def test_dimension_mismatch_is_a_clear_error() -> None:
    index = NeighbourIndex.build(list(TABLE), TableEncoder(TABLE), progress=False)
    wider = TableEncoder({t: [*v, 0.0] for t, v in TABLE.items()}, name="wider")
    with pytest.raises(ValueError, match="4-dim vectors but the index holds 3-dim"):
        index.search(["dogs bark"], 1, encoder=wider)
    with pytest.raises(ValueError, match="rebuild the index"):
        index.check_encoder(wider)

    def undeclared(texts: list[str]) -> torch.Tensor:  # no .dim: caught on its output
        return torch.ones(len(texts), 5)

    with pytest.raises(ValueError, match="5-dim vectors"):
        index.search(["dogs bark"], 1, encoder=undeclared)


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="corpus is empty"):
        NeighbourIndex.build([], TableEncoder(TABLE))
    with pytest.raises(ValueError, match="corpus is empty"):
        NeighbourIndex([], torch.empty(0, 3), "table")
    with pytest.raises(ValueError, match="corpus is empty"):
        cached_index([], TableEncoder(TABLE), cache_dir=tmp_path)


def test_cached_index_builds_once_per_corpus_and_encoder(tmp_path: Path) -> None:
    encoder = TableEncoder(TABLE)
    first = cached_index(list(TABLE), encoder, cache_dir=tmp_path, progress=False)
    calls = encoder.calls
    second = cached_index(list(TABLE), encoder, cache_dir=tmp_path, progress=False)
    assert encoder.calls == calls  # loaded, not rebuilt
    assert second.texts == first.texts
    cached_index(list(TABLE)[:3], encoder, cache_dir=tmp_path, progress=False)
    assert encoder.calls > calls  # another corpus, another index
    assert len(list((tmp_path / "lafa_index").iterdir())) == 2
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind
