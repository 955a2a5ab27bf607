"""The base of the built-in token attributors: checks, seeding and zeroed special tokens.

:class:`Attributor` implements the :class:`~captum_layer_saliency.models.classifier.TokenAttributor`
protocol once for every method that scores tokens of a
:class:`~captum_layer_saliency.models.classifier.TextClassifier`: it checks the ids, mask, target
and the model's other inputs, seeds the global generators for the call (restored afterwards),
runs the method, and returns detached float ``(batch, seq)`` scores that are exactly 0 on padding
and special tokens. Calls from several threads run one at a time (a lock): the seeding and
Captum's hooks on the model would otherwise reach the other thread's call.
:class:`EmbeddingAttributor` adds what the gradient methods at the embeddings
share (the layer, the PAD baseline, the reduction over the hidden dimension). The gradient
saliencies LAFA builds on (:mod:`captum_layer_saliency.attr.gradient_saliency`,
:mod:`captum_layer_saliency.attr.smoothgrad`) and the comparison registry's methods
(:mod:`captum_layer_saliency.compare.methods`) all derive from these two classes.
"""

from __future__ import annotations

import abc
import threading
import zlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency._utils import seeded
from captum_layer_saliency.attr.reductions import check_reduction, reduce_hidden
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.inputs import (
    check_explainable,
    check_model_inputs,
    check_not_data_parallel,
    forward_args,
)
from captum_layer_saliency.models.label_sets import attribute_targets
from captum_layer_saliency.models.surgery import embedding_layer
from captum_layer_saliency.models.targets import normalize_target

__all__ = ["Attributor", "EmbeddingAttributor", "example_seed", "pad_baseline", "resolve_token_id"]

# One attribution at a time across threads: the methods seed the global generators for a call
# and run Captum's layer methods, whose hooks on the model act in every thread while they are
# registered. Serialised, two threads get exactly the scores of sequential calls.
_ONE_AT_A_TIME = threading.RLock()


def pad_baseline(
    input_ids: Tensor, attention_mask: Tensor, special_mask: Tensor, token_id: int
) -> Tensor:
    """The PAD baseline: every real non-special token replaced by ``token_id``.

    Special tokens and padding stay in place, so a baseline differs from its input only where
    the input has content.
    """
    replace = attention_mask.bool() & ~special_mask
    return torch.where(replace, torch.full_like(input_ids, token_id), input_ids)


def example_seed(seed: int, input_ids: Tensor) -> int:
    """A seed for one example, from the method's seed and the example's real token ids.

    Seeding each example by its content makes a stochastic method's scores for a sentence
    independent of the batch it comes in (and of its position there), so a resumed or
    differently batched run reproduces an uninterrupted one.
    """
    digest = zlib.crc32(input_ids.detach().to("cpu", torch.int64).numpy().tobytes())
    return (seed * 1_000_003 + digest) % 2**63


_WARNED: set[str] = set()


def resolve_token_id(clf: TextClassifier, token_id: int | None) -> int:
    """``token_id``, or the tokenizer's ``[PAD]`` id when it is None."""
    if token_id is not None:
        return int(token_id)
    pad = getattr(clf.tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError(
            "the tokenizer has no pad token; pass baseline_token_id=<id> to choose the token "
            "that replaces removed tokens"
        )
    return int(pad)


class Attributor(abc.ABC):
    """Base of the built-in attributors: validation, seeding and the zeroing of special tokens.

    Subclasses implement :meth:`_scores`; ``self.options`` records the resolved settings for
    reports.
    """

    def __init__(self, clf: TextClassifier, seed: int = 0, **options: Any) -> None:
        """Check the model and record the settings.

        Args:
            clf: the classifier bundle.
            seed: seeds the global generators for each call (restored afterwards).
            **options: the method's resolved settings, recorded in ``self.options`` for reports.

        Raises:
            ValueError: the model is wrapped in ``DataParallel``.
        """
        check_not_data_parallel(clf.model)
        self.clf = clf
        self.seed = seed
        self.options: dict[str, Any] = {"seed": seed, **options}
        #: the model's other inputs of the batch being explained (see :meth:`_args`).
        self._inputs: dict[str, Tensor] = {}

    def attribute(
        self, input_ids: Tensor, attention_mask: Tensor, target: Any, **model_inputs: Tensor
    ) -> Tensor:
        """Score every token of a batch for its target class.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)`` 1 on real tokens, 0 on padding.
            target: ``(batch,)`` class indices (an int applies to every example), or a
                ``(batch, classes)`` 0/1 tensor of label sets (a multi-label prediction, as
                :func:`~captum_layer_saliency.models.targets.predicted_target` gives it), each
                set explained as the sum of its labels' logits, as DLS does; floats and indices
                outside the model's classes raise ``ValueError``.
            **model_inputs: the model's other inputs by their Hugging Face names
                (``token_type_ids=``...), each ``(batch, seq, ...)``; segment ids and, under
                left padding, position ids are otherwise derived from the ids and mask.

        Returns:
            Detached float32 ``(batch, seq)`` scores, 0 on padding and special tokens.
        """
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask "
                f"{tuple(attention_mask.shape)} must both be (batch, seq)"
            )
        check_explainable(self.clf.model, "the model")
        n_classes = getattr(getattr(self.clf.model, "config", None), "num_labels", None)
        checked = normalize_target(
            target,
            input_ids.shape[0],
            n_classes if isinstance(n_classes, int) else None,
            device=input_ids.device,
            label_sets=True,
        )
        if checked is None:
            raise ValueError("target is required: pass the class to explain for every example")
        if checked.dim() == 2:  # label sets: each set explained as the sum of its logits
            return attribute_targets(
                self.attribute, self.clf.model, input_ids, attention_mask, checked, model_inputs
            )
        special = self.clf.special_mask(input_ids)
        valid = attention_mask.bool() & ~special
        inputs = check_model_inputs(model_inputs, input_ids, self.clf.model)
        with _ONE_AT_A_TIME:
            self._inputs = inputs
            try:
                with seeded(self.seed, input_ids.device):
                    scores = self._scores(input_ids, attention_mask, checked, special, valid)
            finally:
                self._inputs = {}
        scores = scores.detach().to(torch.float32).reshape(input_ids.shape)
        return torch.where(valid, scores, torch.zeros_like(scores))

    def _all_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """The model's other inputs: derived from the ids and mask, then the explicit ones."""
        return {**self.clf.forward_func.derived(input_ids, attention_mask), **self._inputs}

    def _args(self, attention_mask: Tensor) -> tuple[Any, ...]:
        """Captum's ``additional_forward_args``: the mask and the model's other inputs."""
        return forward_args(attention_mask, self._inputs)

    @abc.abstractmethod
    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor: ...

    def _each_example(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        valid: Tensor,
        explain: Callable[[Tensor, Tensor, Tensor], Tensor],
    ) -> Tensor:
        """Explain the examples one at a time, each cut to its real tokens and seeded by content.

        Used by the stochastic and sliding-window methods, whose results would otherwise depend
        on the batch: on its random draws, or (Occlusion) on windows reaching into padding.

        Args:
            input_ids: ``(batch, seq)``.
            attention_mask: ``(batch, seq)``.
            target: ``(batch,)``.
            valid: ``(batch, seq)`` real non-special tokens; rows without any are skipped.
            explain: ``explain(ids, mask, target)`` on one ``(1, n)`` example -> ``n`` scores.

        Returns:
            ``(batch, seq)`` float scores, 0 where not computed.
        """
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        batch_inputs = self._inputs
        try:
            for b in range(input_ids.shape[0]):
                if not valid[b].any():
                    continue  # nothing to explain
                real = attention_mask[b].bool()
                ids, mask = input_ids[b, real][None], attention_mask[b, real][None]
                # The model's other inputs follow the example's real tokens.
                self._inputs = {k: v[b, real][None] for k, v in batch_inputs.items()}
                if "position_ids" in self._inputs:
                    self._inputs["position_ids"] = self._inputs["position_ids"] - int(
                        self._inputs["position_ids"].min()
                    )
                with seeded(example_seed(self.seed, ids), input_ids.device):
                    out[b, real] = explain(ids, mask, target[b : b + 1]).reshape(-1).float()
        finally:
            self._inputs = batch_inputs
        return out

    def __repr__(self) -> str:
        """The class and its resolved settings."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class EmbeddingAttributor(Attributor):
    """A Captum layer method on the embeddings, summed over the hidden dimension."""

    def __init__(
        self,
        clf: TextClassifier,
        seed: int,
        layer: str,
        baseline_token_id: int | None,
        **options: Any,
    ) -> None:
        """Find the layer and resolve the baseline token.

        Args:
            clf: the classifier bundle.
            seed: the method's seed.
            layer: ``"embeddings"`` or ``"word_embeddings"``
                (:func:`~captum_layer_saliency.models.surgery.embedding_layer`).
            baseline_token_id: the token of the PAD baseline (default: the tokenizer's pad id).
            **options: the method's other settings; ``reduction`` (default ``"sum"``) reduces the
                hidden dimension.

        Raises:
            ValueError: an unknown layer or reduction, or no pad token to use as the baseline.
        """
        super().__init__(clf, seed, layer=layer, baseline_token_id=baseline_token_id, **options)
        self.layer = embedding_layer(clf.model, layer)
        self.forward_func = clf.forward_func
        self.baseline_token_id = resolve_token_id(clf, baseline_token_id)
        #: how the hidden dimension is reduced (:mod:`captum_layer_saliency.attr.reductions`)
        self.reduction = check_reduction(options.get("reduction", "sum"))

    def _baseline(self, input_ids: Tensor, attention_mask: Tensor, special: Tensor) -> Tensor:
        return pad_baseline(input_ids, attention_mask, special, self.baseline_token_id)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        # Captum differentiates through the layer; callers may be under no_grad.
        with torch.enable_grad():
            attr = self._layer_attribution(input_ids, attention_mask, target, special)
        return self._reduce(attr)

    def _reduce(self, attr: Tensor) -> Tensor:
        return reduce_hidden(attr, self.reduction)

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        raise TypeError(f"{type(self).__name__} must override _layer_attribution or _scores")
