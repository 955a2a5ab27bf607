"""The report's figures: AOPC curves, cost against faithfulness, DLS coherence per layer.

Each figure is drawn by :mod:`captum_layer_saliency.viz`, saved as a PNG beside the rows, and
embedded in the HTML as a data URI. Every figure takes its method colours from
:func:`captum_layer_saliency.viz.method_colours` with the same ``order`` (the report passes the
registry's names), so a method has one colour in every figure, whatever else was compared.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from captum_layer_saliency import viz
from captum_layer_saliency.compare.report_stats import PREFERRED_REFERENCE
from captum_layer_saliency.compare.report_tables import arrow

__all__ = ["coherence_plot", "draw_plots", "embedded_image"]


def embedded_image(path: Path, alt: str) -> str:
    """An HTML paragraph showing a PNG, embedded as a data URI.

    The page stays one self-contained file, and its CSP needs no file-system origin (browsers
    disagree about what ``'self'`` means for ``file://`` pages).

    Args:
        path: the PNG.
        alt: the alternative text (escaped).

    Returns:
        ``<p><img ...></p>``.
    """
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def colour_order(order: Sequence[str], methods: Iterable[str]) -> list[str]:
    """The palette order of a report: ``order``, then the other ``methods`` sorted by name.

    Every figure of one report draws its colours from this one order, so a method outside the
    registry's order (a custom registry's) has the same colour in each figure, whichever subset
    of the methods a figure shows.

    Args:
        order: the method names whose colours are fixed (the registry's, in registration order).
        methods: every method of the report.

    Returns:
        The names of ``order`` followed by the remaining ``methods`` in name order.
    """
    order = list(order)
    return order + sorted(set(methods) - set(order))


def coherence_plot(
    config: Mapping[str, Any], out: Path, paths: dict[str, Path], order: Sequence[str] = ()
) -> list[str]:
    """Draw the coherence curve of each DLS method's layer choice, the chosen layer starred.

    The curves are those recorded in ``run.json`` under ``layer_selection``, each in its
    method's colour.

    Args:
        config: the run's configuration.
        out: the directory to write ``layer_coherence.png`` into.
        paths: the files written so far; ``layer_coherence`` is added when drawn.
        order: the method names in palette order (see :func:`viz.method_colours`).

    Returns:
        The figure's HTML ``<img>`` paragraph, or nothing when no curve was recorded.
    """
    recorded = config.get("layer_selection") or {}
    curves, selected, names = {}, {}, None
    for method, info in recorded.items():
        scores = info.get("scores") if isinstance(info, Mapping) else None
        if not scores:
            continue
        curves[str(method)] = [math.nan if v is None else float(v) for v in scores]
        indices = list(info.get("layer_indices") or range(len(scores)))
        if info.get("layer") in indices:
            selected[str(method)] = indices.index(info["layer"])
        names = names or info.get("layer_names")
    if not curves:
        return []
    path = out / "layer_coherence.png"
    viz.plot_coherence_curves(
        curves,
        layers=names,
        selected=selected,
        ylabel=f"coherence ({next(iter(recorded.values())).get('score', 'label-free')})",
        colors=viz.method_colours(curves, order),
        title="DLS: coherence per layer (chosen layer starred)",
        save=path,
    )
    paths["layer_coherence"] = path
    return [embedded_image(path, "DLS layer coherence")]


def draw_plots(
    summary: Mapping[str, Any], out: Path, paths: dict[str, Path], order: Sequence[str] = ()
) -> list[str]:
    """Draw the AOPC curves and the cost/faithfulness scatter.

    Args:
        summary: what :func:`~captum_layer_saliency.compare.report_stats.summarize` returns.
        out: the directory to write ``aopc_curves.png`` and ``cost_vs_faithfulness.png`` into.
        paths: the files written so far; the figures drawn are added.
        order: the method names in palette order (see :func:`viz.method_colours`).

    Returns:
        The figures' HTML ``<img>`` paragraphs.
    """
    images = []
    curves = summary["curves"]
    if curves:
        bins = [100.0 * float(b) for b in next(iter(curves.values()))["bins"]]  # as percentages
        path = out / "aopc_curves.png"
        ranked = {m: curves[m] for m in summary["order"] if m in curves}
        viz.plot_aopc_curves(ranked, bins, colors=viz.method_colours(ranked, order), save=path)
        paths["aopc_curves"] = path
        images.append(embedded_image(path, "AOPC curves"))
    primary = summary["primary_metric"]
    if primary is not None:
        stats = summary["methods"]
        score = {m: stats[m]["metrics"][primary]["mean"] for m in stats}
        ci = {
            m: (stats[m]["metrics"][primary]["low"], stats[m]["metrics"][primary]["high"])
            for m in stats
        }
        cost = {m: stats[m]["seconds"]["mean"] for m in stats}
        path = out / "cost_vs_faithfulness.png"
        viz.plot_cost_vs_faithfulness(
            cost,
            score,
            ci=ci,
            ylabel=f"{primary}{arrow(summary['higher_is_better'][primary])}",
            highlight=[m for m in stats if m.startswith(PREFERRED_REFERENCE)],
            colors=viz.method_colours(sorted(stats), order),
            save=path,
        )
        paths["cost_vs_faithfulness"] = path
        images.append(embedded_image(path, "cost versus faithfulness"))
    return images
