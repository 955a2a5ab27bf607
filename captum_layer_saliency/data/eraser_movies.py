"""ERASER movie reviews (DeYoung et al. 2020) with word rationales from the evidence spans.

Read straight from ERASER's ``movies.tar.gz`` (in memory; nothing is extracted to disk). A
document's words are its whitespace tokens (the reviews are already tokenised, one sentence per
line); every evidence span ``[start_token, end_token)`` indexes those words, and a word is in the
rationale iff some human evidence span covers it. Labels: ``NEG`` -> 0 negative, ``POS`` -> 1
positive (the SST-2 order, so the SST-2 classifier's outputs line up).

Reviews are long (test: 795 words on average, 196-2,122). ``max_words`` truncates each review to
its first ``max_words`` words, cutting the rationale with it. It is never silent: the column
``n_words_original`` keeps every review's full length, and the number of truncated reviews and of
rationale words cut is logged as a warning. The default (``None``) keeps the whole review.

The hub copy (``movie_rationales``) stores evidence as strings without token offsets, so only the
original tarball is used.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

from datasets import Dataset, Value

from captum_layer_saliency.data._schema import SENTIMENT_LABELS, rationale_dataset
from captum_layer_saliency.data._source import DataUnavailableError, resolve_data_dir

logger = logging.getLogger(__name__)

_SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
_LABELS = {"NEG": 0, "POS": 1}
TARBALL = Path("eraser_movies") / "movies.tar.gz"


@functools.lru_cache(maxsize=2)
def _read_tarball(path: str, mtime_ns: int) -> dict[str, str]:
    """Every member file of the tarball, ``name -> text`` (cached per path and mtime)."""
    del mtime_ns  # only part of the cache key, so an updated tarball is re-read
    members: dict[str, str] = {}
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                members[member.name] = handle.read().decode("utf-8")
    return members


def _annotations(members: dict[str, str], split: str) -> list[dict[str, Any]]:
    text = members[f"movies/{_SPLIT_FILES[split]}"]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def evidence_rationale(annotation: dict[str, Any], n_words: int) -> list[int]:
    """The word rationale of one ERASER annotation: the union of its evidence spans.

    Args:
        annotation: one line of ``movies/<split>.jsonl``.
        n_words: the document's word count.

    Returns:
        One 0/1 per word.

    Raises:
        ValueError: a span is out of the document's range or belongs to another document.
    """
    rationale = [0] * n_words
    for group in annotation["evidences"]:
        for evidence in group:
            start, end = int(evidence["start_token"]), int(evidence["end_token"])
            if evidence["docid"] != annotation["annotation_id"] or not 0 <= start <= end <= n_words:
                raise ValueError(f"bad evidence span in {annotation['annotation_id']}: {evidence}")
            rationale[start:end] = [1] * (end - start)
    return rationale


def load_eraser_movies(
    split: str = "test",
    max_words: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """ERASER movie reviews with evidence rationales (module docstring).

    Args:
        split: ``"test"`` (199 reviews), ``"validation"`` (200) or ``"train"`` (1,600).
        max_words: keep only the first ``max_words`` words of each review (logged and recorded
            in ``n_words_original``), or ``None`` for whole reviews.
        data_dir: the local data directory holding ``eraser_movies/movies.tar.gz``.

    Returns:
        A rationale dataset (``idx, text, words, rationale, label, annotation_id,
        n_words_original``), in the order of the split's jsonl file.

    Raises:
        ValueError: an unknown split, or ``max_words < 1``.
        DataUnavailableError: the tarball is not found.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"ERASER movies split must be one of {sorted(_SPLIT_FILES)}: {split!r}")
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be >= 1 or None, got {max_words}")
    root = resolve_data_dir(data_dir)
    path = None if root is None else root / TARBALL
    if path is None or not path.is_file():
        raise DataUnavailableError(
            f"ERASER movies not found (looked for <data_dir>/{TARBALL.as_posix()}); put ERASER's "
            "movies.tar.gz there and pass data_dir or set $CAPTUM_LAYER_SALIENCY_DATA"
        )
    members = _read_tarball(str(path), path.stat().st_mtime_ns)
    columns: dict[str, list[Any]] = {
        "idx": [],
        "words": [],
        "rationale": [],
        "label": [],
        "annotation_id": [],
        "n_words_original": [],
    }
    truncated = cut_rationale = emptied = 0
    for idx, annotation in enumerate(_annotations(members, split)):
        doc_id = annotation["annotation_id"]
        words = members[f"movies/docs/{doc_id}"].split()
        rationale = evidence_rationale(annotation, len(words))
        columns["n_words_original"].append(len(words))
        if max_words is not None and len(words) > max_words:
            truncated += 1
            cut_rationale += sum(rationale[max_words:])
            words, rationale = words[:max_words], rationale[:max_words]
            emptied += not any(rationale)
        columns["idx"].append(idx)
        columns["words"].append(words)
        columns["rationale"].append(rationale)
        columns["label"].append(_LABELS[annotation["classification"]])
        columns["annotation_id"].append(doc_id)
    if truncated:
        logger.warning(
            "ERASER movies %s: truncated %d of %d reviews to %d words (%d rationale words cut; "
            "%d reviews left with no rationale); see the n_words_original column",
            split,
            truncated,
            len(columns["idx"]),
            max_words,
            cut_rationale,
            emptied,
        )
    extra = {"annotation_id": Value("string"), "n_words_original": Value("int64")}
    return rationale_dataset(columns, SENTIMENT_LABELS, extra)
