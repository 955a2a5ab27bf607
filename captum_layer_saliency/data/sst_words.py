"""SST word-level sentiment for SST-2 dev and test sentences (LAFA's "human-centric" benchmark).

Zhang et al. (NAACL 2022, section 5) score an attribution on SST by the Pearson correlation
between it and the **word-level sentiment** of the Stanford Sentiment Treebank: every leaf of a
sentence's parse tree (one word) carries a 5-class label 0-4, which is **centred and taken in
absolute value**, ``|label - 2|`` in {0, 1, 2}, so that a neutral word scores 0 and a strongly
polar word (either way) 2. This module gives that value for every word of the SST-2 dev and test
sentences.

Each SST-2 sentence is matched to the tree whose normalised text (leaves joined by spaces, PTB
escapes undone, lowercased; see :func:`~captum_layer_saliency.data.sst_phrases.parse_tree`)
equals the sentence with its whitespace collapsed. On the data folder's copy, dev matches 872 of 872
and test 1,815 of 1,821; the 6 unmatched test sentences differ from their trees in tokenisation
and are left out (:func:`load_sst_word_sentiment` reports the counts). Test labels come from the
tree roots (GLUE's test split has none).

The rows follow the rationale schema (:mod:`captum_layer_saliency.data._schema`): ``words`` and
``rationale`` (the phrase rationale of :mod:`~captum_layer_saliency.data.sst_phrases`), plus
``word_sentiment`` (one float per word), so the comparison harness scores every plausibility
metric, this one included, on them.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Value
from datasets import Sequence as HFSequence

from captum_layer_saliency.data._schema import SENTIMENT_LABELS, rationale_dataset
from captum_layer_saliency.data._source import resolve_data_dir
from captum_layer_saliency.data.sst2 import load_sst2
from captum_layer_saliency.data.sst_phrases import (
    DEFAULT_MAX_PHRASE_WORDS,
    TreeNode,
    parse_tree,
    phrase_rationale,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "TreeMatch",
    "leaf_labels",
    "load_sst_word_sentiment",
    "match_trees",
    "word_sentiment",
]

SPLITS = ("validation", "test")
_VENDORED = Path(__file__).parent / "vendored"
_TREES = {"validation": "dev.txt", "test": "test.txt"}
_VENDORED_TREES = {"validation": "sst_dev_trees.txt.gz", "test": "sst_test_trees.txt.gz"}


def leaf_labels(root: TreeNode) -> list[int]:
    """The label of the leaf above each word, left to right.

    A leaf that the normalisation split into several words gives each of them its label.
    """
    labels = [2] * root.n_words
    stack = [root]
    while stack:
        node = stack.pop()
        if node.children:
            stack.extend(node.children)
        else:
            labels[node.start : node.end] = [node.label] * node.n_words
    return labels


def word_sentiment(labels: Sequence[int]) -> list[float]:
    """The paper's word sentiment: each 0-4 label centred and in absolute value, ``|label - 2|``.

    Raises:
        ValueError: a label outside 0-4.
    """
    if any(not 0 <= y <= 4 for y in labels):
        raise ValueError(f"SST labels lie in 0-4, got {list(labels)}")
    return [float(abs(y - 2)) for y in labels]


@dataclass(frozen=True)
class TreeMatch:
    """How many SST-2 sentences of a split matched a tree.

    Attributes:
        split: ``"validation"`` or ``"test"``.
        sentences: the SST-2 sentences.
        matched: those with a tree of the same normalised text.
        unmatched: the texts of the others.
    """

    split: str
    sentences: int
    matched: int
    unmatched: tuple[str, ...]


def _read_lines(paths: Sequence[Path | None]) -> list[str] | None:
    for path in paths:
        if path is not None and path.is_file():
            opener: Any = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as handle:
                lines: list[str] = handle.read().splitlines()
                return lines
    return None


def _tree_lines(split: str, data_dir: Path | None) -> list[str]:
    """The split's tree lines: the data directory first, then the vendored copy."""
    trees = _read_lines(
        [
            None if data_dir is None else data_dir / "sst" / "trees" / _TREES[split],
            _VENDORED / _VENDORED_TREES[split],
        ]
    )
    if trees is None:
        raise FileNotFoundError(f"the SST trees of {split!r} are missing")
    return trees


def match_trees(
    sentences: Sequence[str], trees: Sequence[tuple[TreeNode, list[str]]]
) -> tuple[list[tuple[int, TreeNode, list[str]]], list[str]]:
    """Match sentences to the non-neutral trees of the same normalised text.

    Args:
        sentences: SST-2 sentences (GLUE text).
        trees: parsed trees (:func:`~captum_layer_saliency.data.sst_phrases.parse_tree`).

    Returns:
        ``(position, root, words)`` for each matched sentence, in order, and the unmatched texts.
    """
    by_text = {" ".join(words): (root, words) for root, words in trees if root.label != 2}
    matched, unmatched = [], []
    for i, sentence in enumerate(sentences):
        key = " ".join(sentence.split())
        if key in by_text:
            matched.append((i, *by_text[key]))
        else:
            unmatched.append(sentence)
    return matched, unmatched


def load_sst_word_sentiment(
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    max_phrase_words: int | None = DEFAULT_MAX_PHRASE_WORDS,
) -> tuple[Dataset, TreeMatch]:
    """SST-2 dev or test sentences with the SST word sentiment of each word.

    Args:
        split: ``"validation"`` (872 sentences) or ``"test"`` (1,821; 1,815 match a tree).
        data_dir: the local data directory (:func:`~captum_layer_saliency.data._source.
            resolve_data_dir`); the vendored copies are used where it has no files.
        max_phrase_words: the phrase rationale's size cap (see
            :mod:`~captum_layer_saliency.data.sst_phrases`).

    Returns:
        The dataset (``idx`` = the position in the SST-2 split, ``text``, ``words``,
        ``rationale``, ``label`` from the tree root, ``word_sentiment``) and the match counts.

    Raises:
        ValueError: an unknown split, or a dev label that disagrees with its tree.
        FileNotFoundError: neither the data directory nor the package holds the trees.
        DataUnavailableError: the SST-2 sentences cannot be found.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    trees = [parse_tree(line) for line in _tree_lines(split, resolve_data_dir(data_dir)) if line]
    sentences = [str(t) for t in load_sst2(split, data_dir=data_dir)["text"]]
    matched, unmatched = match_trees(sentences, trees)
    columns: dict[str, list[Any]] = {
        "idx": [],
        "words": [],
        "rationale": [],
        "label": [],
        "word_sentiment": [],
    }
    for i, root, words in matched:
        columns["idx"].append(i)
        columns["words"].append(words)
        columns["rationale"].append(phrase_rationale(root, max_phrase_words))
        columns["label"].append(int(root.label > 2))
        columns["word_sentiment"].append(word_sentiment(leaf_labels(root)))
    report = TreeMatch(split, len(sentences), len(matched), tuple(unmatched))
    if unmatched:
        logger.info(
            "SST word sentiment (%s): %d of %d sentences match a tree; %d left out",
            split,
            len(matched),
            len(sentences),
            len(unmatched),
        )
    extra = {"word_sentiment": HFSequence(Value("float32"))}
    return rationale_dataset(columns, SENTIMENT_LABELS, extra), report
