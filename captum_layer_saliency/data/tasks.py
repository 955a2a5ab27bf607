"""The registry of comparison tasks: which data, which split, which default classifier explains it.

``python -m captum_layer_saliency compare --task NAME`` looks tasks up here. A task's rows always
have ``idx``, ``text`` and ``label``; tasks with human rationales (``has_rationales``) also have
``words`` and ``rationale`` (one 0/1 per word of ``words``, and ``text == " ".join(words)``), so
plausibility metrics can be computed on the very rows the faithfulness metrics use.

| task | data (default split) | rows | model | rationales |
|---|---|---|---|---|
| ``sst2`` | SST-2 dev + SST phrase rationales | 872 | ``sst2`` | yes |
| ``sst2_words`` | SST-2 test (or dev) + SST word sentiments | 1,815 | ``sst2`` | yes |
| ``ag_news`` | AG News held-out part | 1,600 | ``ag_news`` | no |
| ``eraser_movies`` | ERASER movie reviews, test, first 400 words | 199 | ``sst2`` | yes |
| ``imdb`` | IMDB test | 25,000 | ``sst2`` | no |
| ``hatexplain`` | HateXplain test, majority labels/rationales | 1,924 | ``hatexplain`` | yes |
| ``hatexplain_toxic`` | the same, posts with a majority rationale | 1,106 | ``hatexplain`` | yes |
| ``rte_pairs`` | RTE sentence pairs (vendored sample) | 139 | none | no |

Pair tasks (``is_pair``) also have ``text_pair``, the second sentence, encoded with ``text`` as
one pair (``TextClassifier.encode(texts, text_pairs)``).

See ``docs/datasets.md`` for the procedures, provenance and licences.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Protocol

from datasets import Dataset

from captum_layer_saliency.data._schema import SENTIMENT_LABELS
from captum_layer_saliency.data.ag_news import AG_NEWS_LABELS, load_ag_news
from captum_layer_saliency.data.eraser_movies import load_eraser_movies
from captum_layer_saliency.data.hatexplain import HATEXPLAIN_LABELS, load_hatexplain
from captum_layer_saliency.data.imdb import load_imdb
from captum_layer_saliency.data.rte import RTE_LABELS, load_rte_pairs
from captum_layer_saliency.data.sst_phrases import load_sst2_phrases
from captum_layer_saliency.data.sst_words import load_sst_word_sentiment
from captum_layer_saliency.errors import CaptumLayerSaliencyError

ERASER_MAX_WORDS = 400
"""Words kept per ERASER review in the ``eraser_movies`` task. With the default BERT-uncased
WordPiece vocabulary the 199 test reviews use at most 1.23 pieces per word, so 400 words fit a
512-token encoder with its two special tokens; the cut is recorded in ``n_words_original``."""

SHUFFLE_SEED = 0
"""Seed of the fixed shuffle applied to tasks whose source is sorted by label (IMDB, ERASER), so
that a ``limit`` prefix holds both classes. ``idx`` keeps each row's position in the source."""


class TaskLoader(Protocol):
    """Loads one split of a task's data."""

    def __call__(self, split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
        """Return ``split`` of the task, read from ``data_dir`` when given (else hub/vendored)."""
        ...


class EmptyDatasetError(CaptumLayerSaliencyError, ValueError):
    """A task's split has no rows (after any filtering)."""


@dataclass(frozen=True)
class TaskSpec:
    """One comparison task.

    Attributes:
        name: the task's registry name (``--task``).
        description: one line for help texts and reports.
        model: the name of the default classifier that explains it (``"sst2"``, ``"ag_news"``,
            ``"hatexplain"``), or ``None`` when there is none and the user must supply a model.
        loader: ``loader(split, data_dir) -> Dataset``.
        default_split: the split used when none is given.
        splits: the valid splits.
        has_rationales: whether rows carry ``words`` and ``rationale``.
        label_names: class names in label-id order (checked against the loaded data).
        shuffle_seed: when set, rows are shuffled with this seed before ``limit`` is applied.
        is_pair: whether rows are sentence pairs (``text`` and ``text_pair``).
    """

    name: str
    description: str
    model: str | None
    loader: TaskLoader
    default_split: str
    splits: tuple[str, ...]
    has_rationales: bool
    label_names: tuple[str, ...]
    shuffle_seed: int | None = None
    is_pair: bool = False

    def default_model(self) -> str:
        """The default classifier's name.

        Returns:
            ``self.model``.

        Raises:
            ValueError: the task has no default classifier (its ``model`` is ``None``).
        """
        if self.model is None:
            raise ValueError(
                f"task {self.name!r} has no default classifier: pass a model fine-tuned on its "
                f"labels {list(self.label_names)} (in that order), e.g. --model PATH_OR_HUB_ID"
            )
        return self.model

    def load(
        self,
        split: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        limit: int | None = None,
    ) -> Dataset:
        """Load the task's rows.

        Args:
            split: one of ``splits``; ``None`` means ``default_split``.
            data_dir: the local data directory to fall back on (see
                :func:`captum_layer_saliency.data.resolve_data_dir`).
            limit: keep only the first ``limit`` rows (after the task's fixed shuffle, if any).

        Returns:
            The dataset (``idx, text, label``, plus ``words, rationale`` when
            ``has_rationales``).

        Raises:
            ValueError: an unknown split or a ``limit`` below 1.
            EmptyDatasetError: no rows are left.
            DataUnavailableError: no source could provide the data.
        """
        split = self.default_split if split is None else split
        if split not in self.splits:
            raise ValueError(
                f"task {self.name!r} has no split {split!r}; valid splits: {list(self.splits)}"
            )
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        dataset = self.loader(split, data_dir)
        names = tuple(dataset.features["label"].names)
        if names != self.label_names:  # guards the registry against a loader's labels drifting
            raise RuntimeError(f"task {self.name!r}: loader labels {names} != {self.label_names}")
        if self.shuffle_seed is not None:
            # An in-memory indices mapping: no cache file, no progress bar.
            dataset = dataset.shuffle(seed=self.shuffle_seed, keep_in_memory=True)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        if len(dataset) == 0:
            raise EmptyDatasetError(f"task {self.name!r} split {split!r} has no examples")
        return dataset


def _sst2(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    # Only dev has both labels and per-sentence phrase rationales; splits=("validation",).
    del split
    return load_sst2_phrases(data_dir=data_dir)


def _sst2_words(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    return load_sst_word_sentiment(split, data_dir=data_dir)[0]


def _ag_news(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    return load_ag_news(split, data_dir=data_dir)


def _eraser_movies(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    return load_eraser_movies(split, max_words=ERASER_MAX_WORDS, data_dir=data_dir)


def _imdb(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    return load_imdb(split, data_dir=data_dir)


def _hatexplain(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    return load_hatexplain(split, data_dir=data_dir)


def _hatexplain_toxic(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    return load_hatexplain(split, data_dir=data_dir, rationale_only=True)


def _rte_pairs(split: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    return load_rte_pairs()


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="sst2",
            description="SST-2 dev (872 sentences) with word rationales from the SST phrase labels",
            model="sst2",
            loader=_sst2,
            default_split="validation",
            splits=("validation",),
            has_rationales=True,
            label_names=SENTIMENT_LABELS,
        ),
        TaskSpec(
            name="sst2_words",
            description=(
                "SST-2 test sentences matched to their SST trees (1,815 of 1,821), with the "
                "word sentiments of LAFA's benchmark (metric word_sentiment_r) and phrase "
                "rationales"
            ),
            model="sst2",
            loader=_sst2_words,
            default_split="test",
            splits=("test", "validation"),
            has_rationales=True,
            label_names=SENTIMENT_LABELS,
        ),
        TaskSpec(
            name="ag_news",
            description="AG News held-out part of its test set (unseen by the default model)",
            model="ag_news",
            loader=_ag_news,
            default_split="heldout",
            splits=("heldout", "train_part", "test"),
            has_rationales=False,
            label_names=tuple(AG_NEWS_LABELS),
        ),
        TaskSpec(
            name="eraser_movies",
            description=(
                f"ERASER movie reviews with evidence rationales, first {ERASER_MAX_WORDS} words"
            ),
            model="sst2",
            loader=_eraser_movies,
            default_split="test",
            splits=("test", "validation", "train"),
            has_rationales=True,
            label_names=SENTIMENT_LABELS,
            shuffle_seed=SHUFFLE_SEED,
        ),
        TaskSpec(
            name="imdb",
            description="IMDB movie reviews (long; the runner truncates at tokenisation)",
            model="sst2",
            loader=_imdb,
            default_split="test",
            splits=("test", "train"),
            has_rationales=False,
            label_names=SENTIMENT_LABELS,
            shuffle_seed=SHUFFLE_SEED,
        ),
        TaskSpec(
            name="hatexplain",
            description="HateXplain test with majority labels and majority token rationales",
            model="hatexplain",
            loader=_hatexplain,
            default_split="test",
            splits=("test", "validation"),
            has_rationales=True,
            label_names=HATEXPLAIN_LABELS,
        ),
        TaskSpec(
            name="hatexplain_toxic",
            description=(
                "HateXplain test, only the posts with a human rationale (hatespeech/offensive)"
            ),
            model="hatexplain",
            loader=_hatexplain_toxic,
            default_split="test",
            splits=("test", "validation"),
            has_rationales=True,
            label_names=HATEXPLAIN_LABELS,
        ),
        TaskSpec(
            name="rte_pairs",
            description="RTE premise/hypothesis pairs (139, vendored sample): a sentence-pair task",
            model=None,
            loader=_rte_pairs,
            default_split="sample",
            splits=("sample",),
            has_rationales=False,
            label_names=RTE_LABELS,
            is_pair=True,
        ),
    )
}


def available_tasks() -> list[str]:
    """The registered task names, sorted.

    Returns:
        The names.
    """
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """Look a task up by name (case-insensitive; ``-`` and ``_`` are interchangeable).

    Args:
        name: the task's name.

    Returns:
        Its :class:`TaskSpec`.

    Raises:
        ValueError: no such task; the message lists the valid names and the closest one.
    """
    key = name.strip().lower().replace("-", "_")
    if key in TASKS:
        return TASKS[key]
    close = difflib.get_close_matches(key, available_tasks(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(available_tasks())}")
