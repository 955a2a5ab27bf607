"""The attention family of the registry (from [CLS], rollout) and the random control.

The attention methods read the model's attention probabilities (switching it to eager attention
for the call, since SDPA cannot return them) and ignore the target: attention does not depend on
the class. The ``random`` control gives uniform scores seeded by content.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from captum_layer_saliency.attr.attributor import Attributor
from captum_layer_saliency.compare.methods._spec import ATTENTION, CONTROL, MethodSpec, SpecList
from captum_layer_saliency.models.classifier import TextClassifier

__all__ = [
    "SPECS",
    "AttentionCLSAttributor",
    "AttentionRolloutAttributor",
    "RandomAttributor",
    "attention_maps",
    "eager_attention",
]


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Switch a model to eager attention for the duration (SDPA cannot return the weights)."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    if current in (None, "eager") or setter is None:
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(current)


def attention_maps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, **model_inputs: Tensor
) -> list[Tensor]:
    """Every layer's attention probabilities, ``(batch, heads, seq, seq)`` each.

    ``model_inputs`` are the model's other inputs (``token_type_ids``...), passed on.

    Raises:
        RuntimeError: the model returned none (load it with ``attn_implementation="eager"``).
    """
    with torch.no_grad(), eager_attention(model):
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_attentions=True,
            **model_inputs,
        )
    attentions = [a for a in (getattr(out, "attentions", None) or ()) if a is not None]
    if not attentions:
        raise RuntimeError(
            f"{type(model).__name__} returned no attention weights; load it with "
            "attn_implementation='eager'"
        )
    return attentions


def _first_real_position(attention_mask: Tensor) -> Tensor:
    """The index of each row's first real token: [CLS] / <s> for right- or left-padding."""
    return attention_mask.long().argmax(-1)


class AttentionCLSAttributor(Attributor):
    """Attention from the classification token (the first real token) in one layer, mean of heads.

    The target is ignored: attention does not depend on the class.
    """

    def __init__(self, clf: TextClassifier, *, seed: int = 0, layer: int = -1) -> None:
        """Choose the layer.

        Args:
            clf: the classifier bundle.
            seed: recorded for reports (attention is deterministic).
            layer: the layer whose attention is read (default the last, ``-1``).
        """
        super().__init__(clf, seed, layer=layer)
        self.layer = layer

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        attn = attention_maps(
            self.clf.model, input_ids, attention_mask, **self._all_inputs(input_ids, attention_mask)
        )[self.layer].mean(1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return attn[rows, _first_real_position(attention_mask)]


class AttentionRolloutAttributor(Attributor):
    """Attention rollout (Abnar & Zuidema, 2020) read from the classification token.

    Each layer's head-averaged attention is mixed with the identity for the residual stream,
    ``A' = (1 - residual) A + residual I``, re-normalised by row, and the layers are multiplied
    from the first to the last. The target is ignored.
    """

    def __init__(self, clf: TextClassifier, *, seed: int = 0, residual: float = 0.5) -> None:
        """Set the residual mix.

        Args:
            clf: the classifier bundle.
            seed: recorded for reports (rollout is deterministic).
            residual: the weight of the identity in each layer's mix (default 0.5).
        """
        super().__init__(clf, seed, residual=residual)
        self.residual = residual

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        maps = attention_maps(
            self.clf.model, input_ids, attention_mask, **self._all_inputs(input_ids, attention_mask)
        )
        eye = torch.eye(input_ids.shape[1], device=input_ids.device, dtype=maps[0].dtype)
        rollout = eye.expand(input_ids.shape[0], -1, -1)
        for attn in maps:
            mixed = (1 - self.residual) * attn.mean(1) + self.residual * eye
            mixed = mixed / mixed.sum(-1, keepdim=True)
            rollout = mixed @ rollout
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return rollout[rows, _first_real_position(attention_mask)]


class RandomAttributor(Attributor):
    """Uniform random scores, seeded by ``seed`` and the example's tokens (a control)."""

    def __init__(self, clf: TextClassifier, *, seed: int = 0) -> None:
        """Seed the control.

        Args:
            clf: the classifier bundle.
            seed: mixed with each example's token ids.
        """
        super().__init__(clf, seed)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        # Drawn per example from its content seed, so a sentence's scores do not depend on
        # its batch.
        return self._each_example(
            input_ids,
            attention_mask,
            target,
            valid,
            lambda ids, mask, tgt: torch.rand(ids.shape[1]).to(ids.device),
        )


#: The attention methods and the control, in the order they are listed.
SPECS: SpecList = [
    (
        MethodSpec(
            "attention_cls",
            "last-layer attention from [CLS], mean over heads",
            AttentionCLSAttributor,
            ATTENTION,
        ),
        ("attention", "attn"),
    ),
    (
        MethodSpec(
            "attention_rollout",
            "attention rollout from [CLS]",
            AttentionRolloutAttributor,
            ATTENTION,
        ),
        ("rollout",),
    ),
    (MethodSpec("random", "uniform random scores (seeded)", RandomAttributor, CONTROL), ()),
]
