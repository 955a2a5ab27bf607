"""AttnLRP (Achtibat et al., ICML 2024), written from the paper in its Gradient×Input form.

AttnLRP is layer-wise relevance propagation with rules for the attention layer. Its authors'
package ``lxt`` (2.x, "efficient" mode) computes it as Input×Gradient, ``x . dy/dx`` at the
word embeddings (zero baseline), through a backward pass whose local rules make that product the
relevance; the forward, and so the prediction, is unchanged:

* **identity rule on the norms**: LayerNorm's standard deviation and RMSNorm's root mean square
  are constants of the backward pass (as GIM's frozen norms);
* **uniform rule on the attention's products**: the gradients reaching the queries and keys are
  multiplied by 1/4 and those reaching the values by 1/2 (the softmax's own backward is kept);
* **identity rule on element-wise nonlinearities**: an activation ``f`` (GELU, SiLU, tanh,
  ReLU, held as a module) passes back ``g * f(x) / x`` instead of ``g * f'(x)``;
* **uniform rule on the gated MLP's product** (Llama's ``act(gate(x)) * up(x)``): the gradient
  through the product is halved.

``lxt`` itself is not used: its latest release (2.1) patches transformers 4's modeling code and
does not import with transformers 5 (``find_pruneable_heads_and_indices`` is gone). Like GIM's
(:mod:`~captum_layer_saliency.compare.methods.gim`), this implementation runs on **its own copy
of the model** (made once, when the method is built; the user's model is never changed), whose
attention runs through transformers' attention interface, whose norms, activations and gated
MLPs are swapped for the rules' modules; it serves the families GIM serves (BERT, RoBERTa,
ELECTRA, ALBERT, DistilBERT, GPT-2, Llama...). An activation the model applies as a plain
function (RoBERTa's classification head's ``tanh``) keeps its gradient. Cost: one forward and one
backward, as Input×Gradient.

**Patent notice.** ``lxt``'s README states that LRP is a patented technology that can be used
free of charge only for personal and scientific purposes; the notice concerns the method, so it
applies to this implementation too: check it before any commercial use.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerGradientXActivation
from torch import Tensor, nn

from captum_layer_saliency.attr.attributor import EmbeddingAttributor
from captum_layer_saliency.compare.methods._spec import GRADIENT, MethodSpec, SpecList
from captum_layer_saliency.compare.methods.gim import check_copy, gim_model, scale_grad
from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.classifier import TextClassifier, classifier_forward
from captum_layer_saliency.models.surgery import embedding_layer

__all__ = [
    "ACTIVATIONS",
    "AttnLRPAttributor",
    "IdentityRule",
    "UniformGatedMLP",
    "attnlrp_model",
    "identity_rule",
]

#: Class names of the element-wise activation modules the identity rule replaces.
ACTIVATIONS = (
    "GELU",
    "GELUActivation",
    "NewGELUActivation",
    "GELUTanh",
    "PytorchGELUTanh",
    "FastGELUActivation",
    "QuickGELUActivation",
    "SiLU",
    "SiLUActivation",
    "Tanh",
    "ReLU",
)


class _IdentityRule(torch.autograd.Function):
    """``f(x)`` forward; the backward passes ``g * f(x) / x`` (the identity rule)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: nn.Module) -> Tensor:
        out: Tensor = fn(x)
        ctx.save_for_backward(out / (x + 1e-10))  # x == 0 passes (almost) nothing back
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


def identity_rule(fn: nn.Module, x: Tensor) -> Tensor:
    """``fn(x)``, whose backward is AttnLRP's identity rule: ``g * fn(x) / x``."""
    out: Tensor = _IdentityRule.apply(x, fn)
    return out


class IdentityRule(nn.Module):
    """An element-wise activation whose backward is the identity rule (the same forward)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """``fn(x)``; the gradient through it is ``g * fn(x) / x``."""
        return identity_rule(self.fn, x)


class UniformGatedMLP(nn.Module):
    """Llama's gated MLP, ``down(act(gate(x)) * up(x))``, with AttnLRP's rules in its backward.

    The activation takes the identity rule and the gradient through the product is halved (the
    uniform rule); the forward is the MLP's.
    """

    def __init__(self, mlp: Any) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        act = mlp.act_fn
        self.act_fn = act if isinstance(act, IdentityRule) else IdentityRule(act)

    def forward(self, x: Tensor) -> Tensor:
        """The MLP's output."""
        product = self.act_fn(self.gate_proj(x)) * self.up_proj(x)
        out: Tensor = self.down_proj(scale_grad(product, 0.5))
        return out


def _apply_rules(model: nn.Module) -> int:
    """Swap ``model``'s (a copy's) gated MLPs and activations for the rules' modules; the count."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (IdentityRule, UniformGatedMLP)):
                continue
            if all(hasattr(child, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
                setattr(parent, name, UniformGatedMLP(child))
            elif type(child).__name__ in ACTIVATIONS:
                setattr(parent, name, IdentityRule(child))
            else:
                continue
            swapped += 1
    return swapped


def attnlrp_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose backward pass is AttnLRP's (its forward is the model's).

    Args:
        model: a Hugging Face classifier; it is copied, never changed.

    Returns:
        The copy, in eval mode, its parameters not requiring gradients.

    Raises:
        UnsupportedModelError: the family's attention does not go through transformers'
            attention interface.
    """
    twin = gim_model(model, temperature=1.0, q_scale=0.25, k_scale=0.25, v_scale=0.5)
    _apply_rules(twin)
    return twin


class AttnLRPAttributor(EmbeddingAttributor):
    """AttnLRP: ``x . dy/dx`` at the word embeddings, through AttnLRP's modified backward.

    Runs on its own copy of the model (:func:`attnlrp_model`), made when the method is built. The
    relevance explains the target's logit; special tokens and padding get 0, as in every method
    of the registry. **Patent notice:** ``lxt``'s README states that LRP is a patented technology
    that may be used free of charge only for personal and scientific purposes.

    Examples::

        >>> from captum_layer_saliency.compare.methods import get_method
        >>> lrp = get_method("attnlrp", clf)
        >>> scores = lrp.attribute(enc["input_ids"], enc["attention_mask"], target=1)
    """

    def __init__(self, clf: TextClassifier, *, seed: int = 0) -> None:
        """Copy the model, apply AttnLRP's rules to the copy and check its forward.

        Args:
            clf: the classifier bundle.
            seed: recorded for reports (AttnLRP is deterministic).

        Raises:
            UnsupportedModelError: a family the rules cannot be applied to, or a copy whose
                logits differ from the model's.
        """
        super().__init__(clf, seed, "word_embeddings", None)
        self.lrp_model = attnlrp_model(clf.model)
        self.layer = embedding_layer(self.lrp_model, "word_embeddings")
        self.forward_func = classifier_forward(self.lrp_model, clf.tokenizer)
        check_copy(clf, self.lrp_model, self.forward_func, "attnlrp")

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        method = LayerGradientXActivation(self.forward_func, self.layer)
        relevance: Tensor = method.attribute(
            input_ids, target=target, additional_forward_args=self._args(attention_mask)
        )
        rows = float(input_ids.shape[0])  # the copy's passes: a pass counter sees only the model
        _passes.report_passes(rows, rows)
        return relevance


#: The AttnLRP method, in the gradient family.
SPECS: SpecList = [
    (
        MethodSpec(
            "attnlrp",
            "AttnLRP (Achtibat et al., 2024): LRP as Input×Gradient through a modified "
            "backward (LRP is patented: free for personal and scientific use)",
            AttnLRPAttributor,
            GRADIENT,
            notes="written from the paper with lxt 2.1's efficient rules (frozen norms, Q/K/V "
            "gradients x1/4, 1/4, 1/2, identity rule on activations, gated product x1/2); lxt "
            "does not import with transformers 5. Patent notice (lxt's README): LRP is free of "
            "charge only for personal and scientific use. Runs on its own copy of the model; "
            "one forward and one backward",
        ),
        ("attn_lrp",),
    ),
]
