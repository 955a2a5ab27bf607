"""The comparison harness's method registry: every method as a ``(batch, seq)`` token scorer.

This is the only place where :mod:`captum_layer_saliency.attr` meets the harness. The harness,
the CLI and ``explain`` import the registry's public names from here.
"""

from captum_layer_saliency.compare.methods.registry import (
    METHODS,
    ExplainerAttributor,
    PassCounter,
    available_methods,
    get_method,
    resolve_method_name,
)
from captum_layer_saliency.models.classifier import TokenAttributor

__all__ = [
    "METHODS",
    "ExplainerAttributor",
    "PassCounter",
    "TokenAttributor",
    "available_methods",
    "get_method",
    "resolve_method_name",
]
