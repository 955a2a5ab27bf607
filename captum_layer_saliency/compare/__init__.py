"""The comparison harness: run methods over a dataset, score them, resume, and report.

``runner`` runs a comparison (resume, sharding) on top of ``checks`` (every input checked before
any work), ``batches`` (the batch plan, seeds, encoded batches) and ``execute`` (one method on one
batch, scored), drawing on the method registry (``methods``) and the metric registry
(:data:`captum_layer_saliency.metrics.METRICS`); ``results`` owns the files on disk (JSONL rows,
``run.json``), ``report`` turns rows into tables, plots and HTML, and ``distributed`` runs the
shards under ``torchrun``.
"""

from captum_layer_saliency.compare.batches import ModelOutputError, word_rationale_to_tokens
from captum_layer_saliency.compare.checks import EmptyDatasetError, InvalidComparisonError
from captum_layer_saliency.compare.report import (
    NoResultsError,
    bootstrap_ci,
    combine_runs,
    format_markdown,
    format_table,
    summarize,
    write_report,
)
from captum_layer_saliency.compare.results import (
    ConfigMismatchError,
    CorruptResultsError,
    OutputDirError,
    load_rows,
    merge_shards,
    read_rows,
)
from captum_layer_saliency.compare.runner import run_comparison

__all__ = [
    "ConfigMismatchError",
    "CorruptResultsError",
    "EmptyDatasetError",
    "InvalidComparisonError",
    "ModelOutputError",
    "NoResultsError",
    "OutputDirError",
    "bootstrap_ci",
    "combine_runs",
    "format_markdown",
    "format_table",
    "load_rows",
    "merge_shards",
    "read_rows",
    "run_comparison",
    "summarize",
    "word_rationale_to_tokens",
    "write_report",
]
