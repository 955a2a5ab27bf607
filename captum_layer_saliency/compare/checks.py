"""Checks of a comparison's inputs, all made before any work starts.

A mistake in the arguments or the data (an unknown metric, a row without text, a label outside
the model's classes, texts over the token budget with ``truncation="error"``) raises
:class:`InvalidComparisonError` here, so it never costs work and never touches an output
directory.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from captum_layer_saliency import metrics as metric_registry
from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.data.tasks import EmptyDatasetError
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.metrics import METRIC_ALIASES
from captum_layer_saliency.models.classifier import TRUNCATION_MODES, USER_TEXT, TextClassifier

__all__ = [
    "RATIONALE_COLUMNS",
    "REQUIRED_COLUMNS",
    "WORD_SENTIMENT",
    "EmptyDatasetError",
    "InvalidComparisonError",
    "check_labels",
    "check_metrics",
    "check_real_tokens",
    "check_shard",
    "default_metrics",
    "needs_word_sentiment",
    "read_examples",
    "text_pairs",
    "token_budget",
    "truncation_plan",
]

#: Columns every dataset row must have, and the two that carry word-level human rationales.
REQUIRED_COLUMNS = ("text", "label")
RATIONALE_COLUMNS = ("words", "rationale")
#: The column of per-word SST sentiments (``|label - 2|``) that ``word_sentiment_r`` needs.
WORD_SENTIMENT = "word_sentiment"


class InvalidComparisonError(CaptumLayerSaliencyError, ValueError):
    """A comparison's arguments or data cannot work (caught before any work starts)."""


def needs_word_sentiment(metric: Any) -> bool:
    """Whether a metric compares with SST word sentiments (rather than word rationales).

    Args:
        metric: a metric's metadata (a :class:`~captum_layer_saliency.metrics.Metric`).

    Returns:
        ``True`` for metrics whose ``inputs`` is ``"word_sentiment"``.
    """
    return getattr(metric, "inputs", "rationale") == WORD_SENTIMENT


def default_metrics(
    has_rationales: bool,
    has_word_sentiment: bool = False,
    table: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every faithfulness metric, plus the plausibility ones the data supports.

    Args:
        has_rationales: the data has word-level human rationales.
        has_word_sentiment: the rows have SST word sentiments (for ``word_sentiment_r``).
        table: the metric registry (default :data:`~captum_layer_saliency.metrics.METRICS`; a
            protocol's own: :func:`~captum_layer_saliency.metrics.protocol_metrics`).

    Returns:
        Metric names, in registry order.
    """
    return [
        name
        for name, metric in (metric_registry.METRICS if table is None else table).items()
        if metric.kind == "faithfulness"
        or (
            has_rationales
            and metric.kind == "plausibility"
            and (has_word_sentiment or not needs_word_sentiment(metric))
        )
    ]


def check_metrics(
    names: Sequence[str],
    has_rationales: bool,
    has_word_sentiment: bool | None = None,
    table: Mapping[str, Any] | None = None,
) -> list[str]:
    """Validate metric names against the registry and the data, dropping repeats.

    Args:
        names: metric names.
        has_rationales: whether the data has human rationales (needed by plausibility metrics).
        has_word_sentiment: whether the rows have SST word sentiments (needed by
            ``word_sentiment_r``); ``None``: not known yet, not checked.
        table: the metric registry to check against (default
            :data:`~captum_layer_saliency.metrics.METRICS`).

    Returns:
        The names, in order, without repeats.

    Raises:
        InvalidComparisonError: an unknown name, no names, or a plausibility metric without
            rationales.
    """
    registry = metric_registry.METRICS if table is None else table
    if not names:
        raise InvalidComparisonError(f"no metrics given; known metrics: {', '.join(registry)}")
    out = []
    for name in names:
        key = name.strip()
        if key not in registry and METRIC_ALIASES.get(key) in registry:
            warnings.warn(
                f"metric {key!r} is now called {METRIC_ALIASES[key]!r} (its bounds are the "
                "leave-one-out orderings, not Edin et al.'s NAOPC)",
                DeprecationWarning,
                stacklevel=2,
            )
            key = METRIC_ALIASES[key]
        if key not in registry:
            raise InvalidComparisonError(
                f"unknown metric {name!r}; known metrics: {', '.join(registry)}"
            )
        if registry[key].kind == "plausibility" and not has_rationales:
            raise InvalidComparisonError(
                f"metric {key!r} needs human rationales, and this dataset has none "
                "(choose a task with rationales, or drop the plausibility metrics)"
            )
        if has_word_sentiment is False and needs_word_sentiment(registry[key]):
            raise InvalidComparisonError(
                f"metric {key!r} needs SST word sentiments (a '{WORD_SENTIMENT}' column), and "
                "this dataset has none (use the task sst2_words)"
            )
        if key not in out:
            out.append(key)
    return out


def read_examples(dataset: Any, limit: int | None) -> list[dict[str, Any]]:
    """The dataset rows as dicts (first ``limit`` of them), every one checked.

    Every row is checked, not just the first: the batch plan puts the shortest texts last, so a
    bad row found only when its batch came up would stop a run after most of its work.
    """
    n = len(dataset)
    if limit is not None:
        if limit < 0:
            raise InvalidComparisonError(f"limit must be non-negative, got {limit}")
        n = min(n, limit)
    rows = [dict(dataset[i]) for i in range(n)]
    if not rows:
        raise EmptyDatasetError(
            "the dataset is empty" + (f" (limit={limit})" if limit is not None else "")
        )
    # Rationales are all or nothing: the first row decides whether plausibility is scored.
    needed = REQUIRED_COLUMNS + (
        RATIONALE_COLUMNS if all(c in rows[0] for c in RATIONALE_COLUMNS) else ()
    )
    for i, row in enumerate(rows):
        where = f"example {i} (idx {row.get('idx', i)})"
        missing = [c for c in needed if c not in row]
        if missing:
            raise InvalidComparisonError(
                f"{where} lacks the field(s) {missing}; it has {sorted(row)}"
            )
        if not isinstance(row["text"], str):
            raise InvalidComparisonError(
                f"{where}: text is a {type(row['text']).__name__}, not a string"
            )
        if not row["text"].strip():
            raise InvalidComparisonError(
                f"{where}: the text is empty or only whitespace; there is nothing to explain "
                "(drop such rows)"
            )
        label = row["label"]
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise InvalidComparisonError(f"{where}: label {label!r} is not a class index (an int)")
    return rows


def check_labels(examples: Sequence[Mapping[str, Any]], clf: TextClassifier) -> None:
    """Refuse gold labels outside the model's classes: data and model of different tasks."""
    n_classes = len(clf.labels) or getattr(getattr(clf.model, "config", None), "num_labels", 0)
    if not n_classes:
        return
    for i, row in enumerate(examples):
        if not 0 <= int(row["label"]) < n_classes:
            raise InvalidComparisonError(
                f"example {i} (idx {row.get('idx', i)}) has label {int(row['label'])}, but the "
                f"model has {n_classes} classes {list(clf.labels) or ''}: the data and the model "
                "belong to different tasks"
            )


def check_real_tokens(examples: Sequence[Mapping[str, Any]], clf: TextClassifier) -> None:
    """Refuse a text that tokenises to nothing (only invisible characters), like an empty one."""
    texts = [str(row["text"]) for row in examples]
    ids = clf.tokenizer(texts, add_special_tokens=False, verbose=False, **USER_TEXT)["input_ids"]
    for i, row_ids in enumerate(ids):
        if not row_ids:
            raise InvalidComparisonError(
                f"example {i} (idx {examples[i].get('idx', i)}): the text has no token the "
                "tokenizer keeps (only invisible characters); there is nothing to explain "
                "(drop such rows)"
            )


def token_budget(clf: TextClassifier, max_length: int | None) -> int:
    """The token budget of a run: ``max_length`` or the classifier's, checked against the model.

    Args:
        clf: the classifier.
        max_length: the requested budget, special tokens included. ``None`` takes
            ``clf.max_length``, capped at the model's position embeddings (a default should
            never fail); an explicit request over that limit is an error instead.

    Returns:
        The budget.

    Raises:
        InvalidComparisonError: the budget is too small to hold a word between the special
            tokens, or an explicit one exceeds the model's position embeddings.
    """
    limit = clf.max_positions
    if max_length is None:
        return clf.max_length if limit is None else min(clf.max_length, limit)
    if max_length < 3:
        raise InvalidComparisonError(f"max_length must be at least 3 tokens, got {max_length}")
    if limit is not None and max_length > limit:
        raise InvalidComparisonError(
            f"max_length={max_length} exceeds the model's {limit} position embeddings; use "
            f"max_length <= {limit} (with truncation='truncate' for longer texts)"
        )
    return max_length


def truncation_plan(
    examples: Sequence[Mapping[str, Any]],
    lengths: Sequence[int],
    budget: int,
    truncation: str,
) -> list[bool]:
    """Which examples will be truncated; refuses or warns (once) when there are any."""
    if truncation not in TRUNCATION_MODES:
        raise InvalidComparisonError(
            f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}"
        )
    cut = [n > budget for n in lengths]
    n_cut = sum(cut)
    if not n_cut:
        return cut
    first = cut.index(True)
    longest = max(lengths)
    detail = (
        f"{n_cut} of {len(cut)} example(s) are longer than max_length={budget} tokens (the "
        f"longest has {longest}; the first is idx {examples[first].get('idx', first)})"
    )
    if truncation == "error":
        raise InvalidComparisonError(
            f"{detail}; pass truncation='truncate' (CLI: --truncation truncate) to cut them, "
            "or a larger max_length"
        )
    warn_user(
        f"{detail}; they are truncated to fit, and their rows say so (truncated, n_tokens_original)"
    )
    return cut


def text_pairs(examples: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """The second sentences of a pair task's rows (``text_pair``), or ``None`` for single texts.

    Raises:
        InvalidComparisonError: some rows have a ``text_pair`` and others do not.
    """
    has = [e.get("text_pair") is not None for e in examples]
    if not any(has):
        return None
    if not all(has):
        raise InvalidComparisonError(
            f"{has.count(False)} of {len(has)} rows have no text_pair: a pair task needs both "
            "sentences in every row"
        )
    return [str(e["text_pair"]) for e in examples]


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    """``(rank, world_size)`` of a run: ``shard`` checked, or ``(0, 1)`` without one.

    Raises:
        InvalidComparisonError: not ``0 <= rank < world_size``.
    """
    rank, world = shard if shard is not None else (0, 1)
    if world < 1 or not 0 <= rank < world:
        raise InvalidComparisonError(
            f"shard must be (rank, world_size) with 0 <= rank < world, got {shard}"
        )
    return rank, world
