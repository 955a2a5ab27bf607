"""The ``report``, ``merge`` and ``summarize`` commands: reports from rows already on disk."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from captum_layer_saliency._utils import atomic_write
from captum_layer_saliency.cli.common import CLIError, check_methods, print_summary, split_list
from captum_layer_saliency.compare.registries import Registries
from captum_layer_saliency.compare.report import (
    NoResultsError,
    combine_runs,
    format_markdown,
    summarize,
    write_report,
)
from captum_layer_saliency.compare.results import merge_shards

__all__ = ["run_merge", "run_report", "run_summarize"]


def _reference(reference: str | None, registries: Registries) -> str | None:
    return None if reference is None else check_methods([reference], registries)[0]


def run_report(out_dir: str, reference: str | None, examples: int, registries: Registries) -> int:
    """Rebuild the report of a comparison directory from its rows, and print its summary.

    Args:
        out_dir: the comparison directory.
        reference: the method for the paired differences (default: ``dls``).
        examples: how many examples the HTML gallery shows.
        registries: the method registry (to resolve ``reference``).

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
        reference=_reference(reference, registries),
        max_examples=examples,
        metrics=registries.metrics,
        method_order=list(registries.methods),
    )
    print_summary(out)
    return 0


def run_merge(out_dir: str, registries: Registries) -> int:
    """Merge the row files of a sharded run, then write its report.

    Raises:
        CLIError: ``out_dir`` is not a directory.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise CLIError(f"{str(out)!r} is not a directory")
    merge_shards(out)
    return run_report(out_dir, None, 20, registries)


def run_summarize(
    out_dirs: Sequence[str],
    index_from: int | None,
    index_to: int | None,
    methods: str | None,
    reference: str | None,
    json_path: str | None,
    registries: Registries,
) -> int:
    """Print one summary table over the rows of one or more comparison runs.

    Args:
        out_dirs: the comparison directories (same task and model).
        index_from: keep examples whose index is at least this.
        index_to: keep examples whose index is below this.
        methods: comma-separated methods to keep (default: all).
        reference: the method for the paired differences.
        json_path: also write the summary and the combined configuration here.
        registries: the method registry.

    Returns:
        The exit code.

    Raises:
        CLIError: unknown methods, or runs that cannot be summarised together.
        NoResultsError: no rows in the range.
    """
    names = check_methods(split_list(methods) or [], registries) if methods else None
    reference = _reference(reference, registries)
    try:
        rows, config = combine_runs(
            out_dirs, index_from=index_from, index_to=index_to, methods=names
        )
        seed = int(config.get("seed", 0))
        summary = summarize(rows, reference=reference, seed=seed, metrics=registries.metrics)
    except NoResultsError:
        raise
    except ValueError as exc:  # runs that cannot be summarised together
        raise CLIError(str(exc)) from None
    if json_path is not None:
        text = json.dumps({"config": config, "summary": summary}, indent=2, allow_nan=False)
        atomic_write(Path(json_path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(format_markdown(summary, config))
    return 0
