"""Turn the rows of a comparison into tables, plots and an HTML report.

Everything here is a pure function of the *set* of rows: they are sorted by ``(index, method)``
before anything is computed, and every bootstrap draws from a generator seeded by the run's seed
and the names of the method and metric, so the report does not depend on the order the rows were
written in, nor on which other methods are in the table.

Files written into the comparison directory:

* ``summary.md``, ``summary.csv``, ``summary.json`` -- per method: the mean and a percentile
  bootstrap 95 % CI of every metric, seconds per example, forward and backward passes per
  example, the cost ratio against Input x Gradient when it was run; and the paired differences of
  every method against a reference method, on the examples both explained;
* ``aopc_curves.png`` and ``cost_vs_faithfulness.png``;
* ``report.html`` -- the summary, the plots and a gallery of explanations, with every piece of
  text escaped (see :func:`captum_layer_saliency.viz.render_html`).
"""

from __future__ import annotations

import base64
import csv
import html
import importlib
import json
import math
import os
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from captum_layer_saliency import viz
from captum_layer_saliency.compare import results
from captum_layer_saliency.compare.selection_notes import selection_notes, selection_notes_html

#: The method every cost ratio is relative to (the cheapest gradient baseline).
COST_REFERENCE = "input_x_gradient"
#: The preferred reference for paired differences: ours.
PREFERRED_REFERENCE = "dls"
#: AOPC bins (fractions of the tokens, ERASER's) assumed when the rows do not record theirs.
DEFAULT_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)
#: The metric the methods are ranked by and plotted against cost, when present.
PRIMARY_METRIC = "comprehensiveness"


class NoResultsError(ValueError):
    """A directory holds no result rows to report on."""


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap confidence interval of the mean.

    Args:
        values: the per-example values; non-finite ones are ignored.
        n_boot: the number of resamples.
        seed: seeds the resampling (a numpy ``default_rng``).
        confidence: the interval's coverage.

    Returns:
        ``(mean, low, high)``; all NaN without finite values, and ``low == high == mean`` for a
        single value.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # Resample in chunks: n_boot x n indices at once would be large for big datasets.
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def _seed_for(seed: int, *names: str) -> int:
    return zlib.crc32(":".join([str(seed), *names]).encode())


def _metric_meta() -> Mapping[str, Any]:
    try:
        return dict(importlib.import_module("captum_layer_saliency.metrics").METRICS)
    except ImportError:  # the report can still be built from rows alone
        return {}


def _stat(mean: float, low: float, high: float, n: int) -> dict[str, Any]:
    return {"mean": mean, "low": low, "high": high, "n": n}


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-method statistics and paired differences of a set of rows.

    Args:
        rows: result rows (any order; duplicates of a key are ignored).
        reference: the method the paired differences are against (default: ``dls`` when
            present, else the first method by name).
        n_boot: bootstrap resamples.
        seed: the bootstrap seed.

    Returns:
        A JSON-ready dict: ``metrics`` (names in registry order), ``higher_is_better``,
        ``methods`` (method -> n, per-metric stats, seconds, forwards, backwards, cost_ratio),
        ``order`` (methods ranked by the primary metric), ``reference``, ``paired``
        (method -> metric -> stats of method minus reference), ``curves`` (method -> mean AOPC
        curves), ``cost_reference``, ``truncation`` (``examples``: how many distinct examples
        were truncated to fit the model, ``of``: how many there are, ``max_tokens``: the longest
        original length), ``n_boot``, ``seed``.

    Raises:
        NoResultsError: there are no rows.
        ValueError: ``reference`` is not one of the methods.
    """
    unique = sorted(results.dedupe(rows), key=results.row_key)
    if not unique:
        raise NoResultsError("there are no result rows to summarise")
    by_method: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in unique:
        by_method[str(row["method"])].append(row)
    methods = sorted(by_method)
    if reference is None:
        reference = PREFERRED_REFERENCE if PREFERRED_REFERENCE in by_method else methods[0]
    elif reference not in by_method:
        raise ValueError(f"reference method {reference!r} is not in the results: {methods}")

    meta = _metric_meta()
    seen = {name for row in unique for name in row.get("metrics", {})}
    metric_names = [m for m in meta if m in seen] + sorted(seen - set(meta))
    higher = {m: (bool(meta[m].higher_is_better) if m in meta else None) for m in metric_names}

    def column(method: str, metric: str) -> dict[int, float]:
        out = {}
        for row in by_method[method]:
            value = row.get("metrics", {}).get(metric)
            if value is not None and math.isfinite(float(value)):
                out[int(row["index"])] = float(value)
        return out

    stats: dict[str, Any] = {}
    for method in methods:
        group = by_method[method]
        per_metric = {}
        for metric in metric_names:
            vals = list(column(method, metric).values())
            mean, low, high = bootstrap_ci(
                vals, n_boot=n_boot, seed=_seed_for(seed, method, metric)
            )
            per_metric[metric] = _stat(mean, low, high, len(vals))
        seconds = [float(r["seconds"]) for r in group]
        mean, low, high = bootstrap_ci(
            seconds, n_boot=n_boot, seed=_seed_for(seed, method, "seconds")
        )
        stats[method] = {
            "n": len(group),
            "metrics": per_metric,
            "seconds": _stat(mean, low, high, len(seconds)),
            "forwards": float(np.mean([float(r.get("forwards", 0.0)) for r in group])),
            "backwards": float(np.mean([float(r.get("backwards", 0.0)) for r in group])),
            "cost_ratio": None,
        }
    if COST_REFERENCE in stats:
        base = stats[COST_REFERENCE]["seconds"]["mean"]
        for method in methods:
            if base > 0:
                stats[method]["cost_ratio"] = stats[method]["seconds"]["mean"] / base

    paired: dict[str, dict[str, Any]] = {}
    for method in methods:
        if method == reference:
            continue
        paired[method] = {}
        for metric in metric_names:
            ours, ref = column(method, metric), column(reference, metric)
            common = sorted(set(ours) & set(ref))
            diffs = [ours[i] - ref[i] for i in common]
            mean, low, high = bootstrap_ci(
                diffs, n_boot=n_boot, seed=_seed_for(seed, "paired", method, reference, metric)
            )
            paired[method][metric] = _stat(mean, low, high, len(diffs))

    primary = PRIMARY_METRIC if PRIMARY_METRIC in metric_names else None
    if primary is None and metric_names:
        primary = metric_names[0]

    def rank_key(method: str) -> tuple[float, str]:
        if primary is None:
            return (0.0, method)
        value = stats[method]["metrics"][primary]["mean"]
        if not math.isfinite(value):
            return (math.inf, method)
        return (-value if higher.get(primary) is not False else value, method)

    return {
        "metrics": metric_names,
        "higher_is_better": higher,
        "primary_metric": primary,
        "methods": stats,
        "order": sorted(methods, key=rank_key),
        "reference": reference,
        "paired": paired,
        "curves": _mean_curves(by_method),
        "cost_reference": COST_REFERENCE if COST_REFERENCE in stats else None,
        "truncation": _truncation_stats(unique),
        "n_boot": n_boot,
        "seed": seed,
        "confidence": 0.95,
    }


def _truncation_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many distinct examples were truncated (rows of runs before this was recorded: 0)."""
    cut: dict[int, bool] = {}
    longest = 0
    for row in rows:
        index = int(row["index"])
        cut[index] = cut.get(index, False) or bool(row.get("truncated", False))
        longest = max(longest, int(row.get("n_tokens_original") or len(row.get("tokens", []))))
    return {"examples": sum(cut.values()), "of": len(cut), "max_tokens": longest}


def _mean_curves(by_method: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per method, the mean per-bin comprehensiveness and sufficiency over its examples."""
    out: dict[str, Any] = {}
    for method, group in sorted(by_method.items()):
        with_curves = [r["curves"] for r in group if r.get("curves")]
        if not with_curves:
            continue
        entry: dict[str, Any] = {"bins": list(with_curves[0].get("bins", DEFAULT_BINS))}
        for key in ("comprehensiveness", "sufficiency"):
            stacked = [c[key] for c in with_curves if key in c]
            if stacked:
                arr = np.array(stacked, dtype=np.float64)  # None -> nan
                entry[key] = np.nanmean(arr, axis=0).tolist()
        out[method] = entry
    return out


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _fmt_ci(stat: Mapping[str, Any], digits: int = 3) -> str:
    if not math.isfinite(stat["mean"]):
        return "–"
    low, high = _fmt(stat["low"], digits), _fmt(stat["high"], digits)
    return f"{_fmt(stat['mean'], digits)} [{low}, {high}]"


def _arrow(higher: bool | None) -> str:
    return {True: " ↑", False: " ↓", None: ""}[higher]


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table as a header and rows of display strings (markdown and HTML share it)."""
    metrics = summary["metrics"]
    header = ["method", "n"]
    header += [f"{m}{_arrow(summary['higher_is_better'][m])}" for m in metrics]
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
    return header, body


def _paired_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [f"method − {summary['reference']}"] + list(summary["metrics"])
    body = [
        [method] + [_fmt_ci(summary["paired"][method][m]) for m in summary["metrics"]]
        for method in summary["order"]
        if method in summary["paired"]
    ]
    return header, body


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def format_table(summary: Mapping[str, Any]) -> str:
    """The main summary table as markdown (what the CLI prints)."""
    return _markdown(*_table_rows(summary))


def format_markdown(summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> str:
    """The whole ``summary.md``: the setup, the main table and the paired differences."""
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
            _markdown(*_paired_rows(summary)),
            "",
        ]
    return "\n".join(parts)


def _write_csv(summary: Mapping[str, Any], path: Path) -> None:
    metrics = summary["metrics"]
    header = ["method", "n"]
    for m in metrics:
        header += [f"{m}_mean", f"{m}_low", f"{m}_high", f"{m}_n"]
    header += ["seconds_per_example", "forwards_per_example", "backwards_per_example"]
    header += ["cost_ratio"]
    for m in metrics:
        header += [f"{m}_diff_vs_reference_mean", f"{m}_diff_low", f"{m}_diff_high"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for method in summary["order"]:
            s = summary["methods"][method]
            line: list[Any] = [method, s["n"]]
            for m in metrics:
                st = s["metrics"][m]
                line += [st["mean"], st["low"], st["high"], st["n"]]
            line += [s["seconds"]["mean"], s["forwards"], s["backwards"], s["cost_ratio"]]
            for m in metrics:
                d = summary["paired"].get(method, {}).get(m)
                line += [d["mean"], d["low"], d["high"]] if d else ["", "", ""]
            writer.writerow(["" if v is None else v for v in line])


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


_WITH_CI = re.compile(r"^(\S+) (\[[^\]]*\])$")


def _html_cell(text: str) -> str:
    """An escaped cell; a ``mean [low, high]`` cell puts its interval on a second, small line,
    which keeps a table of many metrics within the page."""
    match = _WITH_CI.match(text)
    if match is None:
        return html.escape(text)
    mean, ci = (html.escape(g) for g in match.groups())
    return f'{mean}<br><span class="ci">{ci}</span>'


def _html_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>" for r in body)
    # The wrapper keeps a wide table inside the page (it scrolls rather than being cut off).
    return f'<div class="table-wrap"><table><tr>{head}</tr>{rows}</table></div>'


def _img(path: Path, alt: str) -> str:
    # Embedded as a data URI: the page stays one self-contained file, and its CSP needs no
    # file-system origin (browsers disagree about what 'self' means for file:// pages).
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


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
            the examples are (:data:`COMBINABLE_KEYS`).
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
        ]
        if clash:
            raise ValueError(
                f"{out} cannot be summarised with {out_dirs[0]}: they differ in " + "; ".join(clash)
            )
        found = results.load_rows(out)
        if not found:
            raise NoResultsError(f"{out} holds no result rows (rows*.jsonl)")
        rows.extend(found)
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


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int | None = None,
    max_examples: int = 20,
    plots: bool = True,
) -> dict[str, Path]:
    """Summarise the rows of a comparison directory and write the tables, plots and HTML.

    Args:
        out_dir: the comparison directory (its ``run.json`` and rows files).
        reference: the method for paired differences (default: ``dls`` when present).
        n_boot: bootstrap resamples.
        seed: the bootstrap seed (default: the run's seed).
        max_examples: how many examples the HTML gallery shows.
        plots: draw the PNG plots.

    Returns:
        Name -> path of every file written (``summary_md``, ``summary_csv``, ``summary_json``,
        ``aopc_curves``, ``cost_vs_faithfulness``, ``report_html``).

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
    summary = summarize(rows, reference=reference, n_boot=n_boot, seed=run_seed)
    labels = [str(x) for x in config.get("labels", [])]

    paths = {
        "summary_md": out / "summary.md",
        "summary_csv": out / "summary.csv",
        "summary_json": out / "summary.json",
        "report_html": out / "report.html",
    }
    paths["summary_md"].write_text(format_markdown(summary, config), encoding="utf-8")
    _write_csv(summary, paths["summary_csv"])
    with paths["summary_json"].open("w", encoding="utf-8") as fh:
        json.dump(results._json_safe({"config": config, **summary}), fh, indent=2)
        fh.write("\n")

    images = []
    if plots:
        images = _plots(summary, out, paths)
        images += _coherence_plot(config, out, paths)

    body = [
        f"<p>Task <code>{html.escape(str(config.get('task', '?')))}</code>, model "
        f"<code>{html.escape(str(config.get('model', '?')))}</code>. The explained class is the "
        "prediction; cells are means with bootstrap 95 % CIs.</p>",
        _html_table(*_table_rows(summary)),
        selection_notes_html(config, summary),
    ]
    if summary["paired"]:
        body += [
            f"<h2>Paired differences against {html.escape(summary['reference'])}</h2>",
            _html_table(*_paired_rows(summary)),
        ]
    body += images
    body += ["<h2>Explanations</h2>", _gallery(rows, labels, summary["order"], max_examples)]
    title = f"Comparison: {config.get('task', 'custom')} / {config.get('model', 'model')}"
    paths["report_html"].write_text(viz.html_page(body, title=title), encoding="utf-8")
    return paths


def _coherence_plot(config: Mapping[str, Any], out: Path, paths: dict[str, Path]) -> list[str]:
    """The coherence curve of each DLS method's layer choice (recorded in ``run.json`` under
    ``layer_selection``), the chosen layer starred, in the method's colour."""
    recorded = config.get("layer_selection") or {}
    curves, selected, names = {}, {}, None
    for method, info in recorded.items():
        scores = info.get("scores") if isinstance(info, Mapping) else None
        if not scores:
            continue
        curves[str(method)] = [math.nan if v is None else float(v) for v in scores]
        indices = list(info.get("layer_indices") or range(len(scores)))
        if info.get("layer") in indices:
            selected[str(method)] = indices.index(info["layer"])
        names = names or info.get("layer_names")
    if not curves:
        return []
    path = out / "layer_coherence.png"
    viz.plot_coherence_curves(
        curves,
        layers=names,
        selected=selected,
        ylabel=f"coherence ({next(iter(recorded.values())).get('score', 'label-free')})",
        colors=viz.method_colours(curves),
        title="DLS: coherence per layer (chosen layer starred)",
        save=path,
    )
    paths["layer_coherence"] = path
    return [_img(path, "DLS layer coherence")]


def _plots(summary: Mapping[str, Any], out: Path, paths: dict[str, Path]) -> list[str]:
    """Draw the AOPC curves and the cost/faithfulness scatter; return their HTML <img> tags."""
    images = []
    curves = summary["curves"]
    if curves:
        bins = [100.0 * float(b) for b in next(iter(curves.values()))["bins"]]  # as percentages
        path = out / "aopc_curves.png"
        viz.plot_aopc_curves(
            {m: curves[m] for m in summary["order"] if m in curves}, bins, save=path
        )
        paths["aopc_curves"] = path
        images.append(_img(path, "AOPC curves"))
    primary = summary["primary_metric"]
    if primary is not None:
        stats = summary["methods"]
        score = {m: stats[m]["metrics"][primary]["mean"] for m in stats}
        ci = {
            m: (stats[m]["metrics"][primary]["low"], stats[m]["metrics"][primary]["high"])
            for m in stats
        }
        cost = {m: stats[m]["seconds"]["mean"] for m in stats}
        path = out / "cost_vs_faithfulness.png"
        viz.plot_cost_vs_faithfulness(
            cost,
            score,
            ci=ci,
            ylabel=f"{primary}{_arrow(summary['higher_is_better'][primary])}",
            highlight=[m for m in stats if m.startswith(PREFERRED_REFERENCE)],
            save=path,
        )
        paths["cost_vs_faithfulness"] = path
        images.append(_img(path, "cost versus faithfulness"))
    return images
