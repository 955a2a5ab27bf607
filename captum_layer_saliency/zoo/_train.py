"""Training the default classifiers, and what both trainings share: data, batches, the step loop.

The MLM head (:mod:`._head`) and the classifiers (here) are trained by one loop,
:func:`train_steps`: AdamW with linear warm-up and decay, a tqdm bar showing the loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from captum_layer_saliency._utils import seed_everything
from captum_layer_saliency.data import (
    AG_NEWS_LABELS,
    HATEXPLAIN_LABELS,
    SST2_LABELS,
    load_ag_news,
    load_hatexplain,
    load_sst2,
)
from captum_layer_saliency.zoo._config import BuildConfig
from captum_layer_saliency.zoo._lora import add_lora, lora_state
from captum_layer_saliency.zoo._manifest import MAX_LENGTH, TASKS
from captum_layer_saliency.zoo._models import classifier_model, encoder_tokenizer

Batch = TypeVar("Batch")

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


# --------------------------------------------------------------------------- data and batches


def task_data(task: str, part: str) -> tuple[list[str], list[int], list[str]]:
    """``(texts, labels, label_names)`` of a task's ``"train"`` or ``"eval"`` part.

    Args:
        task: one of ``TASKS``.
        part: ``"train"`` or ``"eval"`` (see ``docs/default_models.md`` for the splits).

    Returns:
        The texts, their gold class ids and the class names.

    Raises:
        ValueError: an unknown task.
    """
    if task == "sst2":
        ds = load_sst2("train" if part == "train" else "validation")
    elif task == "ag_news":
        ds = load_ag_news("train_part" if part == "train" else "heldout")
    elif task == "hatexplain":
        ds = load_hatexplain("validation" if part == "train" else "test")
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return list(ds["text"]), list(ds["label"]), list(ds.features["label"].names)


def sample(n_total: int, n: int | None, generator: torch.Generator) -> list[int]:
    """A seeded sample of ``n`` row numbers (all of them, shuffled, when ``n`` is ``None``).

    Args:
        n_total: how many rows there are.
        n: how many to draw (at most ``n_total``).
        generator: the random source.

    Returns:
        The row numbers.
    """
    perm = torch.randperm(n_total, generator=generator).tolist()
    return perm if n is None else perm[: min(n, n_total)]


def length_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator | None
) -> list[list[int]]:
    """Batches of similar length, so dynamic padding wastes little compute.

    With a generator, rows are shuffled, sorted by length within chunks of 50 batches, and the
    batches are shuffled (random but length-homogeneous). Without one, rows are sorted by length.

    Args:
        lengths: each row's length.
        batch_size: rows per batch.
        generator: the random source (``None``: deterministic, for evaluation).

    Returns:
        The batches, as lists of row numbers.
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


def pad(rows: Sequence[Sequence[int]], tokenizer: Any) -> tuple[Tensor, Tensor]:
    """Right-pad token id lists into ``(input_ids, attention_mask)`` (``DataCollatorWithPadding``).

    Args:
        rows: token id lists.
        tokenizer: the tokenizer (its padding token and side).

    Returns:
        ``(input_ids, attention_mask)``, both ``(len(rows), longest)`` long tensors.
    """
    batch = DataCollatorWithPadding(tokenizer)([{"input_ids": list(r)} for r in rows])
    return batch["input_ids"], batch["attention_mask"]


def padded_batches(
    rows: Sequence[Sequence[int]], tokenizer: Any, batch_size: int
) -> list[tuple[list[int], Tensor, Tensor]]:
    """Length-sorted evaluation batches: ``(row numbers, input_ids, attention_mask)``.

    Args:
        rows: token id lists.
        tokenizer: the tokenizer (its padding token and side).
        batch_size: rows per batch.

    Returns:
        The batches, in a fixed order.
    """
    out = []
    for batch in length_batches([len(r) for r in rows], batch_size, None):
        out.append((batch, *pad([rows[i] for i in batch], tokenizer)))
    return out


# --------------------------------------------------------------------------- the step loop


def _linear_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_steps(
    params: Sequence[nn.Parameter],
    epoch_batches: Callable[[], Iterable[Batch]],
    loss_of: Callable[[Batch], Tensor],
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    warmup_share: float,
    desc: str,
) -> tuple[int, float]:
    """The training loop: AdamW (weight decay 0.01), linear warm-up then linear decay to 0.

    Args:
        params: the parameters to train.
        epoch_batches: called once per epoch (in order, so seeded shuffles stay reproducible);
            yields that epoch's batches.
        loss_of: the loss of one batch.
        epochs: passes over the data.
        steps_per_epoch: batches per epoch (sizes the schedule and the progress bar).
        lr: the peak learning rate.
        warmup_share: the share of all steps spent warming up (at least one step).
        desc: the progress bar's label.

    Returns:
        ``(steps, seconds)``: how many steps ran and how long the loop took.
    """
    optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=0.01)
    total = steps_per_epoch * epochs
    scheduler = _linear_schedule(optimizer, total, warmup=max(1, int(warmup_share * total)))
    t0 = time.perf_counter()
    with tqdm(total=total, desc=desc) as bar:
        for _ in range(epochs):
            for batch in epoch_batches():
                loss = loss_of(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return total, time.perf_counter() - t0


# --------------------------------------------------------------------------- the classifiers


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
    for batch, ids, mask in padded_batches(rows, tokenizer, 64):
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        correct += int((pred == torch.tensor([labels[i] for i in batch])).sum())
    return correct / len(rows)


def train_classifier(task: str, config: BuildConfig) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Fine-tune the pre-trained encoder on ``task`` with LoRA (plus LayerNorms, pooler, head).

    Args:
        task: one of ``TASKS``.
        config: the build configuration.

    Returns:
        ``(tensors to save, metrics)``; the tensors are the LoRA factors (``lora_A.*``,
        ``lora_B.*``) and the fully trained parameters (``full.*``).
    """
    cc = config.classifiers[task]
    generator = seed_everything(config.seed)
    tokenizer = encoder_tokenizer()
    texts, labels, names = task_data(task, "train")
    chosen = sample(len(texts), cc.train_examples, generator)
    model = classifier_model(names)
    for p in model.parameters():
        p.requires_grad_(False)
    add_lora(model, LORA_TARGETS, config.lora_rank, config.lora_alpha)
    full = {n: p for n, p in model.named_parameters() if any(m in n for m in FULL_TRAIN_MARKERS)}
    for p in full.values():
        p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = tokenizer([texts[i] for i in chosen], truncation=True, max_length=cc.max_length)
    ids_rows: list[list[int]] = rows["input_ids"]
    gold = torch.tensor([labels[i] for i in chosen])

    def loss_of(batch: list[int]) -> Tensor:
        ids, mask = pad([ids_rows[i] for i in batch], tokenizer)
        logits = model(input_ids=ids, attention_mask=mask).logits
        return nn.functional.cross_entropy(logits, gold[batch])

    model.train()
    steps, seconds = train_steps(
        params,
        lambda: length_batches([len(r) for r in ids_rows], cc.batch_size, generator),
        loss_of,
        epochs=cc.epochs,
        steps_per_epoch=math.ceil(len(chosen) / cc.batch_size),
        lr=cc.lr,
        warmup_share=0.06,
        desc=f"{task}: fine-tuning",
    )
    tensors = dict(lora_state(model))
    tensors.update({f"full.{n}": p.detach() for n, p in full.items()})
    metrics: dict[str, Any] = {
        "train_examples": len(chosen),
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "trainable_parameters": sum(p.numel() for p in params),
    }
    return tensors, metrics
