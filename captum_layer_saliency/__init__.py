"""captum-layer-saliency: Decoded Layer Saliency (Hou & Castanon, ICML 2023) for Captum.

The public API is importable from here (``from captum_layer_saliency import
DecodedLayerSaliency``); everything else is an implementation detail. The names are loaded on
first use from :mod:`captum_layer_saliency._public` (plain imports there), so that importing the
package, and the command line's ``--help``, stays fast: torch, transformers and Captum are
imported only when a public name, or a module that needs them, is used. The package's layout is
described on the documentation's Architecture page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from captum_layer_saliency._version import __version__

if TYPE_CHECKING:  # the names, for type checkers and editors
    from captum_layer_saliency._public import *  # noqa: F403

__all__ = [  # the names of _public, and __version__ (a test checks they agree)
    "COHERENCE_SCORES",
    "SELECTION_RULES",
    "DecodedLayerSaliency",
    "Explanation",
    "LAFA",
    "LAFAConfig",
    "HeadMismatchError",
    "LMHead",
    "LayerCoherenceSelector",
    "TextClassifier",
    "UnsupportedModelError",
    "__version__",
    "aggregate_to_words",
    "explain",
    "find_model_parts",
    "load_default",
    "load_explanations",
    "load_lm_head",
    "save_explanations",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from :mod:`captum_layer_saliency._public` on its first use."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from captum_layer_saliency import _public

    value = getattr(_public, name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
