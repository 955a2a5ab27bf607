"""Matplotlib figures of explanations and comparisons.

Every plotting function builds a :class:`matplotlib.figure.Figure` without pyplot (no global
state, nothing leaks when a report draws many figures), returns it, and saves it as a PNG when
given ``save=``. In a notebook the returned figure displays itself. Scores are drawn with the
shared diverging map of :mod:`captum_layer_saliency.viz.colours`, methods in their
:func:`~captum_layer_saliency.viz.colours.method_colours`.

Token strings, labels and titles are untrusted: :func:`_mpl_text` escapes ``$`` (which would
start mathtext) and cuts long ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from captum_layer_saliency._utils import atomic_write
from captum_layer_saliency.viz.colours import (
    OURS,
    as_float_array,
    method_colours,
    score_cmap,
    symmetric_norm,
    text_colour,
)

__all__ = [
    "plot_aopc_curves",
    "plot_coherence_curves",
    "plot_cost_vs_faithfulness",
    "plot_layer_token_heatmap",
    "plot_token_heatmap",
]

_MAX_TOKEN_CHARS = 14
PathLike = str | os.PathLike[str]


def _mpl_text(token: str, max_chars: int = _MAX_TOKEN_CHARS) -> str:
    """A token made safe for matplotlib text: ``$`` would start mathtext, long tokens are cut."""
    token = str(token)
    if len(token) > max_chars:
        token = token[: max_chars - 1] + "\u2026"
    return token.replace("$", r"\$")


def _finish(fig: Figure, save: PathLike | None) -> Figure:
    fig.tight_layout()
    if save is not None:
        # Whole or not at all: a run killed mid-write never leaves a truncated PNG behind.
        atomic_write(
            Path(save), lambda tmp: fig.savefig(os.fspath(tmp), dpi=150, bbox_inches="tight")
        )
    return fig


def plot_token_heatmap(
    tokens: Sequence[str],
    scores: Any,
    *,
    per_row: int = 12,
    title: str | None = None,
    unit: str = "tokens",
    save: PathLike | None = None,
) -> Figure:
    """One explanation as coloured token cells, wrapped into rows.

    Args:
        tokens: the tokens, in order.
        scores: one score per token (tensor, array or sequence).
        per_row: tokens per row before wrapping.
        title: an optional title.
        unit: what the cells are, for the axis label (``"tokens"`` or ``"words"``).
        save: a PNG path to write.

    Returns:
        The figure.
    """
    values = as_float_array(scores).reshape(-1)
    if len(tokens) != values.size:
        raise ValueError(f"{len(tokens)} tokens but {values.size} scores")
    if per_row < 1:
        raise ValueError(f"per_row must be at least 1, got {per_row}")
    n = max(1, len(tokens))
    rows = math.ceil(n / per_row)
    cols = min(n, per_row)  # a short text fills its one row
    grid = np.full((rows, cols), np.nan)
    grid.flat[: values.size] = values
    norm = symmetric_norm(values)
    fig = Figure(figsize=(max(4.0, 0.95 * cols + 1.5), 0.55 * rows + 1.2))
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap=score_cmap(), norm=norm, aspect="auto")
    for i, token in enumerate(tokens):
        r, c = divmod(i, cols)
        shade = norm(values[i]) if np.isfinite(values[i]) else 0.5
        # White text on the darkest cells keeps every token legible.
        ax.text(
            c,
            r,
            _mpl_text(token),
            ha="center",
            va="center",
            # Long words get a smaller font so that they stay inside their cell.
            fontsize=max(6.0, min(9.0, 80.0 / max(1, len(_mpl_text(token))))),
            color=text_colour(float(shade)),
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{unit} (left to right, wrapped)")
    if title:
        ax.set_title(_mpl_text(title, max_chars=120))
    fig.colorbar(image, ax=ax, label="attribution", fraction=0.04, pad=0.02)
    return _finish(fig, save)


def plot_layer_token_heatmap(
    scores: Any,
    tokens: Sequence[str],
    layer_names: Sequence[str] | None = None,
    selected: int | None = None,
    *,
    row_normalise: bool = True,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """Saliency of every token at every candidate layer, with the selected layer outlined.

    Args:
        scores: ``(L, n)``: one row of token scores per layer.
        tokens: the ``n`` tokens.
        layer_names: ``L`` row labels (default ``layer 0`` ... ``layer L-1``).
        selected: the row index of the selected layer, outlined and starred.
        row_normalise: divide each row by its largest magnitude, because saliency scales differ
            by orders of magnitude across layers and would otherwise leave most rows white.
        title: an optional title.
        save: a PNG path to write.

    Returns:
        The figure.
    """
    grid = as_float_array(scores)
    if grid.ndim != 2:
        raise ValueError(f"scores must be (layers, tokens), got shape {grid.shape}")
    n_layers, n_tokens = grid.shape
    if len(tokens) != n_tokens:
        raise ValueError(f"{len(tokens)} tokens but scores have {n_tokens} columns")
    names = [f"layer {i}" for i in range(n_layers)] if layer_names is None else list(layer_names)
    if len(names) != n_layers:
        raise ValueError(f"{len(names)} layer names but scores have {n_layers} rows")
    if selected is not None and not 0 <= selected < n_layers:
        raise ValueError(f"selected={selected} is not a row of the {n_layers} layers")
    if row_normalise:
        peak = np.nanmax(np.abs(grid), axis=1, keepdims=True)
        grid = grid / np.where(peak > 0, peak, 1.0)
    fig = Figure(figsize=(max(6.0, 0.42 * n_tokens + 2.5), max(3.0, 0.45 * n_layers + 1.8)))
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap=score_cmap(), norm=symmetric_norm(grid), aspect="auto")
    ax.set_xticks(range(n_tokens), [_mpl_text(t) for t in tokens], rotation=60, ha="right")
    labels = [_mpl_text(str(n), 40) for n in names]
    if selected is not None:
        labels[selected] = "\u2605 " + labels[selected]
    ax.set_yticks(range(n_layers), labels)
    if selected is not None:
        ax.get_yticklabels()[selected].set_fontweight("bold")
        ax.add_patch(
            Rectangle(
                (-0.5, selected - 0.5), n_tokens, 1, fill=False, edgecolor="black", linewidth=2
            )
        )
    ax.set_xlabel("input token")
    ax.set_ylabel("layer")
    if title:
        ax.set_title(_mpl_text(title, max_chars=120))
    label = "saliency (each row scaled to ±1)" if row_normalise else "saliency"
    fig.colorbar(image, ax=ax, label=label, fraction=0.04, pad=0.02)
    return _finish(fig, save)


def plot_coherence_curves(
    curves: Mapping[str, Sequence[float]],
    *,
    layers: Sequence[int | str] | None = None,
    selected: Mapping[str, int] | None = None,
    ylabel: str = "coherence (share of positions decoding to their own token)",
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """Coherence per layer, one line per model (e.g. the pre-trained encoder and each classifier).

    Args:
        curves: model name -> one score per layer.
        layers: the x tick labels (default ``0 .. L-1``).
        selected: model name -> index of the layer its selector picked, marked with a star.
        ylabel: the y-axis label.
        colors: name -> colour (default: matplotlib's cycle); a report passes
            :func:`method_colours`.
        title: an optional title.
        save: a PNG path to write.

    Returns:
        The figure.
    """
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    longest = 0
    for name, values in curves.items():
        ys = as_float_array(values).reshape(-1)
        longest = max(longest, ys.size)
        colour = colors.get(name) if colors else None
        (line,) = ax.plot(range(ys.size), ys, marker="o", label=_mpl_text(name, 60), color=colour)
        if selected and name in selected:
            i = selected[name]
            ax.plot([i], [ys[i]], marker="*", markersize=16, color=line.get_color(), zorder=3)
    if layers is not None:
        ax.set_xticks(range(len(layers)), [str(x) for x in layers])
    else:
        ax.set_xticks(range(longest))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    if title:
        ax.set_title(_mpl_text(title, max_chars=120))
    return _finish(fig, save)


def plot_aopc_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    bins: Sequence[float],
    *,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """ERASER comprehensiveness and sufficiency per bin, one line per method.

    Args:
        curves: method -> ``{"comprehensiveness": [...], "sufficiency": [...]}``, one mean value
            per bin (a method may lack either key).
        bins: the bins, as percentages of the non-special tokens (e.g. ``[1, 5, 10, 20, 50]``).
        colors: method -> colour (default :func:`method_colours` of the methods sorted by
            name, as :func:`plot_cost_vs_faithfulness` does, so that the two figures agree; a
            report passes its colours so that every figure agrees).
        title: an optional title.
        save: a PNG path to write.

    Returns:
        The figure.
    """
    colors = dict(colors) if colors is not None else method_colours(sorted(curves))
    fig = Figure(figsize=(11.0, 4.2))
    panels = (
        ("comprehensiveness", "comprehensiveness \u2191 (top tokens deleted)"),
        ("sufficiency", "sufficiency \u2193 (only top tokens kept)"),
    )
    xs = [float(b) for b in bins]
    for k, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        drawn = 0
        for method, per_key in curves.items():
            if key in per_key:
                drawn += 1
                ys = as_float_array(per_key[key]).reshape(-1)
                if ys.size != len(xs):
                    raise ValueError(f"{method} {key}: {ys.size} values for {len(xs)} bins")
                ax.plot(xs, ys, marker="o", label=_mpl_text(method, 40), color=colors.get(method))
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("% of tokens (bin)")
        ax.set_ylabel("drop in target probability")
        ax.set_title(label)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(_mpl_text(title, max_chars=120))
    return _finish(fig, save)


def plot_cost_vs_faithfulness(
    cost: Mapping[str, float],
    score: Mapping[str, float],
    *,
    ci: Mapping[str, tuple[float, float]] | None = None,
    xlabel: str = "seconds per example (log scale)",
    ylabel: str = "AOPC comprehensiveness \u2191",
    highlight: Iterable[str] = (OURS,),
    logx: bool = True,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
    save: PathLike | None = None,
) -> Figure:
    """One point per method: its cost against its faithfulness, with CI error bars.

    Args:
        cost: method -> cost (e.g. seconds per example, or passes per example).
        score: method -> faithfulness score; methods missing from ``cost`` are skipped.
        ci: method -> ``(low, high)`` confidence interval of the score.
        xlabel: the x-axis label.
        ylabel: the y-axis label.
        highlight: methods drawn larger and in bold (ours).
        logx: use a log-scaled cost axis (costs span orders of magnitude).
        colors: method -> colour (default :func:`method_colours` of the drawn methods, sorted
            by name), as in the other figures.
        title: an optional title.
        save: a PNG path to write.

    Returns:
        The figure.
    """
    marked = set(highlight)
    colors = dict(colors) if colors is not None else method_colours(sorted(set(cost) & set(score)))
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for method in sorted(set(cost) & set(score)):
        x, y = float(cost[method]), float(score[method])
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        yerr = None
        if ci and method in ci and all(math.isfinite(float(v)) for v in ci[method]):
            lo, hi = (float(v) for v in ci[method])
            yerr = [[max(0.0, y - lo)], [max(0.0, hi - y)]]
        big = method in marked
        ax.errorbar(
            [x],
            [y],
            yerr=yerr,
            fmt="*" if big else "o",
            markersize=14 if big else 7,
            capsize=3,
            color=colors.get(method),
        )
        ax.annotate(
            _mpl_text(method, 40),
            (x, y),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=9,
            fontweight="bold" if big else "normal",
        )
    if logx and any(float(cost[m]) > 0 for m in cost):
        ax.set_xscale("log")
    # Room on the right and at the top for the method names written beside the points.
    ax.margins(x=0.2, y=0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(_mpl_text(title, max_chars=120))
    return _finish(fig, save)
