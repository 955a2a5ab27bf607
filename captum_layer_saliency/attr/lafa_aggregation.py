"""LAFA's aggregation of the neighbours' token saliencies onto the input's tokens.

Two rules, the values of the option ``aggregation`` of
:class:`~captum_layer_saliency.attr.lafa.LAFA`:

* ``"paper"`` (:func:`paper_aggregate`), Zhang et al. (NAACL 2022), Eqs. 6-7::

      M_LAFA(x)_t = M(x)_t + lambda * E(w_t),
      E(w) = (1 / |N|) * sum_{x' in N} sum_m  M(x')_m * kappa(e(w), e(w'_m)) / T'

  with ``e`` the word (layer-0) embeddings, ``T'`` the neighbour's length (its real tokens) and
  ``kappa`` a kernel on the cosine of two word embeddings: ``"indicator"`` (1 when the cosine is
  at least ``min_similarity``, else 0; with the default 0.999 it fires on the same word) or
  ``"exp"`` (``exp((cos - 1) / sigma)``). No neighbour gives ``E = 0``: the base saliency.
* ``"weighted_mean"`` (:func:`local_aggregate`): this project's first variant, a normalised
  ``exp(cos / sigma)``-weighted mean of the own score and the best-matching neighbour tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["AGGREGATIONS", "KERNELS", "kernel_weights", "local_aggregate", "paper_aggregate"]

AGGREGATIONS = ("paper", "weighted_mean")
KERNELS = ("indicator", "exp")


def kernel_weights(cos: Tensor, kernel: str, *, sigma: float, min_similarity: float) -> Tensor:
    """``kappa`` of cosines: ``"indicator"`` or ``"exp"``.

    ``"indicator"`` is ``1[cos >= min_similarity]``, ``"exp"`` is ``exp((cos - 1) / sigma)``
    (cosines below ``min_similarity`` weigh 0 under both).

    Raises:
        ValueError: an unknown kernel.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose from {KERNELS}")
    keep = cos >= min_similarity
    if kernel == "indicator":
        return keep.to(torch.float32)
    return torch.where(keep, torch.exp((cos.clamp(max=1.0) - 1) / sigma), 0.0).float()


def paper_aggregate(
    scores: Tensor,
    words: Tensor,
    valid: Tensor,
    nb_scores: Tensor,
    nb_words: Tensor,
    nb_valid: Tensor,
    *,
    lam: float,
    kernel: str = "indicator",
    sigma: float = 0.1,
    min_similarity: float = 0.999,
) -> Tensor:
    """The paper's ``M(x) + lambda * E`` (module docstring).

    Args:
        scores: the input's base saliencies ``M(x)`` ``(B, n)``.
        words: the input's word embeddings ``(B, n, d)``.
        valid: ``(B, n)`` True on the tokens that get a score.
        nb_scores: the neighbours' base saliencies ``(B, k, m)``.
        nb_words: their word embeddings ``(B, k, m, d)``.
        nb_valid: ``(B, k, m)`` True on the neighbours' real, non-special tokens; a neighbour
            slot without any valid token is absent (an input may have fewer than ``k``).
        lam: ``lambda``, the weight of the neighbours' evidence.
        kernel: ``"indicator"`` or ``"exp"`` (:func:`kernel_weights`).
        sigma: the ``"exp"`` kernel's width.
        min_similarity: the least cosine that counts.

    Returns:
        ``(B, n)`` float32 scores, 0 where ``valid`` is False.
    """
    own = scores.float()
    if nb_scores.shape[1] == 0 or nb_scores.shape[2] == 0:
        return own * valid
    e = nn.functional.normalize(words.float(), dim=-1)
    f = nn.functional.normalize(nb_words.float(), dim=-1)
    cos = torch.einsum("bnd,bkmd->bknm", e, f)
    weight = kernel_weights(cos, kernel, sigma=sigma, min_similarity=min_similarity)
    weight = weight * nb_valid[:, :, None, :]
    length = nb_valid.sum(-1).clamp_min(1).float()  # T' per neighbour (B, k)
    per_neighbour = (weight * nb_scores.float()[:, :, None, :]).sum(-1) / length[..., None]
    present = nb_valid.any(-1)  # (B, k)
    count = present.sum(-1, keepdim=True).clamp_min(1).float()
    evidence = (per_neighbour * present[..., None]).sum(1) / count  # (B, n)
    return (own + lam * evidence) * valid


def local_aggregate(
    scores: Tensor,
    reprs: Tensor,
    valid: Tensor,
    nb_scores: Tensor,
    nb_reprs: Tensor,
    nb_valid: Tensor,
    *,
    sigma: float,
    top_matches: int = 1,
    min_similarity: float = 0.5,
) -> Tensor:
    """LAFA's aggregation of neighbour attributions onto the input's tokens.

    Args:
        scores: the input's base attributions ``a`` ``(B, n)``.
        reprs: the input's token representations ``(B, n, d)``.
        valid: ``(B, n)`` True on the tokens that get a score (real, not special).
        nb_scores: the neighbours' attributions ``(B, k, m)``.
        nb_reprs: their token representations ``(B, k, m, d)``.
        nb_valid: ``(B, k, m)`` True on the neighbour tokens that may be matched.
        sigma: the kernel width (``w = exp((cos - 1) / sigma)``).
        top_matches: the most-similar tokens of each neighbour used per input token.
        min_similarity: matches with a lower cosine are dropped.

    Returns:
        ``(B, n)`` aggregated scores, 0 where ``valid`` is False.
    """
    own = scores.float()
    if nb_scores.shape[1] == 0 or nb_scores.shape[2] == 0:
        return own * valid
    e = nn.functional.normalize(reprs.float(), dim=-1)
    f = nn.functional.normalize(nb_reprs.float(), dim=-1)
    cos = torch.einsum("bnd,bkmd->bknm", e, f)
    cos = cos.masked_fill(~nb_valid[:, :, None, :], -math.inf)
    best, where = cos.topk(min(top_matches, cos.shape[-1]), dim=-1)  # (B, k, n, t)
    matched = nb_scores.float()[:, :, None, :].expand_as(cos).gather(-1, where)
    keep = best >= min_similarity  # also drops the -inf of unmatched (padding) positions
    weight = torch.where(keep, torch.exp((best.clamp(max=1.0) - 1) / sigma), 0.0)
    numerator = own + (weight * torch.where(keep, matched, 0.0)).sum((1, 3))
    denominator = 1 + weight.sum((1, 3))
    return numerator / denominator * valid
