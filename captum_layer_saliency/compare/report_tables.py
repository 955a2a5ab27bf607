"""The summary as tables: markdown (``summary.md``, the CLI), CSV (``summary.csv``) and HTML.

:func:`summary_frame` and :func:`paired_frame` turn a summary from
:func:`~captum_layer_saliency.compare.report_stats.summarize` into a pandas ``DataFrame`` of
display strings once; the markdown (``DataFrame.to_markdown``) and the HTML tables of the report
(``DataFrame.to_html``) are two renderings of the same frame. HTML cells are escaped.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from captum_layer_saliency._utils import atomic_write
from captum_layer_saliency.compare.selection_notes import selection_notes

__all__ = [
    "arrow",
    "format_markdown",
    "format_table",
    "html_table",
    "paired_frame",
    "summary_frame",
    "write_csv",
]


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _fmt_ci(stat: Mapping[str, Any], digits: int = 3) -> str:
    if not math.isfinite(stat["mean"]):
        return "–"
    low, high = _fmt(stat["low"], digits), _fmt(stat["high"], digits)
    return f"{_fmt(stat['mean'], digits)} [{low}, {high}]"


def arrow(higher: bool | None) -> str:
    """The direction mark after a metric's name.

    Args:
        higher: whether higher is better (``None``: unknown).

    Returns:
        ``" ↑"``, ``" ↓"`` or ``""``.
    """
    return {True: " ↑", False: " ↓", None: ""}[higher]


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The main table as display strings (markdown and HTML render it).

    Args:
        summary: what :func:`~captum_layer_saliency.compare.report_stats.summarize` returns.

    Returns:
        One row per method, in ranking order; a metric's cell is ``mean [low, high]``.
    """
    metrics = summary["metrics"]
    header = ["method", "n"]
    header += [f"{m}{arrow(summary['higher_is_better'][m])}" for m in metrics]
    header += ["s/example", "fwd/example", "bwd/example"]
    if summary["cost_reference"]:
        header.append(f"cost × {summary['cost_reference']}")
    body = []
    for method in summary["order"]:
        s = summary["methods"][method]
        line = [method, str(s["n"])]
        line += [_fmt_ci(s["metrics"][m]) for m in metrics]
        line += [_fmt(s["seconds"]["mean"], 4), _fmt(s["forwards"], 1), _fmt(s["backwards"], 1)]
        if summary["cost_reference"]:
            ratio = s["cost_ratio"]
            line.append("–" if ratio is None else f"{ratio:.1f}×")
        body.append(line)
    return pd.DataFrame(body, columns=header, dtype=object)


def paired_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The paired differences against the reference, as display strings.

    Args:
        summary: what :func:`~captum_layer_saliency.compare.report_stats.summarize` returns.

    Returns:
        One row per method but the reference, in ranking order.
    """
    header = [f"method − {summary['reference']}"] + list(summary["metrics"])
    body = [
        [method] + [_fmt_ci(summary["paired"][method][m]) for m in summary["metrics"]]
        for method in summary["order"]
        if method in summary["paired"]
    ]
    return pd.DataFrame(body, columns=header, dtype=object)


def _markdown(frame: pd.DataFrame) -> str:
    """A pipe table of display strings (kept as written: no number parsing), ``|`` escaped."""
    escaped = frame.map(_md_cell).rename(columns=_md_cell)
    return str(escaped.to_markdown(index=False, disable_numparse=True))


def format_table(summary: Mapping[str, Any]) -> str:
    """The main summary table as markdown (what the CLI prints).

    Args:
        summary: what :func:`~captum_layer_saliency.compare.report_stats.summarize` returns.

    Returns:
        A markdown table, ``|`` in cells escaped.
    """
    return _markdown(summary_frame(summary))


def format_markdown(summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> str:
    """The whole ``summary.md``: the setup, the main table and the paired differences.

    Args:
        summary: what :func:`~captum_layer_saliency.compare.report_stats.summarize` returns.
        config: the run's configuration (``run.json``; with ``combined_from`` and
            ``index_range`` when the rows come from
            :func:`~captum_layer_saliency.compare.report.combine_runs`).

    Returns:
        The markdown document.
    """
    config = config or {}
    parts = ["# Comparison summary", ""]
    if config and not config.get("combined_from"):
        parts.append(
            f"Task `{config.get('task')}`, model `{config.get('model')}`, "
            f"seed {config.get('seed')}, limit {config.get('limit')}, "
            f"batch size {config.get('batch_size')}."
        )
    if config.get("combined_from"):
        parts.append(f"Task `{config.get('task')}`, model `{config.get('model')}`.")
        low, high = config.get("index_range") or (None, None)
        where = (
            ""
            if low is None and high is None
            else f", examples with index in [{0 if low is None else low}, "
            f"{'end' if high is None else high})"
        )
        parts.append(
            "Rows combined from "
            + ", ".join(f"`{d}`" for d in config["combined_from"])
            + where
            + "; methods run on different subsets have different `n`."
        )
    parts += [
        "The explained class is the model's prediction. Cells are means with percentile "
        f"bootstrap {int(100 * summary['confidence'])} % confidence intervals "
        f"({summary['n_boot']} resamples, seed {summary['seed']}). ↑: higher is better, "
        "↓: lower is better. Seconds and passes are for the attribution only, amortised over "
        "the batch. `n` counts the rows; a metric's cell leaves out the examples where it is "
        "undefined (NaN, e.g. no human rationale), see the `_n` columns of summary.csv.",
        "",
    ]
    cut = summary.get("truncation", {})
    if cut.get("examples"):
        parts += [
            f"**{cut['examples']} of {cut['of']} examples were truncated** to the model's "
            f"budget of {config.get('max_length', '?')} tokens (the longest had "
            f"{cut['max_tokens']}); their rows say `truncated: true`.",
            "",
        ]
    parts += [format_table(summary), ""]
    parts += selection_notes(config, summary)
    if summary["paired"]:
        parts += [
            f"## Paired differences against `{summary['reference']}`",
            "",
            "Per example, method minus reference, on the examples both explained.",
            "",
            _markdown(paired_frame(summary)),
            "",
        ]
    return "\n".join(parts)


def write_csv(summary: Mapping[str, Any], path: Path) -> None:
    """Write ``summary.csv``: per method, every statistic in its own column, empty for none.

    Args:
        summary: what :func:`~captum_layer_saliency.compare.report_stats.summarize` returns.
        path: the file to write.
    """
    metrics = summary["metrics"]
    rows = []
    for method in summary["order"]:
        s = summary["methods"][method]
        row: dict[str, Any] = {"method": method, "n": s["n"]}
        for m in metrics:
            st = s["metrics"][m]
            row |= {f"{m}_mean": st["mean"], f"{m}_low": st["low"], f"{m}_high": st["high"]}
            row[f"{m}_n"] = st["n"]
        row |= {
            "seconds_per_example": s["seconds"]["mean"],
            "forwards_per_example": s["forwards"],
            "backwards_per_example": s["backwards"],
            "cost_ratio": s["cost_ratio"],
        }
        for m in metrics:
            d = summary["paired"].get(method, {}).get(m) or {}
            row[f"{m}_diff_vs_reference_mean"] = d.get("mean")
            row[f"{m}_diff_low"], row[f"{m}_diff_high"] = d.get("low"), d.get("high")
        rows.append(row)
    frame = pd.DataFrame(rows)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\r\n"))


_WITH_CI = re.compile(r"^(\S+) (\[[^\]]*\])$")


def _html_cell(text: str) -> str:
    """An escaped cell; a ``mean [low, high]`` cell puts its interval on a second, small line.

    That keeps a table of many metrics within the page.
    """
    match = _WITH_CI.match(text)
    if match is None:
        return html.escape(text)
    mean, ci = (html.escape(g) for g in match.groups())
    return f'{mean}<br><span class="ci">{ci}</span>'


def html_table(frame: pd.DataFrame) -> str:
    """An HTML table of display strings, every cell escaped, in a horizontally scrolling box.

    Args:
        frame: display strings (:func:`summary_frame`, :func:`paired_frame`); a
            ``mean [low, high]`` cell shows its interval on a second, small line.

    Returns:
        The HTML fragment.
    """
    # Escaped here, cell by cell, so that the interval's markup survives ``escape=False``.
    escaped = frame.map(_html_cell).rename(columns=lambda name: html.escape(str(name)))
    table = escaped.to_html(index=False, escape=False, border=0)
    # The wrapper keeps a wide table inside the page (it scrolls rather than being cut off).
    return f'<div class="table-wrap">{table}</div>'
