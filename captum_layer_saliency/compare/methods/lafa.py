"""LAFA in the comparison harness: its registry entry (``lafa``), and LAFA on a default corpus.

:func:`lafa_for_model` is :meth:`~captum_layer_saliency.attr.lafa.LAFA.for_classifier` plus a
default reference corpus: the training texts of the task named by ``task=``, or of the
task a default model records (:func:`~captum_layer_saliency.compare.methods.ours.model_task`).
The base saliency comes from :mod:`captum_layer_saliency.attr` (``k = 0`` is exactly the registry
method of the same name with the same options); the neighbour index from the classifier's own
hidden layer (cached and resumable) or, with ``neighbours="encoder"``, this project's first
variant (an external sentence encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from captum_layer_saliency.attr.lafa import LAFA
from captum_layer_saliency.attr.lafa_setup import BASES, BUILD_DEFAULTS, DEFAULTS, base_method
from captum_layer_saliency.compare.methods._spec import GRADIENT, MethodSpec, SpecList
from captum_layer_saliency.compare.methods.ours import ExplainerAttributor, model_task
from captum_layer_saliency.data import corpora
from captum_layer_saliency.models.classifier import TextClassifier

__all__ = [
    "BASES",
    "FACTORY_DEFAULTS",
    "LAFA_NOTES",
    "SPECS",
    "base_method",
    "lafa_factory",
    "lafa_for_model",
]

#: The registry's defaults for how LAFA is built: the paper's choices
#: (:data:`~captum_layer_saliency.attr.lafa_setup.BUILD_DEFAULTS`) and the size of a task's
#: default reference corpus.
FACTORY_DEFAULTS: dict[str, Any] = {
    **BUILD_DEFAULTS,
    "corpus_size": corpora.DEFAULT_CORPUS_SIZE,
}


def lafa_for_model(
    clf: TextClassifier,
    reference_texts: Sequence[str] | None = None,
    *,
    task: str | None = None,
    corpus_size: int | None = FACTORY_DEFAULTS["corpus_size"],
    index: Any = None,
    **options: Any,
) -> LAFA:
    """Build LAFA for a classifier in one line, on a task's default reference corpus if need be.

    The reference corpus is ``reference_texts``, else the default corpus of ``task``
    (:func:`~captum_layer_saliency.data.corpora.default_corpus`: for ``"sst2"`` 5,000 training
    phrases of at least 4 words), else that of the task a default model records.

    Args:
        clf: the classifier bundle (:func:`~captum_layer_saliency.zoo.load.load_default` or
            your own :class:`~captum_layer_saliency.models.classifier.TextClassifier`).
        reference_texts: unlabelled reference texts.
        task: ``"sst2"``, ``"ag_news"`` or ``"hatexplain"``, for the default corpus.
        corpus_size: the most texts of a task's default corpus.
        index: a prebuilt neighbour index, instead of a corpus (see
            :meth:`~captum_layer_saliency.attr.lafa.LAFA.for_classifier`).
        **options: the other options of
            :meth:`~captum_layer_saliency.attr.lafa.LAFA.for_classifier` (the base, the
            neighbours' source and layer, ``cache_dir``, ``seed``, ``progress``) and LAFA's
            own (``k``, ``epsilon``, ``same_class``, ``lam``, ``aggregation``...).

    Returns:
        The explainer.

    Raises:
        ValueError: no reference corpus can be found (no texts, no index, no known task), or
            a bad option.
    """
    if reference_texts is None and index is None:
        task = task or model_task(clf)
        if task is None:
            raise ValueError(
                f"LAFA needs a reference corpus for {clf.name!r}: pass reference_texts= or "
                "task='sst2'|'ag_news'|'hatexplain'"
            )
        reference_texts = corpora.default_corpus(task, corpus_size)
    return LAFA.for_classifier(clf, reference_texts, index=index, **options)


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
    """LAFA for the comparison harness (registry name ``lafa``).

    LAFA's own options are those of :class:`~captum_layer_saliency.attr.lafa.LAFA`; how it is
    built, those of :meth:`~captum_layer_saliency.attr.lafa.LAFA.for_classifier`; the corpus,
    those of :func:`lafa_for_model`.

    Args:
        clf: the classifier bundle.
        seed: the base's seed.
        k: the most neighbours per input (0: the base).
        epsilon: the neighbours' cut-off, a quantile of the pairwise distances (None: none).
        same_class: only neighbours the model puts in the explained class.
        lam: the weight of the neighbours' term (``"paper"``; 0: the base).
        aggregation: ``"paper"`` or ``"weighted_mean"``.
        kernel: ``"indicator"`` or ``"exp"`` on word embeddings (``"paper"``).
        sigma: the kernel's width.
        min_similarity: the least cosine between two tokens that counts.
        top_matches: tokens of each neighbour matched per token (``"weighted_mean"``).
        token_repr: ``"embedding"`` or ``"contextual"`` (``"weighted_mean"``).
        base: the base saliency's name.
        reduction: the base's hidden-dimension reduction.
        n_samples: SmoothGrad's samples.
        noise: SmoothGrad's relative noise.
        neighbours: ``"layer"`` or ``"encoder"``.
        layer: the hidden layer of the index.
        pooling: ``"mean"`` or ``"cls"``.
        task: the task whose default corpus is the reference corpus.
        reference_texts: the reference corpus.
        corpus_size: the most texts of a task's default corpus.
        index: a prebuilt neighbour index.
        encoder: the sentence encoder of ``neighbours="encoder"``.

    Returns:
        The attributor, an
        :class:`~captum_layer_saliency.compare.methods.ours.ExplainerAttributor`.
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


#: LAFA's registry entry.
SPECS: SpecList = [
    (
        MethodSpec(
            "lafa",
            "LAFA: a base saliency smoothed over k neighbours in the model's own hidden layer",
            lafa_factory,
            GRADIENT,
            LAFA_NOTES,
        ),
        ("locally_aggregated_feature_attribution",),
    ),
]
