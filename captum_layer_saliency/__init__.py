"""captum-layer-saliency: Decoded Layer Saliency (Hou & Castanon, ICML 2023) for Captum.

The public API is re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

from typing import Any

from captum_layer_saliency._version import __version__
from captum_layer_saliency.attr.coherence import (
    COHERENCE_SCORES,
    SELECTION_RULES,
    LayerCoherenceSelector,
)
from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.explaining import explain
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.heads import HeadMismatchError, LMHead, load_lm_head
from captum_layer_saliency.models.surgery import UnsupportedModelError, find_model_parts
from captum_layer_saliency.models.words import aggregate_to_words
from captum_layer_saliency.viz.explanation import Explanation, load_explanations, save_explanations

__all__ = [
    "COHERENCE_SCORES",
    "SELECTION_RULES",
    "DecodedLayerSaliency",
    "Explanation",
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
    # The default models pull in their build machinery; import them only when asked for.
    if name == "load_default":
        from captum_layer_saliency.zoo.load import load_default

        return load_default
    if name == "LAFA":
        from captum_layer_saliency.attr.lafa import LAFA

        return LAFA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
