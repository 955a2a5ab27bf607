"""What a registered method is: its name, kind, factory and notes (:class:`MethodSpec`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from captum_layer_saliency.models.classifier import TokenAttributor

__all__ = [
    "ATTENTION",
    "CONTROL",
    "DECOMPOSITION",
    "GRADIENT",
    "LAYER",
    "METHOD_KINDS",
    "PERTURBATION",
    "MethodSpec",
    "SpecList",
]

GRADIENT, PERTURBATION, ATTENTION, DECOMPOSITION, LAYER, CONTROL = (
    "gradient",
    "perturbation",
    "attention",
    "decomposition",
    "layer",
    "control",
)
#: The kinds of method, in the order reports list them.
METHOD_KINDS = (GRADIENT, PERTURBATION, ATTENTION, DECOMPOSITION, LAYER, CONTROL)


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    Attributes:
        name: the canonical name (lower case, underscores).
        description: one line for reports.
        factory: ``factory(clf, **options) -> TokenAttributor``; its keyword arguments are the
            method's options and their defaults.
        kind: one of ``"gradient"``, ``"perturbation"``, ``"attention"``,
            ``"decomposition"``, ``"layer"``, ``"control"``.
        notes: caveats a report should print next to the method's results.
    """

    name: str
    description: str
    factory: Callable[..., TokenAttributor]
    kind: str
    notes: str = ""


#: A family module's methods, each with its aliases, in the order they are listed.
SpecList = list[tuple[MethodSpec, tuple[str, ...]]]
