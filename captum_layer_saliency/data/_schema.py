"""The common schema of the datasets with human rationales, and its checks.

Every rationale dataset is a :class:`datasets.Dataset` with the columns

* ``idx`` (int): the example's position in its source split (stable across ``limit``),
* ``text`` (str): exactly ``" ".join(words)``, so a whitespace split gives back ``words``,
* ``words`` (list[str]): the words the rationale is defined on,
* ``rationale`` (list[int]): one 0/1 per word, 1 = a human marked the word as evidence,
* ``label`` (ClassLabel),

plus, per dataset, a few documented extra columns (an id, the original length). Datasets without
rationales have ``idx``, ``text`` and ``label`` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datasets import ClassLabel, Dataset, Features, Value
from datasets import Sequence as HFSequence

from captum_layer_saliency.data.sst2 import SST2_LABELS

SENTIMENT_LABELS = tuple(SST2_LABELS)
"""Binary sentiment label names of every sentiment task: SST-2's (0 negative, 1 positive), so the
SST-2 classifier's outputs line up with the labels."""


def rationale_features(
    label_names: Sequence[str], extra: Mapping[str, Any] | None = None
) -> Features:
    """The features of a rationale dataset.

    Args:
        label_names: the class names, in label-id order.
        extra: additional ``column -> feature`` entries, appended after the common columns.

    Returns:
        The :class:`datasets.Features` with ``idx, text, words, rationale, label`` then ``extra``.
    """
    features: dict[str, Any] = {
        "idx": Value("int64"),
        "text": Value("string"),
        "words": HFSequence(Value("string")),  # not List: datasets < 4 has no List
        "rationale": HFSequence(Value("int8")),
        "label": ClassLabel(names=list(label_names)),
    }
    features.update(extra or {})
    return Features(features)


def text_features(label_names: Sequence[str]) -> Features:
    """The features of a dataset without rationales: ``idx, text, label``.

    Args:
        label_names: the class names, in label-id order.

    Returns:
        The :class:`datasets.Features`.
    """
    return Features(
        {
            "idx": Value("int64"),
            "text": Value("string"),
            "label": ClassLabel(names=list(label_names)),
        }
    )


def rationale_dataset(
    columns: Mapping[str, Sequence[Any]],
    label_names: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """Build a rationale dataset from its columns, after checking the schema's invariants.

    ``text`` is derived here from ``words`` so that the two can never disagree.

    Args:
        columns: ``idx``, ``words``, ``rationale``, ``label`` (int ids) and the ``extra`` columns.
        label_names: the class names, in label-id order.
        extra: features of the extra columns (see :func:`rationale_features`).

    Returns:
        The dataset, columns in schema order.

    Raises:
        ValueError: a rationale's length differs from its word count, or holds a value not 0/1.
    """
    words: Sequence[Sequence[str]] = columns["words"]
    rationales: Sequence[Sequence[int]] = columns["rationale"]
    for i, (w, r) in enumerate(zip(words, rationales, strict=True)):
        if len(w) != len(r):
            raise ValueError(f"row {i}: {len(r)} rationale values for {len(w)} words")
        if any(v not in (0, 1) for v in r):
            raise ValueError(f"row {i}: rationale values must be 0 or 1")
    features = rationale_features(label_names, extra)
    data = {name: list(columns[name]) for name in features if name != "text"}
    data["text"] = [" ".join(w) for w in words]
    return Dataset.from_dict({name: data[name] for name in features}, features=features)


def mean_rationale_fraction(dataset: Dataset) -> float:
    """The mean, over rows, of the fraction of words in the rationale (0.0 for no rows).

    Args:
        dataset: a rationale dataset.

    Returns:
        The mean fraction.
    """
    fractions = [sum(r) / len(r) for r in dataset["rationale"] if len(r) > 0]
    return sum(fractions) / len(fractions) if fractions else 0.0
