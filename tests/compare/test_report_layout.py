"""The report's figures share one colour per method; its tables fit the page."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.colors import to_hex

from captum_layer_saliency import viz
from captum_layer_saliency.compare.methods import available_methods
from captum_layer_saliency.compare.report import summarize
from captum_layer_saliency.compare.report_figures import coherence_plot, colour_order
from captum_layer_saliency.compare.report_tables import (
    format_table,
    html_table,
    paired_frame,
    summary_frame,
    write_csv,
)


def test_a_method_has_one_colour_in_every_figure() -> None:
    order = available_methods()  # what the report passes
    colours = viz.method_colours(["integrated_gradients", "dls", "mine"], order)
    assert colours == viz.method_colours(["dls", "mine", "integrated_gradients"], order) | {
        "mine": colours["mine"]
    }
    assert colours["dls"] == viz.method_colours(["dls"], order)["dls"]  # whatever else is compared
    assert len(set(viz.method_colours(["dls", "saliency", "lime", "random"], order).values())) == 4
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
    frame = pd.DataFrame(
        [["<dls>", "0.119 [0.014, 0.185]"], ["x", "3.5×"]], columns=["method", "comp"]
    )
    table = html_table(frame)
    assert table.startswith('<div class="table-wrap">')
    assert '0.119<br><span class="ci">[0.014, 0.185]</span>' in table
    assert "&lt;dls&gt;" in table and "<dls>" not in table
    page = viz.html_page(table)
    assert "img { max-width: 100%" in page and "overflow-x: auto" in page


SCRIPT = "<script>alert(1)</script>|x"


def _hostile_summary() -> dict:
    rows = [
        {"index": i, "method": method, "seconds": 0.5, "metrics": {"comprehensiveness": value}}
        for i, (a, b) in enumerate([(0.25, 0.5), (0.75, 0.5)])
        for method, value in ((SCRIPT, a), ("dls", b))
    ]
    return summarize(rows, reference="dls")


def test_the_tables_escape_a_hostile_method_name(tmp_path) -> None:
    summary = _hostile_summary()
    page = html_table(summary_frame(summary)) + html_table(paired_frame(summary))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;|x" in page
    assert '0.500<br><span class="ci">[0.500, 0.500]</span>' in page
    markdown = format_table(summary).splitlines()
    # six columns, seven unescaped pipes on every line
    assert len(markdown) == 4, markdown
    assert all(line.count("|") - line.count("\\|") == 7 for line in markdown), markdown
    assert "<script>alert(1)</script>\\|x" in markdown[2] + markdown[3]
    write_csv(summary, tmp_path / "summary.csv")
    table = pd.read_csv(tmp_path / "summary.csv").set_index("method")
    assert table.loc[SCRIPT, "comprehensiveness_mean"] == 0.5
    assert table.loc[SCRIPT, "n"] == 2 and table.loc[SCRIPT, "comprehensiveness_n"] == 2
    assert table.loc[SCRIPT, "comprehensiveness_diff_vs_reference_mean"] == 0.0
    assert pd.isna(table.loc["dls", "comprehensiveness_diff_low"])  # the reference: no difference


def test_the_report_draws_the_dls_coherence_curve_in_the_methods_colour(tmp_path) -> None:
    config = {
        "layer_selection": {
            "dls": {
                "scores": [0.7, 0.8, 0.6],
                "layer_indices": [0, 1, 2],
                "layer_names": ["embeddings", "block 1", "block 2"],
                "layer": 1,
                "score": "self_recovery",
            }
        }
    }
    paths: dict = {}
    images = coherence_plot(config, tmp_path, paths)
    assert len(images) == 1 and images[0].startswith("<p><img")
    assert paths["layer_coherence"].read_bytes()[:4] == b"\x89PNG"
    assert coherence_plot({}, tmp_path, {}) == []
    figure = viz.plot_coherence_curves(
        {"dls": [0.7, 0.8]}, selected={"dls": 1}, colors=viz.method_colours(["dls"])
    )
    assert to_hex(figure.axes[0].get_lines()[0].get_color()) == viz.method_colours(["dls"])["dls"]


def test_the_colour_order_is_the_callers_and_dls_always_comes_first() -> None:
    palette = viz.method_colours(["dls", "a", "b", "c"])  # no order: DLS, then as given
    assert viz.method_colours(["c", "b"], ["a", "b", "c"]) == {"c": palette["c"], "b": palette["b"]}
    assert viz.method_colours(["b", "x"], ["dls", "a", "b"])["x"] == palette["c"]
    assert viz.method_colours(["dls"], ["a", "dls"]) == {"dls": palette["dls"]}


def test_the_summary_takes_the_metric_metadata_it_is_given() -> None:
    class Meta:
        def __init__(self, higher: bool) -> None:
            self.higher_is_better = higher

    rows = [
        {"index": i, "method": m, "seconds": 1.0, "metrics": {"loss": v, "gain": -v}}
        for i in range(3)
        for m, v in (("a", 0.1 * i), ("b", 1.0 + i))
    ]
    lower = summarize(rows, n_boot=50, metrics={"loss": Meta(False), "gain": Meta(True)})
    assert lower["metrics"] == ["loss", "gain"]
    assert lower["higher_is_better"] == {"loss": False, "gain": True}
    assert lower["primary_metric"] == "loss" and lower["order"] == ["a", "b"]
    higher = summarize(rows, n_boot=50, metrics={"loss": Meta(True)})
    assert higher["metrics"] == ["loss", "gain"] and higher["higher_is_better"]["gain"] is None
    assert higher["order"] == ["b", "a"]
    assert lower["methods"]["a"]["metrics"]["loss"]["mean"] == pytest.approx(0.1)


def test_a_method_outside_the_registry_has_one_colour_in_every_figure() -> None:
    """The AOPC figure ranks methods, the scatter sorts them: one palette order serves both."""
    methods = ["zeta_custom", "dls", "alpha_custom", "integrated_gradients"]
    order = colour_order(available_methods(), methods)
    ranked = viz.method_colours(["zeta_custom", "alpha_custom"], order)  # AOPC: ranking order
    by_name = viz.method_colours(sorted(methods), order)  # scatter: name order
    assert ranked["zeta_custom"] == by_name["zeta_custom"]
    assert ranked["alpha_custom"] == by_name["alpha_custom"]
    assert ranked["zeta_custom"] != ranked["alpha_custom"]
    # without the report's order, the two figures disagree (the bug this order fixes)
    assert (
        viz.method_colours(["zeta_custom", "alpha_custom"], available_methods())["zeta_custom"]
        != viz.method_colours(sorted(methods), available_methods())["zeta_custom"]
    )


def test_the_two_comparison_figures_agree_on_colours_by_default() -> None:
    """Without ``colors``, the AOPC figure (methods in ranking order) and the scatter agree."""
    ranked = {"zeta": {"comprehensiveness": [0.3, 0.4]}, "alpha": {"comprehensiveness": [0.1, 0.2]}}
    aopc = viz.plot_aopc_curves(ranked, [10, 50])
    lines = {line.get_label(): to_hex(line.get_color()) for line in aopc.axes[0].get_lines()}
    scatter = viz.plot_cost_vs_faithfulness(
        {"zeta": 1.0, "alpha": 2.0}, {"zeta": 0.3, "alpha": 0.1}
    )
    points = {
        text.get_text(): to_hex(line.get_color())
        for text, line in zip(
            scatter.axes[0].texts,
            [c for c in scatter.axes[0].get_lines() if c.get_marker() in ("*", "o")],
            strict=True,
        )
    }
    assert lines["zeta"] == points["zeta"] and lines["alpha"] == points["alpha"]
