"""LAFA's settings and the parts it is built from (:class:`~captum_layer_saliency.attr.lafa.LAFA`).

* :class:`LAFAConfig`: every setting, the paper's by default, checked when built;
  :data:`DEFAULTS` (the explainer's own settings) and :data:`BUILD_DEFAULTS` (the base saliency,
  where the neighbours come from) are read from it.
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
from dataclasses import dataclass, fields
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
    "LAFAConfig",
    "MIN_SIMILARITY",
    "NEIGHBOUR_SOURCES",
    "TOKEN_REPRS",
    "base_method",
    "check_options",
    "neighbour_index",
]

#: The settings of what LAFA is built from, not of the explainer itself.
_BUILD_FIELDS = ("base", "reduction", "n_samples", "noise", "neighbours", "layer", "pooling")
#: Token representations for the ``weighted_mean`` kernel: word embeddings or a layer's states.
TOKEN_REPRS = ("embedding", "contextual")
#: The default ``min_similarity`` of each aggregation.
MIN_SIMILARITY = {"paper": 0.999, "weighted_mean": 0.5}

#: Base saliencies LAFA can smooth by name; each is reduced by ``reduction`` over the hidden dim.
BASES = ("smoothgrad", "saliency", "input_x_gradient", "integrated_gradients")
#: Where the neighbours come from: a hidden layer of the classifier (the paper) or an external
#: sentence encoder (all-MiniLM-L6-v2; this project's first variant).
NEIGHBOUR_SOURCES = ("layer", "encoder")


@dataclass(frozen=True)
class LAFAConfig:
    """LAFA's settings: the one source of its defaults, which are the paper's.

    The explainer's own settings are Zhang et al.'s for SST (2022, section 5): 10 neighbours,
    the cut-off at the 0.39 quantile, lambda = 0.44, an indicator-like kernel on word
    embeddings, same class. What the constructor does not hold is the paper's choice too:
    SmoothGrad reduced by the sum of squares, 25 samples (its SST setting), neighbours in a
    middle layer (it recommends DistilBERT's layer 2 of 6 for SST; ours has 6 too), mean
    pooling. Building one checks every setting (``ValueError`` naming the first one out of
    range); an explainer's own is its ``config`` attribute.

    Attributes:
        k: the most neighbours per input (0 gives the base).
        epsilon: the cut-off quantile in ``[0, 1]``, or None.
        same_class: only neighbours the model puts in the explained class.
        aggregation: ``"paper"`` or ``"weighted_mean"``.
        lam: lambda of ``"paper"`` (0 gives the base).
        kernel: ``"indicator"`` or ``"exp"``.
        sigma: the width of the ``"exp"`` kernel and of ``"weighted_mean"``.
        min_similarity: the least cosine between two tokens that counts; None for the
            aggregation's default (:data:`MIN_SIMILARITY`; resolved in
            :attr:`resolved_min_similarity`).
        top_matches: tokens of each neighbour matched per input token (``"weighted_mean"``).
        token_repr: ``"embedding"`` or ``"contextual"`` (``"weighted_mean"``).
        base: the base saliency, one of :data:`BASES`.
        reduction: the base's hidden-dimension reduction.
        n_samples: SmoothGrad's samples.
        noise: SmoothGrad's relative noise.
        neighbours: one of :data:`NEIGHBOUR_SOURCES`.
        layer: the hidden layer of a ``"layer"`` index (0 = embeddings).
        pooling: ``"mean"`` or ``"cls"``.

    Examples::

        >>> from captum_layer_saliency.attr.lafa_setup import LAFAConfig
        >>> LAFAConfig().k, LAFAConfig().resolved_min_similarity
        (10, 0.999)
        >>> LAFAConfig(k=-1)
        Traceback (most recent call last):
        ...
        ValueError: k must be a non-negative int, got -1
    """

    k: int = 10
    epsilon: float | None = 0.39
    same_class: bool = True
    aggregation: str = "paper"
    lam: float = 0.44
    kernel: str = "indicator"
    sigma: float = 0.1
    min_similarity: float | None = None
    top_matches: int = 1
    token_repr: str = "embedding"
    base: str = "smoothgrad"
    reduction: str = "squared_l2"
    n_samples: int = 25
    noise: float = 0.1
    neighbours: str = "layer"
    layer: int = 2
    pooling: str = "mean"

    def __post_init__(self) -> None:
        """Check every setting; the first out of range is named in a ``ValueError``."""
        k, epsilon = self.k, self.epsilon
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        if epsilon is not None and not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon is a quantile in [0, 1] (or None), got {epsilon!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {self.aggregation!r}; choose from {AGGREGATIONS}"
            )
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; choose from {KERNELS}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma!r}")
        if not -1 <= self.resolved_min_similarity <= 1:
            raise ValueError(f"min_similarity must lie in [-1, 1], got {self.min_similarity!r}")
        if not isinstance(self.top_matches, int) or self.top_matches < 1:
            raise ValueError(f"top_matches must be a positive int, got {self.top_matches!r}")
        if self.token_repr not in TOKEN_REPRS:
            raise ValueError(f"unknown token_repr {self.token_repr!r}; choose from {TOKEN_REPRS}")
        if self.base not in (*BASES, "custom"):
            raise ValueError(f"unknown base {self.base!r}; choose from {BASES}")
        if self.neighbours not in NEIGHBOUR_SOURCES:
            raise ValueError(
                f"unknown neighbours {self.neighbours!r}; choose from {NEIGHBOUR_SOURCES}"
            )

    @property
    def resolved_min_similarity(self) -> float:
        """``min_similarity``, or the aggregation's default when it is None."""
        if self.min_similarity is None:
            return MIN_SIMILARITY[self.aggregation]
        return float(self.min_similarity)


#: The explainer's own settings (the constructor's keyword arguments), from :class:`LAFAConfig`.
DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(LAFAConfig) if f.name not in _BUILD_FIELDS
}
#: What the constructor does not hold (the base saliency, where the neighbours come from).
BUILD_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(LAFAConfig) if f.name in _BUILD_FIELDS
}


def check_options(**options: Any) -> float:
    """Check LAFA's options (:class:`LAFAConfig`'s, by keyword).

    Returns:
        ``min_similarity``, resolved (:data:`MIN_SIMILARITY` when None).

    Raises:
        ValueError: the first option out of range or unknown, named in the message.
    """
    return LAFAConfig(**options).resolved_min_similarity


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
