"""The report's figures share one colour per method; its tables fit the page."""

from __future__ import annotations

from matplotlib.colors import to_hex

from captum_layer_saliency import viz
from captum_layer_saliency.compare.report import _html_table


def test_a_method_has_one_colour_in_every_figure() -> None:
    colours = viz.method_colours(["integrated_gradients", "dls", "mine"])
    assert colours == viz.method_colours(["dls", "mine", "integrated_gradients"]) | {
        "mine": colours["mine"]
    }
    assert colours["dls"] == viz.method_colours(["dls"])["dls"]  # whatever else is compared
    assert len(set(viz.method_colours(["dls", "saliency", "lime", "random"]).values())) == 4
    curves = {
        "integrated_gradients": {"comprehensiveness": [0.1, 0.2], "sufficiency": [0.0, 0.1]},
        "dls": {"comprehensiveness": [0.2, 0.3], "sufficiency": [0.1, 0.0]},
    }
    aopc = viz.plot_aopc_curves(curves, [10, 50])
    line_colours = {line.get_label(): to_hex(line.get_color()) for line in aopc.axes[0].get_lines()}
    scatter = viz.plot_cost_vs_faithfulness(
        {"dls": 0.1, "integrated_gradients": 3.0}, {"dls": 0.3, "integrated_gradients": 0.35}
    )
    point_colours = {
        text.get_text(): to_hex(line.get_color())
        for text, line in zip(
            scatter.axes[0].texts,
            [c for c in scatter.axes[0].get_lines() if c.get_marker() in ("*", "o")],
            strict=True,
        )
    }
    for method in ("dls", "integrated_gradients"):
        assert line_colours[method] == point_colours[method] == viz.method_colours([method])[method]


def test_tables_put_the_interval_under_the_mean_and_scroll_rather_than_cut() -> None:
    table = _html_table(["method", "comp"], [["<dls>", "0.119 [0.014, 0.185]"], ["x", "3.5×"]])
    assert table.startswith('<div class="table-wrap">')
    assert '0.119<br><span class="ci">[0.014, 0.185]</span>' in table
    assert "&lt;dls&gt;" in table and "<dls>" not in table
    page = viz.html_page(table)
    assert "img { max-width: 100%" in page and "overflow-x: auto" in page
