"""Building LAFA in one line, and its entry (``lafa``) in the comparison harness's registry.

:func:`lafa_for_model` assembles :class:`~captum_layer_saliency.attr.lafa.LAFA` from a
classifier: the base saliency from the registry (so ``k = 0`` is exactly that registry method
with the same options), the neighbour index from the classifier's own hidden layer
(:func:`~captum_layer_saliency.attr.layer_index.cached_layer_index`, cached and resumable) or, with
``neighbours="encoder"``, this project's first variant (an external sentence encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from captum_layer_saliency.attr.lafa import DEFAULTS, LAFA
from captum_layer_saliency.attr.layer_index import cached_layer_index
from captum_layer_saliency.compare.methods.registry import (
    GRADIENT,
    ExplainerAttributor,
    MethodSpec,
    get_method,
    register_method,
)
from captum_layer_saliency.models.classifier import TextClassifier

__all__ = [
    "BASES",
    "FACTORY_DEFAULTS",
    "NEIGHBOUR_SOURCES",
    "base_method",
    "lafa_factory",
    "lafa_for_model",
    "register_lafa",
]

#: Registry methods LAFA can smooth; each is reduced by ``reduction`` over the hidden dim.
BASES = ("smoothgrad", "saliency", "input_x_gradient", "integrated_gradients")
#: Where the neighbours come from: a hidden layer of the classifier (the paper) or an external
#: sentence encoder (all-MiniLM-L6-v2; this project's first variant).
NEIGHBOUR_SOURCES = ("layer", "encoder")
#: The paper's choices for what the constructor does not hold: SmoothGrad, the sum of squares,
#: 25 samples (its SST setting), a middle layer (it recommends DistilBERT's layer 2 of 6 for
#: SST; ours has 6 too), the training texts as reference corpus.
FACTORY_DEFAULTS: dict[str, Any] = {
    "base": "smoothgrad",
    "reduction": "squared_l2",
    "n_samples": 25,
    "noise": 0.1,
    "neighbours": "layer",
    "layer": 2,
    "pooling": "mean",
    "corpus_size": 5000,
}


def base_method(
    clf: TextClassifier,
    base: str,
    *,
    reduction: str = FACTORY_DEFAULTS["reduction"],
    n_samples: int = FACTORY_DEFAULTS["n_samples"],
    noise: float = FACTORY_DEFAULTS["noise"],
    seed: int = 0,
) -> Any:
    """The registry method ``base`` with LAFA's base options (what LAFA with ``k = 0`` equals).

    Args:
        clf: the classifier bundle.
        base: one of :data:`BASES`.
        reduction: the hidden-dimension reduction
            (:data:`~captum_layer_saliency.attr.reductions.REDUCTIONS`; ``saliency`` calls it
            ``norm`` and takes ``"l1"``, ``"l2"`` or ``"squared_l2"``).
        n_samples: SmoothGrad's samples.
        noise: SmoothGrad's relative noise.
        seed: the method's seed.

    Raises:
        ValueError: an unknown base or an option it does not take.
    """
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; choose from {BASES}")
    if base == "saliency":
        return get_method(base, clf, seed=seed, norm=reduction)
    if base == "smoothgrad":
        return get_method(
            base, clf, seed=seed, reduction=reduction, n_samples=n_samples, noise=noise
        )
    return get_method(base, clf, seed=seed, reduction=reduction)


def lafa_for_model(
    clf: TextClassifier,
    reference_texts: Sequence[str] | None = None,
    *,
    task: str | None = None,
    base: str | Any = FACTORY_DEFAULTS["base"],
    reduction: str = FACTORY_DEFAULTS["reduction"],
    n_samples: int = FACTORY_DEFAULTS["n_samples"],
    noise: float = FACTORY_DEFAULTS["noise"],
    neighbours: str = FACTORY_DEFAULTS["neighbours"],
    layer: int = FACTORY_DEFAULTS["layer"],
    pooling: str = FACTORY_DEFAULTS["pooling"],
    corpus_size: int | None = FACTORY_DEFAULTS["corpus_size"],
    index: Any = None,
    encoder: Any = None,
    cache_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> LAFA:
    """Build LAFA for a Hugging Face classifier in one line.

    The reference corpus is ``reference_texts``, else the default corpus of ``task``
    (:func:`~captum_layer_saliency.attr.neighbours.default_corpus`: for ``"sst2"`` 5,000 training
    phrases of at least 4 words), else that of a default classifier's task.

    Args:
        clf: the classifier bundle (:func:`~captum_layer_saliency.zoo.load.load_default` or
            your own :class:`~captum_layer_saliency.models.classifier.TextClassifier`).
        reference_texts: unlabelled reference texts.
        task: ``"sst2"``, ``"ag_news"`` or ``"hatexplain"``, for the default corpus.
        base: a name of :data:`BASES`, or any attributor.
        reduction, n_samples, noise: the base's options (:func:`base_method`).
        neighbours: ``"layer"`` (the paper) or ``"encoder"`` (all-MiniLM-L6-v2 cosine).
        layer: the hidden layer of the index (0 = embeddings, ``L`` = block ``L``).
        pooling: ``"mean"`` or ``"cls"`` (:data:`~captum_layer_saliency.attr.layer_index.POOLINGS`).
        corpus_size: the most texts of a task's default corpus.
        index: a prebuilt :class:`~captum_layer_saliency.attr.layer_index.LayerIndex` (then
            ``layer`` and ``pooling`` are the index's) or
            :class:`~captum_layer_saliency.attr.neighbours.NeighbourIndex` (with its ``encoder``),
            instead of building one.
        encoder: the sentence encoder for ``neighbours="encoder"`` (default all-MiniLM-L6-v2).
        cache_dir: the cache root for built indexes.
        seed: the base's seed.
        progress: show a progress bar while building an index.
        **options: LAFA's own options (``k``, ``epsilon``, ``same_class``, ``lam``,
            ``aggregation``, ``kernel``...; see :class:`LAFA`).

    Returns:
        The explainer.

    Raises:
        ValueError: no reference corpus can be found, or a bad option.
    """
    if neighbours not in NEIGHBOUR_SOURCES:
        raise ValueError(f"unknown neighbours {neighbours!r}; choose from {NEIGHBOUR_SOURCES}")
    if isinstance(base, str):
        base = base_method(
            clf, base, reduction=reduction, n_samples=n_samples, noise=noise, seed=seed
        )
    if options.get("token_repr") == "contextual":
        from captum_layer_saliency.models.surgery import find_model_parts

        options.setdefault("repr_layer", find_model_parts(clf.model).layers[-1])
    if index is not None:
        return LAFA(
            clf.model,
            clf.tokenizer,
            base,
            index,
            encoder=encoder,
            max_length=clf.max_length,
            **options,
        )
    if reference_texts is None:
        from captum_layer_saliency.attr.neighbours import default_corpus, default_task_of

        task = task or default_task_of(clf)
        if task is None:
            raise ValueError(
                f"LAFA needs a reference corpus for {clf.name!r}: pass reference_texts= or "
                "task='sst2'|'ag_news'|'hatexplain'"
            )
        reference_texts = default_corpus(task, corpus_size)
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
    else:
        from captum_layer_saliency.attr.neighbours import cached_index, default_encoder

        encoder = encoder if encoder is not None else default_encoder()
        index = cached_index(reference_texts, encoder, cache_dir=cache_dir, progress=progress)
    return LAFA(
        clf.model,
        clf.tokenizer,
        base,
        index,
        encoder=encoder,
        max_length=clf.max_length,
        **options,
    )


def lafa_factory(
    clf: TextClassifier,
    *,
    seed: int = 0,
    k: int = DEFAULTS["k"],
    epsilon: float | None = DEFAULTS["epsilon"],
    same_class: bool = DEFAULTS["same_class"],
    lam: float = DEFAULTS["lam"],
    aggregation: str = DEFAULTS["aggregation"],
    kernel: str = DEFAULTS["kernel"],
    sigma: float = DEFAULTS["sigma"],
    min_similarity: float | None = DEFAULTS["min_similarity"],
    top_matches: int = DEFAULTS["top_matches"],
    token_repr: str = DEFAULTS["token_repr"],
    base: str = FACTORY_DEFAULTS["base"],
    reduction: str = FACTORY_DEFAULTS["reduction"],
    n_samples: int = FACTORY_DEFAULTS["n_samples"],
    noise: float = FACTORY_DEFAULTS["noise"],
    neighbours: str = FACTORY_DEFAULTS["neighbours"],
    layer: int = FACTORY_DEFAULTS["layer"],
    pooling: str = FACTORY_DEFAULTS["pooling"],
    task: str | None = None,
    reference_texts: Sequence[str] | None = None,
    corpus_size: int | None = FACTORY_DEFAULTS["corpus_size"],
    index: Any = None,
    encoder: Any = None,
) -> Any:
    """LAFA for the comparison harness (registry name ``lafa``); options as
    :func:`lafa_for_model` and :class:`LAFA`.

    Returns:
        The attributor (an
        :class:`~captum_layer_saliency.compare.methods.registry.ExplainerAttributor`).
    """
    explainer = lafa_for_model(
        clf,
        reference_texts,
        task=task,
        base=base,
        reduction=reduction,
        n_samples=n_samples,
        noise=noise,
        neighbours=neighbours,
        layer=layer,
        pooling=pooling,
        corpus_size=corpus_size,
        index=index,
        encoder=encoder,
        seed=seed,
        k=k,
        epsilon=epsilon,
        same_class=same_class,
        lam=lam,
        aggregation=aggregation,
        kernel=kernel,
        sigma=sigma,
        min_similarity=min_similarity,
        top_matches=top_matches,
        token_repr=token_repr,
    )
    return ExplainerAttributor(
        clf,
        explainer,
        seed=seed,
        k=k,
        epsilon=epsilon,
        same_class=same_class,
        lam=lam,
        aggregation=aggregation,
        kernel=kernel,
        base=base,
        reduction=reduction,
        neighbours=neighbours,
        layer=layer,
        corpus=len(explainer.index),
    )


LAFA_NOTES = (
    "Needs a reference corpus (default: the task's training texts, encoded once by the "
    "classifier's own hidden layer and cached); each example costs its base method on itself "
    "plus, once per reference text used, on up to k neighbours."
)


def register_lafa() -> None:
    """Register (or re-register) ``lafa`` in the baselines registry with its full signature."""
    register_method(
        MethodSpec(
            "lafa",
            "LAFA: a base saliency smoothed over k neighbours in the model's own hidden layer",
            lafa_factory,
            GRADIENT,
            LAFA_NOTES,
        )
    )
