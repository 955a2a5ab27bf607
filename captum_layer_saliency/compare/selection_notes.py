"""The report's notes on each DLS method's layer.

Which layer, its coherence curve, what it was chosen on, and the one-off cost of choosing it
(which the per-example cost column leaves out).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

__all__ = ["selection_notes", "selection_notes_html"]


def _lines(config: Mapping[str, Any], summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(method, note)`` pairs in plain text (markdown code spans only)."""
    out = []
    for method, sel in sorted((config.get("layer_selection") or {}).items()):
        curve = ", ".join(
            f"{name} {score:.3f}"
            + (" (unreachable)" if index in sel.get("unreachable", []) else "")
            for index, name, score in zip(
                sel.get("layer_indices", []),
                sel.get("layer_names", []),
                sel.get("scores", []),
                strict=False,
            )
        )
        seconds = float(sel.get("calibration_seconds") or 0.0)
        per_example = (summary.get("methods", {}).get(method, {}).get("seconds") or {}).get("mean")
        if seconds > 0:
            worth = f" (≈ {seconds / per_example:.0f} examples' worth)" if per_example else ""
            cost = f"one-off calibration {seconds:.1f} s{worth}, not in s/example"
        else:
            cost = "stored with the model: no calibration at run time"
        out.append(
            (
                method,
                f"`{sel.get('name', '?')}`, chosen label-free by `{sel.get('score')}` + "
                f"`{sel.get('rule')}` on {sel.get('calibration') or '?'}; {cost}. "
                f"Coherence per layer: {curve}.",
            )
        )
    return out


def selection_notes(config: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    """Markdown lines for ``summary.md`` (empty when no method recorded a layer selection)."""
    lines = _lines(config, summary)
    if not lines:
        return []
    return ["Layer selection (cost notes):", ""] + [f"* `{m}`: {n}" for m, n in lines] + [""]


def selection_notes_html(config: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """The same notes as an escaped HTML list ("" when there are none)."""
    lines = _lines(config, summary)
    if not lines:
        return ""
    items = "".join(
        f"<li><code>{html.escape(m)}</code>: {html.escape(n.replace('`', ''))}</li>"
        for m, n in lines
    )
    return f"<p>Layer selection (cost notes):</p><ul>{items}</ul>"
