r"""AG News (Zhang et al. 2015) as a :class:`datasets.Dataset`, with a split of its test set.

Only the official **test** split (7,600 articles, 1,900 per class) is available offline, so the
default AG News classifier is trained on part of the official *test* split and evaluated on a
disjoint part of it. Results on ``"heldout"`` are therefore not comparable with published AG News
test accuracies.

* ``"test"``: all 7,600 rows of the official test split, in file order (``idx`` = row number).
* ``"heldout"``: 1,600 rows, 400 per class, for evaluation.
* ``"train_part"``: the other 6,000 rows, 1,500 per class, used to fine-tune.

The split is stratified and deterministic: for each class, that class's row numbers (ascending)
are permuted with ``numpy.random.default_rng(AG_NEWS_SPLIT_SEED)`` (one generator, classes in
label order) and the first ``HELDOUT_PER_CLASS`` go to ``"heldout"``. Both parts are returned in
``idx`` order.

``text`` follows the Hugging Face ``ag_news`` convention: ``title + " " + description``, verbatim
(the source's ``\`` line-break escapes and HTML entities such as ``#39;`` are kept), so the hub
and the local copies give identical rows.

Sources, in order: the hub (``load_dataset("ag_news", split="test")``), the gzip copy vendored in
this package (``data/vendored/PROVENANCE.md``), then ``ag_news/test.csv`` in the local data
directory (see :mod:`captum_layer_saliency.data._source`).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import datasets
import numpy as np

from captum_layer_saliency.data._source import hub_then_local, resolve_data_dir

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
SPLITS = ("train_part", "heldout", "test")
AG_NEWS_SPLIT_SEED = 0
HELDOUT_PER_CLASS = 400
_VENDORED = Path(__file__).parent / "vendored" / "ag_news_test.csv.gz"

_FEATURES = datasets.Features(
    {
        "idx": datasets.Value("int32"),
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=AG_NEWS_LABELS),
    }
)


def _parse_csv(text: str) -> datasets.Dataset:
    """Parse the original ``"class","title","description"`` CSV (no header, classes 1-4)."""
    texts, labels = [], []
    for row in csv.reader(io.StringIO(text)):
        label, title, description = row
        texts.append(f"{title} {description}")
        labels.append(int(label) - 1)
    return datasets.Dataset.from_dict(
        {"idx": list(range(len(texts))), "text": texts, "label": labels}, features=_FEATURES
    )


def _from_local(data_dir: str | os.PathLike[str] | None) -> datasets.Dataset | None:
    if _VENDORED.is_file():
        with gzip.open(_VENDORED, "rt", encoding="utf-8", newline="") as f:
            return _parse_csv(f.read())
    root = resolve_data_dir(data_dir)
    path = root / "ag_news" / "test.csv" if root is not None else None
    if path is None or not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as f:
        return _parse_csv(f.read())


def _from_hub() -> datasets.Dataset:
    ds = datasets.load_dataset("ag_news", split="test")
    ds = ds.add_column("idx", list(range(len(ds)))).select_columns(["idx", "text", "label"])
    return ds.cast(_FEATURES)


def heldout_indices(labels: list[int]) -> list[int]:
    """The row numbers of the ``"heldout"`` split, given the test split's labels in row order.

    Args:
        labels: the class of every row of the official test split.

    Returns:
        Sorted row numbers, ``HELDOUT_PER_CLASS`` per class.
    """
    rng = np.random.default_rng(AG_NEWS_SPLIT_SEED)
    label_array = np.asarray(labels)
    chosen: list[int] = []
    for c in range(len(AG_NEWS_LABELS)):
        rows = np.flatnonzero(label_array == c)
        chosen.extend(rng.permutation(rows)[:HELDOUT_PER_CLASS].tolist())
    return sorted(chosen)


def load_ag_news(
    split: str = "heldout", data_dir: str | os.PathLike[str] | None = None
) -> datasets.Dataset:
    """Load AG News: the official test split, or this project's train/held-out parts of it.

    Args:
        split: ``"heldout"`` (1,600 rows for evaluation), ``"train_part"`` (the 6,000 rows of the
            official *test* split used to fine-tune the default classifier) or ``"test"`` (all
            7,600). ``"heldout"`` and ``"train_part"`` are disjoint and stratified.
        data_dir: a local data directory holding ``ag_news/test.csv``, used only when neither
            the hub nor the vendored copy is available.

    Returns:
        A dataset with columns ``idx`` (row number in the official test split), ``text``
        (``title + " " + description``) and ``label``
        (``ClassLabel(["World", "Sports", "Business", "Sci/Tech"])``).

    Raises:
        ValueError: an unknown split.
        DataUnavailableError: no source could provide the data.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown AG News split {split!r}; expected one of {SPLITS}")
    test = hub_then_local(
        "AG News test",
        _from_hub,
        lambda: _from_local(data_dir),
        hint=(
            "Reinstall captum-layer-saliency (its vendored copy is missing), or pass data_dir= / "
            "set $CAPTUM_LAYER_SALIENCY_DATA to a directory containing ag_news/test.csv (the "
            "original CSV), or make the Hugging Face hub reachable."
        ),
    )
    if split == "test":
        return test
    heldout = set(heldout_indices(test["label"]))
    keep = [i for i in range(len(test)) if (i in heldout) == (split == "heldout")]
    return test.select(keep)
