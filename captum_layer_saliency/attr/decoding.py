"""Decoding hidden states back onto the input tokens through the LM head.

:func:`decode_layer` turns one layer's hidden states into the contribution matrix
``A_ij = softmax(f_lm(H_i))[t_j] / count(t_j)`` (Hou & Castanon, ICML 2023, Eq. 2) in chunks
over positions, gathering only the input's columns after the log-sum-exp, so the ``n x V``
logits never exist all at once. :func:`decode_top1` decodes only the most probable token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from captum_layer_saliency.models.classifier import special_mask
from captum_layer_saliency.models.heads import HeadMismatchError

__all__ = [
    "DEFAULT_DECODE_CHUNK",
    "DecodedLayer",
    "decode_layer",
    "decode_top1",
    "sparsify_rows",
]

#: Rows (batch x positions) decoded at once; bounds the transient ``rows x V`` logits.
DEFAULT_DECODE_CHUNK = 64


@dataclass
class DecodedLayer:
    """One layer decoded onto its input.

    Attributes:
        contributions: ``A`` ``(B, n, n)``: ``A_ij = P_i[t_j] / count(t_j)`` for candidate
            columns ``j`` (real, non-special), 0 elsewhere and on padding rows.
        own_prob: ``P_i[t_i]`` ``(B, n)``.
        top1: the most probable decoded token of each position ``(B, n)``.
        entropy: the entropy of ``P_i`` in nats ``(B, n)``.
    """

    contributions: Tensor
    own_prob: Tensor
    top1: Tensor
    entropy: Tensor


def token_counts(input_ids: Tensor, candidates: Tensor) -> Tensor:
    """``count(t_j)``: candidate positions of the same example holding position ``j``'s id."""
    same = input_ids[:, :, None] == input_ids[:, None, :]
    return (same & candidates[:, None, :]).sum(-1)


@torch.no_grad()
def _check_hidden_size(hidden: Tensor, lm_head: nn.Module) -> None:
    head_hidden = getattr(lm_head, "hidden_size", None)
    if head_hidden is not None and head_hidden != hidden.shape[-1]:
        raise HeadMismatchError(
            f"the LM head takes hidden size {head_hidden} but this layer's hidden size is "
            f"{hidden.shape[-1]}"
        )


def _check_vocab(input_ids: Tensor, vocab: int) -> None:
    max_id = int(input_ids.max())
    if max_id >= vocab:
        raise HeadMismatchError(
            f"token id {max_id} is outside the LM head's vocabulary of {vocab}: the "
            "head and the tokenizer do not belong together"
        )


def decode_top1(
    hidden: Tensor,
    input_ids: Tensor,
    lm_head: nn.Module,
    chunk_size: int = DEFAULT_DECODE_CHUNK,
) -> Tensor:
    """The most probable decoded token of every position, and nothing else.

    The same tokens as :func:`decode_layer`'s ``top1``, without the normalisation, the
    entropy and the gathered probabilities: those cost two passes of ``exp`` over
    ``positions x V`` logits, which dominate decoding time on a CPU, and the ``self_recovery``
    coherence score needs only the argmax.

    Args:
        hidden: ``(B, n, K)``.
        input_ids: ``(B, n)``.
        lm_head: maps ``(..., K)`` to ``(..., V)`` logits.
        chunk_size: rows (batch x positions) decoded at once.

    Returns:
        ``(B, n)`` token ids.

    Raises:
        HeadMismatchError: as :func:`decode_layer`.
    """
    batch, n, _ = hidden.shape
    _check_hidden_size(hidden, lm_head)
    step = max(1, chunk_size // max(batch, 1))
    top1 = torch.zeros_like(input_ids)
    for start in range(0, n, step):
        stop = min(n, start + step)
        logits = lm_head(hidden[:, start:stop]).float()
        if start == 0:
            _check_vocab(input_ids, logits.shape[-1])
        top1[:, start:stop] = logits.argmax(-1)
        del logits
    return top1


def decode_layer(
    hidden: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    candidates: Tensor,
    lm_head: nn.Module,
    chunk_size: int = DEFAULT_DECODE_CHUNK,
) -> DecodedLayer:
    """Decode a layer's hidden states onto the input tokens, chunked over positions.

    Args:
        hidden: ``H`` ``(B, n, K)``.
        input_ids: ``t`` ``(B, n)``.
        attention_mask: ``(B, n)``, 0 at padding.
        candidates: ``(B, n)`` bool, the positions whose tokens can receive mass (real and
            not special).
        lm_head: maps ``(..., K)`` to ``(..., V)`` logits.
        chunk_size: rows (batch x positions) decoded at once. Memory grows with
            ``chunk_size x V``, never with ``n x V``.

    Returns:
        The :class:`DecodedLayer`; the maths is done in float32 whatever the model's dtype.

    Raises:
        HeadMismatchError: the head's hidden size differs from ``K``, or an input id lies
            outside the head's vocabulary.
    """
    batch, n, _ = hidden.shape
    _check_hidden_size(hidden, lm_head)
    real = attention_mask.bool()
    columns = input_ids[:, None, :]
    step = max(1, chunk_size // max(batch, 1))
    entropy = hidden.new_zeros((batch, n), dtype=torch.float32)
    top1 = torch.zeros_like(input_ids)
    probs = hidden.new_zeros((batch, n, n), dtype=torch.float32)
    for start in range(0, n, step):
        stop = min(n, start + step)
        logits = lm_head(hidden[:, start:stop]).float()
        if start == 0:
            _check_vocab(input_ids, logits.shape[-1])
        log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)
        gathered = logits.gather(-1, columns.expand(batch, stop - start, n)) - log_norm
        probs[:, start:stop] = gathered.exp()
        log_p = logits - log_norm
        entropy[:, start:stop] = -(log_p.exp() * log_p).sum(-1)
        top1[:, start:stop] = logits.argmax(-1)
        del logits, log_p, gathered
    own_prob = torch.diagonal(probs, dim1=1, dim2=2).clone()
    counts = token_counts(input_ids, candidates).clamp_min(1)
    contributions = probs * (candidates / counts)[:, None, :] * real[:, :, None]
    return DecodedLayer(contributions, own_prob, top1, entropy)


def sparsify_rows(contributions: Tensor, top_k: int | None, normalize: bool) -> Tensor:
    """Keep the ``top_k`` largest entries of each row, then optionally rescale rows to sum to 1.

    Ties at the ``top_k``-th value are broken by position (the earlier position is kept).

    Args:
        contributions: ``A`` ``(B, n, n)``.
        top_k: entries kept per row (all when ``None``).
        normalize: rescale each non-empty row to sum to 1.

    Returns:
        The sparsified ``(B, n, n)`` matrix.

    Raises:
        ValueError: ``top_k`` below 1.
    """
    matrix = contributions
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be a positive int or None, got {top_k}")
        k = min(top_k, matrix.shape[-1])
        # Stable descending sort keeps the earlier column on ties, so results are reproducible.
        order = torch.sort(matrix, dim=-1, descending=True, stable=True).indices[..., :k]
        keep = torch.zeros_like(matrix, dtype=torch.bool).scatter_(-1, order, True)
        matrix = matrix * keep
    if normalize:
        total = matrix.sum(-1, keepdim=True)
        matrix = torch.where(total > 0, matrix / total.clamp_min(1e-30), matrix)
    return matrix


def candidate_mask(
    input_ids: Tensor, attention_mask: Tensor, special_token_ids: Sequence[int] | None
) -> Tensor:
    """Positions that are real (mask 1) and do not hold a special token.

    Args:
        input_ids: ``(B, n)`` ids.
        attention_mask: ``(B, n)``, 0 at padding.
        special_token_ids: the special tokens' ids.

    Returns:
        ``(B, n)`` bool.
    """
    return attention_mask.bool() & ~special_mask(input_ids, special_token_ids)
