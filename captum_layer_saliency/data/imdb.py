"""IMDB (Large Movie Review Dataset v1.0, Maas et al. 2011): 25,000 train / 25,000 test reviews.

Hub first (``load_dataset("imdb")``), then ``<data_dir>/imdb/<split>.jsonl.gz``. Labels: 0
negative (rating <= 4), 1 positive (rating >= 7). The text is the review verbatim, ``<br />``
tags included, as on the hub. ``idx`` is the row's position in its source, which in both sources
is sorted by label (all negatives first), so take a ``limit`` only after shuffling if both classes
are wanted.

Reviews average about 230 words and many exceed a 512-token encoder. This loader never truncates;
the comparison runner truncates explicitly at tokenisation, and reports it.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from datasets import Dataset

from captum_layer_saliency.data._schema import SENTIMENT_LABELS, text_features
from captum_layer_saliency.data._source import hub_then_local, resolve_data_dir

_SPLITS = ("test", "train")


def _imdb_local(data_dir: Path | None, split: str) -> Dataset | None:
    path = None if data_dir is None else data_dir / "imdb" / f"{split}.jsonl.gz"
    if path is None or not path.is_file():
        return None
    texts: list[str] = []
    labels: list[int] = []
    with gzip.open(path, mode="rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(int(row["label"]))
    return _as_dataset(texts, labels)


def _imdb_hub(split: str) -> Dataset:
    from datasets import load_dataset

    hub = load_dataset("imdb", split=split)
    return _as_dataset(list(hub["text"]), [int(y) for y in hub["label"]])


def _as_dataset(texts: list[str], labels: list[int]) -> Dataset:
    return Dataset.from_dict(
        {"idx": list(range(len(texts))), "text": texts, "label": labels},
        features=text_features(SENTIMENT_LABELS),
    )


def load_imdb(split: str = "test", data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """IMDB reviews with binary sentiment labels (module docstring).

    Args:
        split: ``"test"`` or ``"train"`` (25,000 reviews each).
        data_dir: the local data directory holding ``imdb/<split>.jsonl.gz``.

    Returns:
        A dataset with ``idx, text, label`` (label names ``negative``/``positive``).

    Raises:
        ValueError: an unknown split.
        DataUnavailableError: neither the hub nor the local directory has the split.
    """
    if split not in _SPLITS:
        raise ValueError(f"IMDB split must be one of {list(_SPLITS)}, got {split!r}")
    root = resolve_data_dir(data_dir)
    return hub_then_local(
        f"IMDB ({split})",
        lambda: _imdb_hub(split),
        lambda: _imdb_local(root, split),
        f"Put imdb/{split}.jsonl.gz (fields text, label) under the data directory.",
    )
