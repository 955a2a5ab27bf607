"""Step 4 of DLS: position saliency back onto the input tokens (identity, decoded, hybrid)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.attr._aggregation import position_saliency
from captum_layer_saliency.attr.decoding import DecodedLayer, decode_layer, sparsify_rows

__all__ = [
    "MAPPINGS",
    "PRIORS",
    "SPECIAL_ROWS",
    "check_mapping_options",
    "layer_maps",
    "map_back",
]

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
