"""The decomposition family of the registry: DecompX (Modarressi et al., ACL 2023).

DecompX explains an encoder classifier without a backward pass. Every token's representation
is kept as a sum of *parts*, one per input token, ``x_i = sum_k x_{i<-k}``, and the parts are
propagated through the whole model in one forward:

* **embeddings**: token ``i``'s embedding (word + position + segment, after the embedding
  LayerNorm and, for ELECTRA, the projection) is entirely its own part, ``x_{i<-i}``;
* **attention**: the value path only, with the attention weights fixed (computed from the full
  representations): ``sum_j A_ij W_v x_{j<-k}``, then the output projection;
* **residuals**: parts add;
* **LayerNorm**: each part is centred by its own mean and divided by the standard deviation of
  the *whole* vector (``LN`` is linear once that deviation is fixed);
* **activations** (the FFN's GELU, the pooler's tanh, ELECTRA's head GELU): linearised per
  element through the origin, ``f(z_k) ~ z_k f(z) / z`` where ``z = sum_k z_k`` (the
  zero-origin approximation, "ZO" in the authors' code), so the parts still sum to ``f(z)``;
* **biases** (every linear layer's and LayerNorm's): split among the parts in proportion to
  ``|x_{i<-k} . b|`` (the paper's "AbsDot"); the classifier's bias, class by class, in
  proportion to ``|part|``;
* **head**: BERT's pooler and classifier on [CLS], RoBERTa's and ELECTRA's classification head
  on ``<s>``.

A token's score is its part of the explained class's logit; the parts of all tokens (special
tokens included) sum to the logit exactly, up to float rounding (:func:`decompose_logits`).
Written from the paper for the BERT family: BERT (and the default MiniLM models, which are BERT),
RoBERTa and ELECTRA with absolute position embeddings; other families raise
:class:`~captum_layer_saliency.models.surgery.UnsupportedModelError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.attr.attributor import Attributor
from captum_layer_saliency.compare.methods._spec import DECOMPOSITION, MethodSpec, SpecList
from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.surgery import UnsupportedModelError, model_family

__all__ = ["DECOMPX_FAMILIES", "SPECS", "DecompXAttributor", "check_decompx", "decompose_logits"]

#: The families DecompX is written for (``config.model_type``).
DECOMPX_FAMILIES = ("bert", "roberta", "electra")


def check_decompx(model: nn.Module) -> str:
    """The model's family, if DecompX covers it.

    Raises:
        UnsupportedModelError: another family, a relative position embedding, or a model that is
            not a ``*ForSequenceClassification`` of the family.
    """
    family = model_family(model)
    if family not in DECOMPX_FAMILIES:
        raise UnsupportedModelError(
            f"decompx is written for the BERT family ({', '.join(DECOMPX_FAMILIES)}); "
            f"{type(model).__name__} is {family!r}. Use a gradient or perturbation method"
        )
    config: Any = model.config
    kind = getattr(config, "position_embedding_type", "absolute")
    if kind not in (None, "absolute"):
        raise UnsupportedModelError(
            f"decompx covers absolute position embeddings only; this model uses {kind!r}"
        )
    if not isinstance(getattr(model, "classifier", None), nn.Module):
        raise UnsupportedModelError(
            f"decompx needs a sequence classifier with a .classifier head; "
            f"{type(model).__name__} has none"
        )
    return family


def _add_bias(parts: Tensor, bias: Tensor | None) -> Tensor:
    """Split ``bias`` among the parts (dim -2) by ``|part . bias|`` (AbsDot).

    A row whose parts are all orthogonal to the bias gives it to every part equally.
    """
    if bias is None:
        return parts
    weights = (parts @ bias).abs()
    total = weights.sum(-1, keepdim=True)
    equal = torch.full_like(weights, 1.0 / weights.shape[-1])
    weights = torch.where(total > 0, weights / total.clamp_min(1e-30), equal)
    return parts + weights[..., None] * bias


def _linear(parts: Tensor, layer: nn.Linear) -> Tensor:
    """A linear layer applied to every part; its bias split by AbsDot."""
    return _add_bias(parts @ layer.weight.T, layer.bias)


def _activation(parts: Tensor, act: Callable[[Tensor], Tensor]) -> Tensor:
    """``act`` linearised per element through the origin: each part times ``act(z) / z``."""
    z = parts.sum(-2, keepdim=True)
    tiny = z.abs() < 1e-6
    safe = torch.where(tiny, torch.full_like(z, 1e-6), z)
    return parts * (act(safe) / safe)


def _layer_norm(parts: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm with the mean and variance of the whole vector; its bias split by AbsDot."""
    total = parts.sum(-2, keepdim=True)
    std = torch.sqrt(total.var(-1, unbiased=False, keepdim=True) + norm.eps)
    out = (parts - parts.mean(-1, keepdim=True)) / std
    if norm.weight is not None:
        out = out * norm.weight
    return _add_bias(out, norm.bias)


def _attention(parts: Tensor, block: Any, key_bias: Tensor) -> Tensor:
    """The self-attention sub-block: value path with fixed weights, projection, residual, LN."""
    attn: Any = block.attention.self
    heads, size = attn.num_attention_heads, attn.attention_head_size
    batch, seq = parts.shape[:2]
    x = parts.sum(2)
    q = attn.query(x).view(batch, seq, heads, size).transpose(1, 2)
    k = attn.key(x).view(batch, seq, heads, size).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(size) + key_bias, dim=-1)
    values = _linear(parts, attn.value).view(batch, seq, seq, heads, size)
    mixed = torch.einsum("bhij,bjkhd->bikhd", probs, values).reshape(parts.shape)
    out: Any = block.attention.output
    return _layer_norm(_linear(mixed, out.dense) + parts, out.LayerNorm)


def _feed_forward(parts: Tensor, block: Any) -> Tensor:
    """The FFN sub-block: dense, activation (linearised), dense, residual, LN."""
    inner = _activation(
        _linear(parts, block.intermediate.dense), block.intermediate.intermediate_act_fn
    )
    return _layer_norm(_linear(inner, block.output.dense) + parts, block.output.LayerNorm)


def _head(model: Any, family: str, cls_parts: Tensor) -> Tensor:
    """The classification head on the first token's parts ``(batch, seq, hidden)``."""
    head: Any = model.classifier
    if family == "bert":
        pooler: Any = model.base_model.pooler
        pooled = _activation(_linear(cls_parts, pooler.dense), torch.tanh)
        out_proj = head
    else:
        act = torch.tanh if family == "roberta" else head.activation
        pooled = _activation(_linear(cls_parts, head.dense), act)
        out_proj = head.out_proj
    logits = pooled @ out_proj.weight.T
    if out_proj.bias is not None:  # class by class, in proportion to |part|
        weights = logits.abs()
        total = weights.sum(-2, keepdim=True)
        equal = torch.full_like(weights, 1.0 / weights.shape[-2])
        weights = torch.where(total > 0, weights / total.clamp_min(1e-30), equal)
        logits = logits + weights * out_proj.bias
    return logits


@torch.no_grad()
def decompose_logits(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, **model_inputs: Tensor
) -> Tensor:
    """Every input token's part of every class logit, by DecompX, in one forward.

    Args:
        model: an eval-mode BERT, RoBERTa or ELECTRA ``*ForSequenceClassification`` (dropout is
            not applied).
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``, 1 on real tokens.
        **model_inputs: ``token_type_ids`` and ``position_ids`` where given.

    Returns:
        ``(batch, seq, classes)``: summed over ``seq`` it gives the model's logits (the
        decomposition is complete); padding positions get exactly 0.

    Raises:
        UnsupportedModelError: a family DecompX does not cover (see :func:`check_decompx`).
    """
    family = check_decompx(model)
    base: Any = model.base_model
    known = {k: v for k, v in model_inputs.items() if k in ("token_type_ids", "position_ids")}
    hidden = base.embeddings(input_ids=input_ids, **known)
    if getattr(base, "embeddings_project", None) is not None:
        hidden = base.embeddings_project(hidden)
    batch, seq, width = hidden.shape
    parts = hidden.new_zeros(batch, seq, seq, width)
    index = torch.arange(seq, device=hidden.device)
    parts[:, index, index] = hidden
    key_bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(
        hidden.dtype
    ).min
    for block in base.encoder.layer:
        parts = _feed_forward(_attention(parts, block, key_bias), block)
    logits = _head(model, family, parts[:, 0])
    return logits * attention_mask[..., None].to(logits.dtype)


class DecompXAttributor(Attributor):
    """DecompX: each token's part of the target logit, decomposed in one forward, no backward.

    Examples::

        >>> from captum_layer_saliency.compare.methods import get_method
        >>> method = get_method("decompx", clf)
        >>> scores = method.attribute(enc["input_ids"], enc["attention_mask"], target=1)
    """

    def __init__(self, clf: TextClassifier, *, seed: int = 0) -> None:
        """Check the family.

        Args:
            clf: the classifier bundle (a BERT, RoBERTa or ELECTRA classifier).
            seed: recorded for reports (DecompX is deterministic).

        Raises:
            UnsupportedModelError: a family DecompX does not cover.
        """
        check_decompx(clf.model)
        super().__init__(clf, seed)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        parts = decompose_logits(
            self.clf.model,
            input_ids,
            attention_mask,
            **self._all_inputs(input_ids, attention_mask),
        )
        # Its one forward runs the model's parts, which a pass counter on the model cannot see.
        _passes.report_passes(float(input_ids.shape[0]))
        return parts.gather(-1, target.view(-1, 1, 1).expand(-1, parts.shape[1], 1))[..., 0]


#: The decomposition methods, in the order they are listed.
SPECS: SpecList = [
    (
        MethodSpec(
            "decompx",
            "DecompX (Modarressi et al., 2023): each token's part of the logit, one forward",
            DecompXAttributor,
            DECOMPOSITION,
            notes="BERT, RoBERTa and ELECTRA only; activations linearised through the origin, "
            "biases split by AbsDot; its one forward carries seq x seq parts, so its memory and "
            "work grow with the square of the length (about seq forwards' worth of arithmetic)",
        ),
        ("decomp_x",),
    ),
]
