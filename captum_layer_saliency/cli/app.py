"""The command line: a thin layer over :mod:`captum_layer_saliency.compare` and the defaults.

``python -m captum_layer_saliency compare --task sst2 --methods dls,ig --limit 50 --out runs/x``
explains, scores, writes rows (resumable: rerun the same command after an interruption) and the
report. ``report`` rebuilds the report from the rows, ``summarize`` prints one table for the rows
of several runs (say a cheap run of every method and an expensive one on a subset), optionally of
an index range only, ``merge`` folds the files of a sharded run,
``list-methods`` / ``list-tasks`` show what exists, ``build-defaults`` trains the default models,
``demo`` runs a quick comparison of the fast methods on SST-2, and ``explain`` explains your own
texts (see :mod:`captum_layer_saliency.cli.explain`).

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
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captum_layer_saliency import __version__
from captum_layer_saliency.cli import explain as cli_explain
from captum_layer_saliency.cli.sources import check_source, prepare_hub
from captum_layer_saliency.compare import distributed
from captum_layer_saliency.compare.report import (
    NoResultsError,
    combine_runs,
    format_markdown,
    summarize,
    write_report,
)
from captum_layer_saliency.compare.results import (
    ConfigMismatchError,
    CorruptResultsError,
    OutputDirError,
    check_writable,
    merge_shards,
)
from captum_layer_saliency.compare.runner import (
    EmptyDatasetError,
    InvalidComparisonError,
    ModelOutputError,
    canonical_method,
    check_metrics,
    run_comparison,
)
from captum_layer_saliency.data._source import DataUnavailableError, resolve_data_dir
from captum_layer_saliency.data.jsonl import DataFileError
from captum_layer_saliency.data.table import label_indices, read_table
from captum_layer_saliency.models.classifier import (
    TRUNCATION_MODES,
    TextClassifier,
    TokenizerMismatchError,
)
from captum_layer_saliency.models.heads import HeadMismatchError
from captum_layer_saliency.viz.explanation import ExplanationFileError

#: The quick, cheap methods of ``demo`` (and ``make demo``).
DEMO_METHODS = ("dls", "input_x_gradient", "integrated_gradients", "gradient_shap")
#: The demo's metrics: the headline faithfulness ones and the (cheap) plausibility ones. The
#: others (deletion/insertion AUC, Kendall tau against leave-one-out) cost a forward pass per
#: token and would dominate the demo's run time; `compare` computes them by default.
DEMO_METRICS = ("comprehensiveness", "sufficiency", "log_odds", "token_f1", "iou_f1", "auprc")
DEMO_LIMIT = 40
DEMO_OUT = "runs/demo"
EXIT_USAGE = 2


class CLIError(Exception):
    """A user mistake: reported as one line, exit code 2."""


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


def _module(name: str) -> Any:
    return importlib.import_module(f"captum_layer_saliency.{name}")


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items


def _get_task(name: str) -> Any:
    try:
        return _module("data.tasks").get_task(name)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _check_methods(names: Sequence[str]) -> list[str]:
    if not names:
        raise CLIError("no methods given: pass --methods NAME[,NAME...] (see list-methods)")
    if list(names) == ["all"]:
        return list(_module("compare.methods.registry").METHODS)
    try:
        return [canonical_method(n) for n in names]
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _load_model(model: str) -> TextClassifier:
    """A default classifier by name (``sst2``, ``ag_news``), or a Hugging Face path or id.

    A path is any directory written by ``save_pretrained`` holding a sequence classifier and
    its tokenizer; it has no LM head (DLS needs ``--lm-head``).
    """
    defaults = _module("zoo.load")
    if model in defaults.TASKS:
        try:
            clf: TextClassifier = defaults.load_default(model)
        except defaults.ArtifactError as exc:
            raise CLIError(f"default model {model!r} unusable: {exc}") from None
        return clf
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        check_source(model, "model")
        tokenizer = AutoTokenizer.from_pretrained(model)
        hf_model = AutoModelForSequenceClassification.from_pretrained(model).eval()
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
    id2label = getattr(hf_model.config, "id2label", {}) or {}
    labels = [str(id2label[i]) for i in sorted(id2label)]
    return TextClassifier(
        model=hf_model, tokenizer=tokenizer, labels=labels, name=Path(model).name or model
    )


def _attach_lm_head(clf: TextClassifier, source: str) -> TextClassifier:
    """Give ``clf`` the LM head of ``source`` (a masked/causal LM path or id), checked."""
    from captum_layer_saliency.models.heads import load_lm_head
    from captum_layer_saliency.models.surgery import UnsupportedModelError

    try:
        check_source(source, "LM head")
        clf.lm_head = load_lm_head(source, model=clf.model)
    except (OSError, ValueError, UnsupportedModelError) as exc:
        raise CLIError(f"cannot load LM head {source!r}: {str(exc).splitlines()[0]}") from None
    return clf


def _device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` must be available."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for, but no CUDA device is available")
    return requested


def _to_device(clf: TextClassifier, device: str) -> TextClassifier:
    # The head follows the model: DLS decodes the model's hidden states with it.
    clf.model.to(device)
    if clf.lm_head is not None:
        clf.lm_head.to(device)
    return clf


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise CLIError(f"--shard must look like RANK/WORLD (e.g. 0/4), got {text!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise CLIError(f"--shard {text}: need 0 <= RANK < WORLD")
    return rank, world


def _print_summary(out: Path) -> None:
    print((out / "summary.md").read_text(encoding="utf-8"))
    print(f"report: {(out / 'report.html').resolve()}")
    print(f"rows:   {out.resolve()}")


@dataclass(frozen=True)
class _Run:
    """What a ``compare``/``demo`` run explains and how: every option but where it runs."""

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


def _compare(run: _Run, *, device: str, shard: tuple[int, int] | None, progress: bool) -> int:
    """``compare``/``demo``: one process, one manual shard, or one rank of a torchrun job."""
    rank = distributed.torchrun_rank()
    if rank is None:
        out = _run_shard(run, device=_device(device), shard=shard, progress=progress)
        if shard is None:
            _print_summary(out)
        else:
            print(f"rank {shard[0]} of {shard[1]} done; when all are, run: merge --out {out}")
        return 0
    if shard is not None:
        raise CLIError("--shard and torchrun both split the work: drop --shard under torchrun")
    rank_device = distributed.rank_device(rank, device)
    with distributed.process_group(rank, rank_device) as group:
        failure: Exception | None = None
        try:
            out = _run_shard(
                run, device=str(rank_device), shard=rank.shard, progress=progress and rank.is_main
            )
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
    write_report(out)
    _print_summary(out)
    return 0


def _run_shard(run: _Run, *, device: str, shard: tuple[int, int] | None, progress: bool) -> Path:
    """Validate everything cheap first, then load the model and data and run (a shard)."""
    limit, batch_size, max_length, model = run.limit, run.batch_size, run.max_length, run.model
    data_file, metrics = run.data_file, run.metrics
    task = None if data_file is not None else _get_task(run.task_name or "")
    names = _check_methods(run.methods)
    metric_names = metrics
    if task is not None and metrics is not None:
        metric_names = check_metrics(metrics, task.has_rationales)
    if limit is not None and limit < 1:
        raise CLIError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {batch_size}")
    if max_length is not None and max_length < 3:
        raise CLIError(f"--max-length must be at least 3, got {max_length}")
    out = check_writable(run.out_dir)
    dataset: Any
    if data_file is not None:
        if model is None:
            raise CLIError("--data-file needs --model (a default model name or a path)")
        dataset = read_table(data_file, limit=limit)
        task_label = f"file:{Path(data_file).name}"
    else:
        assert task is not None
        try:
            resolved_data = resolve_data_dir(run.data_dir)
            dataset = task.load(split=run.split, data_dir=resolved_data, limit=limit)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        task_label = task.name
    if len(dataset) == 0:
        raise CLIError(f"{task_label!r} has no examples to explain")
    if model is None:
        assert task is not None
        try:
            model = task.default_model()
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    clf = _load_model(model)
    if data_file is not None:  # labels may be names or digits (CSV/TSV)
        dataset = label_indices(dataset, clf.labels)
    if run.lm_head is not None:
        clf = _attach_lm_head(clf, run.lm_head)
    if "dls" in names and clf.lm_head is None:
        raise CLIError(
            f"method dls decodes hidden states with an LM head, and {model!r} has none: pass "
            "--lm-head PATH_OR_ID (the masked or causal LM of the classifier's backbone)"
        )
    clf = _to_device(clf, device)
    return run_comparison(
        clf,
        dataset,
        names,
        out,
        task=task_label,
        limit=limit,
        batch_size=batch_size,
        seed=run.seed,
        metrics=metric_names,
        progress=progress,
        shard=shard,
        max_length=max_length,
        truncation=run.truncation,
    )


def _list_methods() -> int:
    baselines = _module("compare.methods.registry")
    aliases: dict[str, list[str]] = {}
    for alias, name in baselines.ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    for name, spec in baselines.METHODS.items():
        also = f" (also: {', '.join(sorted(aliases[name]))})" if name in aliases else ""
        print(f"{name:<28} {spec.kind:<12} {spec.description}{also}")
    return 0


def _list_tasks() -> int:
    for name, spec in _module("data.tasks").TASKS.items():
        rationales = "rationales" if spec.has_rationales else "-"
        model = spec.model or "(bring one)"
        print(f"{name:<16} model={model:<12} {rationales:<11} {spec.description}")
    return 0


def _build_defaults(args: argparse.Namespace) -> int:
    build = _module("zoo.build")
    info = build.build_defaults(**build.build_options(args))
    built = ", ".join(info.get("built", [])) or "nothing (all artifacts were valid)"
    print(f"default models in {info.get('dir')}; built: {built}")
    return 0


def _report(out_dir: str, reference: str | None, examples: int) -> int:
    out = Path(out_dir).expanduser()
    if not out.is_dir():
        raise CLIError(f"{str(out)!r} is not a directory; run `compare --out {out_dir}` first")
    if reference is not None:
        reference = _check_methods([reference])[0]
    write_report(out, reference=reference, max_examples=examples)
    _print_summary(out)
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
        help="a default model name (sst2, ag_news), or a Hugging Face id or local directory "
        "(save_pretrained) of a sequence classifier and its tokenizer (default: the task's "
        "default model)",
    )
    p.add_argument(
        "--lm-head",
        help="the masked/causal LM (id or local directory) whose head DLS decodes with: the "
        "classifier's pre-trained backbone (needed by DLS for a --model path)",
    )
    p.add_argument("--split", help="the task's split (default: the task's default split)")
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
    _module("zoo.build").add_build_arguments(p)
    return parser


def _summarize(
    out_dirs: Sequence[str],
    index_from: int | None,
    index_to: int | None,
    methods: str | None,
    reference: str | None,
    json_path: str | None,
) -> int:
    names = _check_methods(_split_list(methods) or []) if methods else None
    if reference is not None:
        reference = _check_methods([reference])[0]
    try:
        rows, config = combine_runs(
            out_dirs, index_from=index_from, index_to=index_to, methods=names
        )
        summary = summarize(rows, reference=reference, seed=int(config.get("seed", 0)))
    except NoResultsError:
        raise
    except ValueError as exc:  # runs that cannot be summarised together
        raise CLIError(str(exc)) from None
    if json_path is not None:
        target = Path(json_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps({"config": config, "summary": summary}, indent=2, allow_nan=False),
            encoding="utf-8",
        )
    print(format_markdown(summary, config))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("compare", "demo"):
        demo = args.command == "demo"
        run = _Run(
            task_name="sst2" if demo else args.task,
            methods=list(DEMO_METHODS) if demo else (_split_list(args.methods) or []),
            out_dir=args.out,
            limit=args.limit,
            batch_size=args.batch_size,
            seed=args.seed,
            data_dir=args.data_dir,
            data_file=None if demo else args.data_file,
            metrics=_split_list(args.metrics) or (list(DEMO_METRICS) if demo else None),
            model=None if demo else args.model,
            lm_head=None if demo else args.lm_head,
            split=None if demo else args.split,
            max_length=args.max_length,
            truncation=args.truncation,
        )
        return _compare(
            run,
            device=args.device,
            shard=None if demo else _parse_shard(args.shard),
            progress=not args.no_progress,
        )
    if args.command == "report":
        return _report(args.out, args.reference, args.examples)
    if args.command == "summarize":
        return _summarize(
            args.out, args.index_from, args.index_to, args.methods, args.reference, args.json
        )
    if args.command == "merge":
        out = Path(args.out)
        if not out.is_dir():
            raise CLIError(f"{str(out)!r} is not a directory")
        merge_shards(out)
        return _report(args.out, None, 20)
    if args.command == "explain":
        return cli_explain.run(args)
    if args.command == "list-methods":
        return _list_methods()
    if args.command == "list-tasks":
        return _list_tasks()
    if args.command == "build-defaults":
        return _build_defaults(args)
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
        prepare_hub()  # an unreachable hub: offline at once, not after a minute of retries
    try:
        return _dispatch(args)
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


__all__ = ["DEMO_METHODS", "build_parser", "main"]
