"""HateXplain (Mathew et al., AAAI 2021) with majority labels and majority word rationales.

Each post has three annotators, each of whom picks ``hatespeech``, ``offensive`` or ``normal``;
every annotator who picks one of the two toxic classes also marks the tokens that justify it.

* **Label**: the majority vote of the three annotators. Posts without a majority (three
  different labels) are dropped and their number is logged. The official val and test splits
  have none, so nothing is dropped there (test: 594 hatespeech, 782 normal, 548 offensive).
* **Rationale** (``rationale_mode="majority"``, the default): a token is in the rationale iff
  more than half of the annotators who gave a rationale marked it (2 of 2, or 2 of 3).
  ``rationale_mode="union"`` marks every token any of them marked; that is the ERASER-format
  evidence HateXplain's own plausibility metrics use.
* **Normal posts** have no rationales; they are kept, with an all-zero rationale, so the
  classification task is complete. Pass ``rationale_only=True`` to keep only the posts whose
  rationale is non-empty (the usual set for plausibility).

Label names follow the Hugging Face ``hatexplain`` ClassLabel order: 0 hatespeech, 1 normal,
2 offensive. ``words`` are the dataset's ``post_tokens`` (lowercased, with ``<user>``-style
placeholders), ``post_id`` is kept as an extra column.

Sources, in order: the hub, ``<data_dir>/hatexplain/dataset_<split>.json``, then the gzip copies
vendored in this package (``data/vendored/PROVENANCE.md``), so that a fresh clone without the
data directory can still rebuild the default HateXplain classifier.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, Value

from captum_layer_saliency.data._schema import rationale_dataset
from captum_layer_saliency.data._source import hub_then_local, resolve_data_dir

logger = logging.getLogger(__name__)

HATEXPLAIN_LABELS = ("hatespeech", "normal", "offensive")
_LOCAL_FILES = {"test": "dataset_test.json", "validation": "dataset_val.json"}
_VENDORED_DIR = Path(__file__).parent / "vendored"
RationaleMode = Literal["majority", "union"]


@dataclass(frozen=True)
class _Post:
    """One post, source-independent: what both the hub rows and the local JSON reduce to."""

    post_id: str
    annotator_labels: tuple[str, ...]
    masks: tuple[tuple[int, ...], ...]
    tokens: tuple[str, ...]


def majority_label(labels: Sequence[str]) -> str | None:
    """The label chosen by more than half of the annotators, or ``None`` if there is none.

    Args:
        labels: one label per annotator.

    Returns:
        The majority label, or ``None``.
    """
    if not labels:
        return None
    label, count = Counter(labels).most_common(1)[0]
    return label if 2 * count > len(labels) else None


def combine_rationales(
    masks: Sequence[Sequence[int]], n_tokens: int, mode: RationaleMode = "majority"
) -> list[int]:
    """Combine the annotators' token masks into one rationale.

    Args:
        masks: one 0/1 mask per annotator who gave a rationale (possibly none).
        n_tokens: the post's token count.
        mode: ``"majority"`` (marked by more than half of the masks) or ``"union"``.

    Returns:
        One 0/1 per token; all zeros when there are no masks.

    Raises:
        ValueError: a mask's length differs from ``n_tokens``, or the mode is unknown.
    """
    if mode not in ("majority", "union"):
        raise ValueError(f"rationale_mode must be 'majority' or 'union', got {mode!r}")
    for mask in masks:
        if len(mask) != n_tokens:
            raise ValueError(f"a rationale mask has {len(mask)} values for {n_tokens} tokens")
    votes = [sum(int(mask[i]) for mask in masks) for i in range(n_tokens)]
    if mode == "union":
        return [int(v > 0) for v in votes]
    return [int(2 * v > len(masks)) for v in votes]


def _posts_local(data_dir: Path | None, split: str) -> list[_Post] | None:
    path = None if data_dir is None else data_dir / "hatexplain" / _LOCAL_FILES[split]
    vendored = _VENDORED_DIR / f"hatexplain_{_LOCAL_FILES[split]}.gz"
    raw: dict[str, dict[str, Any]]
    if path is not None and path.is_file():
        with path.open(encoding="utf-8") as handle:
            raw = json.load(handle)
    elif vendored.is_file():
        with gzip.open(vendored, "rt", encoding="utf-8") as handle:
            raw = json.load(handle)
    else:
        return None
    # The files' keys are already in the order of post_id_divisions.json.
    return [
        _Post(
            post_id=str(post["post_id"]),
            annotator_labels=tuple(str(a["label"]) for a in post["annotators"]),
            masks=tuple(tuple(int(v) for v in mask) for mask in post["rationales"]),
            tokens=tuple(post["post_tokens"]),
        )
        for post in raw.values()
    ]


def _posts_hub(split: str) -> list[_Post]:
    from datasets import load_dataset

    rows: Iterable[dict[str, Any]] = load_dataset("hatexplain", split=split)
    # The hub stores annotator labels as ClassLabel ids in HATEXPLAIN_LABELS order.
    return [
        _Post(
            post_id=str(row["id"]),
            annotator_labels=tuple(HATEXPLAIN_LABELS[int(i)] for i in row["annotators"]["label"]),
            masks=tuple(tuple(int(v) for v in mask) for mask in row["rationales"]),
            tokens=tuple(row["post_tokens"]),
        )
        for row in rows
    ]


def load_hatexplain(
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    rationale_mode: RationaleMode = "majority",
    rationale_only: bool = False,
) -> Dataset:
    """HateXplain val or test with majority labels and combined rationales (module docstring).

    Tries ``load_dataset("hatexplain")`` first, then ``<data_dir>/hatexplain/dataset_<split>.json``,
    then the copy vendored in this package.

    Args:
        split: ``"test"`` or ``"validation"`` (the train split is not available locally).
        data_dir: the local data directory (see :func:`resolve_data_dir`).
        rationale_mode: ``"majority"`` or ``"union"`` (see :func:`combine_rationales`).
        rationale_only: keep only the posts with a non-empty rationale.

    Returns:
        A rationale dataset (``idx, text, words, rationale, label, post_id``); ``idx`` is the
        post's position in the source split, before any filtering.

    Raises:
        ValueError: an unknown split or rationale mode.
        DataUnavailableError: neither the hub nor the local directory has the split.
    """
    if split not in _LOCAL_FILES:
        raise ValueError(f"HateXplain split must be one of {sorted(_LOCAL_FILES)}, got {split!r}")
    combine_rationales([], 0, rationale_mode)  # validate the mode before any loading
    root = resolve_data_dir(data_dir)
    posts = hub_then_local(
        f"HateXplain ({split})",
        lambda: _posts_hub(split),
        lambda: _posts_local(root, split),
        f"Put HateXplain's {_LOCAL_FILES[split]} under <data_dir>/hatexplain/.",
    )
    columns: dict[str, list[Any]] = {
        "idx": [],
        "words": [],
        "rationale": [],
        "label": [],
        "post_id": [],
    }
    no_majority = 0
    for idx, post in enumerate(posts):
        label = majority_label(post.annotator_labels)
        if label is None:
            no_majority += 1
            continue
        rationale = combine_rationales(post.masks, len(post.tokens), rationale_mode)
        if rationale_only and not any(rationale):
            continue
        columns["idx"].append(idx)
        columns["words"].append(list(post.tokens))
        columns["rationale"].append(rationale)
        columns["label"].append(HATEXPLAIN_LABELS.index(label))
        columns["post_id"].append(post.post_id)
    if no_majority:
        logger.warning("HateXplain %s: dropped %d posts with no majority label", split, no_majority)
    return rationale_dataset(columns, HATEXPLAIN_LABELS, {"post_id": Value("string")})
