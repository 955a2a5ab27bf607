"""LoRA (Hu et al. 2021) through peft: train low-rank deltas, merge them at load.

Only the default-model build uses it. The deltas are stored as ``lora_A.<linear>`` and
``lora_B.<linear>`` (the factors of the linear's update ``scaling * B @ A``), then merged into the
plain weights when the model is loaded, so users always get an ordinary
``*ForSequenceClassification``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn


def _config(targets: Sequence[str], rank: int, alpha: float) -> LoraConfig:
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    # A target matches a linear whose qualified name is it or ends with "." + it.
    # peft annotates lora_alpha as int; it computes alpha / rank, which a float alpha keeps exact.
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]
        target_modules=list(targets),
        lora_dropout=0.0,
    )


def _adapted(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def add_lora(model: nn.Module, suffixes: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Adapt every ``nn.Linear`` whose qualified name ends with one of ``suffixes``, in place.

    Only the LoRA factors are left trainable (``B = 0``: the model starts exactly at the
    pre-trained one).

    Args:
        model: the model to adapt.
        suffixes: name endings of the linears to adapt (e.g. ``"attention.self.query"``).
        rank: LoRA rank.
        alpha: LoRA scale numerator (the update is scaled by ``alpha / rank``).

    Returns:
        The qualified names of the adapted linears, in module order.
    """
    inject_adapter_in_model(_config(suffixes, rank, alpha), model)
    return _adapted(model)


def lora_state(model: nn.Module) -> dict[str, Tensor]:
    """The trained LoRA factors, keyed ``lora_A.<linear>`` / ``lora_B.<linear>``.

    Args:
        model: a model adapted with :func:`add_lora`.

    Returns:
        Detached factors, named after the adapted linear.
    """
    out: dict[str, Tensor] = {}
    for key, tensor in get_peft_model_state_dict(model).items():
        name, _, factor = key.removesuffix(".weight").rpartition(".")  # "<linear>", "lora_A"
        out[f"{factor}.{name}"] = tensor.detach()
    return out


@torch.no_grad()
def merge_lora(model: nn.Module, state: dict[str, Tensor], rank: int, alpha: float) -> int:
    """Add ``alpha / rank * B @ A`` into each plain linear named in ``state``.

    The model is left as it was but for those weights: plain linears, no adapter, every
    parameter's ``requires_grad`` as found.

    Args:
        model: an unadapted model with the same architecture.
        state: factors as returned by :func:`lora_state`.
        rank: LoRA rank used in training.
        alpha: LoRA ``alpha`` used in training.

    Returns:
        How many linears were updated.

    Raises:
        KeyError: a factor is missing, or names a module that is not an ``nn.Linear`` of
            ``model``.
    """
    targets = sorted(key[len("lora_A.") :] for key in state if key.startswith("lora_A."))
    for name in targets:
        if not isinstance(model.get_submodule(name), nn.Linear):
            raise KeyError(f"LoRA factor for {name!r}, which is not an nn.Linear")
    if not targets:
        return 0
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    factors = {f"{t}.{f}.weight": state[f"{f}.{t}"] for t in targets for f in ("lora_A", "lora_B")}
    inject_adapter_in_model(_config(targets, rank, alpha), model)
    loaded = set_peft_model_state_dict(model, factors)
    unexpected = getattr(loaded, "unexpected_keys", [])
    if unexpected:
        raise KeyError(f"LoRA factors that fit no adapted linear: {unexpected}")
    for name in _adapted(model):
        layer = model.get_submodule(name)
        assert isinstance(layer, LoraLayer)
        layer.merge()  # base weight += scaling * B @ A
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    for attribute in ("peft_config", "_hf_peft_config_loaded"):
        if attribute in vars(model):
            delattr(model, attribute)
    for n, p in model.named_parameters():
        p.requires_grad_(grads[n])
    return len(targets)
