"""The gradient saliencies at the embeddings: Saliency, Input×Gradient, Integrated Gradients.

Each is a Captum *layer* method on the embeddings module (option ``layer="word_embeddings"`` for
the token embedding table alone), reduced over the hidden dimension
(:mod:`captum_layer_saliency.attr.reductions`). They are LAFA's base saliencies
(:mod:`captum_layer_saliency.attr.lafa_setup`) and the comparison registry's ``saliency``,
``input_x_gradient`` and ``integrated_gradients``: one implementation for both.
"""

from __future__ import annotations

from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from torch import Tensor

from captum_layer_saliency.attr.attributor import EmbeddingAttributor
from captum_layer_saliency.attr.reductions import reduce_hidden
from captum_layer_saliency.models.classifier import TextClassifier

__all__ = [
    "IG_TOKENS_PER_CALL",
    "InputXGradientAttributor",
    "IntegratedGradientsAttributor",
    "SaliencyAttributor",
    "auto_internal_batch_size",
]


class SaliencyAttributor(EmbeddingAttributor):
    """Gradient of the target logit at the embeddings, reduced to its norm per token."""

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        layer: str = "embeddings",
        norm: str = "l2",
        baseline_token_id: int | None = None,
    ) -> None:
        """Set the norm of the gradient.

        Args:
            clf: the classifier bundle.
            seed: the method's seed (Saliency is deterministic).
            layer: ``"embeddings"`` or ``"word_embeddings"``.
            norm: ``"l2"`` (default), ``"l1"`` or ``"squared_l2"`` over the hidden dimension.
            baseline_token_id: unused by Saliency; accepted like every gradient method.

        Raises:
            ValueError: an unknown norm or layer.
        """
        if norm not in ("l1", "l2", "squared_l2"):
            raise ValueError(f"norm must be 'l1', 'l2' or 'squared_l2', got {norm!r}")
        super().__init__(clf, seed, layer, baseline_token_id, norm=norm)
        self.norm = norm

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        method = LayerGradientXActivation(self.forward_func, self.layer, multiply_by_inputs=False)
        result: Tensor = method.attribute(
            input_ids, target=target, additional_forward_args=self._args(attention_mask)
        )
        return result

    def _reduce(self, attr: Tensor) -> Tensor:
        return reduce_hidden(attr, self.norm)


class InputXGradientAttributor(EmbeddingAttributor):
    """Embedding output × gradient, summed over the hidden dimension (Thermostat's GxA).

    ``reduction`` (default ``"sum"``) may be any of
    :data:`~captum_layer_saliency.attr.reductions.REDUCTIONS` (``"squared_l2"``: LAFA's Eq. 3).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
        reduction: str = "sum",
    ) -> None:
        """Set the layer and the reduction.

        Args:
            clf: the classifier bundle.
            seed: the method's seed (deterministic).
            layer: ``"embeddings"`` or ``"word_embeddings"``.
            baseline_token_id: unused; accepted like every gradient method.
            reduction: the hidden-dimension reduction (default ``"sum"``).

        Raises:
            ValueError: an unknown reduction or layer.
        """
        super().__init__(clf, seed, layer, baseline_token_id, reduction=reduction)

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        result: Tensor = LayerGradientXActivation(self.forward_func, self.layer).attribute(
            input_ids, target=target, additional_forward_args=self._args(attention_mask)
        )
        return result


#: Tokens per forward call of integrated gradients' steps when ``internal_batch_size="auto"``:
#: Captum expands a batch to ``batch x n_steps`` rows and, left alone, runs them in one call (8
#: texts of 128 tokens at 25 steps through a 30-block model held 22.5 GB; 64 rows of 128 held
#: about 11 GB). 4,096 tokens is 32 rows of 128 (never fewer rows than the batch); the maps are
#: the same, summed in chunks.
IG_TOKENS_PER_CALL = 4096


def auto_internal_batch_size(input_ids: Tensor, tokens: int | None = None) -> int:
    """Rows per call that keep ``tokens`` tokens per call, never fewer than the batch's rows.

    ``tokens`` defaults to :data:`IG_TOKENS_PER_CALL`.
    """
    batch, length = input_ids.shape[0], max(1, input_ids.shape[-1])
    return max(batch, (tokens or IG_TOKENS_PER_CALL) // length)


class IntegratedGradientsAttributor(EmbeddingAttributor):
    """Layer Integrated Gradients from the PAD baseline, reduced by ``reduction``.

    The default reduction is ``"sum"`` (see
    :data:`~captum_layer_saliency.attr.reductions.REDUCTIONS`). The steps run in chunks of at
    most :data:`IG_TOKENS_PER_CALL` tokens (``internal_batch_size="auto"``), so memory does not
    grow with ``batch x n_steps``.
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_steps: int = 25,
        method: str = "gausslegendre",
        internal_batch_size: int | str | None = "auto",
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
        reduction: str = "sum",
    ) -> None:
        """Set the path integral and the reduction.

        Args:
            clf: the classifier bundle.
            seed: the method's seed (deterministic).
            n_steps: integration steps (default 25).
            method: Captum's integration rule (default ``"gausslegendre"``).
            internal_batch_size: rows per forward call of the steps: ``"auto"`` (default) keeps
                :data:`IG_TOKENS_PER_CALL` tokens per call, at least the batch; None runs all
                ``batch x n_steps`` rows at once (Captum's default).
            layer: ``"embeddings"`` or ``"word_embeddings"``.
            baseline_token_id: the token of the PAD baseline (default: the pad id).
            reduction: the hidden-dimension reduction (default ``"sum"``).

        Raises:
            ValueError: an unknown reduction or layer, no pad token, or an
                ``internal_batch_size`` that is not ``"auto"``, None or a positive integer.
        """
        if internal_batch_size != "auto" and not (
            internal_batch_size is None
            or (isinstance(internal_batch_size, int) and internal_batch_size > 0)
        ):
            raise ValueError(
                "internal_batch_size must be 'auto', None or a positive integer, got "
                f"{internal_batch_size!r}"
            )
        super().__init__(
            clf,
            seed,
            layer,
            baseline_token_id,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            reduction=reduction,
        )
        self.n_steps, self.method, self.internal_batch_size = n_steps, method, internal_batch_size

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        rows = self.internal_batch_size
        if rows == "auto":
            rows = auto_internal_batch_size(input_ids)
        result: Tensor = LayerIntegratedGradients(self.forward_func, self.layer).attribute(
            input_ids,
            baselines=self._baseline(input_ids, attention_mask, special),
            target=target,
            additional_forward_args=self._args(attention_mask),
            n_steps=self.n_steps,
            method=self.method,
            internal_batch_size=rows,
        )
        return result
