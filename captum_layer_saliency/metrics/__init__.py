"""Faithfulness and plausibility metrics for token attributions, with their metadata.

:data:`METRICS` maps each metric's name to a :class:`Metric` saying whether higher is better and
which kind it is. Faithfulness metrics are called as
``fn(forward, input_ids, attention_mask, scores, target, special_mask, **options,
**model_inputs)`` (the model's other inputs by name; see :mod:`.faithfulness`), plausibility
metrics as ``fn(scores, rationale, valid_mask, **options)``; both return one value per example,
NaN where the metric is undefined (see the modules' docstrings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from captum_layer_saliency.metrics.curves import deletion_auc, insertion_auc
from captum_layer_saliency.metrics.deletion import (
    tokens_for_fraction,
    top_k_mask,
    valid_token_mask,
)
from captum_layer_saliency.metrics.edin import (
    EDIN,
    ERASER,
    PROTOCOLS,
    edin_bounds,
    edin_comprehensiveness,
    edin_curves,
    edin_sufficiency,
    naopc_comprehensiveness,
    naopc_sufficiency,
)
from captum_layer_saliency.metrics.faithfulness import (
    ERASER_BINS,
    aopc_curves,
    comprehensiveness,
    log_odds,
    sufficiency,
)
from captum_layer_saliency.metrics.kendall_loo import kendall_tau_b, kendall_tau_loo, leave_one_out
from captum_layer_saliency.metrics.normalised import (
    aopc_bounds,
    loo_bounded_comprehensiveness,
    loo_bounded_sufficiency,
    normalise_aopc,
    normalised_comprehensiveness,
    normalised_sufficiency,
)
from captum_layer_saliency.metrics.plausibility import (
    auprc,
    average_precision,
    iou_f1,
    token_f1_at_k,
)
from captum_layer_saliency.metrics.sentiment_correlation import (
    merge_to_words,
    sentiment_correlation,
    token_word_ids,
)

FAITHFULNESS = "faithfulness"
PLAUSIBILITY = "plausibility"


@dataclass(frozen=True)
class Metric:
    """A metric's metadata.

    Attributes:
        name: the key in :data:`METRICS` and in result files.
        higher_is_better: the direction of improvement.
        kind: ``"faithfulness"`` or ``"plausibility"`` (which decides the call signature).
        description: one line for reports.
        fn: the function computing it, one value per example.
    inputs: what a plausibility metric compares with: ``"rationale"`` (called as
        ``fn(scores, rationale, valid_mask)``) or ``"word_sentiment"`` (called as
        ``fn(scores, word_ids, word_sentiment)``; see
        :func:`~captum_layer_saliency.metrics.sentiment_correlation.sentiment_correlation`).
    protocol: the evaluation protocol the metric belongs to: ``"eraser"`` (:data:`METRICS`) or
        ``"edin"`` (:data:`EDIN_METRICS`, Edin et al. 2024; see :mod:`.edin`).
    """

    name: str
    higher_is_better: bool
    kind: str
    description: str
    fn: Callable[..., Tensor] | None = None
    inputs: str = "rationale"
    protocol: str = ERASER


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "comprehensiveness",
            True,
            FAITHFULNESS,
            "ERASER AOPC of p(x) - p(x without top-k), bins 1/5/10/20/50 %, tokens deleted",
            comprehensiveness,
        ),
        Metric(
            "sufficiency",
            False,
            FAITHFULNESS,
            "ERASER AOPC of p(x) - p(top-k only), bins 1/5/10/20/50 %, tokens deleted",
            sufficiency,
        ),
        Metric(
            "loo_bounded_comprehensiveness",
            True,
            FAITHFULNESS,
            "comprehensiveness scaled between the AOPCs of the leave-one-out orderings (not "
            "Edin et al.'s NAOPC, whose bounds are the best and worst orderings)",
            loo_bounded_comprehensiveness,
        ),
        Metric(
            "loo_bounded_sufficiency",
            False,
            FAITHFULNESS,
            "sufficiency scaled between the AOPCs of the leave-one-out orderings (not "
            "Edin et al.'s NAOPC, whose bounds are the best and worst orderings)",
            loo_bounded_sufficiency,
        ),
        Metric(
            "deletion_auc",
            False,
            FAITHFULNESS,
            "area under p(target) as tokens are deleted, most important first",
            deletion_auc,
        ),
        Metric(
            "insertion_auc",
            True,
            FAITHFULNESS,
            "area under p(target) as tokens are inserted, most important first",
            insertion_auc,
        ),
        Metric(
            "log_odds",
            False,
            FAITHFULNESS,
            "log p(target | top 20 % deleted) - log p(target | x)",
            log_odds,
        ),
        Metric(
            "kendall_tau_loo",
            True,
            FAITHFULNESS,
            "Kendall tau-b between the scores and leave-one-out probability drops",
            kendall_tau_loo,
        ),
        Metric(
            "token_f1",
            True,
            PLAUSIBILITY,
            "token F1 of the top-k tokens against the human rationale (k = its length)",
            token_f1_at_k,
        ),
        Metric(
            "iou_f1",
            True,
            PLAUSIBILITY,
            "ERASER span IOU-F1 at 0.5 of the top-k tokens against the human rationale",
            iou_f1,
        ),
        Metric(
            "auprc",
            True,
            PLAUSIBILITY,
            "area under the precision-recall curve against the human rationale",
            auprc,
        ),
        Metric(
            "word_sentiment_r",
            True,
            PLAUSIBILITY,
            "Pearson r of word attributions with SST word sentiment |label - 2| (LAFA's measure)",
            sentiment_correlation,
            inputs="word_sentiment",
        ),
    )
}


#: The faithfulness metrics of Edin et al.'s protocol (words masked by [MASK], the whole curve,
#: NAOPC with exact or beam-search bounds): ``compare(..., protocol="edin")`` scores these.
EDIN_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "comprehensiveness",
            True,
            FAITHFULNESS,
            "Edin et al.: mean over k = 1..n words of p(x) - p(top-k words masked by [MASK])",
            edin_comprehensiveness,
            protocol=EDIN,
        ),
        Metric(
            "sufficiency",
            False,
            FAITHFULNESS,
            "Edin et al.: mean over k = 1..n words of p(x) - p(only the top-k words kept)",
            edin_sufficiency,
            protocol=EDIN,
        ),
        Metric(
            "naopc_comprehensiveness",
            True,
            FAITHFULNESS,
            "Edin et al.'s NAOPC: comprehensiveness between its best and worst word orderings "
            "(exact up to 12 words, beam search 5 above)",
            naopc_comprehensiveness,
            protocol=EDIN,
        ),
        Metric(
            "naopc_sufficiency",
            False,
            FAITHFULNESS,
            "Edin et al.'s NAOPC: sufficiency between its best and worst word orderings "
            "(exact up to 12 words, beam search 5 above)",
            naopc_sufficiency,
            protocol=EDIN,
        ),
    )
}


#: Deprecated metric names -> their names now (the leave-one-out-bounded normalisation was
#: called "normalised", which is Edin et al.'s name for exact bounds).
METRIC_ALIASES: dict[str, str] = {
    "normalised_comprehensiveness": "loo_bounded_comprehensiveness",
    "normalised_sufficiency": "loo_bounded_sufficiency",
}


def protocol_metrics(protocol: str) -> dict[str, Metric]:
    """The metric registry of an evaluation protocol.

    Args:
        protocol: ``"eraser"`` (token bins, deletion; the default) or ``"edin"``.

    Raises:
        ValueError: an unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return EDIN_METRICS if protocol == EDIN else METRICS


def metrics_of_kind(kind: str) -> list[Metric]:
    """The metrics of one kind, in :data:`METRICS` order.

    Args:
        kind: ``"faithfulness"`` or ``"plausibility"``.

    Returns:
        The matching :class:`Metric` objects.
    """
    if kind not in (FAITHFULNESS, PLAUSIBILITY):
        raise ValueError(f"kind must be {FAITHFULNESS!r} or {PLAUSIBILITY!r}, got {kind!r}")
    return [m for m in METRICS.values() if m.kind == kind]


__all__ = [
    "EDIN",
    "EDIN_METRICS",
    "ERASER",
    "ERASER_BINS",
    "FAITHFULNESS",
    "METRICS",
    "PLAUSIBILITY",
    "PROTOCOLS",
    "METRIC_ALIASES",
    "Metric",
    "aopc_bounds",
    "aopc_curves",
    "auprc",
    "average_precision",
    "comprehensiveness",
    "deletion_auc",
    "edin_bounds",
    "edin_comprehensiveness",
    "edin_curves",
    "edin_sufficiency",
    "insertion_auc",
    "iou_f1",
    "kendall_tau_b",
    "kendall_tau_loo",
    "leave_one_out",
    "loo_bounded_comprehensiveness",
    "loo_bounded_sufficiency",
    "log_odds",
    "merge_to_words",
    "metrics_of_kind",
    "naopc_comprehensiveness",
    "naopc_sufficiency",
    "normalise_aopc",
    "normalised_comprehensiveness",
    "normalised_sufficiency",
    "protocol_metrics",
    "sentiment_correlation",
    "sufficiency",
    "token_f1_at_k",
    "token_word_ids",
    "tokens_for_fraction",
    "top_k_mask",
    "valid_token_mask",
]
