"""The ``compare`` and ``demo`` commands: one process, one manual shard, or one torchrun rank.

Everything cheap is checked first (names, numbers, the output directory); then the data and the
model are loaded and :func:`~captum_layer_saliency.compare.runner.run_comparison` runs. Under
``torchrun`` every rank runs its shard on its own device and rank 0 merges the shards and writes
the report (see :mod:`captum_layer_saliency.compare.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captum_layer_saliency import metrics as metric_registry
from captum_layer_saliency.cli import common
from captum_layer_saliency.cli.common import (
    CLIError,
    attach_lm_head,
    check_methods,
    pick_device,
    print_summary,
    to_device,
)
from captum_layer_saliency.cli.parser import (
    DEMO_LIMIT,
    DEMO_METHODS,
    DEMO_METRICS,
    DEMO_OUT,
    EXIT_USAGE,
)
from captum_layer_saliency.compare import distributed
from captum_layer_saliency.compare.checks import check_metrics
from captum_layer_saliency.compare.methods import registry as method_registry
from captum_layer_saliency.compare.report import write_report
from captum_layer_saliency.compare.results import check_writable, merge_shards
from captum_layer_saliency.compare.runner import run_comparison
from captum_layer_saliency.data import resolve_data_dir
from captum_layer_saliency.data.table import label_indices, read_table
from captum_layer_saliency.metrics import PROTOCOLS, protocol_metrics

__all__ = [
    "DEMO_LIMIT",
    "DEMO_METHODS",
    "DEMO_METRICS",
    "DEMO_OUT",
    "EXIT_USAGE",
    "CompareRun",
    "parse_shard",
    "run_compare",
]


@dataclass(frozen=True)
class CompareRun:
    """What a ``compare``/``demo`` run explains and how: every option but where it runs.

    Attributes:
        task_name: the task (``None`` with ``data_file``).
        methods: method names or aliases, or ``["all"]``.
        out_dir: the output directory.
        limit: explain only the first ``limit`` examples.
        batch_size: examples per batch.
        seed: the base seed.
        data_dir: the local data directory (default: the environment's).
        data_file: the user's own CSV/TSV/JSONL examples (needs ``model``).
        metrics: metric names (default: all that apply).
        model: a default model's name, a path or an id (default: the task's model).
        lm_head: the LM whose head DLS decodes with.
        split: the task's split.
        max_length: the token budget per text.
        truncation: ``"truncate"`` or ``"error"``.
        protocol: ``"eraser"`` (the default) or ``"edin"`` (Edin et al.'s faithfulness protocol).
    """

    task_name: str | None
    methods: Sequence[str]
    out_dir: str
    limit: int | None
    batch_size: int
    seed: int
    data_dir: str | None
    data_file: str | None
    metrics: Sequence[str] | None
    model: str | None
    lm_head: str | None
    split: str | None
    max_length: int | None
    truncation: str
    protocol: str = "eraser"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``--shard RANK/WORLD`` -> ``(rank, world)``; ``None`` stays ``None``.

    Raises:
        CLIError: not two integers with ``0 <= RANK < WORLD``.
    """
    if text is None:
        return None
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise CLIError(f"--shard must look like RANK/WORLD (e.g. 0/4), got {text!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise CLIError(f"--shard {text}: need 0 <= RANK < WORLD")
    return rank, world


def run_compare(
    run: CompareRun,
    *,
    device: str,
    shard: tuple[int, int] | None,
    progress: bool,
) -> int:
    """Run ``compare``/``demo``: one process, one manual shard, or one rank of a torchrun job.

    Args:
        run: what to explain and how.
        device: ``auto``, ``cpu`` or ``cuda``.
        shard: ``(rank, world)`` of a manual shard, or ``None``.
        progress: show the plan and a progress bar.

    Returns:
        The exit code.

    Raises:
        CLIError: a user mistake (or, on rank 0, another rank's failure).
    """
    rank = distributed.torchrun_rank()
    if rank is None:
        out = _run_shard(run, pick_device(device), shard, progress)
        if shard is None:
            print_summary(out)
        else:
            print(f"rank {shard[0]} of {shard[1]} done; when all are, run: merge --out {out}")
        return 0
    if shard is not None:
        raise CLIError("--shard and torchrun both split the work: drop --shard under torchrun")
    rank_device = distributed.rank_device(rank, device)
    with distributed.process_group(rank, rank_device) as group:
        failure: Exception | None = None
        try:
            out = _run_shard(run, str(rank_device), rank.shard, progress and rank.is_main)
        except Exception as exc:  # every rank must reach all_ok, or the others wait forever
            failure = exc
        everyone_ok = group.all_ok(failure is None)
    if failure is not None:
        raise failure  # this rank reports its own error
    if not everyone_ok:
        if rank.is_main:
            raise CLIError(
                "another rank failed (its error is above); every row written so far is kept: "
                "rerun the same command to resume"
            )
        return EXIT_USAGE
    if not rank.is_main:
        return 0  # rank 0 merges and reports; the others finish quietly
    distributed.check_shards_visible(out, rank.world_size)
    merge_shards(out)
    write_report(out, metrics=metric_registry.METRICS, method_order=list(method_registry.METHODS))
    print_summary(out)
    return 0


def _check_numbers(run: CompareRun) -> None:
    if run.limit is not None and run.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {run.limit}")
    if run.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {run.batch_size}")
    if run.max_length is not None and run.max_length < 3:
        raise CLIError(f"--max-length must be at least 3, got {run.max_length}")


def _load_data(run: CompareRun, task: Any) -> tuple[Any, str]:
    """The run's examples and the name its rows record as the task."""
    if run.data_file is not None:
        if run.model is None:
            raise CLIError("--data-file needs --model (a default model name or a path)")
        return read_table(run.data_file, limit=run.limit), f"file:{Path(run.data_file).name}"
    try:
        dataset = task.load(
            split=run.split, data_dir=resolve_data_dir(run.data_dir), limit=run.limit
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return dataset, task.name


def _run_shard(
    run: CompareRun,
    device: str,
    shard: tuple[int, int] | None,
    progress: bool,
) -> Path:
    """Validate everything cheap first, then load the model and data and run (a shard)."""
    task = None if run.data_file is not None else common.get_task(run.task_name or "")
    names = check_methods(run.methods)
    metric_names = run.metrics
    if task is not None and run.metrics is not None:
        if run.protocol not in PROTOCOLS:
            raise CLIError(
                f"--protocol must be one of {', '.join(PROTOCOLS)}, got {run.protocol!r}"
            )
        table = protocol_metrics(run.protocol)
        metric_names = check_metrics(run.metrics, task.has_rationales, table=table)
    _check_numbers(run)
    out = check_writable(run.out_dir)
    dataset, task_label = _load_data(run, task)
    if len(dataset) == 0:
        raise CLIError(f"{task_label!r} has no examples to explain")
    model = run.model
    if model is None:
        assert task is not None  # --data-file without --model was refused above
        try:
            model = task.default_model()
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    clf = common.load_model(model)
    if run.data_file is not None:  # labels may be names or digits (CSV/TSV)
        dataset = label_indices(dataset, clf.labels)
    if run.lm_head is not None:
        clf = attach_lm_head(clf, run.lm_head)
    if "dls" in names and clf.lm_head is None:
        raise CLIError(
            f"method dls decodes hidden states with an LM head, and {model!r} has none: pass "
            "--lm-head PATH_OR_ID (the masked or causal LM of the classifier's backbone)"
        )
    return run_comparison(
        to_device(clf, device),
        dataset,
        names,
        out,
        task=task_label,
        limit=run.limit,
        batch_size=run.batch_size,
        seed=run.seed,
        metrics=metric_names,
        progress=progress,
        shard=shard,
        max_length=run.max_length,
        truncation=run.truncation,
        protocol=run.protocol,
    )
