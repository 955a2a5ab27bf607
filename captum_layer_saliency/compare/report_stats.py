"""Summary statistics of a comparison: per-method means with bootstrap CIs, paired differences.

Everything here is a pure function of the *set* of rows: they are sorted by ``(index, method)``
before anything is computed, and every bootstrap draws from a generator seeded by the run's seed
and the names of the method and metric, so the summary does not depend on the order the rows
were written in, nor on which other methods are in the table. Metric names come out in
:data:`~captum_layer_saliency.metrics.METRICS` order, with whether higher is better.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from captum_layer_saliency.compare import results
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.metrics import METRICS

__all__ = [
    "COST_REFERENCE",
    "DEFAULT_BINS",
    "PREFERRED_REFERENCE",
    "PRIMARY_METRIC",
    "NoResultsError",
    "bootstrap_ci",
    "summarize",
]

#: The method every cost ratio is relative to (the cheapest gradient baseline).
COST_REFERENCE = "input_x_gradient"
#: The preferred reference for paired differences: ours.
PREFERRED_REFERENCE = "dls"
#: AOPC bins (fractions of the tokens, ERASER's) assumed when the rows do not record theirs.
DEFAULT_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)
#: The metric the methods are ranked by and plotted against cost, when present.
PRIMARY_METRIC = "comprehensiveness"


class NoResultsError(CaptumLayerSaliencyError, ValueError):
    """A directory holds no result rows to report on."""


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap confidence interval of the mean (``scipy.stats.bootstrap``).

    A paired comparison passes the per-example differences.

    Args:
        values: the per-example values; non-finite ones are ignored.
        n_boot: the number of resamples.
        seed: seeds the resampling (a numpy ``default_rng``), so a CI is reproducible.
        confidence: the interval's coverage.

    Returns:
        ``(mean, low, high)``; all NaN without finite values, and ``low == high == mean`` for a
        single value.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    interval = scipy_stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_boot,
        # Resample in batches: n_boot x n values at once would be large for big datasets.
        batch=max(1, 2_000_000 // x.size),
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return mean, float(interval.low), float(interval.high)


def _seed_for(seed: int, *names: str) -> int:
    return zlib.crc32(":".join([str(seed), *names]).encode())


def _stat(mean: float, low: float, high: float, n: int) -> dict[str, Any]:
    return {"mean": mean, "low": low, "high": high, "n": n}


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-method statistics and paired differences of a set of rows.

    Args:
        rows: result rows (any order; duplicates of a key are ignored).
        reference: the method the paired differences are against (default: ``dls`` when
            present, else the first method by name).
        n_boot: bootstrap resamples.
        seed: the bootstrap seed.
        metrics: metric name -> metadata with ``higher_is_better`` (default: the registry
            :data:`captum_layer_saliency.metrics.METRICS`); it orders the metrics and says
            which way is better. Metrics of the rows missing from it come last, by name, with
            no direction.

    Returns:
        A JSON-ready dict: ``metrics`` (names in registry order), ``higher_is_better``,
        ``methods`` (method -> n, per-metric stats, seconds, forwards, backwards, cost_ratio),
        ``order`` (methods ranked by the primary metric), ``reference``, ``paired``
        (method -> metric -> stats of method minus reference), ``curves`` (method -> mean AOPC
        curves), ``cost_reference``, ``truncation`` (``examples``: how many distinct examples
        were truncated to fit the model, ``of``: how many there are, ``max_tokens``: the longest
        original length), ``n_boot``, ``seed``.

    Raises:
        NoResultsError: there are no rows.
        ValueError: ``reference`` is not one of the methods.
    """
    unique = sorted(results.dedupe(rows), key=results.row_key)
    if not unique:
        raise NoResultsError("there are no result rows to summarise")
    by_method: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in unique:
        by_method[str(row["method"])].append(row)
    methods = sorted(by_method)
    if reference is None:
        reference = PREFERRED_REFERENCE if PREFERRED_REFERENCE in by_method else methods[0]
    elif reference not in by_method:
        raise ValueError(f"reference method {reference!r} is not in the results: {methods}")

    meta = METRICS if metrics is None else metrics
    seen = {name for row in unique for name in row.get("metrics", {})}
    metric_names = [m for m in meta if m in seen] + sorted(seen - set(meta))
    higher = {m: (bool(meta[m].higher_is_better) if m in meta else None) for m in metric_names}

    stats = {
        method: _method_stats(method, by_method[method], metric_names, n_boot, seed)
        for method in methods
    }
    if COST_REFERENCE in stats:
        base = stats[COST_REFERENCE]["seconds"]["mean"]
        for method in methods:
            if base > 0:
                stats[method]["cost_ratio"] = stats[method]["seconds"]["mean"] / base
    paired = {
        method: {
            metric: _paired_stat(
                by_method[method],
                by_method[reference],
                n_boot,
                _seed_for(seed, "paired", method, reference, metric),
                metric,
            )
            for metric in metric_names
        }
        for method in methods
        if method != reference
    }
    primary = PRIMARY_METRIC if PRIMARY_METRIC in metric_names else None
    if primary is None and metric_names:
        primary = metric_names[0]
    return {
        "metrics": metric_names,
        "higher_is_better": higher,
        "primary_metric": primary,
        "methods": stats,
        "order": _ranked(stats, primary, higher.get(primary) if primary else None),
        "reference": reference,
        "paired": paired,
        "curves": _mean_curves(by_method),
        "cost_reference": COST_REFERENCE if COST_REFERENCE in stats else None,
        "truncation": _truncation_stats(unique),
        "n_boot": n_boot,
        "seed": seed,
        "confidence": 0.95,
    }


def _column(group: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float]:
    """Example index -> the finite value of ``metric`` in one method's rows."""
    out = {}
    for row in group:
        value = row.get("metrics", {}).get(metric)
        if value is not None and math.isfinite(float(value)):
            out[int(row["index"])] = float(value)
    return out


def _ci_stat(values: Sequence[float], n_boot: int, seed: int) -> dict[str, Any]:
    """:func:`bootstrap_ci` of ``values`` as a ``{mean, low, high, n}`` dict."""
    mean, low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return _stat(mean, low, high, len(values))


def _method_stats(
    method: str,
    group: Sequence[Mapping[str, Any]],
    metric_names: Sequence[str],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """One method's row count, metric and seconds statistics and mean passes per example."""
    return {
        "n": len(group),
        "metrics": {
            metric: _ci_stat(
                list(_column(group, metric).values()), n_boot, _seed_for(seed, method, metric)
            )
            for metric in metric_names
        },
        "seconds": _ci_stat(
            [float(r["seconds"]) for r in group], n_boot, _seed_for(seed, method, "seconds")
        ),
        "forwards": float(np.mean([float(r.get("forwards", 0.0)) for r in group])),
        "backwards": float(np.mean([float(r.get("backwards", 0.0)) for r in group])),
        "cost_ratio": None,
    }


def _paired_stat(
    group: Sequence[Mapping[str, Any]],
    reference: Sequence[Mapping[str, Any]],
    n_boot: int,
    seed: int,
    metric: str,
) -> dict[str, Any]:
    """Statistics of the per-example differences method minus reference, on common examples."""
    ours, ref = _column(group, metric), _column(reference, metric)
    common = sorted(set(ours) & set(ref))
    return _ci_stat([ours[i] - ref[i] for i in common], n_boot, seed)


def _ranked(stats: Mapping[str, Any], primary: str | None, higher: bool | None) -> list[str]:
    """The methods, best first by the primary metric (non-finite last), ties by name."""

    def rank_key(method: str) -> tuple[float, str]:
        if primary is None:
            return (0.0, method)
        value = stats[method]["metrics"][primary]["mean"]
        if not math.isfinite(value):
            return (math.inf, method)
        return (-value if higher is not False else value, method)

    return sorted(stats, key=rank_key)


def _truncation_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many distinct examples were truncated (rows of runs before this was recorded: 0)."""
    cut: dict[int, bool] = {}
    longest = 0
    for row in rows:
        index = int(row["index"])
        cut[index] = cut.get(index, False) or bool(row.get("truncated", False))
        longest = max(longest, int(row.get("n_tokens_original") or len(row.get("tokens", []))))
    return {"examples": sum(cut.values()), "of": len(cut), "max_tokens": longest}


def _mean_curves(by_method: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per method, the mean per-bin comprehensiveness and sufficiency over its examples."""
    out: dict[str, Any] = {}
    for method, group in sorted(by_method.items()):
        with_curves = [r["curves"] for r in group if r.get("curves")]
        if not with_curves:
            continue
        entry: dict[str, Any] = {"bins": list(with_curves[0].get("bins", DEFAULT_BINS))}
        for key in ("comprehensiveness", "sufficiency"):
            stacked = [c[key] for c in with_curves if key in c]
            if stacked:
                arr = np.array(stacked, dtype=np.float64)  # None -> nan
                entry[key] = np.nanmean(arr, axis=0).tolist()
        out[method] = entry
    return out
