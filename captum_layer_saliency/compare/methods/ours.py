"""This project's methods in the registry: DLS, and the adapter every explainer goes through.

Decoded Layer Saliency is listed as ``dls``, ``dls_gradient``, ``dls_ig``, ``dls_lrp`` and
``dls_layer<L>``.

:class:`ExplainerAttributor` turns an explainer with ``attribute(ids, target=, attention_mask=)``
(DLS, LAFA) into a :class:`~captum_layer_saliency.models.classifier.TokenAttributor`, and makes
DLS's one-off layer choice before a run (:meth:`ExplainerAttributor.prepare`). A default model's
task (which reference corpus calibrates DLS and feeds LAFA) is read from the model's config,
where :func:`~captum_layer_saliency.zoo.load.load_default` records it (:func:`model_task`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.attr.attributor import Attributor
from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.compare.methods._spec import LAYER, MethodSpec, SpecList
from captum_layer_saliency.compare.methods.attnlrp import attnlrp_model
from captum_layer_saliency.compare.methods.gim import check_copy
from captum_layer_saliency.data import corpora
from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.classifier import (
    TextClassifier,
    TokenAttributor,
    classifier_forward,
)
from captum_layer_saliency.models.surgery import find_model_parts

__all__ = [
    "DLS_CALIBRATION_TEXTS",
    "SPECS",
    "TASK_KEY",
    "ExplainerAttributor",
    "dls_factory",
    "dls_lrp_factory",
    "model_task",
]

#: The config attribute in which ``load_default`` records a default model's task.
TASK_KEY = "dls_default_task"


def model_task(clf: TextClassifier) -> str | None:
    """The task a default model was trained for, as ``load_default`` records it.

    Args:
        clf: the classifier bundle.

    Returns:
        ``clf.model.config.dls_default_task`` (``"sst2"``, ``"ag_news"``, ``"hatexplain"``), or
        None for other models.
    """
    task = getattr(getattr(clf.model, "config", None), TASK_KEY, None)
    return task if isinstance(task, str) else None


class ExplainerAttributor(Attributor):
    """Adapts an explainer (DLS, LAFA) to :class:`TokenAttributor`.

    The explainer is called as ``attribute(ids, target=, attention_mask=, **model_inputs)``.
    """

    def __init__(self, clf: TextClassifier, explainer: Any, seed: int = 0, **options: Any) -> None:
        """Wrap ``explainer``.

        Args:
            clf: the classifier bundle.
            explainer: DLS, LAFA, or any explainer called like them.
            seed: recorded for reports.
            **options: the explainer's settings, for reports.
        """
        super().__init__(clf, seed, **options)
        self.explainer = explainer
        #: ``(task, n)``: calibrate DLS's layer on ``n`` unlabelled training texts of ``task``
        #: (DLS's built-in general-English texts when ``task`` is None); set by :func:`dls_factory`.
        self.calibration_source: tuple[str | None, int] | None = None
        #: The copy of the model the explainer runs on, if not the classifier's own model (set by
        #: :func:`dls_lrp_factory`): its passes are booked to the user's model's pass counter.
        self.copy: nn.Module | None = None

    def prepare(self, texts: Sequence[str]) -> dict[str, Any] | None:
        """Make the explainer's one-off choice before its first explanation, and describe it.

        For DLS with ``selection="model"``: a layer selection stored with the model is used as
        it is (no cost); otherwise the layer is calibrated, label-free, on the task's training
        texts (default models) or on DLS's built-in general-English texts (never on ``texts``,
        the texts to explain, so a map does not depend on the other texts of the run), as
        ``DecodedLayerSaliency.calibrate`` does. Called by the comparison once it knows rows
        remain to compute, so a finished run never calibrates.

        Args:
            texts: the run's texts, in order.

        Returns:
            The selection (layer, names, per-layer coherence, calibration) plus
            ``calibration_seconds`` (0 for a stored selection), or None for other explainers.
        """
        explainer = self.explainer
        if not hasattr(explainer, "calibrate") or getattr(explainer, "selector", None) is None:
            return None
        seconds = 0.0
        if explainer.selection_ is None and self.calibration_source is not None:
            task, n = self.calibration_source
            # Never the texts being explained: the layer is the model's, not the run's.
            chosen = corpora.default_corpus(task, size=n) if task is not None else None
            start = time.perf_counter()
            with torch.enable_grad():
                fitted = explainer.calibrate(chosen, tokenizer=self.clf.tokenizer)
            seconds = time.perf_counter() - start
            if chosen is not None:
                fitted.calibration = (
                    f"{len(chosen)} unlabelled {task} training texts "
                    f"({fitted.n_positions} word tokens)"
                )
        selection = explainer.selection_
        if selection is None:
            return None
        return {**selection.to_dict(), "name": selection.name, "calibration_seconds": seconds}

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        counter = None
        with ExitStack() as stack:
            stack.enter_context(torch.enable_grad())
            if self.copy is not None and _passes.LISTENERS.get():  # a counter on the user's model
                counter = stack.enter_context(_passes.PassCounter(self.copy, listen=False))
            result = self.explainer.attribute(
                input_ids, target=target, attention_mask=attention_mask, **self._inputs
            )
        if counter is not None:
            _passes.report_passes(counter.forwards, counter.backwards)
        if isinstance(result, (list, tuple)):
            # One map per candidate layer (several layers and no selector): not a token score.
            if len(result) != 1:
                raise ValueError(
                    f"DLS returned {len(result)} maps (one per layer); give one layer or a selector"
                )
            result = result[0]
        scores: Tensor = result
        return scores


#: Unlabelled texts the ``dls`` method fits its layer selector on, where the model stores no
#: choice: 256 SST-2 training phrases hold about 3,600 word tokens, above the 2,000 DLS asks of
#: explicit calibration texts (128 held 1,708; ``DEFAULT_CALIBRATION_TOKENS``).
DLS_CALIBRATION_TEXTS = 256


def dls_factory(
    clf: TextClassifier,
    layer: int | None = None,
    *,
    seed: int = 0,
    calibration: int = DLS_CALIBRATION_TEXTS,
    task: str | None = None,
    **options: Any,
) -> TokenAttributor:
    """Decoded Layer Saliency, at its defaults or fixed at one layer.

    For the default models, the layer selector is fitted once, label-free, on ``calibration``
    unlabelled training texts of the model's task (the task's default reference corpus,
    :func:`~captum_layer_saliency.data.corpora.default_corpus`), so each explanation runs one
    layer; for other models on DLS's built-in general-English texts, and with
    ``calibration=0`` it selects per example, online, which decodes every candidate layer.

    Args:
        clf: the classifier bundle; ``clf.lm_head`` is the decoding head.
        layer: an index into DLS's candidate layers ``[embeddings, block 1, ..., block L]``
            (so ``dls_layer3`` is the output of block 3, "layer 3" in DLS's layer names), used
            alone with no selector; or None for DLS's default.
        seed: recorded for reports; DLS itself is deterministic.
        calibration: how many unlabelled texts fit the selector (0: select online).
        task: the task whose training texts fit the selector; default: the task a default
            model records (:func:`model_task`), else DLS's built-in texts.
        **options: passed to ``DecodedLayerSaliency.for_model``.

    Returns:
        The attributor.

    Raises:
        ValueError: ``clf`` has no LM head, or ``layer`` is out of range.
    """
    if clf.lm_head is None:
        raise ValueError(
            f"DLS decodes with the pre-trained LM head and {clf.name!r} has none: set "
            "clf.lm_head = load_lm_head(...) (or --lm-head DIR on the command line)"
        )
    if layer is not None:
        layers = find_model_parts(clf.model).layers
        if not 0 <= layer < len(layers):
            raise ValueError(
                f"dls_layer{layer}: the model has layers 0..{len(layers) - 1} "
                "(0 = embeddings, L = block L)"
            )
        # A bare module (not a list) makes DLS return one tensor rather than a list of one.
        options["layers"] = layers[layer]
    explainer = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, tokenizer=clf.tokenizer, **options
    )
    recorded = {k: v for k, v in options.items() if k != "layers"}
    attributor = ExplainerAttributor(clf, explainer, seed=seed, layer=layer, **recorded)
    if layer is None and calibration > 0:
        attributor.calibration_source = (task or model_task(clf), calibration)
    return attributor


def dls_lrp_factory(
    clf: TextClassifier, layer: int | None = None, **options: Any
) -> TokenAttributor:
    """DLS through AttnLRP's backward: gradient × activation at DLS's layer, on AttnLRP's copy.

    DLS with ``layer_method="gradient"`` built on
    :func:`~captum_layer_saliency.compare.methods.attnlrp.attnlrp_model`'s copy of the model, so
    the gradient that reaches DLS's layer comes back through AttnLRP's rules in the blocks above
    it (frozen norms, the attention's products split, the identity rule on activations) and the
    layer's gradient × activation is AttnLRP's relevance there, mapped to the tokens as DLS maps
    it. The layer is DLS's (the model's stored selection, or the same label-free calibration as
    ``dls``). One forward and one backward above the layer, as ``dls_gradient``; the user's model
    is never changed (the copy is made once, here). AttnLRP's patent notice applies.

    Args:
        clf: the classifier bundle; ``clf.lm_head`` is the decoding head.
        layer: a fixed layer, as for :func:`dls_factory`; None for DLS's choice.
        **options: :func:`dls_factory`'s options (``seed``, ``calibration``, ``task``: the copy
            records the model's task) and ``DecodedLayerSaliency.for_model``'s
            (``layer_method`` defaults to ``"gradient"``).

    Returns:
        The attributor; its ``copy`` is the AttnLRP copy (its passes are booked).

    Raises:
        ValueError: as :func:`dls_factory`.
        UnsupportedModelError: a family AttnLRP's rules cannot be applied to.
    """
    twin = attnlrp_model(clf.model)
    check_copy(clf, twin, classifier_forward(twin, clf.tokenizer), "dls_lrp")
    options.setdefault("layer_method", "gradient")
    attributor = dls_factory(dataclasses.replace(clf, model=twin), layer, **options)
    assert isinstance(attributor, ExplainerAttributor)
    attributor.copy = twin
    return attributor


#: The methods of this project, in the order they are listed (``lafa`` follows, from
#: :mod:`captum_layer_saliency.compare.methods.lafa`).
SPECS: SpecList = [
    (
        MethodSpec(
            "dls",
            "Decoded Layer Saliency at its defaults (integrated gradients at its layer, 1 step)",
            dls_factory,
            LAYER,
        ),
        ("decoded_layer_saliency",),
    ),
    (
        MethodSpec(
            "dls_gradient",
            "DLS with the paper's gradient x activation at its layer",
            functools.partial(dls_factory, layer_method="gradient"),
            LAYER,
            "one forward and one backward per example (the default before integrated gradients)",
        ),
        ("dls_grad_x_act",),
    ),
    (
        MethodSpec(
            "dls_ig",
            "DLS with integrated gradients at its layer (2 steps, PAD baseline)",
            functools.partial(dls_factory, layer_method="integrated_gradients", n_steps=2),
            LAYER,
            "steps run only the blocks above the layer: about 2.2 forwards and 0.33 "
            "backwards per example at block 5 of 6",
        ),
        ("dls_integrated_gradients",),
    ),
    (
        MethodSpec(
            "dls_lrp",
            "DLS through AttnLRP's backward: gradient x activation at its layer, AttnLRP's "
            "rules above it (LRP is patented: free for personal and scientific use)",
            functools.partial(dls_lrp_factory, layer_method="gradient"),
            LAYER,
            "runs on AttnLRP's copy of the model (the rules of attnlrp); one forward and one "
            "backward above the layer per example, as dls_gradient",
        ),
        ("dls_attnlrp",),
    ),
]
