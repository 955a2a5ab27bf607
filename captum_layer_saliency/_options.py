"""The values a user can name on the command line, as plain constants (floor 0, no imports).

They live here, below every floor, so that the command line's parser (and so ``--help``) builds
without importing torch, transformers or Captum; their owners re-export them under the same
names (``models.classifier.TRUNCATION_MODES``, ``models.words.REDUCTIONS``,
``zoo.load.TASKS``, ``_utils.CACHE_ENV``).
"""

from __future__ import annotations

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MODELS",
    "DEFAULT_TRUNCATION",
    "REDUCTIONS",
    "TRUNCATION_MODES",
]

#: What happens to a text over the token budget: refuse it (``"error"``) or cut it
#: (``"truncate"``, recorded in the output).
TRUNCATION_MODES = ("error", "truncate")

#: The one default of the API's, ``explain``'s and ``compare``'s truncation: cut long texts and
#: say so (a 150-word review works out of the box).
DEFAULT_TRUNCATION = "truncate"

#: How the scores of a word's tokens combine: ``"sum"`` (the default: a word's score is the
#: total attribution of its pieces, so word scores add up to the token scores), ``"mean"``
#: or ``"max"`` (the largest *signed* score of the pieces).
REDUCTIONS = ("sum", "mean", "max")

#: The offline default models (``load_default(name)``, ``--default``/``--model name``).
DEFAULT_MODELS = ("sst2", "ag_news", "hatexplain")

#: The environment variable naming the user cache (default models, neighbour indexes).
CACHE_ENV = "CAPTUM_LAYER_SALIENCY_CACHE"

#: The user cache when ``CACHE_ENV`` is not set.
DEFAULT_CACHE_DIR = "~/.cache/captum_layer_saliency"
