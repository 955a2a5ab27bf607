"""The ``report``, ``merge`` and ``summarize`` commands: reports from rows already on disk."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from captum_layer_saliency import metrics as metric_registry
from captum_layer_saliency._utils import atomic_write
from captum_layer_saliency.cli.common import CLIError, check_methods, print_summary, split_list
from captum_layer_saliency.compare.methods import registry as method_registry
from captum_layer_saliency.compare.report import (
    NoResultsError,
    combine_runs,
    format_markdown,
    summarize,
    write_report,
)
from captum_layer_saliency.compare.results import merge_shards

__all__ = ["run_merge", "run_report", "run_summarize"]


def _reference(reference: str | None) -> str | None:
    return None if reference is None else check_methods([reference])[0]


def run_report(out_dir: str, reference: str | None, examples: int) -> int:
    """Rebuild the report of a comparison directory from its rows, and print its summary.

    Args:
        out_dir: the comparison directory.
        reference: the method for the paired differences (default: ``dls``).
        examples: how many examples the HTML gallery shows.

    Returns:
        The exit code.

    Raises:
        CLIError: ``out_dir`` is not a directory, or ``reference`` is unknown.
    """
    out = Path(out_dir).expanduser()
    if not out.is_dir():
        raise CLIError(f"{str(out)!r} is not a directory; run `compare --out {out_dir}` first")
    write_report(
        out,
        reference=_reference(reference),
        max_examples=examples,
        metrics=metric_registry.METRICS,
        method_order=list(method_registry.METHODS),
    )
    print_summary(out)
    return 0


def run_merge(out_dir: str) -> int:
    """Merge the row files of a sharded run, then write its report.

    Raises:
        CLIError: ``out_dir`` is not a directory.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise CLIError(f"{str(out)!r} is not a directory")
    merge_shards(out)
    return run_report(out_dir, None, 20)


def run_summarize(
    out_dirs: Sequence[str],
    index_from: int | None,
    index_to: int | None,
    methods: str | None,
    reference: str | None,
    json_path: str | None,
) -> int:
    """Print one summary table over the rows of one or more comparison runs.

    Args:
        out_dirs: the comparison directories (same task and model).
        index_from: keep examples whose index is at least this.
        index_to: keep examples whose index is below this.
        methods: comma-separated methods to keep (default: all).
        reference: the method for the paired differences.
        json_path: also write the summary and the combined configuration here.

    Returns:
        The exit code.

    Raises:
        CLIError: unknown methods, or runs that cannot be summarised together.
        NoResultsError: no rows in the range.
    """
    names = check_methods(split_list(methods) or []) if methods else None
    reference = _reference(reference)
    try:
        rows, config = combine_runs(
            out_dirs, index_from=index_from, index_to=index_to, methods=names
        )
        seed = int(config.get("seed", 0))
        summary = summarize(rows, reference=reference, seed=seed, metrics=metric_registry.METRICS)
    except NoResultsError:
        raise
    except ValueError as exc:  # runs that cannot be summarised together
        raise CLIError(str(exc)) from None
    if json_path is not None:
        text = json.dumps({"config": config, "summary": summary}, indent=2, allow_nan=False)
        atomic_write(Path(json_path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(format_markdown(summary, config))
    return 0
