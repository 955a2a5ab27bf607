"""LAFA's settings and the parts it is built from (:class:`~captum_layer_saliency.attr.lafa.LAFA`).

* :data:`DEFAULTS`: the paper's settings of the explainer itself, checked by
  :func:`check_options`; :data:`BUILD_DEFAULTS`: the paper's choices for what the constructor
  does not hold (the base saliency, where the neighbours come from).
* :func:`base_method`: a base saliency by name, built from
  :mod:`captum_layer_saliency.attr.gradient_saliency` and
  :mod:`captum_layer_saliency.attr.smoothgrad` (the same classes the comparison registry lists, so
  ``k = 0`` equals that registry method).
* :func:`neighbour_index`: the reference texts in a hidden layer of the classifier (the paper)
  or under an external sentence encoder (this project's first variant), cached and resumable.

Everything here needs only the classifier and its reference texts: no dataset, no registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from captum_layer_saliency.attr.attributor import Attributor
from captum_layer_saliency.attr.gradient_saliency import (
    InputXGradientAttributor,
    IntegratedGradientsAttributor,
    SaliencyAttributor,
)
from captum_layer_saliency.attr.lafa_aggregation import AGGREGATIONS, KERNELS
from captum_layer_saliency.attr.layer_index import LayerIndex, cached_layer_index
from captum_layer_saliency.attr.neighbours import NeighbourIndex, cached_index, default_encoder
from captum_layer_saliency.attr.smoothgrad import SmoothGradAttributor
from captum_layer_saliency.models.classifier import TextClassifier

__all__ = [
    "BASES",
    "BUILD_DEFAULTS",
    "DEFAULTS",
    "MIN_SIMILARITY",
    "NEIGHBOUR_SOURCES",
    "TOKEN_REPRS",
    "base_method",
    "check_options",
    "neighbour_index",
]

#: Token representations for the ``weighted_mean`` kernel: word embeddings or a layer's states.
TOKEN_REPRS = ("embedding", "contextual")
#: The paper's settings for SST (Zhang et al., 2022, section 5): 10 neighbours, the cut-off at
#: the 0.39 quantile, lambda = 0.44, an indicator-like kernel on word embeddings, same class.
DEFAULTS: dict[str, Any] = {
    "k": 10,
    "epsilon": 0.39,
    "same_class": True,
    "aggregation": "paper",
    "lam": 0.44,
    "kernel": "indicator",
    "sigma": 0.1,
    "min_similarity": None,  # 0.999 for "paper", 0.5 for "weighted_mean"
    "top_matches": 1,
    "token_repr": "embedding",
}
#: The default ``min_similarity`` of each aggregation.
MIN_SIMILARITY = {"paper": 0.999, "weighted_mean": 0.5}

#: Base saliencies LAFA can smooth by name; each is reduced by ``reduction`` over the hidden dim.
BASES = ("smoothgrad", "saliency", "input_x_gradient", "integrated_gradients")
#: Where the neighbours come from: a hidden layer of the classifier (the paper) or an external
#: sentence encoder (all-MiniLM-L6-v2; this project's first variant).
NEIGHBOUR_SOURCES = ("layer", "encoder")
#: The paper's choices for what the constructor does not hold: SmoothGrad, the sum of squares,
#: 25 samples (its SST setting), a middle layer (it recommends DistilBERT's layer 2 of 6 for
#: SST; ours has 6 too), mean pooling.
BUILD_DEFAULTS: dict[str, Any] = {
    "base": "smoothgrad",
    "reduction": "squared_l2",
    "n_samples": 25,
    "noise": 0.1,
    "neighbours": "layer",
    "layer": 2,
    "pooling": "mean",
}


def check_options(
    *,
    k: int,
    epsilon: float | None,
    aggregation: str,
    kernel: str,
    lam: float,
    sigma: float,
    min_similarity: float | None,
    top_matches: int,
    token_repr: str,
) -> float:
    """Check LAFA's options (see :class:`~captum_layer_saliency.attr.lafa.LAFA`).

    Args:
        k: the most neighbours per input (a non-negative int).
        epsilon: the cut-off quantile in ``[0, 1]``, or None.
        aggregation: one of :data:`~captum_layer_saliency.attr.lafa_aggregation.AGGREGATIONS`.
        kernel: one of :data:`~captum_layer_saliency.attr.lafa_aggregation.KERNELS`.
        lam: lambda, at least 0.
        sigma: the kernel width, positive.
        min_similarity: a cosine in ``[-1, 1]``, or None for the aggregation's default.
        top_matches: a positive int.
        token_repr: one of :data:`TOKEN_REPRS`.

    Returns:
        ``min_similarity``, resolved (:data:`MIN_SIMILARITY` when None).

    Raises:
        ValueError: the first option out of range or unknown, named in the message.
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if epsilon is not None and not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon is a quantile in [0, 1] (or None), got {epsilon!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose from {AGGREGATIONS}")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose from {KERNELS}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    min_similarity = MIN_SIMILARITY[aggregation] if min_similarity is None else min_similarity
    if not -1 <= min_similarity <= 1:
        raise ValueError(f"min_similarity must lie in [-1, 1], got {min_similarity!r}")
    if not isinstance(top_matches, int) or top_matches < 1:
        raise ValueError(f"top_matches must be a positive int, got {top_matches!r}")
    if token_repr not in TOKEN_REPRS:
        raise ValueError(f"unknown token_repr {token_repr!r}; choose from {TOKEN_REPRS}")
    return float(min_similarity)


def base_method(
    clf: TextClassifier,
    base: str,
    *,
    reduction: str = BUILD_DEFAULTS["reduction"],
    n_samples: int = BUILD_DEFAULTS["n_samples"],
    noise: float = BUILD_DEFAULTS["noise"],
    seed: int = 0,
) -> Attributor:
    """The base saliency ``base`` with LAFA's base options (what LAFA with ``k = 0`` equals).

    It is the comparison registry's method of the same name with these options.

    Args:
        clf: the classifier bundle.
        base: one of :data:`BASES`.
        reduction: the hidden-dimension reduction
            (:data:`~captum_layer_saliency.attr.reductions.REDUCTIONS`; ``saliency`` calls it
            ``norm`` and takes ``"l1"``, ``"l2"`` or ``"squared_l2"``).
        n_samples: SmoothGrad's samples.
        noise: SmoothGrad's relative noise.
        seed: the method's seed.

    Returns:
        The base, a token attributor: ``attribute(input_ids, attention_mask, target)`` gives
        ``(batch, seq)`` scores.

    Raises:
        ValueError: an unknown base or an option it does not take.
    """
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; choose from {BASES}")
    if base == "saliency":
        return SaliencyAttributor(clf, seed=seed, norm=reduction)
    if base == "smoothgrad":
        return SmoothGradAttributor(
            clf, seed=seed, reduction=reduction, n_samples=n_samples, noise=noise
        )
    if base == "input_x_gradient":
        return InputXGradientAttributor(clf, seed=seed, reduction=reduction)
    return IntegratedGradientsAttributor(clf, seed=seed, reduction=reduction)


def neighbour_index(
    clf: TextClassifier,
    reference_texts: Sequence[str],
    *,
    neighbours: str = BUILD_DEFAULTS["neighbours"],
    layer: int = BUILD_DEFAULTS["layer"],
    pooling: str = BUILD_DEFAULTS["pooling"],
    encoder: Any = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> tuple[LayerIndex | NeighbourIndex, Any]:
    """Index the reference texts, once per corpus, model and layer (kept in the user cache).

    Args:
        clf: the classifier bundle.
        reference_texts: the unlabelled reference corpus.
        neighbours: ``"layer"`` (the paper: a hidden layer of ``clf``'s model, by L2) or
            ``"encoder"`` (an external sentence encoder, by cosine).
        layer: the hidden layer of a ``"layer"`` index (0 = embeddings, ``L`` = block ``L``).
        pooling: ``"mean"`` or ``"cls"``
            (:data:`~captum_layer_saliency.attr.layer_index.POOLINGS`).
        encoder: the sentence encoder of an ``"encoder"`` index (default all-MiniLM-L6-v2).
        cache_dir: the cache root (default ``$CAPTUM_LAYER_SALIENCY_CACHE``).
        progress: show a progress bar while building.

    Returns:
        ``(index, encoder)``: the encoder is None for a ``"layer"`` index unless given.

    Raises:
        ValueError: an unknown ``neighbours``, or an empty corpus.
    """
    if neighbours not in NEIGHBOUR_SOURCES:
        raise ValueError(f"unknown neighbours {neighbours!r}; choose from {NEIGHBOUR_SOURCES}")
    if neighbours == "layer":
        index = cached_layer_index(
            clf.model,
            clf.tokenizer,
            reference_texts,
            layer=layer,
            pooling=pooling,
            max_length=clf.max_length,
            cache_dir=cache_dir,
            progress=progress,
        )
        return index, encoder
    encoder = encoder if encoder is not None else default_encoder()
    return cached_index(reference_texts, encoder, cache_dir=cache_dir, progress=progress), encoder
