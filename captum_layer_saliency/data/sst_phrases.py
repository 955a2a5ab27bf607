"""Word-level rationales for the 872 SST-2 dev sentences, derived from the SST phrase labels.

The Stanford Sentiment Treebank labels every node of every parse tree (phrases and single words)
with a 5-class sentiment: 0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive.
SST-2 dev is the set of dev-tree roots whose label is not 2. There is no separately annotated
rationale set for SST-2, so the rationale of a sentence is read off its tree:

    A word is in the rationale iff it lies under a *minimal polar phrase*: a node (a leaf counts)
    of at most ``max_phrase_words`` words whose label is polar in the root's direction
    (0-1 for a negative root, 3-4 for a positive one) and none of whose descendants is.

Taking the smallest such phrases keeps the rationale on the words that carry the sentiment
("lovely" rather than "a lovely film"), while a phrase such as "not good" (negative, with a
positive child) is kept whole, because no smaller node of it is negative. When a sentence has no
such phrase of at most ``max_phrase_words`` words (its polarity only appears in larger
constituents: 41 of 872 sentences with the default 5), the size cap is lifted for that sentence,
so every row has a non-empty rationale (the root itself is always polar).

With the default ``max_phrase_words=5`` the mean rationale fraction is 0.235 (median 0.194) of a
sentence's words. See ``docs/datasets.md``.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from captum_layer_saliency.data._schema import SENTIMENT_LABELS, rationale_dataset
from captum_layer_saliency.data._source import hub_then_local, resolve_data_dir
from captum_layer_saliency.data.sst2 import load_sst2

logger = logging.getLogger(__name__)

DEFAULT_MAX_PHRASE_WORDS = 5
# sst/trees/dev.txt, gzipped (sha256 of the text in docs/datasets.md), so the sst2 task works
# on a fresh install without a data directory.
_VENDORED_TREES = Path(__file__).parent / "vendored" / "sst_dev_trees.txt.gz"

# The README's normalisation of tree text to GLUE text (PTB escapes undone, NBSP -> space,
# lowercased). Order matters only in that none of the replacements creates another's pattern.
_PTB_UNESCAPES = (("-LRB-", "("), ("-RRB-", ")"), ("\\/", "/"), ("\\*", "*"), ("\u00a0", " "))


@dataclass(frozen=True)
class TreeNode:
    """One node of a parsed SST tree.

    Attributes:
        label: the node's 5-class sentiment label (0-4).
        start: index of the node's first word in the sentence's word list.
        end: one past the index of its last word.
        children: the child nodes (empty for a leaf).
    """

    label: int
    start: int
    end: int
    children: tuple[TreeNode, ...] = ()

    @property
    def n_words(self) -> int:
        """The number of words the node spans."""
        return self.end - self.start


def normalise_ptb_token(token: str) -> str:
    r"""Undo the PTB escapes of a tree leaf and lowercase it, as the GLUE SST-2 text is.

    Args:
        token: a raw leaf, e.g. ``-LRB-`` or ``8\u00a01\/2``.

    Returns:
        The normalised text, e.g. ``(`` or ``8 1/2`` (it may contain spaces).
    """
    for escaped, plain in _PTB_UNESCAPES:
        token = token.replace(escaped, plain)
    return token.lower()


def tokenize_tree(line: str) -> list[str]:
    r"""Split a PTB S-expression into ``(``, ``)`` and atoms.

    Only ASCII spaces and parentheses separate atoms: some leaves contain a non-breaking space
    (``8\u00a01\/2``) that must stay inside the leaf.

    Args:
        line: one tree, e.g. ``(3 (2 a) (3 good))``.

    Returns:
        The tokens, e.g. ``["(", "3", "(", "2", "a", ")", ...]``.
    """
    tokens: list[str] = []
    atom: list[str] = []
    for char in line:
        if char in "() \n\r\t":
            if atom:
                tokens.append("".join(atom))
                atom = []
            if char in "()":
                tokens.append(char)
        else:
            atom.append(char)
    if atom:
        tokens.append("".join(atom))
    return tokens


def parse_tree(line: str) -> tuple[TreeNode, list[str]]:
    """Parse one SST tree into labelled nodes over normalised words.

    A leaf whose normalised text holds a space (from a non-breaking space) becomes several words,
    all under that leaf, so that the words equal the whitespace tokens of the GLUE sentence.

    Args:
        line: one line of ``sst/trees/*.txt``.

    Returns:
        The root node and the sentence's words.

    Raises:
        ValueError: the line is not a well-formed labelled tree.
    """
    tokens = tokenize_tree(line)
    words: list[str] = []
    pos = 0

    def expect(token: str) -> None:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != token:
            found = tokens[pos] if pos < len(tokens) else "end of line"
            raise ValueError(f"malformed SST tree: expected {token!r}, found {found!r}: {line!r}")
        pos += 1

    def node() -> TreeNode:
        nonlocal pos
        expect("(")
        if pos >= len(tokens) or not tokens[pos].isdigit():
            raise ValueError(f"malformed SST tree: a node without a numeric label: {line!r}")
        label = int(tokens[pos])
        pos += 1
        start = len(words)
        children: list[TreeNode] = []
        if pos < len(tokens) and tokens[pos] not in ("(", ")"):
            words.extend(normalise_ptb_token(tokens[pos]).split(" "))
            pos += 1
        else:
            while pos < len(tokens) and tokens[pos] == "(":
                children.append(node())
        expect(")")
        if len(words) == start:
            raise ValueError(f"malformed SST tree: an empty node: {line!r}")
        return TreeNode(label, start, len(words), tuple(children))

    root = node()
    if pos != len(tokens):
        raise ValueError(f"malformed SST tree: trailing tokens after the root: {line!r}")
    return root, words


def minimal_polar_phrases(root: TreeNode, max_phrase_words: int | None) -> list[TreeNode]:
    """The minimal phrases of at most ``max_phrase_words`` words polar in the root's direction.

    Args:
        root: the parsed tree; its label must be polar (not 2).
        max_phrase_words: the largest phrase size (in words), or ``None`` for no cap.

    Returns:
        The qualifying nodes, left to right; empty when none is small enough.

    Raises:
        ValueError: the root is neutral.
    """
    if root.label == 2:
        raise ValueError("a neutral sentence has no polar direction to explain")
    positive = root.label > 2
    cap = float("inf") if max_phrase_words is None else max_phrase_words

    def minimal(node: TreeNode) -> list[TreeNode]:
        # Post-order: a node qualifies only if none of its descendants did.
        found = [m for child in node.children for m in minimal(child)]
        polar = node.label > 2 if positive else node.label < 2
        if not found and polar and node.n_words <= cap:
            return [node]
        return found

    return minimal(root)


def phrase_rationale(root: TreeNode, max_phrase_words: int | None) -> list[int]:
    """The word rationale of a polar sentence: the words under its minimal polar phrases.

    Args:
        root: the parsed tree; its label must be polar (not 2).
        max_phrase_words: the largest phrase (in words) that may enter the rationale, or ``None``
            for no cap. When no phrase qualifies under the cap, the cap is lifted (the root
            itself always qualifies then), so the rationale is never empty.

    Returns:
        One 0/1 per word of the sentence.

    Raises:
        ValueError: the root is neutral.
    """
    phrases = minimal_polar_phrases(root, max_phrase_words) or minimal_polar_phrases(root, None)
    rationale = [0] * root.n_words
    for phrase in phrases:
        rationale[phrase.start : phrase.end] = [1] * phrase.n_words
    return rationale


def _dev_trees_local(data_dir: Path | None) -> list[str] | None:
    # The data directory first (it is what the user pointed at), then the vendored copy.
    for path in (
        None if data_dir is None else data_dir / "sst" / "trees" / "dev.txt",
        _VENDORED_TREES,
    ):
        if path is not None and path.is_file():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as handle:
                return handle.read().splitlines()
    return None


def _dev_trees_hub() -> list[str]:
    from datasets import load_dataset

    # The "ptb" configuration holds the same trainDevTestTrees_PTB lines as sst/trees/.
    return list(load_dataset("stanfordnlp/sst", "ptb", split="validation")["ptb_tree"])


def load_sst2_phrases(
    data_dir: str | os.PathLike[str] | None = None,
    max_phrase_words: int | None = DEFAULT_MAX_PHRASE_WORDS,
) -> Dataset:
    """SST-2 dev with word rationales from the SST phrase labels (872 rows, GLUE dev order).

    Each GLUE dev sentence is matched to the dev tree with the same normalised text; ``idx`` is
    its position in SST-2 dev, so rows join with ``load_sst2("validation")`` on ``idx``.

    Args:
        data_dir: the local data directory holding ``sst/trees/dev.txt`` (see
            :func:`resolve_data_dir`). The trees are tried on the hub first, then there, then
            in the copy vendored in this package.
        max_phrase_words: the phrase size cap of the rationale rule (module docstring).

    Returns:
        A rationale dataset (``idx, text, words, rationale, label``); label names
        ``negative``/``positive``. ``text`` equals the GLUE sentence without its trailing space.

    Raises:
        DataUnavailableError: the trees or the SST-2 dev sentences cannot be found.
        ValueError: a dev sentence has no tree, or its tree disagrees with its label.
    """
    if max_phrase_words is not None and max_phrase_words < 1:
        raise ValueError(f"max_phrase_words must be >= 1 or None, got {max_phrase_words}")
    root_dir = resolve_data_dir(data_dir)

    def from_hub() -> list[tuple[TreeNode, list[str]]]:
        # Parsed here so that a hub copy in an unexpected format also falls back to local.
        return [parse_tree(line) for line in _dev_trees_hub()]

    def from_local() -> list[tuple[TreeNode, list[str]]] | None:
        lines = _dev_trees_local(root_dir)
        return None if lines is None else [parse_tree(line) for line in lines if line.strip()]

    trees = hub_then_local(
        "SST trees (dev)",
        from_hub,
        from_local,
        "Put the official trainDevTestTrees_PTB dev.txt at <data_dir>/sst/trees/dev.txt.",
    )
    by_text = {" ".join(words): (root, words) for root, words in trees if root.label != 2}
    dev = load_sst2("validation", data_dir=data_dir)
    sentences = [
        (int(i), str(t), int(y))
        for i, t, y in zip(dev["idx"], dev["text"], dev["label"], strict=True)
    ]
    return _align(sentences, by_text, max_phrase_words)


def _align(
    sentences: Sequence[tuple[int, str, int]],
    by_text: dict[str, tuple[TreeNode, list[str]]],
    max_phrase_words: int | None,
) -> Dataset:
    """Match ``(idx, sentence, label)`` rows to their trees and build the rationale dataset."""
    columns: dict[str, list[Any]] = {"idx": [], "words": [], "rationale": [], "label": []}
    unmatched: list[str] = []
    fallback = 0
    for idx, sentence, label in sentences:
        # GLUE keeps a trailing space on many sentences; the tree text has none.
        key = " ".join(sentence.split())
        if key not in by_text:
            unmatched.append(sentence)
            continue
        root, words = by_text[key]
        if int(root.label > 2) != label:
            raise ValueError(f"SST-2 dev row {idx}: label {label} but tree root label {root.label}")
        fallback += not minimal_polar_phrases(root, max_phrase_words)
        columns["idx"].append(idx)
        columns["words"].append(words)
        columns["rationale"].append(phrase_rationale(root, max_phrase_words))
        columns["label"].append(label)
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} SST-2 dev sentences have no SST dev tree with the same text "
            f"(first: {unmatched[0]!r}); the trees and the SST-2 copy disagree"
        )
    if fallback:
        logger.info(
            "SST phrases: %d of %d sentences have no polar phrase of <= %s words; their rationale "
            "is the smallest polar phrase of any size",
            fallback,
            len(sentences),
            max_phrase_words,
        )
    return rationale_dataset(columns, SENTIMENT_LABELS)
