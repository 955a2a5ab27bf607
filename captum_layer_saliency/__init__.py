"""captum-layer-saliency: Decoded Layer Saliency (Hou & Castanon, ICML 2023) for Captum.

The public API is re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

from typing import Any

from .attr.decoded_layer_saliency import DecodedLayerSaliency
from .coherence import COHERENCE_SCORES, SELECTION_RULES, LayerCoherenceSelector
from .decoding import HeadMismatchError, LMHead, load_lm_head
from .explaining import explain
from .explanation import Explanation, load_explanations, save_explanations
from .hf import TextClassifier
from .surgery import UnsupportedModelError, find_model_parts
from .words import aggregate_to_words

__version__ = "0.1.0"

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
        from .defaults import load_default

        return load_default
    if name == "LAFA":
        from .attr.lafa import LAFA

        return LAFA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
