"""The perturbation family of the registry: Occlusion, LIME, Shapley value sampling, KernelSHAP.

Each perturbs whole tokens, one Captum feature per token, by *replacing* them with ``[PAD]``
(the PAD baseline); special tokens and padding are never perturbed. (The metrics in
:mod:`captum_layer_saliency.metrics` *delete* tokens instead.) Examples are explained one at a
time, cut to their real tokens and seeded by content, so a sentence's scores do not depend on
its batch.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import KernelShap, Lime, Occlusion, ShapleyValueSampling
from torch import Tensor

from captum_layer_saliency.attr.attributor import Attributor, pad_baseline, resolve_token_id
from captum_layer_saliency.compare.methods._spec import PERTURBATION, MethodSpec, SpecList
from captum_layer_saliency.models.classifier import TextClassifier

__all__ = [
    "SPECS",
    "KernelShapAttributor",
    "LimeAttributor",
    "OcclusionAttributor",
    "ShapleySamplingAttributor",
    "token_feature_mask",
]


def token_feature_mask(valid: Tensor) -> Tensor:
    """One Captum feature per valid token: ids ``0..n-1`` in order along each row.

    Special and padding positions join feature 0. That is harmless because the perturbation
    baseline equals the input there (see :func:`pad_baseline`), so "ablating" them is a no-op,
    and it avoids a dummy feature that would cost model evaluations and bias KernelSHAP's
    sampling. Their scores are zeroed afterwards.
    """
    ids = valid.long().cumsum(-1) - 1
    return torch.where(valid, ids, torch.zeros_like(ids))


class _PerturbationAttributor(Attributor):
    """A Captum perturbation method over whole tokens, replaced by ``[PAD]``."""

    def __init__(
        self,
        clf: TextClassifier,
        seed: int,
        perturbations_per_eval: int,
        baseline_token_id: int | None,
        **options: Any,
    ) -> None:
        """Resolve the baseline token.

        Args:
            clf: the classifier bundle.
            seed: mixed with each example's token ids.
            perturbations_per_eval: model evaluations per forward call.
            baseline_token_id: the token that replaces perturbed tokens (default: the pad id).
            **options: the method's other settings, for reports.
        """
        super().__init__(
            clf,
            seed,
            perturbations_per_eval=perturbations_per_eval,
            baseline_token_id=baseline_token_id,
            **options,
        )
        self.forward = clf.forward_func
        self.perturbations_per_eval = perturbations_per_eval
        self.baseline_token_id = resolve_token_id(clf, baseline_token_id)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        def explain(ids: Tensor, mask: Tensor, tgt: Tensor) -> Tensor:
            special_one = self.clf.special_mask(ids)
            baseline = pad_baseline(ids, mask, special_one, self.baseline_token_id)
            return self._perturb(ids, mask, tgt, baseline, mask.bool() & ~special_one)

        with torch.no_grad():
            return self._each_example(input_ids, attention_mask, target, valid, explain)

    @abc.abstractmethod
    def _perturb(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        baselines: Tensor,
        valid: Tensor,
    ) -> Tensor:
        """Scores for one example ``(1, n)`` cut to its real tokens."""
        ...


class OcclusionAttributor(_PerturbationAttributor):
    """Occlusion with a sliding window of ``window`` tokens and stride 1.

    A token's score is the mean drop of the target logit over the windows that cover it; the
    window slides over special tokens too, but they are not replaced (the baseline keeps them).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        window: int = 3,
        stride: int = 1,
        perturbations_per_eval: int = 16,
        baseline_token_id: int | None = None,
    ) -> None:
        """Set the window.

        Args:
            clf: the classifier bundle.
            seed: the method's seed (Occlusion is deterministic).
            window: tokens replaced at once (default 3).
            stride: the window's step (default 1).
            perturbations_per_eval: model evaluations per forward call.
            baseline_token_id: the token that replaces occluded tokens (default: the pad id).
        """
        super().__init__(
            clf, seed, perturbations_per_eval, baseline_token_id, window=window, stride=stride
        )
        self.window, self.stride = window, stride

    def _perturb(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        baselines: Tensor,
        valid: Tensor,
    ) -> Tensor:
        window = min(self.window, input_ids.shape[1])
        result: Tensor = Occlusion(self.forward).attribute(
            input_ids,
            sliding_window_shapes=(window,),
            strides=self.stride,
            baselines=baselines,
            target=target,
            additional_forward_args=self._args(attention_mask),
            perturbations_per_eval=self.perturbations_per_eval,
        )
        return result


class _SampledAttributor(_PerturbationAttributor):
    """Captum perturbation methods driven by ``n_samples`` token coalitions or permutations.

    Shapley value sampling, LIME and KernelSHAP: one ``attribute`` call, one token per feature.
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_samples: int = 25,
        perturbations_per_eval: int = 16,
        baseline_token_id: int | None = None,
    ) -> None:
        """Set the number of samples.

        Args:
            clf: the classifier bundle.
            seed: mixed with each example's token ids.
            n_samples: coalitions or permutations per example (default 25).
            perturbations_per_eval: model evaluations per forward call.
            baseline_token_id: the token that replaces removed tokens (default: the pad id).
        """
        super().__init__(clf, seed, perturbations_per_eval, baseline_token_id, n_samples=n_samples)
        self.n_samples = n_samples

    def _perturb(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        baselines: Tensor,
        valid: Tensor,
    ) -> Tensor:
        result: Tensor = self._method().attribute(
            input_ids,
            baselines=baselines,
            target=target,
            additional_forward_args=self._args(attention_mask),
            feature_mask=token_feature_mask(valid),
            n_samples=self.n_samples,
            perturbations_per_eval=self.perturbations_per_eval,
        )
        return result

    @abc.abstractmethod
    def _method(self) -> Any: ...


class ShapleySamplingAttributor(_SampledAttributor):
    """Shapley value sampling over tokens (``n_samples`` random permutations, 25 by default)."""

    def _method(self) -> Any:
        return ShapleyValueSampling(self.forward)


class LimeAttributor(_SampledAttributor):
    """LIME with Captum's defaults (Lasso, alpha 0.01; exponential cosine kernel), 25 samples."""

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_samples: int = 25,
        perturbations_per_eval: int = 16,
        baseline_token_id: int | None = None,
        interpretable_model: Any = None,
        similarity_func: Callable[..., Any] | None = None,
    ) -> None:
        """Set the samples and LIME's surrogate.

        Args:
            clf: the classifier bundle.
            seed: mixed with each example's token ids.
            n_samples: coalitions per example (default 25).
            perturbations_per_eval: model evaluations per forward call.
            baseline_token_id: the token that replaces removed tokens (default: the pad id).
            interpretable_model: Captum's surrogate model (default: Lasso, alpha 0.01).
            similarity_func: Captum's similarity kernel (default: exponential cosine).
        """
        super().__init__(
            clf,
            seed=seed,
            n_samples=n_samples,
            perturbations_per_eval=perturbations_per_eval,
            baseline_token_id=baseline_token_id,
        )
        self.interpretable_model, self.similarity_func = interpretable_model, similarity_func

    def _method(self) -> Any:
        return Lime(self.forward, self.interpretable_model, self.similarity_func)


class KernelShapAttributor(_SampledAttributor):
    """KernelSHAP over tokens with 25 coalitions by default (as LIME, for an equal budget)."""

    def _method(self) -> Any:
        return KernelShap(self.forward)


#: The perturbation methods, in the order they are listed.
SPECS: SpecList = [
    (
        MethodSpec(
            "occlusion",
            "Occlusion, window 3 tokens, replaced by [PAD]",
            OcclusionAttributor,
            PERTURBATION,
        ),
        ("occ",),
    ),
    (
        MethodSpec(
            "lime", "LIME over tokens, 25 samples, replaced by [PAD]", LimeAttributor, PERTURBATION
        ),
        (),
    ),
    (
        MethodSpec(
            "shapley_sampling",
            "Shapley value sampling, 25 permutations",
            ShapleySamplingAttributor,
            PERTURBATION,
        ),
        ("svs", "shapley"),
    ),
    (
        MethodSpec(
            "kernel_shap",
            "KernelSHAP over tokens, 25 samples",
            KernelShapAttributor,
            PERTURBATION,
        ),
        ("kshap", "kernelshap"),
    ),
]
