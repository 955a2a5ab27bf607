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
    """

    name: str
    higher_is_better: bool
    kind: str
    description: str
    fn: Callable[..., Tensor] | None = None
    inputs: str = "rationale"


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
            "normalised_comprehensiveness",
            True,
            FAITHFULNESS,
            "comprehensiveness scaled to its per-example bounds (Edin et al. 2024; "
            "leave-one-out orderings as the bounds)",
            normalised_comprehensiveness,
        ),
        Metric(
            "normalised_sufficiency",
            False,
            FAITHFULNESS,
            "sufficiency scaled to its per-example bounds (Edin et al. 2024; "
            "leave-one-out orderings as the bounds)",
            normalised_sufficiency,
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
    "ERASER_BINS",
    "FAITHFULNESS",
    "METRICS",
    "PLAUSIBILITY",
    "Metric",
    "aopc_bounds",
    "aopc_curves",
    "auprc",
    "average_precision",
    "comprehensiveness",
    "deletion_auc",
    "insertion_auc",
    "iou_f1",
    "kendall_tau_b",
    "kendall_tau_loo",
    "leave_one_out",
    "log_odds",
    "merge_to_words",
    "metrics_of_kind",
    "normalise_aopc",
    "normalised_comprehensiveness",
    "normalised_sufficiency",
    "sentiment_correlation",
    "sufficiency",
    "token_f1_at_k",
    "token_word_ids",
    "tokens_for_fraction",
    "top_k_mask",
    "valid_token_mask",
]
