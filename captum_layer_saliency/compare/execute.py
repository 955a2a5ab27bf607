"""One method on one encoded batch: its scores, their metrics, and one result row per example."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from captum_layer_saliency import metrics as metric_registry
from captum_layer_saliency.compare import results
from captum_layer_saliency.compare.batches import EncodedBatch
from captum_layer_saliency.compare.checks import needs_word_sentiment
from captum_layer_saliency.metrics import EDIN
from captum_layer_saliency.metrics.edin import edin_bounds, edin_curves, replacement_token_id
from captum_layer_saliency.metrics.normalised import aopc_bounds, normalise_aopc
from captum_layer_saliency.models import passes
from captum_layer_saliency.models.classifier import TextClassifier, TokenAttributor
from captum_layer_saliency.models.label_sets import attribute_targets
from captum_layer_saliency.models.targets import target_list
from captum_layer_saliency.models.words import word_index

__all__ = ["AOPC_METRICS", "NORMALISED_AOPC", "explain_batch", "prepare_method", "score_batch"]

#: The metrics that are the mean over bins of :func:`metrics.aopc_curves`' curves.
AOPC_METRICS = ("comprehensiveness", "sufficiency")
#: AOPC scaled to per-example bounds; the bounds depend on the inputs only (cached per batch).
NORMALISED_AOPC = {
    "loo_bounded_comprehensiveness": "comprehensiveness",
    "loo_bounded_sufficiency": "sufficiency",
}


def prepare_method(
    attributor: Any, method: str, texts: Sequence[str], out: Path
) -> dict[str, Any] | None:
    """Let a method make its one-off choice (DLS: its layer) and record it in ``run.json``.

    Args:
        attributor: the method's attributor; its optional ``prepare(texts)`` makes the choice.
        method: the method's name.
        texts: the run's texts (a method may calibrate on them).
        out: the comparison directory.

    Returns:
        What the method recorded, or ``None``.
    """
    prepare = getattr(attributor, "prepare", None)
    record: dict[str, Any] | None = prepare(texts) if callable(prepare) else None
    if record is not None:
        results.record_run_info(out, "layer_selection", method, record)
    return record


def _finite_list(values: Tensor) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values.detach().cpu().double().tolist()]


def score_batch(
    metric_names: Sequence[str],
    clf: TextClassifier,
    batch: EncodedBatch,
    scores: Tensor,
    metric_batch_size: int,
    table: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Every requested metric of one method's scores on one batch.

    Comprehensiveness and sufficiency are the means of the per-bin AOPC curves (ERASER's
    definition, as the metrics compute them), so one call gives both and the curves; the
    leave-one-out importance and the AOPC bounds depend on the inputs only and are computed once
    per batch, for every method.

    Args:
        metric_names: the metrics to compute (from :data:`captum_layer_saliency.metrics.METRICS`).
        clf: the classifier.
        batch: the encoded batch.
        scores: ``(batch, seq)`` token scores, zero at pads and specials.
        metric_batch_size: perturbed inputs per forward.
        table: the metric registry the names come from (default
            :data:`~captum_layer_saliency.metrics.METRICS`; Edin et al.'s protocol has its own).

    Returns:
        Metric name -> ``(batch,)`` values, and the per-bin curves (or ``None`` when no AOPC
        metric was asked for).
    """
    # Deleting tokens re-packs the inputs, padded with the model's own padding id.
    pad_id = getattr(clf.tokenizer, "pad_token_id", None)
    common: dict[str, Any] = {
        "batch_size": metric_batch_size,
        "pad_token_id": 0 if pad_id is None else pad_id,
        **batch.model_inputs,
    }
    inputs = (clf.forward_func, batch.input_ids, batch.attention_mask)
    args = (*inputs, scores, batch.target, batch.special)
    table = metric_registry.METRICS if table is None else table
    edin = [n for n in metric_names if getattr(table[n], "protocol", "") == EDIN]
    if edin:
        return _score_edin(edin, clf, batch, args, common), None

    def leave_one_out() -> Tensor:
        if batch.leave_one_out is None:
            batch.leave_one_out = metric_registry.leave_one_out(
                *inputs, batch.target, batch.special, **common
            )
        return batch.leave_one_out

    curves = None
    if set(AOPC_METRICS + tuple(NORMALISED_AOPC)) & set(metric_names):
        curves = metric_registry.aopc_curves(*args, **common)
    values: dict[str, Tensor] = {}
    for name in metric_names:
        metric = table[name]
        fn = metric.fn
        if fn is None:
            raise ValueError(f"metric {name!r} has no function")
        if curves is not None and name in AOPC_METRICS:
            values[name] = curves[name].mean(-1)
        elif curves is not None and name in NORMALISED_AOPC:
            if batch.aopc_bounds is None:
                batch.aopc_bounds = aopc_bounds(
                    *inputs, batch.target, batch.special, **common, loo=leave_one_out()
                )
            key = NORMALISED_AOPC[name]
            values[name] = normalise_aopc(
                curves[key].mean(-1), batch.aopc_bounds[key].to(curves[key])
            )
        elif needs_word_sentiment(metric):
            assert batch.word_ids is not None and batch.word_sentiment is not None
            values[name] = fn(scores.cpu(), batch.word_ids, batch.word_sentiment)
        elif metric.kind == "plausibility":
            assert batch.rationale is not None
            values[name] = fn(scores, batch.rationale, batch.valid)
        elif name == "kendall_tau_loo":
            values[name] = fn(*args, **common, loo=leave_one_out())
        else:
            values[name] = fn(*args, **common)
    return values, curves


def _score_edin(
    metric_names: Sequence[str],
    clf: TextClassifier,
    batch: EncodedBatch,
    args: tuple[Any, ...],
    common: dict[str, Any],
) -> dict[str, Tensor]:
    """The metrics of Edin et al.'s protocol: one set of word curves, bounds once per batch."""
    options = {
        **common,
        "word_ids": word_index(clf.tokenizer, batch.input_ids, batch.attention_mask),
        "mask_token_id": replacement_token_id(clf.tokenizer),
    }
    curves = edin_curves(*args, **options)
    values: dict[str, Tensor] = {}
    for name in metric_names:
        key = name.removeprefix("naopc_")
        value = curves[key].nanmean(-1)
        if name.startswith("naopc_"):
            if batch.aopc_bounds is None:
                forward, ids, mask, _, target, special = args
                batch.aopc_bounds = edin_bounds(forward, ids, mask, target, special, **options)
            value = normalise_aopc(value, batch.aopc_bounds[key].to(value))
        values[name] = value
    return values


def explain_batch(
    clf: TextClassifier,
    attributor: TokenAttributor,
    method: str,
    batch: EncodedBatch,
    examples: Sequence[dict[str, Any]],
    indices: Sequence[int],
    n_tokens: Sequence[int],
    metric_names: Sequence[str],
    metric_batch_size: int,
    table: Mapping[str, Any] | None = None,
) -> list[results.Row]:
    """One method on one batch: its scores, their metrics, and one row per example.

    The scores and metrics stay on the model's device until they are all computed, then come to
    the host in one copy each: per-example ``.cpu()``/``float()`` calls would each wait for the
    device.

    Args:
        clf: the classifier.
        attributor: the method.
        method: its name, for the rows.
        batch: the encoded batch.
        examples: the batch's rows.
        indices: their dataset indices.
        n_tokens: their token counts before truncation.
        metric_names: the metrics to compute.
        metric_batch_size: perturbed inputs per forward.
        table: the metric registry the names come from (default: the ERASER protocol's).

    Returns:
        One result row per example, in batch order.
    """
    n = len(examples)
    start = time.perf_counter()
    with passes.PassCounter(clf.model) as counter:
        scores = attribute_targets(
            attributor.attribute,
            clf.model,
            batch.input_ids,
            batch.attention_mask,
            batch.target,
            batch.model_inputs,
        )
    elapsed = time.perf_counter() - start
    # Methods are asked to zero pads and specials; enforce it so that no method gains or loses
    # on a metric through positions that no metric should read.
    scores = scores.detach().float().masked_fill(~batch.valid, 0.0)
    with torch.no_grad():
        values, curves = score_batch(metric_names, clf, batch, scores, metric_batch_size, table)
    keep = batch.keep
    scores_host = scores.cpu()
    metric_values = {name: _finite_list(v.reshape(-1)) for name, v in values.items()}
    curves_host = {k: v.detach().cpu() for k, v in curves.items()} if curves is not None else None
    target = target_list(batch.target)
    prediction = batch.prediction.tolist()
    rationale = batch.rationale.cpu() if batch.rationale is not None else None
    labels = list(clf.labels)
    rows = []
    for i in range(n):
        row: results.Row = {
            "index": indices[i],
            "method": method,
            "input_ids": batch.ids[i],
            "tokens": batch.tokens[i],
            "text": str(examples[i]["text"]),
            "target": target[i],
            "label": int(examples[i]["label"]),
            "prediction": int(prediction[i]),
            "prediction_name": labels[prediction[i]]
            if prediction[i] < len(labels)
            else str(prediction[i]),
            "truncated": len(batch.ids[i]) < n_tokens[i],
            "n_tokens_original": n_tokens[i],
            "attributions": _finite_list(scores_host[i][keep[i]]),
            "metrics": {name: v[i] for name, v in metric_values.items()},
            # Attribution time only (not the metrics), amortised over the batch.
            "seconds": elapsed / n,
            "forwards": counter.forwards / n,
            "backwards": counter.backwards / n,
        }
        if curves_host is not None:
            row["curves"] = _curves(curves_host, i)
        if rationale is not None:
            row["rationale"] = rationale[i][keep[i]].tolist()
        rows.append(row)
    return rows


def _curves(curves: dict[str, Tensor], i: int) -> dict[str, Any]:
    """Example ``i``'s per-bin AOPC curves, and the bins."""
    out: dict[str, Any] = {
        key: _finite_list(curves[key][i]) for key in AOPC_METRICS if key in curves
    }
    if "bins" in curves:
        out["bins"] = [float(b) for b in curves["bins"]]
    return out
