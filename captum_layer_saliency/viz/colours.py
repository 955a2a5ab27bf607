"""The colours of every figure and HTML page: one diverging map for scores, one palette for methods.

Scores: one diverging colour map centred on zero (:data:`CMAP`: blue negative, white zero, red
positive) with symmetric limits, so the same score has the same colour in a plot and in HTML.

Methods: :func:`method_colours` gives each method a fixed colour of :data:`METHOD_CMAP`. This
floor does not know the comparison registry; a caller that wants a method to keep its colour
whatever else is drawn (the comparison report) passes the registry's names as ``order``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import Colormap, TwoSlopeNorm, to_hex

__all__ = [
    "CMAP",
    "METHOD_CMAP",
    "OURS",
    "as_float_array",
    "cell_colours",
    "method_colours",
    "score_cmap",
    "symmetric_norm",
    "text_colour",
]

#: The diverging colour map of every figure and of the HTML renderer.
CMAP = "RdBu_r"
#: The qualitative colour map that gives each method its colour in every figure.
METHOD_CMAP = "tab20"
#: Our method: it always takes the first (strongest) method colour and is highlighted.
OURS = "dls"


def score_cmap() -> Colormap:
    """The :data:`CMAP` colour map object."""
    return colormaps[CMAP]


def method_colours(methods: Iterable[str], order: Sequence[str] = ()) -> dict[str, str]:
    """One fixed colour per method, the same in every figure and every report.

    DLS (:data:`OURS`) always takes the first colour (tab20's dark blue), then the names of
    ``order`` take theirs by their place in it, so a method listed there has the same colour in
    a report of two methods and in one of fifteen. Other names follow, in the order given.
    Colours repeat after 20 methods.

    Args:
        methods: method names (canonical).
        order: the names whose colours are fixed, in palette order (the comparison report
            passes its registry's names, in registration order). Default: none but DLS.

    Returns:
        Method -> ``#rrggbb``.
    """
    palette = colormaps[METHOD_CMAP].colors  # type: ignore[attr-defined]
    known = [OURS, *[m for m in order if m != OURS]]
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


def as_float_array(values: Any) -> np.ndarray:
    """Scores as a float64 numpy array, from a tensor, an array or a sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def symmetric_norm(values: Any) -> TwoSlopeNorm:
    """A norm centred on zero with limits ``±max|finite value|`` (``±1`` if all are zero)."""
    arr = as_float_array(values)
    finite = np.abs(arr[np.isfinite(arr)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)


def cell_colours(value: float, norm: TwoSlopeNorm) -> tuple[str, str]:
    """Background and text colour for one score (``#rrggbb`` strings, never user text).

    The text is white on the darkest backgrounds, black elsewhere; a non-finite score is black
    on white.
    """
    if not math.isfinite(value):
        return "#ffffff", "#000000"
    shade = float(norm(value))
    return to_hex(score_cmap()(shade)), text_colour(shade)


def text_colour(shade: float) -> str:
    """White text on the darkest cells (``|shade - 0.5| > 0.35``), black elsewhere.

    Args:
        shade: the score's place on the colour map, in ``[0, 1]`` (``0.5`` is zero).

    Returns:
        ``"#ffffff"`` or ``"#000000"``.
    """
    return "#ffffff" if abs(shade - 0.5) > 0.35 else "#000000"
