"""Reductions of an attribution over the hidden dimension to one score per token.

A gradient method at the embeddings gives a ``(batch, seq, hidden)`` attribution; a token
score needs one number per token:

* ``"sum"``: ``sum_j a_ij`` (signed; Thermostat's choice for Input×Gradient and IG);
* ``"l1"``: ``sum_j |a_ij|``;
* ``"l2"``: ``sqrt(sum_j a_ij^2)`` (the registry's Saliency);
* ``"squared_l2"``: ``sum_j a_ij^2``, LAFA's Eq. 3 (Zhang et al., NAACL 2022), which that paper
  uses for every gradient method it compares (gradient, Input×Gradient, IG, SmoothGrad).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["REDUCTIONS", "check_reduction", "reduce_hidden"]

REDUCTIONS = ("sum", "l1", "l2", "squared_l2")


def check_reduction(reduction: str) -> str:
    """``reduction`` if it is one of :data:`REDUCTIONS`.

    Raises:
        ValueError: an unknown reduction, with the valid ones.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose from {REDUCTIONS}")
    return reduction


def reduce_hidden(attr: Tensor, reduction: str) -> Tensor:
    """Reduce ``(..., hidden)`` to ``(...)`` with ``reduction`` (see the module docstring)."""
    check_reduction(reduction)
    if reduction == "sum":
        return attr.sum(-1)
    if reduction == "l1":
        return attr.abs().sum(-1)
    if reduction == "l2":
        return attr.norm(dim=-1)
    return attr.pow(2).sum(-1)
