"""RTE sentence pairs: a small labelled sample vendored in the package (``rte_pairs.tsv.gz``).

The pair task of this package: each row has ``text`` (the premise) and ``text_pair`` (the
hypothesis), with the GLUE RTE label (0 ``entailment``, 1 ``not_entailment``). 139 pairs, 70/69;
the provenance and licence are in ``data/vendored/PROVENANCE.md``. The hub's ``glue/rte`` is not
tried: the sample is the task, so every run sees the same rows.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import datasets

RTE_LABELS = ("entailment", "not_entailment")
_VENDORED = Path(__file__).parent / "vendored" / "rte_pairs.tsv.gz"
_FEATURES = datasets.Features(
    {
        "idx": datasets.Value("int32"),
        "text": datasets.Value("string"),
        "text_pair": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(RTE_LABELS)),
        "rte_index": datasets.Value("int32"),
    }
)


def load_rte_pairs() -> datasets.Dataset:
    """The vendored RTE sample as ``idx, text, text_pair, label, rte_index``.

    Returns:
        139 rows in file order; ``idx`` is the row number, ``rte_index`` the source's id.

    Raises:
        ValueError: the file's header or a label is not RTE's.
    """
    with gzip.open(_VENDORED, "rt", encoding="utf-8", newline="") as handle:
        text = handle.read()
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    if header != ["index", "sentence1", "sentence2", "label"]:
        raise ValueError(f"unexpected RTE header {header!r}")
    columns: dict[str, list[object]] = {k: [] for k in _FEATURES}
    for i, (index, premise, hypothesis, label) in enumerate(reader):
        if label not in RTE_LABELS:
            raise ValueError(f"RTE row {i}: unknown label {label!r}")
        columns["idx"].append(i)
        columns["text"].append(premise)
        columns["text_pair"].append(hypothesis)
        columns["label"].append(RTE_LABELS.index(label))
        columns["rte_index"].append(int(index))
    return datasets.Dataset.from_dict(columns, features=_FEATURES)
