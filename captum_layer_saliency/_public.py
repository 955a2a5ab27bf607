"""The public API's plain imports, loaded by the package on the first use of a public name.

``captum_layer_saliency/__init__.py`` imports this module the first time one of its names is
used, so that ``import captum_layer_saliency`` (and with it the command line's ``--help``) does
not import torch, transformers and Captum. Import the names from the package, not from here.
Each is re-exported as ``X as X``; the package's ``__all__`` lists them (a test checks the two
agree).
"""

from __future__ import annotations

from captum_layer_saliency.attr.coherence import (
    COHERENCE_SCORES as COHERENCE_SCORES,
)
from captum_layer_saliency.attr.coherence import (
    SELECTION_RULES as SELECTION_RULES,
)
from captum_layer_saliency.attr.coherence import (
    LayerCoherenceSelector as LayerCoherenceSelector,
)
from captum_layer_saliency.attr.decoded_layer_saliency import (
    DecodedLayerSaliency as DecodedLayerSaliency,
)
from captum_layer_saliency.attr.lafa import (
    LAFA as LAFA,
)
from captum_layer_saliency.attr.lafa_setup import (
    LAFAConfig as LAFAConfig,
)
from captum_layer_saliency.explaining import (
    explain as explain,
)
from captum_layer_saliency.models.classifier import (
    TextClassifier as TextClassifier,
)
from captum_layer_saliency.models.heads import (
    HeadMismatchError as HeadMismatchError,
)
from captum_layer_saliency.models.heads import (
    LMHead as LMHead,
)
from captum_layer_saliency.models.heads import (
    load_lm_head as load_lm_head,
)
from captum_layer_saliency.models.surgery import (
    UnsupportedModelError as UnsupportedModelError,
)
from captum_layer_saliency.models.surgery import (
    find_model_parts as find_model_parts,
)
from captum_layer_saliency.models.words import (
    aggregate_to_words as aggregate_to_words,
)
from captum_layer_saliency.viz.explanation import (
    Explanation as Explanation,
)
from captum_layer_saliency.viz.explanation import (
    load_explanations as load_explanations,
)
from captum_layer_saliency.viz.explanation import (
    save_explanations as save_explanations,
)
from captum_layer_saliency.zoo.load import (
    load_default as load_default,
)
