"""SST-2 (GLUE): the binary Stanford Sentiment Treebank, as a :class:`datasets.Dataset`.

Sources, in order: the Hugging Face hub (``load_dataset("glue", "sst2")``), the gzip copies of the
GLUE ``train.tsv``/``dev.tsv`` vendored in this package (``data/vendored/PROVENANCE.md``), then
``sst2_glue/`` in the local data directory (see :mod:`captum_layer_saliency.data._source`).
Every source gives the same rows in the same order: ``idx`` is the row number in the GLUE file.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import datasets

from captum_layer_saliency.data._source import hub_then_local, resolve_data_dir

SST2_LABELS = ["negative", "positive"]
SPLITS = ("train", "validation", "test")
_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_VENDORED = {
    "train": "sst2_train.tsv.gz",
    "validation": "sst2_dev.tsv.gz",
    "test": "sst2_test.tsv.gz",
}
#: The label of the unlabelled GLUE test rows (the hub's convention).
NO_LABEL = -1
_VENDORED_DIR = Path(__file__).parent / "vendored"

_FEATURES = datasets.Features(
    {
        "idx": datasets.Value("int32"),
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=SST2_LABELS),
    }
)


def _parse_tsv(lines: list[str]) -> datasets.Dataset:
    r"""Parse GLUE's ``sentence\tlabel`` TSV, or the test split's ``index\tsentence``."""
    header, rows = lines[0].rstrip("\n").split("\t"), lines[1:]
    if header == ["index", "sentence"]:
        texts = [line.rstrip("\n").split("\t", 1)[1] for line in rows]
        return datasets.Dataset.from_dict(
            {"idx": list(range(len(texts))), "text": texts, "label": [NO_LABEL] * len(texts)},
            features=_FEATURES,
        )
    if header != ["sentence", "label"]:
        raise ValueError(f"unexpected SST-2 header {header!r}")
    texts, labels = [], []
    for line in rows:
        # rsplit: the label is the last field; the sentence keeps GLUE's trailing space
        sentence, label = line.rstrip("\n").rsplit("\t", 1)
        texts.append(sentence)
        labels.append(int(label))
    return datasets.Dataset.from_dict(
        {"idx": list(range(len(texts))), "text": texts, "label": labels}, features=_FEATURES
    )


def _from_local(split: str, data_dir: str | os.PathLike[str] | None) -> datasets.Dataset | None:
    vendored = _VENDORED_DIR / _VENDORED[split]
    if vendored.is_file():
        with gzip.open(vendored, "rt", encoding="utf-8") as f:
            return _parse_tsv(f.readlines())
    root = resolve_data_dir(data_dir)
    path = root / "sst2_glue" / _FILES[split] if root is not None else None
    if path is None or not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return _parse_tsv(f.readlines())


def _from_hub(split: str) -> datasets.Dataset:
    ds = datasets.load_dataset("glue", "sst2", split=split)
    ds = ds.rename_column("sentence", "text").select_columns(["idx", "text", "label"])
    return ds.cast(_FEATURES)


def load_sst2(
    split: str = "validation", data_dir: str | os.PathLike[str] | None = None
) -> datasets.Dataset:
    """Load an SST-2 split.

    Args:
        split: ``"train"`` (67,349 phrases), ``"validation"`` (the 872 dev sentences) or
            ``"test"`` (the 1,821 GLUE test sentences, unlabelled: ``label`` is -1, as on the
            hub; explain them for the predicted class).
        data_dir: a local data directory holding ``sst2_glue/``, used only when neither the hub
            nor the vendored copy is available.

    Returns:
        A dataset with columns ``idx`` (int), ``text`` (str, lowercased and PTB-tokenised as in
        GLUE) and ``label`` (``ClassLabel(["negative", "positive"])``).

    Raises:
        ValueError: an unknown split.
        DataUnavailableError: no source could provide the data.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown SST-2 split {split!r}; expected one of {SPLITS}")
    return hub_then_local(
        f"SST-2 {split}",
        lambda: _from_hub(split),
        lambda: _from_local(split, data_dir),
        hint=(
            "Reinstall captum-layer-saliency (its vendored copy is missing), or pass data_dir= / "
            "set $CAPTUM_LAYER_SALIENCY_DATA to a directory containing sst2_glue/train.tsv and "
            "sst2_glue/dev.tsv (GLUE format), or make the Hugging Face hub reachable."
        ),
    )
