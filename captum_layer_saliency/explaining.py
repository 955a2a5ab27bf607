"""Explain texts with any registered method: :func:`explain` returns :class:`Explanation` objects.

This is the engine of ``captum-layer-saliency explain`` and the one-call path of the API::

    from captum_layer_saliency import explain, load_default

    clf = load_default("sst2")
    [e] = explain(clf, ["a gorgeous, witty, seductive movie."], words=True)
    e.top(3)                       # [('gorgeous', 0.41), ('witty', 0.30), ...]
    e.plot(save="movie.png")       # red = for the explained class, blue = against
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency._options import DEFAULT_TRUNCATION
from captum_layer_saliency.errors import ModelOutputError
from captum_layer_saliency.models.classifier import USER_TEXT, TextClassifier
from captum_layer_saliency.models.label_sets import attribute_targets
from captum_layer_saliency.models.targets import (
    class_index,
    explained_log_probability,
    log_probabilities,
    predicted_target,
    target_list,
)
from captum_layer_saliency.models.words import REDUCTIONS, aggregate_to_words
from captum_layer_saliency.viz.explanation import Explanation

__all__ = [
    "explain",
    "explain_batch",
    "layers_used",
    "make_attributor",
    "prepare",
    "resolve_target",
    "target_specs",
]

TargetSpec = int | str | None


def resolve_target(target: TargetSpec, labels: Sequence[str], n_classes: int) -> int | None:
    """A class index from a user's target: ``None`` (the prediction), an index, or a name.

    Args:
        target: ``None``, an int, a string holding an int, or a label name (any case).
        labels: the model's class names.
        n_classes: the number of classes.

    Returns:
        The index, or ``None`` for "the predicted class".

    Raises:
        ValueError: an index out of range, or an unknown name (the message lists the names).
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"target must be a class index or a label name, got {target!r}")
    if isinstance(target, str):
        text = target.strip()
        by_name = {str(name).lower(): i for i, name in enumerate(labels)}
        if text.lower() in by_name:
            return by_name[text.lower()]
        try:
            target = int(text)
        except ValueError:
            names = ", ".join(repr(str(n)) for n in labels) or "(the model names none)"
            raise ValueError(
                f"unknown target {text!r}: give a class index 0..{n_classes - 1} or a label "
                f"name: {names}"
            ) from None
    index = class_index(target)
    if index is None:
        raise ValueError(
            f"target must be a class index (an int) or a label name, got {target!r} "
            f"({type(target).__name__}); floats are refused rather than truncated"
        )
    if not 0 <= index < n_classes:
        raise ValueError(f"target {index} is out of range: the model has {n_classes} classes")
    return index


def target_specs(target: Any, n: int) -> list[Any]:
    """One target per text: ``target`` repeated, or its items (a list, tuple, tensor or array).

    Args:
        target: ``None``, an int or a label name for every text; or a list/tuple, or a 1-D
            integer tensor/array, with one such per text.
        n: the number of texts.

    Returns:
        ``n`` targets, each checked later by :func:`resolve_target`.

    Raises:
        ValueError: a sequence of another length than the texts, or a tensor/array that is
            not 0-D or 1-D.
    """
    if hasattr(target, "shape") and hasattr(target, "tolist"):  # a tensor or a NumPy array
        if len(target.shape) == 0:
            return [target] * n
        if len(target.shape) != 1:
            raise ValueError(
                f"target has shape {tuple(target.shape)}: give one class index per text, "
                f"shape ({n},)"
            )
        if "float" in str(target.dtype) or "bool" in str(target.dtype):
            raise ValueError(f"target holds {target.dtype} values, not integer class indices")
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise ValueError(f"{len(target)} targets for {n} texts: give one per text")
        return list(target)
    return [target] * n


def _n_classes(clf: TextClassifier) -> int:
    config = getattr(clf.model, "config", None)
    return int(getattr(config, "num_labels", 0) or len(clf.labels))


def make_attributor(clf: TextClassifier, method: str = "dls", **options: Any) -> Any:
    """The registry's attributor for ``method`` (see ``list-methods``), built for ``clf``.

    Raises:
        ValueError: an unknown method, bad options, or DLS without an LM head.
    """
    from captum_layer_saliency.compare.methods.registry import get_method, resolve_method_name

    name = resolve_method_name(method)
    if (name == "dls" or name.startswith("dls_layer")) and clf.lm_head is None:
        raise ValueError(
            "DLS decodes with the LM head of the classifier's pre-trained backbone, and this "
            "model has none: give one (--lm-head DIR, or clf.lm_head = load_lm_head(...)), or "
            "choose another method"
        )
    return get_method(name, clf, **options)


def layers_used(attributor: Any, batch: int) -> list[str | None]:
    """The layer each example of the last batch was attributed at, when the method says.

    DLS records the index of the layer(s) it used per example (``last_selected_``: 0 =
    embeddings, ``l`` = block ``l``) and names them (``layer_name``: ``"block 5
    (bert.encoder.layer.4)"``); a DLS fixed at one layer has one name. The
    gradient methods record where they attribute (``"embeddings"``); the others give ``None``.
    """
    explainer = getattr(attributor, "explainer", None)
    names = list(getattr(explainer, "layer_names", None) or [])
    selected = getattr(explainer, "last_selected_", None)
    name_of = getattr(explainer, "layer_name", None)  # layer index -> "block 5 (path)"
    if callable(name_of) and selected is not None and len(selected) == batch:
        return [", ".join(name_of(i) for i in row) for row in selected]
    if names and selected is not None and len(selected) == batch:
        return [", ".join(names[i] for i in row if 0 <= i < len(names)) for row in selected]
    if len(names) == 1:
        return [names[0]] * batch
    chosen = getattr(getattr(explainer, "selection_", None), "name", None)
    if chosen:  # one layer chosen for the model
        return [str(chosen)] * batch
    layer = getattr(attributor, "options", {}).get("layer")
    return [layer if isinstance(layer, str) else None] * batch


def prepare(attributor: Any, texts: Sequence[str]) -> None:
    """Let the attributor make its one-off choice before the first batch.

    DLS chooses its layer label-free for the model, calibrated on ``texts`` when it has nothing
    stored.

    Args:
        attributor: the attributor (one without a ``prepare`` method is left alone).
        texts: the texts about to be explained.
    """
    hook = getattr(attributor, "prepare", None)
    if callable(hook):
        with torch.enable_grad():
            hook(list(texts))


def _encode(
    clf: TextClassifier,
    texts: Sequence[str],
    pairs: Sequence[str | None] | None,
    max_length: int | None,
    truncation: str,
) -> dict[str, torch.Tensor]:
    if pairs is None or all(p is None for p in pairs):
        return clf.encode(list(texts), max_length=max_length, truncation=truncation)
    second = [p for p in pairs if p is not None]
    if len(second) != len(pairs):
        raise ValueError("either every text has a pair or none does (a missing pair text)")
    return clf.encode(list(texts), text_pairs=second, max_length=max_length, truncation=truncation)


def explain_batch(
    clf: TextClassifier,
    attributor: Any,
    texts: Sequence[str],
    *,
    method: str,
    text_pairs: Sequence[str | None] | None = None,
    target: TargetSpec | Sequence[TargetSpec] = None,
    words: str | None = None,
    max_length: int | None = None,
    truncation: str = DEFAULT_TRUNCATION,
    ids: Sequence[str | int | None] | None = None,
) -> list[Explanation]:
    """Explain one batch of texts (see :func:`explain` for the arguments).

    Args:
        clf: the classifier.
        attributor: a :class:`~captum_layer_saliency.compare.methods.registry.TokenAttributor`.
        texts: the batch.
        method: the method's canonical name (recorded).
        text_pairs: the second texts of pairs, or ``None``.
        target: as in :func:`explain`.
        words: a reduction in :data:`~captum_layer_saliency.models.words.REDUCTIONS`, or ``None``
        for
            token scores only.
        max_length: the token budget (default: the classifier's).
        truncation: ``"error"`` or ``"truncate"``.
        ids: one identifier per text (default: none).

    Returns:
        One explanation per text, in order.
    """
    from captum_layer_saliency._version import __version__

    n = len(texts)
    text_pairs = _pair_list(text_pairs, n)
    enc = _encode(clf, texts, text_pairs, max_length, truncation)
    input_ids, mask = enc["input_ids"], enc["attention_mask"]
    # The tokenizer's other inputs that the forward cannot derive reach the method by keyword.
    others = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    extra = clf.forward_func.underivable(input_ids, mask, others)
    n_classes = _n_classes(clf)
    specs = target_specs(target, n)
    wanted = [resolve_target(t, clf.labels, n_classes) for t in specs]
    with torch.no_grad():
        logits = clf.forward_func(input_ids, mask, **extra)
    bad = (~torch.isfinite(logits.reshape(n, -1)).all(dim=-1)).nonzero().flatten().tolist()
    if bad:
        which = [ids[i] if ids is not None else i for i in bad]
        raise ModelOutputError(
            f"the model's output holds NaN or inf for text(s) {which} (of this batch: "
            f"{texts[bad[0]][:40]!r}...): nothing is explained from it; check the model's weights "
            "and inputs"
        )
    prediction = predicted_target(logits, clf.activation)  # the package's one rule
    explained = _with_requested(prediction, wanted)
    scores = attribute_targets(attributor.attribute, clf.model, input_ids, mask, explained, extra)
    scores = scores.detach().float().cpu()
    # softmax, or the per-label sigmoid of a multi-label head (from the model's config); a label
    # set's probability is that of all its labels (the metrics' reading)
    log_p = log_probabilities(logits.detach().double(), clf.activation)
    p_predicted = explained_log_probability(log_p, prediction).exp().tolist()
    p_target = explained_log_probability(log_p, explained).exp().tolist()
    predicted, targets = target_list(prediction), target_list(explained)
    layers = layers_used(attributor, n)
    budget = max_length or clf.max_length
    pairs = list(text_pairs) if text_pairs is not None else None
    lengths = [
        len(x)
        for x in clf.tokenizer(list(texts), pairs, truncation=False, verbose=False, **USER_TEXT)[
            "input_ids"
        ]
    ]
    word_scores = (
        aggregate_to_words(
            scores, texts, clf.tokenizer, input_ids, mask, text_pairs=text_pairs, reduce=words
        )
        if words is not None
        else None
    )

    def name(index: int | list[int]) -> str:
        if isinstance(index, list):  # a label set: "x+z", as TextClassifier.predict names it
            return "+".join(name(i) for i in index)
        return str(clf.labels[index]) if index < len(clf.labels) else str(index)

    options = {k: v for k, v in getattr(attributor, "options", {}).items() if _jsonable(v)}
    out = []
    for row in range(n):
        real = mask[row].bool().cpu()
        row_ids = input_ids[row].cpu()[real].tolist()
        ws = word_scores[row] if word_scores is not None else None
        out.append(
            Explanation(
                text=texts[row],
                text_pair=text_pairs[row] if text_pairs is not None else None,
                tokens=[str(t) for t in clf.tokenizer.convert_ids_to_tokens(row_ids)],
                scores=scores[row][real].tolist(),
                predicted=predicted[row],
                predicted_label=name(predicted[row]),
                probability=float(p_predicted[row]),
                target=targets[row],
                target_label=name(targets[row]),
                target_probability=float(p_target[row]),
                method=method,
                model=clf.name,
                version=__version__,
                words=ws.words if ws is not None else None,
                word_scores=ws.scores if ws is not None else None,
                token_words=ws.token_words if ws is not None else None,
                word_reduce=ws.reduce if ws is not None else None,
                layer=layers[row],
                truncated=lengths[row] > budget,
                id=ids[row] if ids is not None else None,
                options=options,
            )
        )
    return out


def _with_requested(prediction: Tensor, wanted: Sequence[int | None]) -> Tensor:
    """The prediction, with the rows a user gave a class for set to that class."""
    target = prediction.clone()
    for row, cls in enumerate(wanted):
        if cls is None:
            continue
        if target.dim() == 1:
            target[row] = cls
        else:  # a multi-label head: the one label asked for
            target[row] = 0
            target[row, cls] = 1
    return target


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None))) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value)
    )


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def explain(
    clf: TextClassifier,
    texts: str | Sequence[str],
    *,
    method: str = "dls",
    attributor: Any = None,
    text_pairs: Sequence[str | None] | None = None,
    target: TargetSpec | Sequence[TargetSpec] = None,
    words: bool | str = False,
    batch_size: int = 8,
    max_length: int | None = None,
    truncation: str = DEFAULT_TRUNCATION,
    progress: bool = False,
    layer: int | None = None,
    calibration_texts: Sequence[str] | None = None,
) -> list[Explanation]:
    """Explain texts with one method: token scores, optionally word scores, and the prediction.

    Departs from Captum's ``target`` in one way: ``None`` explains each text's *prediction*
    (not "no target"), as everywhere in this package
    (:func:`~captum_layer_saliency.models.targets.predicted_target`): the predicted class, or,
    for a multi-label head (``problem_type="multi_label_classification"``), the set of labels
    whose sigmoid is over 0.5 (the most probable where none is), explained as the sum of their
    logits, as DLS does. For such a head the explanation's ``target``/``predicted`` are label
    sets, sorted lists of label indices (``[0, 2]``; an explicit target is the set of that one
    label), ``target_label``/``predicted_label`` name the whole set (``"x+z"``) and the
    probabilities are the set's (the product of its labels' sigmoids).

    Args:
        clf: the classifier (DLS needs ``clf.lm_head``).
        texts: one text or several.
        method: a registry name or alias (default ``"dls"``; see ``list-methods``).
        attributor: an already built attributor (overrides ``method``'s construction; reuse it
            across calls to pay DLS's layer calibration once).
        text_pairs: the second text of each pair (for pair classifiers).
        target: ``None`` (the prediction, a label set for a multi-label head), a class index or
            a label name, for every text, or one such per text.
        words: ``False`` (token scores only), ``True`` (words, scores summed), or a reduction
            (``"sum"``, ``"mean"``, ``"max"``).
        batch_size: texts per forward/backward batch; the results do not depend on it.
        max_length: the token budget (default: the classifier's).
        truncation: ``"truncate"`` (default, as in ``compare``) cuts a text over the budget,
            warns, and the explanation records ``truncated=True``; ``"error"`` refuses it.
        progress: show a progress bar.
        layer: DLS only: explain at this layer (0 = embeddings, ``l`` = block ``l``) instead
            of the one chosen for the model.
        calibration_texts: DLS only: unlabelled texts to choose the model's layer on, for a
            model without a stored selection (default: DLS's built-in general-English texts;
            never the texts explained, so a text's map does not depend on the others).

    Returns:
        One :class:`~captum_layer_saliency.viz.explanation.Explanation` per text, in order.

    Raises:
        ValueError: an unknown method or target, an empty or over-long text, a bad
            ``batch_size`` or word reduction.
    """
    from captum_layer_saliency.compare.methods.registry import resolve_method_name

    batch = [texts] if isinstance(texts, str) else list(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    reduce = _word_reduction(words)
    name = resolve_method_name(method)
    options: dict[str, Any] = {}
    if layer is not None:
        options["layer"] = layer
    if calibration_texts is not None:
        options["calibration_texts"] = list(calibration_texts)
    if options and (attributor is not None or not name.startswith("dls")):
        raise ValueError(
            f"{' and '.join(f'{k}=' for k in options)} apply to a DLS method built here, not "
            f"to {'the attributor given' if attributor is not None else repr(name)}"
        )
    built = attributor if attributor is not None else make_attributor(clf, name, **options)
    targets = target_specs(target, len(batch))
    for spec in targets:  # every target checked before any work
        resolve_target(spec, clf.labels, _n_classes(clf))
    text_pairs = _pair_list(text_pairs, len(batch))
    from tqdm.auto import tqdm

    prepare(built, batch)
    out: list[Explanation] = []
    with tqdm(total=len(batch), disable=not progress, unit="text") as bar:
        for rows in _batches(len(batch), batch_size):
            out += explain_batch(
                clf,
                built,
                [batch[i] for i in rows],
                method=name,
                text_pairs=[text_pairs[i] for i in rows] if text_pairs is not None else None,
                target=[targets[i] for i in rows],
                words=reduce,
                max_length=max_length,
                truncation=truncation,
            )
            bar.update(len(rows))
    return out


def _pair_list(text_pairs: Any, n: int) -> list[str | None] | None:
    """The second texts of pairs as a list of ``n`` (a lone string is refused, not spelt out)."""
    if text_pairs is None:
        return None
    if isinstance(text_pairs, (str, bytes)) or not isinstance(text_pairs, Sequence):
        raise ValueError(
            f"text_pairs must be a list with one second text per text, got a "
            f"{type(text_pairs).__name__}: wrap a single pair's text in a list"
        )
    if len(text_pairs) != n:
        raise ValueError(f"{len(text_pairs)} text pairs for {n} texts: give one per text")
    return list(text_pairs)


def _word_reduction(words: bool | str | None) -> str | None:
    if words is None or words is False:
        return None
    if words is True:
        return "sum"
    if words not in REDUCTIONS:
        raise ValueError(f"unknown word reduction {words!r}; choose from {REDUCTIONS}")
    return str(words)
