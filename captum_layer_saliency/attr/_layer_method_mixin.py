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
import warnings
from collections.abc import Callable
from typing import Any

import torch
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
        layer_baseline: str | Tensor | None,
        integration: str,
        noise: float,
        internal_batch_size: int | None,
    ) -> None:
        #: a layer-state baseline given to the constructor (deprecated: pass it to attribute).
        self._state_baseline: Tensor | None = None
        if isinstance(layer_baseline, Tensor):
            warnings.warn(
                "layer_baseline=<tensor> is deprecated: pass the layer state as "
                "attribute(inputs, baselines=<tensor>), as in Captum",
                DeprecationWarning,
                stacklevel=4,
            )
            self._state_baseline, layer_baseline = layer_baseline, "zeros"
        elif layer_baseline is not None and not isinstance(layer_baseline, str):
            raise TypeError(
                f"layer_baseline={layer_baseline!r}: pass 'pad' or 'zeros' (a layer state or "
                "baseline token ids go to attribute(inputs, baselines=...))"
            )
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

    def _call_method(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        ids: Tensor,
        mask: Tensor,
        baselines: Any,
        n_steps: int | None,
        method: str | None,
        internal_batch_size: int | None,
        return_convergence_delta: bool,
    ) -> tuple[LayerMethod, Tensor | None]:
        """This call's layer method (the constructor's, with the call's options) and baseline.

        ``baselines``, as for :meth:`DecodedLayerSaliency.attribute`: ``None`` (the
        constructor's), ``"pad"``, ``"zeros"``, ``"mask"``, integer token ids shaped like the
        input, or a floating-point layer state. Returns the method and the explicit baseline
        tensor (token ids or a state; ``None`` for a named one).

        Raises:
            TypeError: ``baselines`` of another type.
            ValueError: an option the layer method does not take (the message names it).
        """
        base = self.layer_method
        name = base.name
        if baselines is None and self._state_baseline is not None:
            baselines = self._state_baseline
        if baselines is not None and not base.needs_baseline:
            raise ValueError(
                f"baselines: layer_method={name!r} takes no baseline (integrated_gradients and "
                "gradient_shap do)"
            )
        if method is not None and name != "integrated_gradients":
            raise ValueError(
                f"method={method!r} (the integration rule) applies to "
                f"layer_method='integrated_gradients', not {name!r}"
            )
        if return_convergence_delta and name != "integrated_gradients":
            raise ValueError(
                f"return_convergence_delta=True applies to layer_method='integrated_gradients', "
                f"not {name!r} (Captum's methods without a path have no convergence delta)"
            )
        chosen = self._method_for(inputs, ids) if baselines is None else base
        explicit: Tensor | None = None
        changes: dict[str, Any] = {}
        if isinstance(baselines, str):
            if baselines not in ("pad", "zeros", "mask"):
                raise ValueError(
                    f"baselines={baselines!r}: choose 'pad', 'mask', 'zeros', baseline token ids "
                    "shaped like the input or a layer-state tensor"
                )
            if baselines == "mask":
                explicit = self._mask_baseline(ids, mask)
            else:
                changes["baseline"] = baselines
        elif isinstance(baselines, Tensor):
            if baselines.is_floating_point():
                explicit = baselines
            elif baselines.shape[-1:] != ids.shape[-1:] or baselines.dim() != 2:
                raise ValueError(
                    f"baselines: token ids of shape {tuple(baselines.shape)} do not match the "
                    f"input's {tuple(ids.shape)}"
                )
            else:
                explicit = baselines.to(ids.device)
        elif baselines is not None:
            raise TypeError(
                f"baselines={baselines!r}: DLS takes 'pad', 'mask', 'zeros', baseline token ids "
                "shaped like the input or a layer-state tensor (the target is the third "
                "positional argument, as in Captum's LayerIntegratedGradients.attribute)"
            )
        if n_steps is not None:
            changes["n_steps"] = n_steps
        if method is not None:
            changes["integration"] = method
        if internal_batch_size is not None:
            changes["internal_batch_size"] = internal_batch_size
        return (dataclasses.replace(chosen, **changes) if changes else chosen), explicit

    def _mask_baseline(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The input's ids with every real non-special token replaced by the mask token."""
        mask_id = getattr(getattr(self, "tokenizer", None), "mask_token_id", None)
        if mask_id is None:
            raise ValueError(
                "baselines='mask' needs the tokenizer's mask token (build DLS with "
                "for_model(model, head, tokenizer) for a tokenizer that has one)"
            )
        words = candidate_mask(ids, mask, self.special_token_ids)
        return torch.where(words, torch.full_like(ids, int(mask_id)), ids)

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
        method: LayerMethod | None = None,
        baseline: Tensor | None = None,
        deltas: list[Tensor] | None = None,
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
            method if method is not None else self._method_for(inputs, ids),
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
            baseline=baseline,
            deltas=deltas,
        )
        self.last_target_ = predicted[0] if predicted else targets
        return grads, acts, hidden
