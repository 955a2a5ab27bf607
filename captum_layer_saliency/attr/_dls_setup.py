"""Building a :class:`~captum_layer_saliency.DecodedLayerSaliency`: its checks and its parts.

:func:`checked_layers` refuses bad constructor options before anything is stored;
:func:`for_model_parts` assembles what ``DecodedLayerSaliency.for_model`` hands the constructor
from a Hugging Face classifier (the forward, the layers, the head, the selector, the special and
padding ids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from captum_layer_saliency.attr import _calibration as cal
from captum_layer_saliency.attr._aggregation import AGGREGATIONS
from captum_layer_saliency.attr._layers import check_layers_in_model, model_layers, resolve_layers
from captum_layer_saliency.attr._mapping import check_mapping_options
from captum_layer_saliency.attr.coherence import LayerCoherenceSelector, default_coherence_score
from captum_layer_saliency.models.classifier import classifier_forward, special_token_ids
from captum_layer_saliency.models.heads import check_head_compatible, load_lm_head
from captum_layer_saliency.models.inputs import check_not_data_parallel

__all__ = ["checked_layers", "for_model_parts"]


def checked_layers(
    forward_func: Any,
    layer: nn.Module | Sequence[nn.Module],
    lm_head: Any,
    *,
    aggregation: str,
    mapping: str,
    special_rows: str,
    prior: str,
    top_k: int | None,
    selection: str,
    position_sample: float | None,
) -> list[nn.Module]:
    """Check the constructor's options; return the candidate layers as a list.

    Args:
        forward_func: the model or forward function (a module's layers and head are checked
            against it).
        layer: one layer or the candidate layers.
        lm_head: the decoding head.
        aggregation: as given to the constructor.
        mapping: as given to the constructor.
        special_rows: as given to the constructor.
        prior: as given to the constructor.
        top_k: as given to the constructor.
        selection: as given to the constructor.
        position_sample: as given to the constructor.

    Returns:
        The candidate layers, shallow to deep.

    Raises:
        ValueError: an option outside its choices, or no layer.
        TypeError: a head or a layer that is not a module.
        HeadMismatchError: a head that does not fit the model.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose from {AGGREGATIONS}")
    check_mapping_options(mapping, special_rows, prior, top_k)
    if not isinstance(lm_head, nn.Module):
        raise TypeError(f"lm_head must be a torch.nn.Module, got {type(lm_head).__name__}")
    if selection not in cal.SELECTIONS:
        raise ValueError(f"selection must be one of {cal.SELECTIONS}, got {selection!r}")
    if position_sample is not None and not 0 < position_sample <= 1:
        raise ValueError(f"position_sample must lie in (0, 1] or be None, got {position_sample}")
    layers = [layer] if isinstance(layer, nn.Module) else list(layer)
    if not layers:
        raise ValueError("layer must be a module or a non-empty list of modules")
    if isinstance(forward_func, nn.Module):
        check_layers_in_model(layers, forward_func)
        check_head_compatible(lm_head, forward_func)
    return layers


def for_model_parts(
    model: nn.Module,
    lm_head: nn.Module | str,
    tokenizer: Any,
    layers: Any,
    selector: LayerCoherenceSelector | None | str,
    options: dict[str, Any],
) -> tuple[Callable[..., Tensor], Any, nn.Module, LayerCoherenceSelector | None, list[nn.Module]]:
    """What ``for_model`` passes to the constructor (see its docstring for the arguments).

    Sets ``special_token_ids`` (the tokenizer's) and ``pad_token_id`` (the tokenizer's, else the
    model config's) in ``options`` unless given.

    Returns:
        ``(forward, layer, head, selector, chosen)``: ``f(input_ids, attention_mask, ...)``, the
        module or list of modules for the constructor, the loaded head, the selector, and the
        chosen modules as a list.

    Raises:
        ValueError: a layer index out of range, or a selector string other than ``"default"``.
        HeadMismatchError: a head that does not fit the model.
    """
    check_not_data_parallel(model)
    head = load_lm_head(lm_head, model=model)
    modules, names, _, indices = model_layers(model)
    chosen = resolve_layers(layers, modules, names, indices)
    check_layers_in_model(chosen, model)
    if selector == "default":
        # The family's coherence score: next-token recovery for causal LMs (issue 24).
        score = default_coherence_score(model)
        selector = LayerCoherenceSelector(head, score=score) if len(chosen) > 1 else None
    elif isinstance(selector, str):
        raise ValueError("selector must be a LayerCoherenceSelector, None or 'default'")
    if tokenizer is not None and "special_token_ids" not in options:
        options["special_token_ids"] = special_token_ids(tokenizer)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    options.setdefault("pad_token_id", pad)
    single = isinstance(layers, (nn.Module, int))
    return (
        classifier_forward(model, tokenizer),
        chosen[0] if single else chosen,
        head,
        selector,
        chosen,
    )
