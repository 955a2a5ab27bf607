"""Decoding hidden states back onto the input tokens through the LM head.

:func:`decode_layer` turns one layer's hidden states into the contribution matrix
``A_ij = softmax(f_lm(H_i))[t_j] / count(t_j)`` (Hou & Castanon, ICML 2023, Eq. 2) in chunks
over positions, gathering only the input's columns after the log-sum-exp, so the ``n x V``
logits never exist all at once. :func:`decode_top1` decodes only the most probable token.

DLS's steps on either side of decoding live here too: position saliency ``s_i = g(G_i, H_i)``
at a layer (:func:`position_saliency`, the ``aggregation``), and its mapping back onto the
input tokens through ``A`` (:func:`map_back`, :func:`layer_maps`: identity, decoded, hybrid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.models.heads import HeadMismatchError
from captum_layer_saliency.models.inputs import special_mask

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_DECODE_CHUNK",
    "MAPPINGS",
    "PRIORS",
    "SPECIAL_ROWS",
    "DecodedLayer",
    "check_mapping_options",
    "decode_layer",
    "decode_top1",
    "layer_maps",
    "map_back",
    "position_saliency",
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


#: Position-saliency functions ``g(G_i, H_i)``.
AGGREGATIONS = ("grad_x_act", "gradcam", "grad_norm")


def position_saliency(grad: Tensor, act: Tensor, mask: Tensor, aggregation: str) -> Tensor:
    """Position saliency ``s_i = g(G_i, H_i)``; padding positions get 0.

    Computed in float32 whatever the model's dtype (a bf16 mask would count real positions
    inexactly beyond 256, and bf16 sums over ``K`` lose the small terms).

    Args:
        grad: ``G = dy/dH`` ``(B, n, K)`` (under a layer method, its path- or noise-averaged
            gradient).
        act: ``H`` ``(B, n, K)`` (``H - H0`` under integrated gradients).
        mask: ``(B, n)``, 0 at padding.
        aggregation: ``"grad_x_act"`` (``sum_k G_ik H_ik``, gradient x activation),
            ``"gradcam"`` (``ReLU(sum_k alpha_k H_ik)`` with ``alpha_k`` the mean of ``G_ik``
            over the real positions, Grad-CAM applied to a sequence), or ``"grad_norm"``
            (``||G_i||_2``).

    Returns:
        ``(B, n)`` float32 scores, in the units of the explained output (a logit) for
        ``grad_x_act``.

    Raises:
        ValueError: an unknown ``aggregation``.
    """
    real = mask.float()
    g, h = grad.float(), act.float()
    if aggregation == "grad_x_act":
        scores = (g * h).sum(-1)
    elif aggregation == "gradcam":
        alpha = (g * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp_min(1)
        scores = torch.relu(torch.einsum("bk,bnk->bn", alpha, h))
    elif aggregation == "grad_norm":
        scores = g.norm(dim=-1)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose from {AGGREGATIONS}")
    return scores * real


#: How position saliency returns to the input tokens: through the decoded distribution
#: (``S = s A``); straight to the token at the same position (``A = I``); or ``"hybrid"``:
#: identity for the word positions, decoded for the special tokens' rows, whose saliency the
#: identity mapping would otherwise drop.
MAPPINGS = ("decoded", "identity", "hybrid")
#: What the special tokens' rows ([CLS], [SEP]) do under the decoded mapping: spread their
#: saliency like any other row (``"include"``, the specification), or contribute nothing.
SPECIAL_ROWS = ("include", "exclude")
#: Frequency correction of the decoded mapping: frequent tokens ("the", ",", ".") take decoded
#: mass from every row, so summing over rows heaps saliency on them. ``"example"`` divides each
#: column of ``A`` by its mean over the example's real rows, so a row counts for a token only
#: as far as it points there more than the other rows do.
PRIORS = ("none", "example")


def check_mapping_options(mapping: str, special_rows: str, prior: str, top_k: int | None) -> None:
    """Refuse unknown mapping options (see ``DecodedLayerSaliency``).

    Args:
        mapping: one of :data:`MAPPINGS`.
        special_rows: one of :data:`SPECIAL_ROWS`.
        prior: one of :data:`PRIORS`.
        top_k: a positive int or ``None``.

    Raises:
        ValueError: any option outside its choices.
    """
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose from {MAPPINGS}")
    if special_rows not in SPECIAL_ROWS:
        raise ValueError(f"special_rows must be one of {SPECIAL_ROWS}, got {special_rows!r}")
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def map_back(
    options: Any, saliency: Tensor, contributions: Tensor | None, mask: Tensor, candidates: Tensor
) -> Tensor:
    """Token scores ``(B, n)`` from position saliency ``s`` ``(B, n)``.

    Args:
        options: has ``mapping``, ``prior``, ``top_k``, ``normalize`` and ``special_rows`` (the
            explainer's settings, see ``DecodedLayerSaliency``).
        saliency: ``s_i``, 0 at padding.
        contributions: ``A`` ``(B, n, n)`` (None for the identity mapping).
        mask: ``(B, n)``, 0 at padding.
        candidates: ``(B, n)`` bool, the real non-special positions (the only ones scored).

    Returns:
        ``S = s`` (identity), ``S = s A`` (decoded) or identity plus the special rows' decoded
        spread (hybrid), zero outside ``candidates``.
    """
    identity = saliency * candidates
    if options.mapping == "identity":
        return identity
    assert contributions is not None
    if options.prior == "example":
        n_rows = mask.sum(-1).clamp_min(1).to(contributions)[:, None, None]
        column_mean = contributions.sum(1, keepdim=True) / n_rows
        contributions = contributions / column_mean.clamp_min(1e-30)
    rows = sparsify_rows(contributions, options.top_k, options.normalize)
    if options.mapping == "hybrid":
        special_rows = saliency * (mask.bool() & ~candidates)
        return identity + torch.einsum("bi,bij->bj", special_rows, rows) * candidates
    weight = saliency * candidates if options.special_rows == "exclude" else saliency
    return torch.einsum("bi,bij->bj", weight, rows) * candidates


def layer_maps(
    options: Any,
    grads: list[Tensor],
    acts: list[Tensor],
    hidden: list[Tensor],
    ids: Tensor,
    mask: Tensor,
    candidates: Tensor,
    lm_head: nn.Module,
) -> tuple[list[Tensor], list[DecodedLayer] | None]:
    """DLS's steps for each layer: position saliency, decoding, and the map back to the tokens.

    The identity mapping needs no decoding (the layer choice then decodes only what its
    coherence score needs: for ``self_recovery`` an argmax, no softmax over the vocabulary).

    Args:
        options: has ``aggregation``, ``mapping``, ``decode_chunk_size`` and what
            :func:`map_back` reads (the explainer's settings).
        grads: per layer, the gradient ``(B, n, K)`` the aggregation sees.
        acts: per layer, the activation ``(B, n, K)`` it sees.
        hidden: per layer, the hidden state ``(B, n, K)`` (decoded).
        ids: ``(B, n)`` token ids.
        mask: ``(B, n)``, 0 at padding.
        candidates: ``(B, n)`` bool, the real non-special positions.
        lm_head: the decoding head.

    Returns:
        ``(maps, decoded)``: one ``(B, n)`` token map per layer, and the decoded layers
        (``None`` for the identity mapping).
    """
    decoded = (
        [decode_layer(h, ids, mask, candidates, lm_head, options.decode_chunk_size) for h in hidden]
        if options.mapping != "identity"
        else None
    )
    maps = [
        map_back(
            options,
            position_saliency(g, a, mask, options.aggregation),
            decoded[k].contributions if decoded else None,
            mask,
            candidates,
        )
        for k, (g, a) in enumerate(zip(grads, acts, strict=True))
    ]
    return maps, decoded


def check_hidden_states(hidden: list[Tensor], ids: Tensor, head: nn.Module) -> None:
    """Refuse layer outputs DLS cannot decode with ``head``.

    Args:
        hidden: each candidate layer's output.
        ids: ``(B, n)`` token ids.
        head: the LM head.

    Raises:
        ValueError: a state that is not ``(B, n, K)`` for the ids' ``(B, n)``, or whose ``K``
            is not the head's input width.
    """
    head_width = _head_in_features(head)
    for h in hidden:
        if h.dim() != 3 or h.shape[:2] != ids.shape:
            raise ValueError(
                f"a candidate layer returned shape {tuple(h.shape)}; DLS needs hidden "
                f"states of shape (batch, seq, hidden) matching the ids {tuple(ids.shape)}"
            )
        if head_width is not None and h.shape[-1] != head_width:
            raise ValueError(
                f"the LM head takes hidden size {head_width} but this layer's hidden size is "
                f"{h.shape[-1]}: the head belongs to another model (use the LM head of the "
                "classifier's own backbone, load_lm_head)"
            )


def _head_in_features(head: nn.Module) -> int | None:
    """The hidden size an LM head takes: its first linear layer's input width."""
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return int(module.in_features)
    return None
