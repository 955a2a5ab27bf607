"""A minimal LoRA (Hu et al. 2021) for ``nn.Linear``: train low-rank deltas, merge them at load.

Only the default-model build uses it. The deltas are stored, then added into the plain weights
when the model is loaded, so users always get an ordinary ``*ForSequenceClassification``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """``base(x) + scaling * x A^T B^T`` with ``base`` frozen and ``A``, ``B`` trainable.

    Args:
        base: the linear layer to adapt; its parameters are frozen.
        rank: the rank ``r`` of the update.
        alpha: the update is scaled by ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        # B = 0 makes the adapted layer start exactly at the pre-trained one
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def add_lora(model: nn.Module, suffixes: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Wrap every ``nn.Linear`` whose qualified name ends with one of ``suffixes`` in place.

    Args:
        model: the model to adapt.
        suffixes: name endings of the linears to adapt (e.g. ``"attention.self.query"``).
        rank: LoRA rank.
        alpha: LoRA scale numerator.

    Returns:
        The qualified names of the wrapped linears, in module order.
    """
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(suffixes)
    ]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return names


def lora_state(model: nn.Module) -> dict[str, Tensor]:
    """The trained LoRA factors, keyed ``lora_A.<linear>`` / ``lora_B.<linear>``.

    Args:
        model: a model adapted with :func:`add_lora`.

    Returns:
        Detached factors, named after the original (unwrapped) linear.
    """
    out: dict[str, Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"lora_A.{name}"] = module.lora_A.detach()
            out[f"lora_B.{name}"] = module.lora_B.detach()
    return out


@torch.no_grad()
def merge_lora(model: nn.Module, state: dict[str, Tensor], scaling: float) -> int:
    """Add ``scaling * B @ A`` into each plain linear named in ``state``.

    Args:
        model: an unadapted model with the same architecture.
        state: factors as returned by :func:`lora_state`.
        scaling: ``alpha / rank`` used in training.

    Returns:
        How many linears were updated.

    Raises:
        KeyError: a factor names a module that is not an ``nn.Linear`` of ``model``.
    """
    merged = 0
    for key, a in state.items():
        if not key.startswith("lora_A."):
            continue
        name = key[len("lora_A.") :]
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise KeyError(f"LoRA factor for {name!r}, which is not an nn.Linear")
        b = state[f"lora_B.{name}"]
        delta = (b.float() @ a.float()) * scaling
        linear.weight.add_(delta.to(linear.weight.dtype))
        merged += 1
    return merged
