"""GIM, gradient interaction modifications (Edin et al., 2025), written from the paper.

GIM is Input×Gradient from a baseline, ``(e - e0) . de/dy`` at the word embeddings (``e0``: the
PAD baseline's embeddings), taken through a backward pass with three modifications; the
forward, and so the prediction, is unchanged:

* **frozen norms**: LayerNorm's standard deviation and RMSNorm's root mean square are constants
  of the backward pass (LayerNorm's mean is not);
* **softmax temperature**: the attention softmax's backward is that of ``softmax(x / T)``
  (``T = 2``), a softer attention for the gradient only;
* **Q/K/V scaling**: the gradients reaching the attention's queries, keys and values are
  multiplied by 1/4, 1/4 and 1/2.

The settings are those of the authors' package ``gim-explain`` (0.1.4, MIT), which explains only
language-model logits and patches torch's softmax and attention functions process-wide, so it is
not used here. This implementation runs on **its own copy of the model** (made once, when the
method is built; the user's model is never changed): the copy's norms are swapped for frozen
ones and its attention runs through a function registered with transformers' attention
interface. So it serves every family whose attention goes through that interface (BERT,
RoBERTa, ELECTRA, ALBERT, DistilBERT, GPT-2, Llama...); another family (DeBERTa-v2) raises
:class:`~captum_layer_saliency.models.surgery.UnsupportedModelError`, as does a copy whose
logits differ from the model's. Cost: one forward and one backward, as Input×Gradient.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import LayerGradientXActivation
from torch import Tensor, nn

from captum_layer_saliency.attr.attributor import EmbeddingAttributor
from captum_layer_saliency.compare.methods._spec import GRADIENT, MethodSpec, SpecList
from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.classifier import TextClassifier, classifier_forward
from captum_layer_saliency.models.surgery import UnsupportedModelError, embedding_layer

__all__ = [
    "ATTENTION",
    "FrozenLayerNorm",
    "FrozenRMSNorm",
    "GIMAttributor",
    "SPECS",
    "check_copy",
    "gim_model",
    "scale_grad",
    "temperature_softmax",
]

#: The name GIM's attention function is registered under in transformers' interfaces.
ATTENTION = "captum_layer_saliency_gim"
_REGISTERED = threading.Lock()
_CALLS = threading.local()


class _TemperatureSoftmax(torch.autograd.Function):
    """``softmax(x)`` forward; the backward of ``softmax(x / T)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.temperature = temperature
        return torch.softmax(x, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        soft = torch.softmax(x / ctx.temperature, dim=-1)
        return soft * (grad - (grad * soft).sum(-1, keepdim=True)), None


class _ScaleGrad(torch.autograd.Function):
    """The identity forward; the backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def temperature_softmax(x: Tensor, temperature: float) -> Tensor:
    """Softmax over the last dimension whose backward is that of ``softmax(x / temperature)``."""
    out: Tensor = _TemperatureSoftmax.apply(x, float(temperature))
    return out


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """``x``, with the gradient that flows back through it multiplied by ``scale``."""
    out: Tensor = _ScaleGrad.apply(x, float(scale))
    return out


class FrozenLayerNorm(nn.LayerNorm):
    """LayerNorm whose standard deviation is a constant of the backward pass (the same forward)."""

    def forward(self, x: Tensor) -> Tensor:
        """LayerNorm of ``x``; its standard deviation is detached."""
        dims = tuple(range(-len(self.normalized_shape), 0))
        centred = x - x.mean(dims, keepdim=True)
        std = (centred.pow(2).mean(dims, keepdim=True) + self.eps).sqrt().detach()
        out = centred / std
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class FrozenRMSNorm(nn.Module):
    """RMSNorm (Llama's: ``w * x / rms(x)``) whose ``rms`` is a constant of the backward pass."""

    def __init__(self, weight: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """RMSNorm of ``x``; its root mean square is detached."""
        dtype = x.dtype
        x = x.float()
        rms = (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt().detach()
        return self.weight * (x / rms).to(dtype)


def _gim_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Eager attention with GIM's backward (registered with transformers' interface)."""
    config: Any = getattr(module, "config", None)
    settings: tuple[float, float, float, float] = config.gim_settings
    temperature, q_scale, k_scale, v_scale = settings
    _CALLS.count = getattr(_CALLS, "count", 0) + 1
    query, key, value = (
        scale_grad(query, q_scale),
        scale_grad(key, k_scale),
        scale_grad(value, v_scale),
    )
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[..., : key.shape[-2]]
    weights = temperature_softmax(weights.float(), temperature).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    with _REGISTERED:
        AttentionInterface.register(ATTENTION, _gim_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _freeze_norms(model: nn.Module) -> int:
    """Swap every LayerNorm and RMSNorm of ``model`` (a copy) for its frozen twin; the count."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm) and not isinstance(child, FrozenLayerNorm):
                frozen = FrozenLayerNorm(
                    child.normalized_shape, child.eps, child.elementwise_affine, bias=True
                )
                frozen.weight, frozen.bias = child.weight, child.bias
                setattr(parent, name, frozen)
            elif type(child).__name__.endswith("RMSNorm") and hasattr(child, "weight"):
                eps = getattr(child, "variance_epsilon", getattr(child, "eps", None))
                if eps is None or getattr(child, "with_scale", True) is False:
                    continue
                weight: Any = child.weight
                setattr(parent, name, FrozenRMSNorm(weight, float(eps)))
            else:
                continue
            swapped += 1
    return swapped


def gim_model(
    model: nn.Module,
    *,
    temperature: float = 2.0,
    q_scale: float = 0.25,
    k_scale: float = 0.25,
    v_scale: float = 0.5,
    freeze_norms: bool = True,
) -> nn.Module:
    """A copy of ``model`` whose backward pass is GIM's (its forward is the model's).

    Args:
        model: a Hugging Face classifier; it is copied, never changed.
        temperature: the attention softmax's backward temperature (1: unchanged).
        q_scale: the multiplier of the gradients reaching the attention's queries.
        k_scale: the same for the keys.
        v_scale: the same for the values.
        freeze_norms: make the norms' statistics constants of the backward pass.

    Returns:
        The copy, in eval mode, its parameters not requiring gradients.

    Raises:
        UnsupportedModelError: the family's attention does not go through transformers'
            attention interface.
        ValueError: a temperature that is not positive.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    _register()
    twin: Any = copy.deepcopy(model).eval()
    twin.requires_grad_(False)
    try:
        twin.set_attn_implementation(ATTENTION)
    except (ValueError, AttributeError) as err:
        raise UnsupportedModelError(
            f"gim needs a model whose attention goes through transformers' attention interface; "
            f"{type(model).__name__} does not ({err})"
        ) from None
    twin.config.gim_settings = (float(temperature), float(q_scale), float(k_scale), float(v_scale))
    if freeze_norms:
        _freeze_norms(twin)
    copied: nn.Module = twin
    return copied


def check_copy(
    clf: TextClassifier, twin: nn.Module, forward: Callable[..., Tensor], method: str
) -> None:
    """Check, on a short text, that a modified copy's attention runs and its logits are the model's.

    Args:
        clf: the classifier bundle (the user's model).
        twin: the modified copy.
        forward: the copy's forward (ids, mask) -> logits.
        method: the method's name, for the messages.

    Raises:
        UnsupportedModelError: the copy's attention never ran through the registered function, or
            its logits differ from the model's.
    """
    enc = clf.tokenizer(["a short probe text"], return_tensors="pt")
    ids = enc["input_ids"].to(next(twin.parameters()).device)
    mask = enc["attention_mask"].to(ids.device)
    _CALLS.count = 0
    with torch.no_grad():
        theirs = clf.forward_func(ids, mask).float()
        ours = forward(ids, mask).float()
    if _CALLS.count == 0:
        raise UnsupportedModelError(
            f"{method} needs a model whose attention goes through transformers' attention "
            f"interface; {type(clf.model).__name__}'s does not"
        )
    if not torch.allclose(theirs, ours, rtol=1e-3, atol=1e-4):
        raise UnsupportedModelError(
            f"{method}'s copy of {type(clf.model).__name__} does not reproduce its logits "
            f"(largest difference {float((theirs - ours).abs().max()):.2e}): a norm or an "
            "attention this implementation does not know"
        )


class GIMAttributor(EmbeddingAttributor):
    """GIM: ``(e - e0) . dy/de`` at the word embeddings, through GIM's modified backward.

    Runs on its own copy of the model (:func:`gim_model`), made when the method is built.

    Examples::

        >>> from captum_layer_saliency.compare.methods import get_method
        >>> gim = get_method("gim", clf)
        >>> scores = gim.attribute(enc["input_ids"], enc["attention_mask"], target=1)
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        temperature: float = 2.0,
        q_scale: float = 0.25,
        k_scale: float = 0.25,
        v_scale: float = 0.5,
        freeze_norms: bool = True,
        baseline_token_id: int | None = None,
    ) -> None:
        """Copy the model, modify the copy's backward and check its forward.

        Args:
            clf: the classifier bundle.
            seed: recorded for reports (GIM is deterministic).
            temperature: the attention softmax's backward temperature (2, the paper's).
            q_scale: the queries' gradient multiplier (1/4).
            k_scale: the keys' gradient multiplier (1/4).
            v_scale: the values' gradient multiplier (1/2).
            freeze_norms: frozen LayerNorm/RMSNorm statistics in the backward (True).
            baseline_token_id: the PAD baseline's token (default: the pad id).

        Raises:
            UnsupportedModelError: a family GIM cannot modify, or a copy whose logits differ
                from the model's.
        """
        super().__init__(
            clf,
            seed,
            "word_embeddings",
            baseline_token_id,
            temperature=temperature,
            q_scale=q_scale,
            k_scale=k_scale,
            v_scale=v_scale,
            freeze_norms=freeze_norms,
        )
        self.gim_model = gim_model(
            clf.model,
            temperature=temperature,
            q_scale=q_scale,
            k_scale=k_scale,
            v_scale=v_scale,
            freeze_norms=freeze_norms,
        )
        self.layer = embedding_layer(self.gim_model, "word_embeddings")
        self.forward_func = classifier_forward(self.gim_model, clf.tokenizer)
        check_copy(clf, self.gim_model, self.forward_func, "gim")

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        method = LayerGradientXActivation(self.forward_func, self.layer, multiply_by_inputs=False)
        grads: Tensor = method.attribute(
            input_ids, target=target, additional_forward_args=self._args(attention_mask)
        )
        baseline = self._baseline(input_ids, attention_mask, special)
        with torch.no_grad():
            delta = self.layer(input_ids) - self.layer(baseline)
        rows = float(input_ids.shape[0])  # the copy's passes: a pass counter sees only the model
        _passes.report_passes(rows, rows)
        return grads * delta


#: The GIM method, in the gradient family.
SPECS: SpecList = [
    (
        MethodSpec(
            "gim",
            "GIM (Edin et al., 2025): Input×Gradient (PAD baseline) through a modified backward",
            GIMAttributor,
            GRADIENT,
            notes="written from the paper with gim-explain 0.1.4's settings (frozen norms, softmax "
            "gradients at T=2, Q/K/V gradients x1/4, 1/4, 1/2); runs on its own copy of the model "
            "(the model's memory twice); one forward and one backward",
        ),
        ("gradient_interaction_modifications",),
    ),
]
