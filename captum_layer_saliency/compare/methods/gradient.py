"""The gradient family of the registry: eight gradient methods at the embeddings.

Saliency, Input×Gradient, Integrated Gradients, SmoothGrad, DeepLift, DeepLiftSHAP and
GradientSHAP.

Saliency, Input×Gradient, Integrated Gradients and SmoothGrad are implemented in
:mod:`captum_layer_saliency.attr` (LAFA builds on them too); DeepLift, DeepLiftSHAP and
GradientSHAP live here. All are Captum *layer* methods on the embeddings module, summed (or
normed) over the hidden dimension, from the PAD baseline where they need one (see
:mod:`captum_layer_saliency.compare.methods.registry` for the defaults and their source).
"""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any

import torch
from captum.attr import LayerDeepLift, LayerGradientShap
from torch import Tensor, nn

from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.attr.attributor import EmbeddingAttributor
from captum_layer_saliency.attr.gradient_saliency import (
    InputXGradientAttributor,
    IntegratedGradientsAttributor,
    SaliencyAttributor,
)
from captum_layer_saliency.attr.smoothgrad import SmoothGradAttributor
from captum_layer_saliency.compare.methods._spec import GRADIENT, MethodSpec, SpecList
from captum_layer_saliency.models.classifier import TextClassifier, classifier_forward

__all__ = ["DEEPLIFT_NOTES", "SPECS", "DeepLiftAttributor", "GradientShapAttributor"]

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """Warn the first time ``key`` comes up in this process (a report needs it once)."""
    if key not in _WARNED:
        _WARNED.add(key)
        warn_user(message, UserWarning)


class _LogitsModule(nn.Module):
    """The classifier as an ``nn.Module`` returning logits (DeepLift needs a module)."""

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        """Wrap ``model``.

        Args:
            model: the Hugging Face classifier.
            tokenizer: its tokenizer (for the segment ids the forward derives).
        """
        super().__init__()
        self.model = model
        self._forward = classifier_forward(model, tokenizer)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *extra: Any) -> Tensor:
        """The logits ``(batch, classes)``; ``extra`` are the model's other inputs."""
        return self._forward(input_ids, attention_mask, *extra)


class GradientShapAttributor(EmbeddingAttributor):
    """Layer GradientSHAP: expected gradients at random points between the PAD baseline and x.

    Captum draws each sample's baseline from one distribution shared by the batch, but the PAD
    baseline is per example (it keeps each example's special tokens in place), so examples are
    explained one at a time (seeded by content), each with its ``n_samples`` points in one
    batch. No noise is added
    to the inputs (Captum's default ``stdevs=0``; noise on token ids would be meaningless).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_samples: int = 5,
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
    ) -> None:
        """Set the number of samples.

        Args:
            clf: the classifier bundle.
            seed: mixed with each example's token ids for the random points.
            n_samples: points between the baseline and the input per example (default 5).
            layer: ``"embeddings"`` or ``"word_embeddings"``.
            baseline_token_id: the token of the PAD baseline (default: the pad id).
        """
        super().__init__(clf, seed, layer, baseline_token_id, n_samples=n_samples)
        self.n_samples = n_samples

    def _long_ids_forward(self, input_ids: Tensor, attention_mask: Tensor, *extra: Any) -> Tensor:
        # Captum's noise step turns the ids into floats (the noise itself is zero).
        return self.forward_func(input_ids.long(), attention_mask, *extra)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        method = LayerGradientShap(self._long_ids_forward, self.layer)

        def explain(ids: Tensor, mask: Tensor, tgt: Tensor) -> Tensor:
            baseline = self._baseline(ids, mask, self.clf.special_mask(ids))
            attr: Tensor = method.attribute(
                ids,
                baselines=baseline,
                n_samples=self.n_samples,
                stdevs=0.0,
                target=tgt,
                additional_forward_args=self._args(mask),
            )
            return self._reduce(attr)

        with torch.enable_grad():
            return self._each_example(input_ids, attention_mask, target, valid, explain)


#: Module types DeepLift treats as linear (it has no rescale rule for them).
_DEEPLIFT_UNRULED = re.compile(r"gelu|silu|swish|mish|layernorm|rmsnorm", re.IGNORECASE)

DEEPLIFT_NOTES = (
    "Captum's DeepLift has rescale rules only for ReLU-like activations, Sigmoid, Tanh, Softmax "
    "modules and max-pooling. A transformer's GELU activations, LayerNorms and the functional "
    "softmax inside attention get no rule: plain gradients pass through them, so the result "
    "mixes DeepLift multipliers with gradients and its completeness is only approximate."
)


class DeepLiftAttributor(EmbeddingAttributor):
    """Layer DeepLift (rescale rule) from the PAD baseline; DeepLiftSHAP with two baselines.

    DeepLiftSHAP is the mean of DeepLift over its baselines (which is what Captum's
    ``DeepLiftShap`` computes); running DeepLift once per baseline keeps per-example baselines
    and batching. The two default baselines follow Thermostat: the PAD baseline and an input
    that is ``[PAD]`` everywhere (special tokens included).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        shap: bool = False,
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
    ) -> None:
        """Wrap the model for DeepLift and warn once about its unruled modules.

        Args:
            clf: the classifier bundle.
            seed: the method's seed (deterministic).
            shap: DeepLiftSHAP (two baselines) rather than DeepLift.
            layer: ``"embeddings"`` or ``"word_embeddings"``.
            baseline_token_id: the token of the baselines (default: the pad id).
        """
        super().__init__(clf, seed, layer, baseline_token_id, shap=shap)
        self.shap = shap
        self.module = _LogitsModule(clf.model, clf.tokenizer)
        unruled = sorted(
            {
                type(m).__name__
                for m in clf.model.modules()
                if _DEEPLIFT_UNRULED.search(type(m).__name__)
            }
        )
        _warn_once(
            f"deeplift:{type(clf.model).__name__}",
            f"DeepLift on {type(clf.model).__name__}: no rule for {', '.join(unruled) or 'some'} "
            f"modules nor for softmax in attention. {DEEPLIFT_NOTES}",
        )

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        method = LayerDeepLift(self.module, self.layer)
        baselines = [self._baseline(input_ids, attention_mask, special)]
        if self.shap:
            baselines.append(torch.full_like(input_ids, self.baseline_token_id))
        with warnings.catch_warnings():
            # Captum warns on every call that it sets hooks on the activations; say it once.
            warnings.filterwarnings("ignore", message=".*hooks.*", category=UserWarning)
            attrs = [
                method.attribute(
                    input_ids,
                    baselines=baseline,
                    target=target,
                    additional_forward_args=self._args(attention_mask),
                )
                for baseline in baselines
            ]
        return torch.stack(attrs).mean(0)


#: The gradient methods, in the order they are listed.
SPECS: SpecList = [
    (
        MethodSpec(
            "saliency", "L2 norm of the gradient at the embeddings", SaliencyAttributor, GRADIENT
        ),
        ("grad", "gradient"),
    ),
    (
        MethodSpec(
            "input_x_gradient",
            "embeddings × gradient, summed over the hidden dim",
            InputXGradientAttributor,
            GRADIENT,
        ),
        ("ixg", "gxa", "grad_x_input"),
    ),
    (
        MethodSpec(
            "integrated_gradients",
            "Layer IG at the embeddings, 25 steps, PAD baseline",
            IntegratedGradientsAttributor,
            GRADIENT,
        ),
        ("ig", "lig"),
    ),
    (
        MethodSpec(
            "smoothgrad",
            "gradient at noisy embeddings, reduced per sample and averaged, 25 samples",
            SmoothGradAttributor,
            GRADIENT,
        ),
        ("sg", "smooth_grad"),
    ),
    (
        MethodSpec(
            "deeplift",
            "Layer DeepLift at the embeddings, PAD baseline",
            DeepLiftAttributor,
            GRADIENT,
            DEEPLIFT_NOTES,
        ),
        ("dl",),
    ),
    (
        MethodSpec(
            "deeplift_shap",
            "Layer DeepLiftSHAP, baselines: PAD and all-[PAD]",
            functools.partial(DeepLiftAttributor, shap=True),
            GRADIENT,
            DEEPLIFT_NOTES,
        ),
        ("dlshap", "deepliftshap"),
    ),
    (
        MethodSpec(
            "gradient_shap",
            "Layer GradientSHAP at the embeddings, 5 samples",
            GradientShapAttributor,
            GRADIENT,
        ),
        ("gshap", "gradshap", "gradientshap"),
    ),
]
