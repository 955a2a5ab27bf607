"""A registry of named token-attribution methods over one Hugging Face classifier.

Every method is built by ``get_method(name, clf, **options)`` and returns a
:class:`TokenAttributor`, whose ``attribute(input_ids, attention_mask, target)`` gives detached
float ``(batch, seq)`` token scores, exactly 0 on padding and on special tokens. All methods see the
same forward (:attr:`TextClassifier.forward_func`), the same target and the same special tokens.

Defaults follow Thermostat (Feldhus et al., 2021), which runs Captum on Hugging Face models:

* **gradient methods** (Saliency, Input×Gradient, Integrated Gradients, DeepLift, DeepLiftSHAP,
  GradientSHAP) use Captum's *layer* variants on the embeddings module (word + position + type
  embeddings and their LayerNorm; option ``layer="word_embeddings"`` for the word embeddings
  alone) and sum the attribution over the hidden dimension (Saliency takes the gradient's L2 norm);
* their **baseline** replaces every real non-special token by ``[PAD]`` and keeps the special
  tokens and the padding in place ("the PAD baseline"); IG uses 25 steps, GradientSHAP 5 samples,
  DeepLiftSHAP 2 baselines (the PAD baseline and an all-``[PAD]`` input, as Thermostat does);
* **perturbation methods** (Occlusion with a window of 3 tokens, LIME with 25 samples, Shapley
  value sampling with 25 permutations, KernelSHAP with 25 samples) perturb whole tokens, one
  feature per token, by *replacing* them with ``[PAD]``; special tokens and padding are never
  perturbed. (The metrics in :mod:`captum_layer_saliency.metrics` *delete* tokens instead.)

Every method is seeded (option ``seed``, default 0): the global torch and NumPy generators are
seeded for the call and restored afterwards, so reruns are bit-identical on CPU. The stochastic and
sliding-window methods (GradientSHAP, SmoothGrad, Occlusion, LIME, KernelSHAP, Shapley sampling,
random) explain one example at a time, cut to its real tokens and seeded by ``seed`` and its token
ids, so a sentence's scores do not depend on the batch it comes in; the others run on whole batches.
Batching: IG takes ``internal_batch_size``; the perturbation methods ``perturbations_per_eval``
(model evaluations per forward call).

The methods live in one module per family: :mod:`~captum_layer_saliency.compare.methods.gradient`,
:mod:`~captum_layer_saliency.compare.methods.gim` (GIM),
:mod:`~captum_layer_saliency.compare.methods.attnlrp` (AttnLRP),
:mod:`~captum_layer_saliency.compare.methods.perturbation`,
:mod:`~captum_layer_saliency.compare.methods.attention` (with the ``random`` control),
:mod:`~captum_layer_saliency.compare.methods.decomposition` (DecompX), and this
project's own in :mod:`~captum_layer_saliency.compare.methods.ours` (DLS) and
:mod:`~captum_layer_saliency.compare.methods.lafa`. This module assembles :data:`METHODS` from
them, in that order, and resolves names.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from captum_layer_saliency.compare.methods import (
    attention,
    attnlrp,
    decomposition,
    gim,
    gradient,
    lafa,
    ours,
    perturbation,
)
from captum_layer_saliency.compare.methods._spec import LAYER, METHOD_KINDS, MethodSpec
from captum_layer_saliency.compare.methods.ours import ExplainerAttributor, dls_factory
from captum_layer_saliency.models.classifier import TextClassifier, TokenAttributor
from captum_layer_saliency.models.passes import PassCounter
from captum_layer_saliency.models.surgery import find_model_parts

__all__ = [
    "ALIASES",
    "METHODS",
    "ExplainerAttributor",
    "MethodSpec",
    "PassCounter",
    "available_methods",
    "get_method",
    "register_dls_layers",
    "register_method",
    "resolve_method_name",
]

_DLS_LAYER = re.compile(r"^dls_layer(\d+)$")

#: The registered methods by canonical name, in listing order.
METHODS: dict[str, MethodSpec] = {}
#: Other names of the methods: alias -> canonical name.
ALIASES: dict[str, str] = {}


def _normalise(name: str) -> str:
    """A name as the registry keys it: stripped, lower case, ``-`` and spaces as ``_``."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register_method(spec: MethodSpec, aliases: Iterable[str] = ()) -> None:
    """Add a method (and short aliases for it) to :data:`METHODS`.

    Args:
        spec: the method; re-registering a name replaces it.
        aliases: other names that resolve to ``spec.name``.

    Raises:
        ValueError: an unknown kind, or an alias that is already a method's name.
    """
    if spec.kind not in METHOD_KINDS:
        raise ValueError(f"kind must be one of {METHOD_KINDS}, got {spec.kind!r}")
    METHODS[spec.name] = spec
    for alias in aliases:
        alias = _normalise(alias)
        if alias in METHODS:
            raise ValueError(f"alias {alias!r} is already the name of a method")
        ALIASES[alias] = spec.name


def available_methods() -> list[str]:
    """The canonical names of the registered methods, in registration order.

    ``dls_layer<L>`` resolves for every layer ``L`` (0 = the embeddings, ``L`` = block ``L``)
    even when not listed here (see :func:`register_dls_layers`).
    """
    return list(METHODS)


def resolve_method_name(name: str) -> str:
    """The canonical name for ``name`` (an alias, any case, ``-`` or ``_``).

    Raises:
        ValueError: an unknown name, with the valid names and the closest matches.
    """
    key = _normalise(name)
    key = ALIASES.get(key, key)
    if key in METHODS or _DLS_LAYER.match(key):
        return key
    choices = sorted([*METHODS, *ALIASES])
    close = difflib.get_close_matches(key, choices, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown method {name!r}.{hint} Valid methods: {', '.join(METHODS)} "
        f"(aliases: {', '.join(sorted(ALIASES))}; and dls_layer<L> for a fixed layer L)"
    )


def get_method(name: str, clf: TextClassifier, **options: Any) -> TokenAttributor:
    """Build the attributor ``name`` for ``clf``.

    Args:
        name: a method name or alias (see :func:`available_methods`), or ``dls_layer<L>``.
        clf: the classifier bundle.
        **options: overrides of the method's defaults (the factory's keyword arguments).

    Returns:
        The attributor.

    Raises:
        ValueError: an unknown method or an option the method does not take.
    """
    key = resolve_method_name(name)
    match = _DLS_LAYER.match(key)
    if key not in METHODS and match:
        factory: Callable[..., TokenAttributor] = functools.partial(
            dls_factory, layer=int(match.group(1))
        )
    else:
        factory = METHODS[key].factory
    try:
        inspect.signature(factory).bind(clf, **options)
    except TypeError as err:
        params = [p for p in inspect.signature(factory).parameters if p != "clf"]
        raise ValueError(
            f"bad options {sorted(options)} for method {key!r} ({err}); "
            f"it takes: {', '.join(params) or 'no options'}"
        ) from None
    return factory(clf, **options)


def register_dls_layers(model_or_count: nn.Module | int) -> list[str]:
    """Register ``dls_layer0 .. dls_layer{L}`` so they appear in :func:`available_methods`.

    (``get_method`` resolves ``dls_layer<L>`` without this; registering makes the names show up
    in listings, e.g. for a ``--methods all`` expansion.)

    Args:
        model_or_count: the classifier (its embeddings and blocks are counted), or the number
            of candidate layers (blocks + 1).

    Returns:
        The registered names.
    """
    if isinstance(model_or_count, nn.Module):
        count = len(find_model_parts(model_or_count).layers)
    else:
        count = int(model_or_count)
    names = []
    for i in range(count):
        where = "the embeddings" if i == 0 else f"block {i}"
        spec = MethodSpec(
            name=f"dls_layer{i}",
            description=f"Decoded Layer Saliency fixed at layer {i} ({where})",
            factory=functools.partial(dls_factory, layer=i),
            kind=LAYER,
        )
        register_method(spec)
        names.append(spec.name)
    return names


for _family in (gradient, gim, attnlrp, perturbation, attention, decomposition, ours, lafa):
    for _spec, _aliases in _family.SPECS:
        register_method(_spec, _aliases)
