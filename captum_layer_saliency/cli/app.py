"""The command line: a thin layer over :mod:`captum_layer_saliency.compare` and the defaults.

``python -m captum_layer_saliency compare --task sst2 --methods dls,ig --limit 50 --out runs/x``
explains, scores, writes rows (resumable: rerun the same command after an interruption) and the
report. ``report`` rebuilds the report from the rows, ``summarize`` prints one table for the rows
of several runs (say a cheap run of every method and an expensive one on a subset), optionally of
an index range only, ``merge`` folds the files of a sharded run,
``list-methods`` / ``list-tasks`` show what exists, ``build-defaults`` trains the default models,
``demo`` runs a quick comparison of the fast methods on SST-2, and ``explain`` explains your own
texts (see :mod:`captum_layer_saliency.cli.explain`). This module holds the parser, the
dispatch and ``main``; the commands live in :mod:`~captum_layer_saliency.cli.compare`,
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
from pathlib import Path

from captum_layer_saliency._version import __version__
from captum_layer_saliency.cli import explain as cli_explain
from captum_layer_saliency.cli.common import Backends, CLIError, split_list
from captum_layer_saliency.cli.compare import (
    DEMO_LIMIT,
    DEMO_METHODS,
    DEMO_METRICS,
    DEMO_OUT,
    EXIT_USAGE,
    CompareRun,
    parse_shard,
    run_compare,
)
from captum_layer_saliency.cli.report import run_merge, run_report, run_summarize
from captum_layer_saliency.cli.sources import prepare_hub
from captum_layer_saliency.compare import distributed
from captum_layer_saliency.compare.batches import ModelOutputError
from captum_layer_saliency.compare.checks import EmptyDatasetError, InvalidComparisonError
from captum_layer_saliency.compare.report import NoResultsError
from captum_layer_saliency.compare.results import (
    ConfigMismatchError,
    CorruptResultsError,
    OutputDirError,
)
from captum_layer_saliency.data._source import DataUnavailableError
from captum_layer_saliency.data.jsonl import DataFileError
from captum_layer_saliency.data.tasks import TASKS
from captum_layer_saliency.metrics import ERASER, PROTOCOLS
from captum_layer_saliency.models.classifier import TRUNCATION_MODES, TokenizerMismatchError
from captum_layer_saliency.models.heads import HeadMismatchError
from captum_layer_saliency.viz.explanation import ExplanationFileError
from captum_layer_saliency.zoo import build as zoo_build

__all__ = ["DEMO_METHODS", "DEMO_METRICS", "USER_ERRORS", "build_parser", "main"]

#: The errors a user's input can cause, reported as one ``error:`` line with exit code 2.
USER_ERRORS: tuple[type[Exception], ...] = (
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


def _list_methods(backends: Backends) -> int:
    registries = backends.registries
    aliases: dict[str, list[str]] = {}
    for alias, name in registries.aliases.items():
        aliases.setdefault(name, []).append(alias)
    for name, spec in registries.methods.items():
        also = f" (also: {', '.join(sorted(aliases[name]))})" if name in aliases else ""
        print(f"{name:<28} {spec.kind:<12} {spec.description}{also}")
    return 0


def _list_tasks() -> int:
    for name, spec in TASKS.items():
        rationales = "rationales" if spec.has_rationales else "-"
        model = spec.model or "(bring one)"
        print(f"{name:<16} model={model:<12} {rationales:<11} {spec.description}")
    return 0


def _build_defaults(args: argparse.Namespace) -> int:
    info = zoo_build.build_defaults(**zoo_build.build_options(args))
    built = ", ".join(info.get("built", [])) or "nothing (all artifacts were valid)"
    print(f"default models in {info.get('dir')}; built: {built}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and the tests)."""
    console_script = Path(sys.argv[0]).name.startswith("captum-layer-saliency")
    parser = argparse.ArgumentParser(
        prog="captum-layer-saliency" if console_script else "python -m captum_layer_saliency",
        description="Decoded Layer Saliency: explain texts, compare attribution methods, build "
        "default models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_options(p: argparse.ArgumentParser, *, demo: bool) -> None:
        p.add_argument(
            "--limit",
            type=int,
            default=DEMO_LIMIT if demo else None,
            help="explain only the first N examples" + (f" (default {DEMO_LIMIT})" if demo else ""),
        )
        p.add_argument(
            "--out",
            default=DEMO_OUT if demo else None,
            required=not demo,
            help="output directory (rerun to resume)" + (f" (default {DEMO_OUT})" if demo else ""),
        )
        p.add_argument("--batch-size", type=int, default=8, help="examples per batch (default 8)")
        p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
        p.add_argument(
            "--data-dir",
            help="local data directory (default: $CAPTUM_LAYER_SALIENCY_DATA or ../shared/data)",
        )
        p.add_argument(
            "--device",
            choices=("auto", "cpu", "cuda"),
            default="auto",
            help="where the model runs (default auto: CUDA when available; under torchrun each "
            "rank takes cuda:LOCAL_RANK)",
        )
        p.add_argument(
            "--max-length",
            type=int,
            help="token budget per text, special tokens included (default: the model's, 128 "
            "for the default models)",
        )
        p.add_argument(
            "--truncation",
            choices=TRUNCATION_MODES,
            default="truncate",
            help="texts over --max-length: 'truncate' (cut, warn once, record it in the rows "
            "and the summary; default) or 'error' (refuse to start)",
        )
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("compare", help="explain, score and report (resumable)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="a task name (see list-tasks)")
    source.add_argument(
        "--data-file",
        help="your own examples: a CSV, TSV or JSON Lines file with text and label (a class "
        "index or one of the model's label names; JSON Lines may add idx, words and rationale); "
        "needs --model",
    )
    p.add_argument(
        "--methods",
        required=True,
        help="comma-separated method names or aliases, or 'all' (see list-methods)",
    )
    p.add_argument("--metrics", help="comma-separated metric names (default: all that apply)")
    p.add_argument(
        "--model",
        help="a default model name (sst2, ag_news, hatexplain), or a Hugging Face id or local "
        "directory (save_pretrained) of a sequence classifier and its tokenizer (default: the "
        "task's default model)",
    )
    p.add_argument(
        "--lm-head",
        help="the masked/causal LM (id or local directory) whose head DLS decodes with: the "
        "classifier's pre-trained backbone (needed by DLS for a --model path)",
    )
    p.add_argument("--split", help="the task's split (default: the task's default split)")
    p.add_argument(
        "--protocol",
        default=ERASER,
        help=f"how faithfulness is measured ({', '.join(PROTOCOLS)}): eraser (tokens deleted, "
        "bins 1/5/10/20/50 %%; the default) or edin (Edin et al. 2024: words replaced by "
        "[MASK] ([PAD] without one) along the whole curve, and NAOPC, exact bounds up to 12 "
        "words, beam search 5 above)",
    )
    p.add_argument("--shard", help="RANK/WORLD: do only this rank's share (then run merge)")
    run_options(p, demo=False)

    p = sub.add_parser("demo", help="a quick comparison of the fast methods on SST-2")
    p.add_argument(
        "--metrics", help=f"comma-separated metric names (default: {','.join(DEMO_METRICS)})"
    )
    run_options(p, demo=True)

    p = sub.add_parser("report", help="rebuild the report of an output directory from its rows")
    p.add_argument("--out", required=True, help="the output directory of a compare run")
    p.add_argument("--reference", help="method for the paired differences (default: dls)")
    p.add_argument("--examples", type=int, default=20, help="examples in the HTML gallery")

    p = sub.add_parser(
        "summarize",
        help="one summary table over the rows of one or more compare runs (printed as markdown)",
    )
    p.add_argument("out", nargs="+", help="output directories of compare runs (same task, model)")
    p.add_argument("--index-from", type=int, help="keep examples whose index is at least this")
    p.add_argument("--index-to", type=int, help="keep examples whose index is below this")
    p.add_argument("--methods", help="comma-separated methods to keep (default: all)")
    p.add_argument("--reference", help="method for the paired differences (default: dls)")
    p.add_argument("--json", help="also write the summary (and the combined config) here")

    p = sub.add_parser("merge", help="merge the row files of a sharded run and write the report")
    p.add_argument("--out", required=True, help="the output directory of the sharded run")

    cli_explain.add_parser(sub)
    sub.add_parser("list-methods", help="the attribution methods and their aliases")
    sub.add_parser("list-tasks", help="the comparison tasks")

    p = sub.add_parser("build-defaults", help="train the default models and the MLM head")
    zoo_build.add_build_arguments(p)
    return parser


def _compare_run(args: argparse.Namespace) -> CompareRun:
    """The run a ``compare`` or ``demo`` command line asks for."""
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
        protocol=ERASER if demo else args.protocol,
    )


def _dispatch(args: argparse.Namespace, backends: Backends) -> int:
    registries = backends.registries
    if args.command in ("compare", "demo"):
        return run_compare(
            _compare_run(args),
            device=args.device,
            shard=None if args.command == "demo" else parse_shard(args.shard),
            progress=not args.no_progress,
            backends=backends,
        )
    if args.command == "report":
        return run_report(args.out, args.reference, args.examples, registries)
    if args.command == "summarize":
        return run_summarize(
            args.out,
            args.index_from,
            args.index_to,
            args.methods,
            args.reference,
            args.json,
            registries,
        )
    if args.command == "merge":
        return run_merge(args.out, registries)
    if args.command == "explain":
        return cli_explain.run(args, backends)
    if args.command == "list-methods":
        return _list_methods(backends)
    if args.command == "list-tasks":
        return _list_tasks()
    if args.command == "build-defaults":
        return _build_defaults(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices


def main(argv: Sequence[str] | None = None, *, backends: Backends | None = None) -> int:
    """Run the CLI.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        backends: the registries, task registry and model loader the commands use (default:
            the real ones; tests pass fakes).

    Returns:
        The exit code: 0 on success, 2 on a user error, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    if args.command not in ("report", "summarize", "merge", "list-methods"):
        prepare_hub()  # an unreachable hub: offline at once, not after a minute of retries
    try:
        return _dispatch(args, backends or Backends())
    except USER_ERRORS as exc:
        # One line, whatever the message: a multi-line one would read like a traceback.
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the rows written so far are kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
