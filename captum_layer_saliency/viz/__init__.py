"""Figures and safe HTML for token explanations.

Every plotting function builds a :class:`matplotlib.figure.Figure` without pyplot (no global
state, nothing leaks when a report draws many figures), returns it, and saves it as a PNG when
given ``save=``. In a notebook the returned figure displays itself.

All colours come from one diverging colour map centred on zero (blue negative, white zero, red
positive) with symmetric limits, so the same score has the same colour in a plot and in HTML.

Safety: token strings, labels and titles are untrusted (they come from the data).
:func:`render_html` escapes every piece of text with :func:`html.escape`; everything else it
emits is numbers formatted by this module. Captum's ``visualize_text`` interpolates tokens and
class names into HTML unescaped, so a review containing ``<script>`` would run in the notebook;
:func:`safe_visualize_text` escapes the records before Captum sees them.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import Colormap, TwoSlopeNorm, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = [
    "CMAP",
    "escape_record",
    "html_page",
    "method_colours",
    "plot_aopc_curves",
    "plot_coherence_curves",
    "plot_cost_vs_faithfulness",
    "plot_layer_token_heatmap",
    "plot_token_heatmap",
    "render_html",
    "safe_visualize_text",
]

#: The diverging colour map of every figure and of the HTML renderer.
CMAP = "RdBu_r"
_MAX_TOKEN_CHARS = 14
PathLike = str | os.PathLike[str]


def _cmap() -> Colormap:
    return colormaps[CMAP]


#: The qualitative colour map that gives each method its colour in every figure.
METHOD_CMAP = "tab20"


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """One fixed colour per method, the same in every figure and every report.

    The registered methods take their colour from their place in the registry (so ``dls`` has
    the same colour in a report of two methods and in one of fifteen); other names follow, in
    the order given. Colours repeat after 20 methods.

    Args:
        methods: method names (canonical).

    Returns:
        Method -> ``#rrggbb``.
    """
    from captum_layer_saliency.compare.methods.registry import METHODS

    palette = colormaps[METHOD_CMAP].colors  # type: ignore[attr-defined]
    known = list(METHODS)
    # The registry's order, but DLS first: ours gets the strongest colour (tab20's dark blue).
    known = ["dls", *[m for m in known if m != "dls"]]
    out: dict[str, str] = {}
    extra = 0
    for method in methods:
        if method in known:
            slot = known.index(method)
        else:
            slot = len(known) + extra
            extra += 1
        out[method] = to_hex(palette[(2 * slot + slot // 10) % len(palette)])
    return out


def _as_float_array(values: Any) -> np.ndarray:
    """Scores as a float numpy array, from a tensor, an array or a sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _symmetric_norm(values: Any) -> TwoSlopeNorm:
    """A norm centred on zero with limits ``±max|finite value|`` (``±1`` if all are zero)."""
    arr = _as_float_array(values)
    finite = np.abs(arr[np.isfinite(arr)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)


def _mpl_text(token: str, max_chars: int = _MAX_TOKEN_CHARS) -> str:
    """A token made safe for matplotlib text: ``$`` would start mathtext, long tokens are cut."""
    token = str(token)
    if len(token) > max_chars:
        token = token[: max_chars - 1] + "\u2026"
    return token.replace("$", r"\$")


def _finish(fig: Figure, save: PathLike | None) -> Figure:
    fig.tight_layout()
    if save is not None:
        fig.savefig(os.fspath(save), dpi=150, bbox_inches="tight")
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
    values = _as_float_array(scores).reshape(-1)
    if len(tokens) != values.size:
        raise ValueError(f"{len(tokens)} tokens but {values.size} scores")
    if per_row < 1:
        raise ValueError(f"per_row must be at least 1, got {per_row}")
    n = max(1, len(tokens))
    rows = math.ceil(n / per_row)
    cols = min(n, per_row)  # a short text fills its one row
    grid = np.full((rows, cols), np.nan)
    grid.flat[: values.size] = values
    norm = _symmetric_norm(values)
    fig = Figure(figsize=(max(4.0, 0.95 * cols + 1.5), 0.55 * rows + 1.2))
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap=_cmap(), norm=norm, aspect="auto")
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
            color="white" if abs(float(shade) - 0.5) > 0.35 else "black",
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
    grid = _as_float_array(scores)
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
    image = ax.imshow(grid, cmap=_cmap(), norm=_symmetric_norm(grid), aspect="auto")
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
        ys = _as_float_array(values).reshape(-1)
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
        colors: method -> colour (default :func:`method_colours`).
        title: an optional title.
        save: a PNG path to write.

    Returns:
        The figure.
    """
    colors = dict(colors) if colors is not None else method_colours(curves)
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
                ys = _as_float_array(per_key[key]).reshape(-1)
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
    highlight: Iterable[str] = ("dls",),
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
        colors: method -> colour (default :func:`method_colours`), as in the other figures.
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


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; line-height: 1.5; color: #222; }
.cls-expl { margin: 0.4em 0 0.9em 0; }
.cls-expl .meta { font-size: 0.85em; color: #555; }
.cls-expl .tok { padding: 0.1em 0.15em; border-radius: 3px; }
.cls-legend span { display: inline-block; padding: 0 0.6em; margin-right: 0.3em; }
.cls-item { margin: 0.8em 0 1.2em 0; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.6em; border: 1px solid #ccc; }
.table-wrap { max-width: 100%; overflow-x: auto; font-size: 0.8em; }
.table-wrap td, .table-wrap th { padding: 0.2em 0.4em; }
.table-wrap td { white-space: nowrap; } .table-wrap .ci { color: #666; font-size: 0.85em; }
img { max-width: 100%; height: auto; }
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell_colours(value: float, norm: TwoSlopeNorm) -> tuple[str, str]:
    """Background and text colour for one score (``#rrggbb`` strings, never user text)."""
    if not math.isfinite(value):
        return "#ffffff", "#000000"
    shade = float(norm(value))
    background = to_hex(_cmap()(shade))
    return background, "#ffffff" if abs(shade - 0.5) > 0.35 else "#000000"


def render_html(
    tokens: Sequence[str],
    scores: Any,
    *,
    title: str | None = None,
    label: str | None = None,
    prediction: str | None = None,
    subword_prefix: str | None = "##",
    legend: bool = False,
) -> str:
    """A text explanation as an HTML fragment, every piece of text escaped.

    Each token is a ``<span>`` coloured by its score (the shared diverging map, limits
    ``±max|score|`` of this explanation), with the score as its tooltip. Sub-word pieces that
    start with ``subword_prefix`` are shown glued to the previous piece, without the prefix.

    Args:
        tokens: the tokens (untrusted text).
        scores: one score per token.
        title: an optional heading (untrusted text).
        label: the true label's name (untrusted text).
        prediction: the predicted label's name (untrusted text).
        subword_prefix: the tokenizer's continuation prefix, or ``None`` to show tokens as they
            are.
        legend: append a small colour legend.

    Returns:
        An HTML fragment (a ``<div>``); wrap it with :func:`html_page` for a full document.
    """
    values = _as_float_array(scores).reshape(-1)
    if len(tokens) != values.size:
        raise ValueError(f"{len(tokens)} tokens but {values.size} scores")
    norm = _symmetric_norm(values)
    parts = ['<div class="cls-expl">']
    if title is not None:
        parts.append(f"<h3>{_esc(title)}</h3>")
    meta = []
    if label is not None:
        meta.append(f"label: <b>{_esc(label)}</b>")
    if prediction is not None:
        meta.append(f"prediction: <b>{_esc(prediction)}</b>")
    if meta:
        parts.append(f'<div class="meta">{" &middot; ".join(meta)}</div>')
    parts.append('<div class="text">')
    for i, (token, value) in enumerate(zip(tokens, values.tolist(), strict=True)):
        text = str(token)
        glue = (
            bool(subword_prefix)
            and text.startswith(str(subword_prefix))
            and len(text) > len(str(subword_prefix))
        )
        if glue:
            text = text[len(str(subword_prefix)) :]
        background, colour = _cell_colours(value, norm)
        tip = f"{value:+.4f}" if math.isfinite(value) else "n/a"
        if i and not glue:
            parts.append(" ")
        parts.append(
            f'<span class="tok" style="background-color:{background};color:{colour}" '
            f'title="{tip}">{_esc(text)}</span>'
        )
    parts.append("</div>")
    if legend:
        parts.append(_legend_html())
    parts.append("</div>")
    return "".join(parts)


def _legend_html() -> str:
    norm = TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0)
    cells = []
    for value, name in ((-1.0, "against the target"), (0.0, "neutral"), (1.0, "for the target")):
        background, colour = _cell_colours(value, norm)
        cells.append(f'<span style="background-color:{background};color:{colour}">{name}</span>')
    return f'<div class="cls-legend">{"".join(cells)}</div>'


def html_page(body: str | Iterable[str], *, title: str = "Explanations") -> str:
    """A standalone HTML document around fragments from :func:`render_html`.

    The page carries a Content-Security-Policy that forbids every script, as a second line of
    defence behind the escaping.

    Args:
        body: trusted HTML fragment(s) (built by this module, or escaped by the caller).
        title: the page title (untrusted text; escaped).

    Returns:
        The document.
    """
    content = body if isinstance(body, str) else "\n".join(body)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'\">\n"
        f"<title>{_esc(title)}</title>\n<style>{_PAGE_CSS}</style></head>\n"
        f"<body>\n<h1>{_esc(title)}</h1>\n{_legend_html()}\n{content}\n</body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Captum's visualize_text, made safe
# --------------------------------------------------------------------------------------------


def _escape_class(value: Any) -> Any:
    # Class fields may be ints (Captum's annotation) or names; only text needs escaping.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return _esc(value)


def escape_record(record: Any) -> Any:
    """A copy of a Captum ``VisualizationDataRecord`` that is safe to render.

    Captum formats ``raw_input_ids`` (the tokens) and the class fields straight into HTML.
    This escapes every token and every non-numeric class field, and coerces the numeric fields
    to numbers so that nothing else can carry markup.

    Args:
        record: a ``captum.attr.visualization.VisualizationDataRecord``.

    Returns:
        A new record; the input is not modified.
    """
    from captum.attr import visualization

    attributions = torch.as_tensor(_as_float_array(record.word_attributions).reshape(-1))
    return visualization.VisualizationDataRecord(
        attributions,
        float(record.pred_prob),
        _escape_class(record.pred_class),
        _escape_class(record.true_class),
        _escape_class(record.attr_class),
        float(record.attr_score),
        [_esc(token) for token in record.raw_input_ids],
        float(record.convergence_score) if record.convergence_score is not None else 0.0,
    )


def safe_visualize_text(records: Iterable[Any], legend: bool = True) -> Any:
    """Captum's ``visualize_text`` on escaped copies of ``records``.

    Args:
        records: Captum ``VisualizationDataRecord`` objects (untrusted tokens and labels).
        legend: show Captum's legend.

    Returns:
        What Captum returns: an ``IPython.display.HTML`` object (also displayed in a notebook).
    """
    from captum.attr import visualization

    return visualization.visualize_text([escape_record(r) for r in records], legend=legend)
