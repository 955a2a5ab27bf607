"""Figures (returned, saved, centred on zero, labelled) and safe HTML on hostile input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from captum_layer_saliency import viz

HOSTILE = "<script>alert(1)</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _saved_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_token_heatmap_is_centred_on_zero_and_saved(tmp_path: Path) -> None:
    tokens = ["[CLS]", "costs", "$5", "and", "$6", HOSTILE, "[SEP]"]
    scores = torch.tensor([0.0, 0.5, -2.0, 0.1, 0.3, 1.0, 0.0])
    fig = viz.plot_token_heatmap(tokens, scores, per_row=4, title="one", save=tmp_path / "t.png")
    assert isinstance(fig, Figure) and _saved_png(tmp_path / "t.png")
    image = fig.axes[0].images[0]
    assert isinstance(image.norm, TwoSlopeNorm)
    assert image.norm.vcenter == 0
    assert (image.norm.vmin, image.norm.vmax) == (-2.0, 2.0)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert r"\$5" in texts  # "$...$" would otherwise be parsed as mathtext
    assert fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="tokens but"):
        viz.plot_token_heatmap(tokens, scores[:3])


def test_layer_token_heatmap_marks_the_selected_layer(tmp_path: Path) -> None:
    scores = np.random.default_rng(0).normal(size=(4, 6)) * np.array([[1], [10], [100], [0]])
    tokens = ["[CLS]", "a", "good", "film", ".", "[SEP]"]
    fig = viz.plot_layer_token_heatmap(
        scores, tokens, [f"block {i}" for i in range(4)], selected=2, save=tmp_path / "l.png"
    )
    ax = fig.axes[0]
    assert _saved_png(tmp_path / "l.png")
    assert ax.get_xlabel() == "input token" and ax.get_ylabel() == "layer"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[2].startswith("\u2605") and labels[2].endswith("block 2")
    assert len(ax.patches) == 1  # the outline of the selected row
    data = np.asarray(ax.images[0].get_array())
    assert np.abs(data[:3]).max(axis=1).tolist() == pytest.approx([1.0] * 3)  # rows scaled
    assert np.all(data[3] == 0)  # an all-zero row stays zero, no division by zero
    with pytest.raises(ValueError, match="selected"):
        viz.plot_layer_token_heatmap(scores, tokens, selected=4)


def test_coherence_aopc_and_cost_plots(tmp_path: Path) -> None:
    fig = viz.plot_coherence_curves(
        {"pre-trained": [0.80, 0.81, 0.83], "fine-tuned sst2": [0.80, 0.70, 0.5]},
        selected={"fine-tuned sst2": 1},
        save=tmp_path / "c.png",
    )
    assert _saved_png(tmp_path / "c.png") and fig.axes[0].get_legend() is not None
    bins = [1, 5, 10, 20, 50]
    curves = {
        "dls": {"comprehensiveness": [0.1, 0.2, 0.3, 0.35, 0.4], "sufficiency": [0.3] * 5},
        "ig": {"comprehensiveness": [0.1, 0.2, 0.3, 0.4, 0.5]},
    }
    fig = viz.plot_aopc_curves(curves, bins, save=tmp_path / "a.png")
    assert _saved_png(tmp_path / "a.png") and len(fig.axes) == 2
    assert "comprehensiveness" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="bins"):
        viz.plot_aopc_curves({"x": {"sufficiency": [1.0]}}, bins)
    fig = viz.plot_cost_vs_faithfulness(
        {"dls": 0.01, "ig": 0.3, "nan": float("nan")},
        {"dls": 0.37, "ig": 0.40, "nan": 0.1},
        ci={"dls": (0.35, 0.39), "ig": (0.38, 0.42)},
        save=tmp_path / "s.png",
    )
    ax = fig.axes[0]
    assert _saved_png(tmp_path / "s.png") and ax.get_xscale() == "log"
    assert {t.get_text() for t in ax.texts} == {"dls", "ig"}


def test_render_html_escapes_everything() -> None:
    page = viz.render_html(
        ["[CLS]", HOSTILE, '"><img src=x onerror=alert(1)>', "fun", "##ny", "[SEP]"],
        [0.0, 1.0, -1.0, 0.5, 0.5, 0.0],
        title=HOSTILE,
        label=HOSTILE,
        prediction="<b>positive</b>",
        legend=True,
    )
    assert "<script" not in page and "<img" not in page and "<b>positive" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3
    assert "funny" not in page and ">ny</span>" in page  # sub-word glued, prefix dropped
    whole = viz.html_page([page], title=HOSTILE)
    assert "<script" not in whole and "Content-Security-Policy" in whole


def test_render_html_colours_follow_the_sign() -> None:
    page = viz.render_html(["up", "zero", "down"], [2.0, 0.0, -2.0], subword_prefix=None)
    colours = [part.split(";")[0] for part in page.split("background-color:")[1:]]
    up, zero, down = (tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colours)
    assert up[0] > up[2] and down[2] > down[0]  # red for positive, blue for negative
    assert min(zero) > 240  # white-ish at zero
    with pytest.raises(ValueError):
        viz.render_html(["a"], [1.0, 2.0])


def _record(tokens: list[str], label: str) -> object:
    from captum.attr import visualization

    return visualization.VisualizationDataRecord(
        torch.tensor([0.2, -0.4, 0.9]), 0.9, label, label, label, 1.2, tokens, 0.0
    )


def test_captum_visualize_text_is_unsafe_and_the_wrapper_is_not() -> None:
    from captum.attr import visualization

    tokens = ["[CLS]", HOSTILE, "[SEP]"]
    raw = visualization.visualize_text([_record(tokens, HOSTILE)]).data
    assert HOSTILE in raw  # why the wrapper exists
    safe = viz.safe_visualize_text([_record(tokens, HOSTILE)]).data
    assert "<script" not in safe
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in safe


def test_escape_record_keeps_numbers_and_does_not_mutate() -> None:
    record = _record(["a", "<b>", "c"], "neg")
    record.pred_class = 1  # type: ignore[attr-defined]
    escaped = viz.escape_record(record)
    assert escaped.raw_input_ids == ["a", "&lt;b&gt;", "c"]
    assert escaped.pred_class == 1 and escaped.true_class == "neg"
    assert record.raw_input_ids == ["a", "<b>", "c"]  # type: ignore[attr-defined]


def test_viz_imports_only_the_floors_below_it() -> None:
    """viz is floor 2: it imports ``_utils``, ``errors``, ``models`` and itself, never compare."""
    import ast

    allowed = (
        "captum_layer_saliency._utils",
        "captum_layer_saliency.errors",
        "captum_layer_saliency.models",
        "captum_layer_saliency.viz",
    )
    package = Path(viz.__file__).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [
                (path.name, name)
                for name in names
                if name.startswith("captum_layer_saliency") and not name.startswith(allowed)
            ]
    assert found == []
