"""Write a comparison's report: the entry point, :func:`write_report`, and :func:`combine_runs`.

Files written into the comparison directory:

* ``summary.md``, ``summary.csv``, ``summary.json`` -- per method: the mean and a percentile
  bootstrap 95 % CI of every metric, seconds per example, forward and backward passes per
  example, the cost ratio against Input x Gradient when it was run; and the paired differences of
  every method against a reference method, on the examples both explained;
* ``aopc_curves.png``, ``cost_vs_faithfulness.png`` and ``layer_coherence.png``;
* ``report.html`` -- the summary, the plots and a gallery of explanations, with every piece of
  text escaped (see :func:`captum_layer_saliency.viz.render_html`).

The work is split by job into sibling modules, so that each reads on its own:
:mod:`~captum_layer_saliency.compare.report_stats` (the numbers: :func:`summarize`,
:func:`bootstrap_ci`), :mod:`~captum_layer_saliency.compare.report_tables` (markdown, CSV and
HTML tables of a summary) and :mod:`~captum_layer_saliency.compare.report_figures` (the PNGs).
Flat ``report_*`` modules rather than a ``report/`` package: ``compare.report`` stays the module
the harness, the CLI and users import (it re-exports the public names of its siblings, which
keep their old import path), and the statistics can be used without the HTML and figures. The
report is a pure function of the *set* of rows (see ``report_stats``), so it does not depend on
the order the rows were written in.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from captum_layer_saliency import viz
from captum_layer_saliency._utils import atomic_write
from captum_layer_saliency.compare import results
from captum_layer_saliency.compare.methods.registry import available_methods
from captum_layer_saliency.compare.report_figures import coherence_plot, colour_order, draw_plots
from captum_layer_saliency.compare.report_stats import (
    COST_REFERENCE,
    DEFAULT_BINS,
    PREFERRED_REFERENCE,
    PRIMARY_METRIC,
    NoResultsError,
    bootstrap_ci,
    summarize,
)
from captum_layer_saliency.compare.report_tables import (
    format_markdown,
    format_table,
    html_table,
    paired_frame,
    summary_frame,
    write_csv,
)
from captum_layer_saliency.compare.selection_notes import selection_notes_html

__all__ = [
    "COMBINABLE_KEYS",
    "COST_REFERENCE",
    "DEFAULT_BINS",
    "PREFERRED_REFERENCE",
    "PRIMARY_METRIC",
    "NoResultsError",
    "bootstrap_ci",
    "combine_runs",
    "format_markdown",
    "format_table",
    "summarize",
    "write_report",
]


def _label_name(labels: Sequence[str], i: int) -> str:
    return str(labels[i]) if 0 <= i < len(labels) else str(i)


def _gallery(
    rows: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    order: Sequence[str],
    max_examples: int,
) -> str:
    """HTML for the first ``max_examples`` examples: each method's explanation, escaped."""
    by_index: dict[int, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_index[int(row["index"])][str(row["method"])] = row
    parts = []
    for index in sorted(by_index)[:max_examples]:
        per_method = by_index[index]
        first = next(iter(per_method.values()))
        text = str(first.get("text", " ".join(first["tokens"])))
        label = _label_name(labels, int(first["label"]))
        prediction = _label_name(labels, int(first["prediction"]))
        parts.append('<section class="example">')
        parts.append(
            f"<h3>Example {index}</h3><p>{html.escape(text)}</p>"
            f'<p class="meta">label: <b>{html.escape(label)}</b> &middot; prediction: '
            f"<b>{html.escape(prediction)}</b> (explained)</p>"
        )
        if first.get("rationale") is not None:
            parts.append(
                viz.render_html(first["tokens"], first["rationale"], title="human rationale")
            )
        for method in order:
            if method not in per_method:
                continue
            shown = per_method[method]
            scores = [math.nan if v is None else float(v) for v in shown["attributions"]]
            parts.append(viz.render_html(shown["tokens"], scores, title=method))
        parts.append("</section>")
    return "\n".join(parts)


#: What must agree between runs whose rows are summarised together: the same model explaining
#: the same examples the same way (method lists, limits and metrics may differ).
COMBINABLE_KEYS = ("task", "model", "max_length", "truncation", "labels")


def combine_runs(
    out_dirs: Sequence[str | os.PathLike[str]],
    *,
    index_from: int | None = None,
    index_to: int | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[list[results.Row], dict[str, Any]]:
    """The rows of several comparison directories, for one summary.

    A common use: a cheap run of many methods on a whole dataset and an expensive method (say
    Shapley sampling) on a subset, in another directory, summarised together so that paired
    differences are taken on the examples both explained. Rows of the same ``(index, method)``
    in two directories are the same computation (the runs are seeded); the first is kept.

    Args:
        out_dirs: comparison directories (each with its ``run.json``).
        index_from: keep examples whose ``index`` is at least this.
        index_to: keep examples whose ``index`` is below this.
        methods: keep only these methods (default: all).

    Returns:
        ``(rows, config)``: the kept rows, and the first directory's configuration with
        ``combined_from`` (the directories) and ``index_range`` added.

    Raises:
        NoResultsError: a directory is missing or holds no rows, or nothing is left to report.
        ValueError: the runs explain different tasks or models, or settings that change what
            the examples are (:data:`COMBINABLE_KEYS`; runs on different ``--data-file`` files
            may be pooled, as slices of one dataset), or one ``index`` is two different texts.
    """
    if not out_dirs:
        raise NoResultsError("no comparison directories given")
    rows: list[results.Row] = []
    config: dict[str, Any] = {}
    for out_dir in out_dirs:
        out = Path(out_dir)
        recorded = results.read_config(out) if out.is_dir() else None
        if recorded is None:
            raise NoResultsError(f"{out} is not a comparison directory (no run.json)")
        if not config:
            config = dict(recorded)
        clash = [
            f"{k}: {config.get(k)!r} vs {recorded.get(k)!r}"
            for k in COMBINABLE_KEYS
            if config.get(k) != recorded.get(k)
            and not (k == "task" and _both_data_files(config.get(k), recorded.get(k)))
        ]
        if clash:
            raise ValueError(
                f"{out} cannot be summarised with {out_dirs[0]}: they differ in " + "; ".join(clash)
            )
        found = results.load_rows(out)
        if not found:
            raise NoResultsError(f"{out} holds no result rows (rows*.jsonl)")
        rows.extend(found)
    _check_same_texts(rows, out_dirs)
    wanted = set(methods) if methods else None
    kept = [
        row
        for row in results.dedupe(rows)
        if (index_from is None or int(row["index"]) >= index_from)
        and (index_to is None or int(row["index"]) < index_to)
        and (wanted is None or row["method"] in wanted)
    ]
    if not kept:
        raise NoResultsError(
            f"no rows left after the filters (index in [{index_from}, {index_to}), "
            f"methods {sorted(wanted) if wanted else 'all'})"
        )
    config["combined_from"] = [str(d) for d in out_dirs]
    config["index_range"] = [index_from, index_to]
    return [dict(row) for row in kept], config


def _both_data_files(task: Any, other: Any) -> bool:
    """Two ``--data-file`` runs (``file:...`` tasks): slices of one dataset may be pooled."""
    return all(isinstance(t, str) and t.startswith("file:") for t in (task, other))


def _check_same_texts(rows: Sequence[Mapping[str, Any]], out_dirs: Sequence[Any]) -> None:
    """Refuse to pool two rows of one ``index`` that explain different token ids."""
    seen: dict[int, Any] = {}
    for row in rows:
        ids = row.get("input_ids")
        if ids is None:
            continue
        first = seen.setdefault(int(row["index"]), ids)
        if first != ids:
            raise ValueError(
                f"example index {row['index']} is not the same text in every run of "
                f"{[str(d) for d in out_dirs]}: pool only slices of one dataset"
            )


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int | None = None,
    max_examples: int = 20,
    plots: bool = True,
    metrics: Mapping[str, Any] | None = None,
    method_order: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Summarise the rows of a comparison directory and write the tables, plots and HTML.

    Args:
        out_dir: the comparison directory (its ``run.json`` and rows files).
        reference: the method for paired differences (default: ``dls`` when present).
        n_boot: bootstrap resamples.
        seed: the bootstrap seed (default: the run's seed).
        max_examples: how many examples the HTML gallery shows.
        plots: draw the PNG plots.
        metrics: metric name -> metadata with ``higher_is_better`` (default: the registry
            :data:`captum_layer_saliency.metrics.METRICS`; see :func:`summarize`).
        method_order: the method names in the order that fixes their colours in every figure
            (default: the method registry's, ``available_methods()``).

    Returns:
        Name -> path of every file written (``summary_md``, ``summary_csv``, ``summary_json``,
        ``aopc_curves``, ``cost_vs_faithfulness``, ``layer_coherence``, ``report_html``).

    Raises:
        NoResultsError: the directory holds no rows.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise NoResultsError(f"{out} is not a directory")
    rows = results.load_rows(out)
    if not rows:
        raise NoResultsError(f"{out} holds no result rows (rows*.jsonl); run `compare` first")
    config = results.read_config(out) or {}
    run_seed = int(config.get("seed", 0)) if seed is None else seed
    summary = summarize(rows, reference=reference, n_boot=n_boot, seed=run_seed, metrics=metrics)
    labels = [str(x) for x in config.get("labels", [])]

    paths = {
        "summary_md": out / "summary.md",
        "summary_csv": out / "summary.csv",
        "summary_json": out / "summary.json",
        "report_html": out / "report.html",
    }
    _write_text(paths["summary_md"], format_markdown(summary, config))
    write_csv(summary, paths["summary_csv"])
    text = json.dumps(results._json_safe({"config": config, **summary}), indent=2) + "\n"
    _write_text(paths["summary_json"], text)

    images = []
    if plots:
        order = available_methods() if method_order is None else list(method_order)
        order = colour_order(order, summary["methods"])
        images = draw_plots(summary, out, paths, order)
        images += coherence_plot(config, out, paths, order)

    body = [
        f"<p>Task <code>{html.escape(str(config.get('task', '?')))}</code>, model "
        f"<code>{html.escape(str(config.get('model', '?')))}</code>. The explained class is the "
        "prediction; cells are means with bootstrap 95 % CIs.</p>",
        html_table(summary_frame(summary)),
        selection_notes_html(config, summary),
    ]
    if summary["paired"]:
        body += [
            f"<h2>Paired differences against {html.escape(summary['reference'])}</h2>",
            html_table(paired_frame(summary)),
        ]
    body += images
    body += ["<h2>Explanations</h2>", _gallery(rows, labels, summary["order"], max_examples)]
    title = f"Comparison: {config.get('task', 'custom')} / {config.get('model', 'model')}"
    _write_text(paths["report_html"], viz.html_page(body, title=title))
    return paths


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` whole (temporary file, fsync, rename): never a half-written report."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
