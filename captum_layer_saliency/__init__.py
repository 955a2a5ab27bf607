"""captum-layer-saliency: Decoded Layer Saliency (Hou & Castanon, ICML 2023) for Captum.

The public API is re-exported here (plain imports, nothing lazy); everything else is an
implementation detail. The package's layout is described in the README's Architecture section.
"""

from __future__ import annotations

from captum_layer_saliency._version import __version__
from captum_layer_saliency.attr.coherence import (
    COHERENCE_SCORES,
    SELECTION_RULES,
    LayerCoherenceSelector,
)
from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.lafa import LAFA
from captum_layer_saliency.explaining import explain
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.heads import HeadMismatchError, LMHead, load_lm_head
from captum_layer_saliency.models.surgery import UnsupportedModelError, find_model_parts
from captum_layer_saliency.models.words import aggregate_to_words
from captum_layer_saliency.viz.explanation import Explanation, load_explanations, save_explanations
from captum_layer_saliency.zoo.load import load_default

__all__ = [
    "COHERENCE_SCORES",
    "SELECTION_RULES",
    "DecodedLayerSaliency",
    "Explanation",
    "LAFA",
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
