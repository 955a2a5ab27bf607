"""The command line: a thin layer over :mod:`captum_layer_saliency.compare` and the defaults.

``python -m captum_layer_saliency compare --task sst2 --methods dls,ig --limit 50 --out runs/x``
explains, scores, writes rows (resumable: rerun the same command after an interruption) and the
report. ``report`` rebuilds the report from the rows, ``summarize`` prints one table for the rows
of several runs (say a cheap run of every method and an expensive one on a subset), optionally of
an index range only, ``merge`` folds the files of a sharded run,
``list-methods`` / ``list-tasks`` show what exists, ``build-defaults`` trains the default models,
``demo`` runs a quick comparison of the fast methods on SST-2, and ``explain`` explains your own
texts (see :mod:`captum_layer_saliency.cli.explain`). This module holds the parser, the
dispatch and ``main``; the parser is :mod:`~captum_layer_saliency.cli.parser` (no torch: ``--help``
and ``list-methods`` answer at once), and each command imports its machinery when it runs; the
commands live in :mod:`~captum_layer_saliency.cli.compare`,
:mod:`~captum_layer_saliency.cli.report` and :mod:`~captum_layer_saliency.cli.explain`.

Under ``torchrun --nproc_per_node N -m captum_layer_saliency compare ...`` every process runs its
shard on its own device and rank 0 merges the shards and writes the report (see
:mod:`captum_layer_saliency.compare.distributed` and ``docs/scaling.md``).

Mistakes a user can make (unknown names, bad paths, an empty dataset or a bad data file, a
tokenizer or head that does not fit the model, texts over the budget with ``--truncation error``,
a directory holding another configuration or damaged rows) end with a one-line ``error: ...`` on
stderr and exit code 2, never a traceback; nothing already written is touched. See
``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from captum_layer_saliency.cli.method_table import METHOD_TABLE
from captum_layer_saliency.cli.parser import DEMO_METHODS, DEMO_METRICS, EXIT_USAGE, build_parser

if TYPE_CHECKING:
    from captum_layer_saliency.cli.compare import CompareRun
    from captum_layer_saliency.compare.methods.registry import MethodSpec

__all__ = [
    "DEMO_METHODS",
    "DEMO_METRICS",
    "build_parser",
    "main",
    "registry_table",
    "user_errors",
]


def user_errors() -> tuple[type[Exception], ...]:
    """The errors a user's input can cause, reported as one ``error:`` line with exit code 2.

    Imported when a command runs (they live beside the machinery that raises them).
    """
    from captum_layer_saliency.cli.common import CLIError
    from captum_layer_saliency.compare import distributed
    from captum_layer_saliency.compare.batches import ModelOutputError
    from captum_layer_saliency.compare.checks import EmptyDatasetError, InvalidComparisonError
    from captum_layer_saliency.compare.report import NoResultsError
    from captum_layer_saliency.compare.results import (
        ConfigMismatchError,
        CorruptResultsError,
        OutputDirError,
    )
    from captum_layer_saliency.data import DataUnavailableError
    from captum_layer_saliency.data.jsonl import DataFileError
    from captum_layer_saliency.errors import CaptumLayerSaliencyError
    from captum_layer_saliency.models.classifier import TokenizerMismatchError
    from captum_layer_saliency.models.heads import HeadMismatchError
    from captum_layer_saliency.viz.explanation import ExplanationFileError

    # Every one derives from CaptumLayerSaliencyError, which is caught too.
    return (
        CaptumLayerSaliencyError,
        CLIError,
        ConfigMismatchError,
        CorruptResultsError,
        DataFileError,
        DataUnavailableError,
        EmptyDatasetError,
        ExplanationFileError,
        HeadMismatchError,
        InvalidComparisonError,
        ModelOutputError,
        NoResultsError,
        OutputDirError,
        TokenizerMismatchError,
        distributed.DistributedSetupError,
    )


def registry_table(
    methods: dict[str, MethodSpec], aliases: dict[str, str]
) -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    """``(name, kind, description, aliases)`` of every method of a registry, in order.

    Args:
        methods: the registry's methods by name.
        aliases: alias -> method name.

    Returns:
        The rows ``list-methods`` prints (for the real registry: ``METHOD_TABLE``).
    """
    also: dict[str, list[str]] = {}
    for alias, name in aliases.items():
        also.setdefault(name, []).append(alias)
    return tuple(
        (name, spec.kind, spec.description, tuple(sorted(also.get(name, ()))))
        for name, spec in methods.items()
    )


def _list_methods() -> int:
    # the real registry is printed from its table (no torch to import)
    for name, kind, description, also in METHOD_TABLE:
        more = f" (also: {', '.join(also)})" if also else ""
        print(f"{name:<28} {kind:<12} {description}{more}")
    return 0


def _list_tasks() -> int:
    from captum_layer_saliency.data.tasks import TASKS

    for name, spec in TASKS.items():
        rationales = "rationales" if spec.has_rationales else "-"
        model = spec.model or "(bring one)"
        print(f"{name:<16} model={model:<12} {rationales:<11} {spec.description}")
    return 0


def _build_defaults(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        from captum_layer_saliency.cli.common import CLIError

        raise CLIError(f"--threads must be at least 1, got {args.threads}")
    from captum_layer_saliency.zoo import build as zoo_build

    info = zoo_build.build_defaults(**zoo_build.build_options(args))
    built = ", ".join(info.get("built", [])) or "nothing (all artifacts were valid)"
    print(f"default models in {info.get('dir')}; built: {built}")
    return 0


def _compare_run(args: argparse.Namespace) -> CompareRun:
    """The run a ``compare`` or ``demo`` command line asks for."""
    from captum_layer_saliency.cli.common import split_list
    from captum_layer_saliency.cli.compare import CompareRun

    demo = args.command == "demo"
    return CompareRun(
        task_name="sst2" if demo else args.task,
        methods=list(DEMO_METHODS) if demo else (split_list(args.methods) or []),
        out_dir=args.out,
        limit=args.limit,
        batch_size=args.batch_size,
        seed=args.seed,
        data_dir=args.data_dir,
        data_file=None if demo else args.data_file,
        metrics=split_list(args.metrics) or (list(DEMO_METRICS) if demo else None),
        model=None if demo else args.model,
        lm_head=None if demo else args.lm_head,
        split=None if demo else args.split,
        max_length=args.max_length,
        truncation=args.truncation,
        protocol="eraser" if demo else args.protocol,
    )


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "list-methods":
        return _list_methods()
    if args.command == "list-tasks":
        return _list_tasks()
    if args.command == "build-defaults":
        return _build_defaults(args)
    if args.command in ("compare", "demo"):
        from captum_layer_saliency.cli.compare import parse_shard, run_compare

        return run_compare(
            _compare_run(args),
            device=args.device,
            shard=None if args.command == "demo" else parse_shard(args.shard),
            progress=not args.no_progress,
        )
    if args.command == "explain":
        from captum_layer_saliency.cli import explain as cli_explain

        return cli_explain.run(args)
    from captum_layer_saliency.cli.report import run_merge, run_report, run_summarize

    if args.command == "report":
        return run_report(args.out, args.reference, args.examples)
    if args.command == "summarize":
        return run_summarize(
            args.out,
            args.index_from,
            args.index_to,
            args.methods,
            args.reference,
            args.json,
        )
    if args.command == "merge":
        return run_merge(args.out)
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 on a user error, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    if args.command not in ("report", "summarize", "merge", "list-methods"):
        from captum_layer_saliency.cli.sources import prepare_hub

        prepare_hub()  # an unreachable hub: offline at once, not after a minute of retries
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the rows written so far are kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        # One line, whatever the message: a multi-line one would read like a traceback.
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
