"""Step 1 of DLS: position saliency ``s_i = g(G_i, H_i)`` at a layer (the ``aggregation``)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AGGREGATIONS", "position_saliency"]

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
