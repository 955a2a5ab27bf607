"""DLS's candidate layers: their one naming scheme, their resolution, their check.

Index 0 is the embeddings and ``l`` is block ``l`` everywhere (``layer_names``, reports, the
CLI), however the layers were given (an index, a module of ``find_model_parts(model).layers``,
the bare constructor): :func:`name_layers` names them; :func:`resolve_layers` turns indices into
modules; :func:`check_layers_in_model` refuses modules from elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from torch import nn

from captum_layer_saliency.models.heads import default_layers
from captum_layer_saliency.models.surgery import UnsupportedModelError, find_model_parts

__all__ = ["check_layers_in_model", "model_layers", "name_layers", "owner_model", "resolve_layers"]


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


def owner_model(forward_func: Any) -> nn.Module | None:
    """The model behind a forward function, when it can be told; else ``None``.

    Args:
        forward_func: a module; an object with a ``model`` module (``classifier_forward``); a
            bound method of a module (``model.forward``); a ``functools.partial`` of one of
            these; or a closure over exactly one module (``lambda ids, m: model(ids, m).logits``).

    Returns:
        The module, or ``None`` for a function behind which no single module can be found.
    """
    if isinstance(forward_func, nn.Module):
        return forward_func
    for attribute in ("model", "__self__"):
        found = getattr(forward_func, attribute, None)
        if isinstance(found, nn.Module):
            return found
    if isinstance(forward_func, functools.partial):
        inner = [owner_model(forward_func.func)] + [
            a for a in forward_func.args if isinstance(a, nn.Module)
        ]
        modules = [m for m in inner if m is not None]
        return modules[0] if modules else None
    cells = getattr(forward_func, "__closure__", None) or ()
    modules = []
    for cell in cells:
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(content, nn.Module):
            modules.append(content)
    return modules[0] if len({id(m) for m in modules}) == 1 else None


def name_layers(
    layers: Sequence[nn.Module], model: nn.Module | None
) -> tuple[list[int], list[str], list[str]]:
    """Name candidate layers in the one scheme, whichever way they were given.

    A layer that is one of ``model``'s embeddings or blocks (by identity, among
    :func:`~captum_layer_saliency.models.surgery.find_model_parts`'s) gets its index and name
    (``0``/``"embeddings"``, ``l``/``"block l"``). Any other module keeps a generic name that
    says what it is: its module path in ``model`` (``"bert.encoder.layer.1.output"``), else its
    class and position (``"Linear (candidate 2)"``).

    Args:
        layers: the candidate layers, shallow to deep.
        model: the model they belong to (``None`` when unknown).

    Returns:
        ``(indices, names, paths)``: the layer indices when every layer is an embeddings or a
        block, else the positions ``0 .. len(layers) - 1`` (an index must name one layer);
        the names; the module paths (``""`` when unknown).
    """
    parts = None
    if model is not None:
        try:
            parts = find_model_parts(model)
        except UnsupportedModelError:  # an unknown family: generic names by module path
            parts = None
    where = {id(m): i for i, m in enumerate(parts.layers)} if parts is not None else {}
    paths_of = {id(m): n for n, m in model.named_modules()} if model is not None else {}
    known = [where.get(id(m)) for m in layers]
    paths = [paths_of.get(id(m), "") for m in layers]
    names = []
    for k, (layer, index, path) in enumerate(zip(layers, known, paths, strict=True)):
        if index is not None and parts is not None:
            names.append(parts.layer_names[index])
        else:
            names.append(path or f"{type(layer).__name__} (candidate {k})")
    if all(i is not None for i in known):
        return [int(i) for i in known if i is not None], names, paths
    return list(range(len(layers))), names, paths
