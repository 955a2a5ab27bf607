"""The per-model layer selection that ships with the default models.

Decoded Layer Saliency chooses one layer per model, label-free (``docs/method.md`` § 1). For
the default models that choice is made once, here, on unlabelled *training* texts of each
task (never on evaluation data), and stored in the artifacts' ``manifest.json`` under
``"selection"``. :func:`~captum_layer_saliency.zoo.load.load_default` puts it in the model's
config (:func:`~captum_layer_saliency.zoo.load.apply_stored_selection`), so
``DecodedLayerSaliency.for_model`` runs the chosen layer from its first call.
Nothing is retrained: only forward passes (and one backward, to find the layers whose gradient
cannot reach the input tokens). Regenerate with::

    python -m captum_layer_saliency.zoo.selection --artifacts captum_layer_saliency/zoo/artifacts
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.data.corpora import default_corpus
from captum_layer_saliency.zoo._manifest import write_manifest
from captum_layer_saliency.zoo.load import (
    PACKAGED_DIR,
    TASKS,
    load_default,
    read_manifest,
    resolve_artifacts,
)

__all__ = ["CALIBRATION_TEXTS", "fit_default_selection", "main", "update_manifest"]

#: Unlabelled training texts per task: each gives about twice the word tokens that already fix
#: the elbow's choice (``benchmarks/calibration_budget.py``: 1,500 on SST-2).
CALIBRATION_TEXTS = {"sst2": 256, "ag_news": 96, "hatexplain": 128}


def fit_default_selection(task: str, n_texts: int | None = None, cache_dir: Any = None) -> dict:
    """Choose the layer of the default ``task`` model on its unlabelled training texts.

    Args:
        task: ``"sst2"``, ``"ag_news"`` or ``"hatexplain"``.
        n_texts: how many texts of the task's default corpus
            (:func:`~captum_layer_saliency.data.corpora.default_corpus`, seed 0; labels unused).
        cache_dir: where the artifacts are (see ``load_default``).

    Returns:
        The :class:`~captum_layer_saliency.attr.layer_selection.LayerSelection` as a dict, plus
        ``model_sha256``: the classifier artifact it was fitted for.
    """
    n = n_texts or CALIBRATION_TEXTS[task]
    texts = default_corpus(task, size=n)
    clf = load_default(task, cache_dir=cache_dir)
    assert clf.lm_head is not None
    dls = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, calibration_texts=texts
    )
    assert dls.selection_ is not None
    selection = dls.selection_.to_dict()
    selection["calibration"] = (
        f"{len(texts)} unlabelled {task} training texts (default_corpus, seed 0; "
        f"{selection['n_positions']} word tokens)"
    )
    _, manifest = resolve_artifacts([task], cache_dir)
    selection["model_sha256"] = manifest["entries"][task]["sha256"]
    return selection


def update_manifest(directory: Path, tasks: Sequence[str], cache_dir: Any = None) -> dict:
    """Fit each task's selection and write it into ``directory``'s manifest.

    Args:
        directory: the artifact directory whose manifest to update.
        tasks: the tasks to fit.
        cache_dir: where the artifacts are loaded from (see ``load_default``).

    Returns:
        The fitted selections by task.

    Raises:
        FileNotFoundError: ``directory`` has no manifest.
    """
    fitted = {task: fit_default_selection(task, cache_dir=cache_dir) for task in tasks}
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"no manifest in {directory}")
    manifest.setdefault("selection", {}).update(fitted)
    write_manifest(directory, manifest)
    return fitted


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m captum_layer_saliency.zoo.selection [--tasks ...] [--artifacts DIR]``.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m captum_layer_saliency.zoo.selection")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--artifacts", default=str(PACKAGED_DIR), help="the artifact directory to update"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    directory = Path(args.artifacts)
    fitted = update_manifest(directory, args.tasks, cache_dir=directory)
    print(json.dumps(fitted, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
