"""Step 4 of DLS: position saliency back onto the input tokens (identity, decoded, hybrid)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.attr.decoding import sparsify_rows

__all__ = ["map_back"]


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
