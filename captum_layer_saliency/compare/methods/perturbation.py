"""The perturbation family: Occlusion, LIME, Shapley value sampling, KernelSHAP, leave-one-out.

The Captum methods perturb whole tokens, one Captum feature per token, by *replacing* them with
``[PAD]`` (the PAD baseline); leave-one-out replaces one word (or token) at a time by ``[MASK]``
(``[PAD]`` where the tokenizer has no mask token); special tokens and padding are never perturbed.
(The ERASER metrics in :mod:`captum_layer_saliency.metrics` *delete* tokens instead.) The Captum
methods explain one example at a time, cut to its real tokens and seeded by content, so a
sentence's scores do not depend on its batch.
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
from captum_layer_saliency.models.inputs import forward_args
from captum_layer_saliency.models.words import word_index

__all__ = [
    "SPECS",
    "KernelShapAttributor",
    "LeaveOneOutAttributor",
    "LimeAttributor",
    "OcclusionAttributor",
    "ShapleySamplingAttributor",
    "mask_token_id",
    "token_feature_mask",
]

#: The units leave-one-out removes one at a time.
LOO_UNITS = ("word", "token")


def mask_token_id(clf: TextClassifier, token_id: int | None = None) -> int:
    """``token_id``, else the tokenizer's ``[MASK]``, else its ``[PAD]``.

    Raises:
        ValueError: the tokenizer has neither (pass ``token_id``).
    """
    if token_id is None and getattr(clf.tokenizer, "mask_token_id", None) is not None:
        return int(clf.tokenizer.mask_token_id)
    return resolve_token_id(clf, token_id)


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
        self.forward_func = clf.forward_func
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
        result: Tensor = Occlusion(self.forward_func).attribute(
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
        return ShapleyValueSampling(self.forward_func)


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
        return Lime(self.forward_func, self.interpretable_model, self.similarity_func)


class KernelShapAttributor(_SampledAttributor):
    """KernelSHAP over tokens with 25 coalitions by default (as LIME, for an equal budget)."""

    def _method(self) -> Any:
        return KernelShap(self.forward_func)


class LeaveOneOutAttributor(Attributor):
    """Leave-one-out: the drop of the target logit when one word (or token) is replaced.

    Each unit (by default a word, as the tokenizer's word ids group the sub-words) is replaced in
    turn by ``[MASK]`` (``[PAD]`` where the tokenizer has no mask token), ``n`` inputs per example,
    run in batches of ``batch_size``. A word's drop is shared equally among its tokens, so the
    token scores of a word sum to its drop. Special tokens and padding are never replaced.

    Examples::

        >>> from captum_layer_saliency.compare.methods import get_method
        >>> loo = get_method("loo", clf, unit="token")
        >>> scores = loo.attribute(enc["input_ids"], enc["attention_mask"], target=1)
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        unit: str = "word",
        baseline_token_id: int | None = None,
        batch_size: int = 64,
    ) -> None:
        """Choose the unit and the replacement token.

        Args:
            clf: the classifier bundle.
            seed: recorded for reports (leave-one-out is deterministic).
            unit: ``"word"`` (default) or ``"token"``.
            baseline_token_id: the replacement (default ``[MASK]``, else ``[PAD]``).
            batch_size: perturbed inputs per forward call.

        Raises:
            ValueError: an unknown unit, a batch size below 1, or no replacement token.
        """
        if unit not in LOO_UNITS:
            raise ValueError(f"unit must be one of {LOO_UNITS}, got {unit!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        token = mask_token_id(clf, baseline_token_id)
        super().__init__(clf, seed, unit=unit, baseline_token_id=token, batch_size=batch_size)
        self.unit, self.token_id, self.batch_size = unit, token, batch_size

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        if self.unit == "word":
            units = word_index(self.clf.tokenizer, input_ids, attention_mask)
            units = torch.where(valid, units, torch.full_like(units, -1))
        else:
            units = torch.where(valid, valid.long().cumsum(-1) - 1, torch.full_like(input_ids, -1))
        rows, left_out, ids = [], [], []
        for b in range(input_ids.shape[0]):
            for u in range(int(units[b].max()) + 1):
                rows.append(b)
                left_out.append(units[b] == u)
                ids.append(torch.where(left_out[-1], self.token_id, input_ids[b]))
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        if not rows:
            return out
        index = torch.tensor(rows, device=input_ids.device)
        with torch.no_grad():
            base = self.clf.forward_func(input_ids, *self._args(attention_mask))
            base = base.gather(-1, target.view(-1, 1))[:, 0]
            drops = []
            for start in range(0, len(rows), self.batch_size):
                at = index[start : start + self.batch_size]
                inputs = {k: v[at] for k, v in self._inputs.items()}
                logits = self.clf.forward_func(
                    torch.stack(ids[start : start + self.batch_size]),
                    *forward_args(attention_mask[at], inputs),
                )
                drops.append(base[at] - logits.gather(-1, target[at].view(-1, 1))[:, 0])
        drop = torch.cat(drops)
        for n, (b, where) in enumerate(zip(rows, left_out, strict=True)):
            out[b, where] = drop[n].float() / where.sum()
        return out


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
    (
        MethodSpec(
            "loo",
            "leave-one-out: each word replaced by [MASK] ([PAD] without one), n forwards",
            LeaveOneOutAttributor,
            PERTURBATION,
        ),
        ("leave_one_out",),
    ),
]
