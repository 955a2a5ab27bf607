"""Training the MLM head the default models decode with, on the frozen pre-trained encoder.

The checkpoint ships no MLM head; this one (``BertOnlyMLMHead``: dense + GELU + LayerNorm, decoder
tied to the frozen word embeddings, plus a bias) stands in for the pre-trained model's head. It
is trained with BERT's masked language-modelling objective on unlabelled text (SST-2 train
sentences and AG News ``train_part`` texts, labels unused), by the shared step loop
(:func:`._train.train_steps`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_layer_saliency._utils import seed_everything
from captum_layer_saliency.zoo._config import BuildConfig, HeadConfig
from captum_layer_saliency.zoo._manifest import MAX_LENGTH
from captum_layer_saliency.zoo._models import (
    encoder_tokenizer,
    head_trainable,
    masked_lm_model,
    new_mlm_head,
)
from captum_layer_saliency.zoo._train import (
    padded_batches,
    sample,
    task_data,
    train_steps,
)

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
    for _, ids, mask in tqdm(padded_batches(token_rows, tokenizer, 64), desc=desc):
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
    for _, ids, mask in padded_batches(rows, tokenizer, 64):
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
    sst2, _, _ = task_data("sst2", "train")
    ag, _, _ = task_data("ag_news", "train")
    return [sst2[i] for i in sample(len(sst2), config.sst2_sentences, generator)] + [
        ag[i] for i in sample(len(ag), config.ag_news_texts, generator)
    ]


def _head_eval_texts(n: int) -> list[str]:
    sst2, _, _ = task_data("sst2", "eval")
    ag, _, _ = task_data("ag_news", "eval")
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
    tokenizer = encoder_tokenizer()
    mlm = masked_lm_model().eval()
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
    params = list(head_trainable(head).values())

    def epoch_batches() -> list[Tensor]:
        perm = torch.randperm(len(targets), generator=generator)
        return [perm[start : start + hc.batch_size] for start in range(0, len(perm), hc.batch_size)]

    head.train()
    total, train_s = train_steps(
        params,
        epoch_batches,
        lambda idx: _mlm_loss(head(states[idx]), targets[idx], kinds[idx]),
        epochs=hc.epochs,
        steps_per_epoch=math.ceil(len(targets) / hc.batch_size),
        lr=hc.lr,
        warmup_share=0.05,
        desc="MLM head: training",
    )
    head.eval()
    tensors = {n: p.detach() for n, p in head_trainable(head).items()}
    # evaluate what will be loaded: the fp16-rounded head
    with torch.no_grad():
        for p in head_trainable(head).values():
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
