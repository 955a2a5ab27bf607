"""Safe HTML for token explanations: fragments, whole pages, and Captum's renderer made safe.

Token strings, labels and titles are untrusted (they come from the data). :func:`render_html`
escapes every piece of text with :func:`html.escape`; everything else it emits is numbers and
colours formatted by this package. :func:`html_page` adds a Content-Security-Policy that forbids
every script. Captum's ``visualize_text`` interpolates tokens and class names into HTML
unescaped, so a review containing ``<script>`` would run in the notebook;
:func:`safe_visualize_text` escapes the records before Captum sees them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from captum.attr import visualization
from matplotlib.colors import TwoSlopeNorm

from captum_layer_saliency.viz.colours import as_float_array, cell_colours, symmetric_norm

__all__ = ["escape_record", "html_page", "render_html", "safe_visualize_text"]

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
    values = as_float_array(scores).reshape(-1)
    if len(tokens) != values.size:
        raise ValueError(f"{len(tokens)} tokens but {values.size} scores")
    norm = symmetric_norm(values)
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
        background, colour = cell_colours(value, norm)
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
        background, colour = cell_colours(value, norm)
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
    attributions = torch.as_tensor(as_float_array(record.word_attributions).reshape(-1))
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
    return visualization.visualize_text([escape_record(r) for r in records], legend=legend)
