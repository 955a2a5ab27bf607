"""The comparison harness's method registry: every method as a ``(batch, seq)`` token scorer.

The registry (:mod:`~captum_layer_saliency.compare.methods.registry`) lists the methods of one
module per family (``gradient``, ``perturbation``, ``attention``, ``decomposition``, then this
project's ``ours`` and ``lafa``). The explainers of :mod:`captum_layer_saliency.attr` (DLS, LAFA)
meet the registry only in ``ours`` (DLS and the adapter, :class:`ExplainerAttributor`) and ``lafa``;
the token-attributor base and the gradient saliencies that LAFA and the registry share live in
:mod:`captum_layer_saliency.attr` too. The harness, the CLI and ``explain`` import the registry's
public names from here.
"""

from captum_layer_saliency.compare.methods.ours import ExplainerAttributor
from captum_layer_saliency.compare.methods.registry import (
    METHODS,
    available_methods,
    get_method,
    resolve_method_name,
)
from captum_layer_saliency.models.classifier import TokenAttributor
from captum_layer_saliency.models.passes import PassCounter

__all__ = [
    "METHODS",
    "ExplainerAttributor",
    "PassCounter",
    "TokenAttributor",
    "available_methods",
    "get_method",
    "resolve_method_name",
]
