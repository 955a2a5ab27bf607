"""Default reference corpora: a task's unlabelled training texts, for LAFA and DLS calibration.

LAFA finds an input's neighbours among reference texts, and DLS fits its layer selection on
unlabelled texts; for the tasks of the default models both default to the texts the model was
trained on (:func:`default_corpus`). No label is read.
"""

from __future__ import annotations

import random

from captum_layer_saliency._utils import text_key
from captum_layer_saliency.data.ag_news import load_ag_news
from captum_layer_saliency.data.hatexplain import load_hatexplain
from captum_layer_saliency.data.sst2 import load_sst2

__all__ = ["DEFAULT_CORPUS_SIZE", "SST2_MIN_WORDS", "default_corpus"]

#: Reference texts sampled from the SST-2 training phrases by default (see :func:`default_corpus`).
DEFAULT_CORPUS_SIZE = 5000
#: SST-2's training set is every phrase of the training trees; shorter ones ("the movie") are
#: fragments whose gradients say little about a sentence, so the default corpus skips them.
SST2_MIN_WORDS = 4


def default_corpus(task: str, size: int | None = DEFAULT_CORPUS_SIZE, seed: int = 0) -> list[str]:
    """A task's default reference corpus: its training texts, deduplicated.

    * ``"sst2"``: the SST-2 training phrases with at least :data:`SST2_MIN_WORDS` words,
      deduplicated, then ``size`` of them sampled with ``seed`` (67k phrases would take the
      encoder about half an hour on two CPU cores; 5,000 take a couple of minutes, once).
    * ``"ag_news"``: the 6,000 ``train_part`` texts the default classifier was trained on
      (disjoint from the ``heldout`` evaluation rows), sampled down to ``size`` if larger.
    * ``"hatexplain"``: the 1,922 validation posts the default classifier was trained on
      (disjoint from the test posts it is evaluated on).

    Args:
        task: ``"sst2"``, ``"ag_news"`` or ``"hatexplain"``.
        size: the most texts to keep (``None`` keeps all).
        seed: the sampling seed.

    Returns:
        The texts, in a fixed order.

    Raises:
        ValueError: an unknown task.
    """
    if task == "sst2":
        texts = [t.strip() for t in load_sst2("train")["text"]]
        texts = [t for t in texts if len(t.split()) >= SST2_MIN_WORDS]
    elif task == "ag_news":
        texts = [t.strip() for t in load_ag_news("train_part")["text"]]
    elif task == "hatexplain":
        texts = [t.strip() for t in load_hatexplain("validation")["text"]]
    else:
        raise ValueError(
            f"no default reference corpus for task {task!r}; use 'sst2', 'ag_news' or 'hatexplain'"
        )
    seen: set[str] = set()
    unique = []
    for text in texts:
        if text and text_key(text) not in seen:
            seen.add(text_key(text))
            unique.append(text)
    if size is not None and len(unique) > size:
        unique = [unique[i] for i in sorted(random.Random(seed).sample(range(len(unique)), size))]
    return unique
