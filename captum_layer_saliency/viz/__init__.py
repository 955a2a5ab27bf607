"""Figures and safe HTML for token explanations (floor 2: imports only ``models`` and ``_utils``).

The modules, by job:

* :mod:`~captum_layer_saliency.viz.colours` -- the diverging score map (:data:`CMAP`) and one
  colour per method (:func:`method_colours`);
* :mod:`~captum_layer_saliency.viz.plots` -- matplotlib figures (token and layer heatmaps,
  coherence and AOPC curves, cost against faithfulness);
* :mod:`~captum_layer_saliency.viz.html` -- escaped HTML fragments and pages, and Captum's
  ``visualize_text`` made safe;
* :mod:`~captum_layer_saliency.viz.explanation` -- the :class:`Explanation` object and its files.

The public names of the first three are re-exported here, so ``from captum_layer_saliency import
viz; viz.plot_token_heatmap(...)`` works as before. All colours come from one diverging colour
map centred on zero (blue negative, white zero, red positive) with symmetric limits, so the same
score has the same colour in a plot and in HTML. All text is escaped (HTML) or made inert
(matplotlib mathtext).
"""

from captum_layer_saliency.viz.colours import CMAP, METHOD_CMAP, method_colours
from captum_layer_saliency.viz.html import (
    escape_record,
    html_page,
    render_html,
    safe_visualize_text,
)
from captum_layer_saliency.viz.plots import (
    plot_aopc_curves,
    plot_coherence_curves,
    plot_cost_vs_faithfulness,
    plot_layer_token_heatmap,
    plot_token_heatmap,
)

__all__ = [
    "CMAP",
    "METHOD_CMAP",
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
