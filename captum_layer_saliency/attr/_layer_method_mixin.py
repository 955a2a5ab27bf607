"""DLS's ``layer_method`` option at work: the method a call runs, its steps' target, its cost.

A mixin, so that the explainer's own module keeps to its public surface; the methods' maths and
costs are in :mod:`._layer_methods`, their computation in :mod:`._layer_attributions`.

The default method is integrated gradients at the layer from the PAD baseline. That baseline
needs the padding id and the token ids as the input; where either is missing and the baseline
was left to its default, a call falls back to the zero baseline with a warning that says why
(an explicit ``layer_baseline="pad"`` raises instead).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.attr._layer_attributions import layer_method_attributions
from captum_layer_saliency.attr._layer_methods import LayerMethod
from captum_layer_saliency.attr.decoding import candidate_mask

__all__ = ["LayerMethodMixin"]


class LayerMethodMixin:
    """The layer method of :class:`~captum_layer_saliency.DecodedLayerSaliency`."""

    # Set by DecodedLayerSaliency.
    special_token_ids: list[int]
    model: nn.Module | None
    last_target_: Tensor | None
    _pad_token_id: int | None
    _checked_forward: Callable[..., Any]

    def _init_layer_method(
        self,
        layer_method: str | LayerMethod,
        n_steps: int | None,
        layer_baseline: str | None,
        integration: str,
        noise: float,
        internal_batch_size: int | None,
    ) -> None:
        #: the :class:`~captum_layer_saliency.attr._layer_methods.LayerMethod` in use.
        self.layer_method = (
            layer_method
            if isinstance(layer_method, LayerMethod)
            else LayerMethod(
                layer_method,
                n_steps,
                layer_baseline or "pad",
                integration,
                noise,
                None,
                internal_batch_size,
            )
        )
        # The PAD baseline was the default's, not asked for: it may fall back to zeros.
        self._baseline_by_default = layer_baseline is None and not isinstance(
            layer_method, LayerMethod
        )
        #: forward and backward passes per example of the last call, in full-pass equivalents
        #: (``{"forwards": f, "backwards": b}``; a step that runs 1 block of 6 counts 1/6).
        self.last_cost_: dict[str, float] | None = None

    def _method_for(self, inputs: Tensor | tuple[Tensor, ...], ids: Tensor) -> LayerMethod:
        """The layer method this call runs: the zero baseline where a default PAD one cannot be.

        Raises no error itself; warns (``UserWarning``) when it falls back.
        """
        method = self.layer_method
        if not (self._baseline_by_default and method.needs_baseline and method.baseline == "pad"):
            return method
        first = inputs if isinstance(inputs, Tensor) else (inputs[0] if inputs else None)
        if self._pad_token_id is None:
            why = (
                "the padding token id is unknown (pass pad_token_id=, or build it with "
                "DecodedLayerSaliency.for_model(model, head, tokenizer))"
            )
        elif first is not ids:
            why = "the inputs are not the token ids (e.g. embeddings)"
        else:
            return method
        warn_user(
            f"DLS's default layer method, integrated gradients at the layer, uses the PAD "
            f"baseline, but {why}: using the zero baseline instead (measured slightly less "
            "faithful, BENCHMARKS.md section 7). Pass layer_baseline='zeros' to choose it "
            "explicitly, or layer_method='gradient' for the paper's gradient x activation",
            UserWarning,
        )
        return dataclasses.replace(method, baseline="zeros")

    def _layer_states(
        self,
        forward: Callable[..., Tensor],
        layers: list[nn.Module],
        inputs: Tensor | tuple[Tensor, ...],
        targets: Tensor | None,
        additional_forward_args: Any,
        *,
        predicted: list[Tensor],
        explain_prediction: bool,
        ids: Tensor,
        mask: Tensor,
        to_input: bool,
        grad_kwargs: dict[str, Any] | None,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per layer, the gradient and activation the aggregation sees, and the hidden state.

        Sets ``last_cost_`` and ``last_target_``. ``forward`` is the checked forward (the
        explained scalar when ``explain_prediction``: the prediction's logit, or the summed
        logits of the ``(B, C)`` label sets in ``targets``); ``predicted`` fills on its first
        call: class indices, or label weights (a multi-label prediction, or the sets given),
        which the steps then explain as the weighted sum of the logits (as the gradient path
        does).
        """
        grads, acts, hidden, self.last_cost_ = layer_method_attributions(
            self._method_for(inputs, ids),
            forward,
            self._checked_forward(targets, False)[0],
            layers,
            inputs,
            None if explain_prediction else targets,  # the forward returns the summed scalar
            additional_forward_args,
            resolve_target=lambda: predicted[0] if explain_prediction else targets,
            ids=ids,
            mask=mask,
            candidates=candidate_mask(ids, mask, self.special_token_ids),
            pad_token_id=self._pad_token_id,
            model=self.model,
            to_input=to_input,
            grad_kwargs=grad_kwargs,
        )
        self.last_target_ = predicted[0] if predicted else targets
        return grads, acts, hidden
