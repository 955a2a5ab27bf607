"""DLS's candidate layers: their one naming scheme, their resolution, their check.

Index 0 is the embeddings and ``l`` is block ``l`` everywhere (``layer_names``, reports, the
CLI); :func:`resolve_layers` turns indices into modules; :func:`check_layers_in_model` refuses
modules from elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from captum_layer_saliency.models.heads import default_layers
from captum_layer_saliency.models.surgery import find_model_parts

__all__ = ["check_layers_in_model", "model_layers", "resolve_layers"]


def model_layers(model: nn.Module) -> tuple[list[nn.Module], list[str], list[str], list[int]]:
    """A Hugging Face model's candidate layers, with their one naming scheme.

    Args:
        model: a Hugging Face model of a family that
            :func:`~captum_layer_saliency.models.surgery.find_model_parts` knows.

    Returns:
        ``(modules, names, paths, indices)``: index 0 is the embeddings (``"embeddings"``),
        index ``l`` is block ``l`` (``"block l"``); ``paths`` are the module paths
        (``"bert.encoder.layer.4"`` for block 5). The embeddings are left out where no head
        can decode them (ELECTRA with an embedding projection), so indices may start at 1.
    """
    parts = find_model_parts(model)
    modules = default_layers(model)
    all_ids = [id(m) for m in parts.layers]
    indices = [all_ids.index(id(m)) for m in modules]
    names = [parts.layer_names[i] for i in indices]
    paths = [parts.layer_paths[i] for i in indices]
    return modules, names, paths, indices


def check_layers_in_model(layers: Sequence[nn.Module], model: nn.Module) -> None:
    """Refuse layers that are not modules of ``model``.

    Args:
        layers: the candidate layers.
        model: the model they must belong to.

    Raises:
        TypeError: a layer that is not a ``torch.nn.Module``.
        ValueError: a layer that is not a submodule of ``model``.
    """
    known = {id(m) for m in model.modules()}
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer {i} is a {type(layer).__name__}, not a torch.nn.Module")
        if id(layer) not in known:
            raise ValueError(
                f"layer {i} ({type(layer).__name__}) is not a submodule of the model "
                f"{type(model).__name__}"
            )


def resolve_layers(
    layers: Any, modules: Sequence[nn.Module], names: Sequence[str], indices: Sequence[int]
) -> list[nn.Module]:
    """The modules meant by ``layers``.

    Args:
        layers: an index (0 = embeddings, ``l`` = block ``l``; negative counts from the last
            block), a module, a list of either, or ``None`` (all of them).
        modules: the model's candidate layers (:func:`model_layers`).
        names: their names.
        indices: their indices.

    Returns:
        The modules, in the order given (modules given as such are checked by the caller).

    Raises:
        ValueError: an index out of range.
    """
    single = isinstance(layers, (nn.Module, int))
    items: list[Any] = [layers] if single else list(modules if layers is None else layers)
    chosen: list[nn.Module] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            position = item if item >= 0 else indices[-1] + 1 + item
            if position not in indices:
                raise ValueError(
                    f"layer index {item} is out of range: the model's layers are "
                    f"{indices[0]} ({names[0]}) .. {indices[-1]} ({names[-1]})"
                )
            chosen.append(modules[list(indices).index(position)])
        else:
            chosen.append(item)  # checked by the caller
    return chosen
