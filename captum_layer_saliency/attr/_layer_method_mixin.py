"""DLS's ``layer_method`` option at work: the method a call runs, its steps' target, its cost.

A mixin, so that the explainer's own module keeps to its public surface; the methods' maths and
costs are in :mod:`._layer_methods`, their computation in :mod:`._layer_attributions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

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
        layer_baseline: str,
        integration: str,
        noise: float,
        internal_batch_size: int | None,
    ) -> None:
        #: the :class:`~captum_layer_saliency.attr._layer_methods.LayerMethod` in use.
        self.layer_method = (
            layer_method
            if isinstance(layer_method, LayerMethod)
            else LayerMethod(
                layer_method, n_steps, layer_baseline, integration, noise, None, internal_batch_size
            )
        )
        #: forward and backward passes per example of the last call, in full-pass equivalents
        #: (``{"forwards": f, "backwards": b}``; a step that runs 1 block of 6 counts 1/6).
        self.last_cost_: dict[str, float] | None = None

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
        prediction's logit when ``explain_prediction``); ``predicted`` fills on its first call.
        """
        grads, acts, hidden, self.last_cost_ = layer_method_attributions(
            self.layer_method,
            forward,
            self._checked_forward(targets, False)[0],
            layers,
            inputs,
            targets,
            additional_forward_args,
            resolve_target=lambda: _single_label(predicted[0]) if explain_prediction else targets,
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


def _single_label(predicted: Tensor) -> Tensor:
    """The predicted classes as ``(B,)`` indices; a multi-label prediction needs a target."""
    if predicted.dim() != 1:
        raise ValueError(
            "this layer method explains one class per example, but the multi-label prediction "
            "has several: pass target= (one label per example)"
        )
    return predicted
