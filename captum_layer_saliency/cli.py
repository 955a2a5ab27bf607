"""The command line: a thin layer over :mod:`captum_layer_saliency.compare` and the defaults.

``python -m captum_layer_saliency compare --task sst2 --methods dls,ig --limit 50 --out runs/x``
explains, scores, writes rows (resumable: rerun the same command after an interruption) and the
report. ``report`` rebuilds the report from the rows, ``merge`` folds the files of a sharded run,
``list-methods`` / ``list-tasks`` show what exists, ``build-defaults`` trains the default models,
and ``demo`` runs a quick comparison of the fast methods on SST-2.

Mistakes a user can make (unknown names, bad paths, an empty dataset, a directory holding another
configuration) end with a one-line ``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compare.report import NoResultsError, write_report
from .compare.results import ConfigMismatchError, CorruptResultsError, merge_shards
from .compare.runner import (
    EmptyDatasetError,
    InvalidComparisonError,
    canonical_method,
    check_metrics,
    run_comparison,
)
from .data._source import DataUnavailableError, resolve_data_dir
from .hf import TextClassifier

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
        return list(_module("baselines").METHODS)
    try:
        return [canonical_method(n) for n in names]
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _check_out_dir(path: str) -> Path:
    """Create ``path`` if needed and prove it is writable, before any slow work starts."""
    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise CLIError(f"cannot write to output directory {str(out)!r}: {exc.strerror}") from None
    return out


def _load_model(model: str) -> TextClassifier:
    """A default classifier by name (``sst2``, ``ag_news``), or a Hugging Face path or id."""
    defaults = _module("defaults")
    if model in defaults.TASKS:
        clf: TextClassifier = defaults.load_default(model)
        return clf
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        hf_model = AutoModelForSequenceClassification.from_pretrained(model).eval()
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
    id2label = getattr(hf_model.config, "id2label", {}) or {}
    labels = [str(id2label[i]) for i in sorted(id2label)]
    return TextClassifier(
        model=hf_model, tokenizer=tokenizer, labels=labels, name=Path(model).name or model
    )


def _to_device(clf: TextClassifier, device: str) -> TextClassifier:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CLIError("--device cuda was asked for, but no CUDA device is available")
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


def _compare(
    *,
    task_name: str,
    methods: Sequence[str],
    out_dir: str,
    limit: int | None,
    batch_size: int,
    seed: int,
    data_dir: str | None,
    device: str,
    metrics: Sequence[str] | None,
    model: str | None,
    split: str | None,
    progress: bool,
    shard: tuple[int, int] | None,
) -> int:
    """Validate everything cheap first, then load the model and data and run."""
    task = _get_task(task_name)
    names = _check_methods(methods)
    metric_names = None if metrics is None else check_metrics(metrics, task.has_rationales)
    if limit is not None and limit < 1:
        raise CLIError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {batch_size}")
    out = _check_out_dir(out_dir)
    try:
        resolved_data = resolve_data_dir(data_dir)
        dataset = task.load(split=split, data_dir=resolved_data, limit=limit)
    except (DataUnavailableError, EmptyDatasetError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if len(dataset) == 0:
        raise CLIError(f"task {task.name!r} has no examples to explain")
    try:
        model_name = model or task.default_model()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    clf = _to_device(_load_model(model_name), device)
    run_comparison(
        clf,
        dataset,
        names,
        out,
        task=task.name,
        limit=limit,
        batch_size=batch_size,
        seed=seed,
        metrics=metric_names,
        progress=progress,
        shard=shard,
    )
    if shard is None:
        _print_summary(out)
    else:
        print(f"rank {shard[0]} of {shard[1]} done; when all are, run: merge --out {out}")
    return 0


def _list_methods() -> int:
    baselines = _module("baselines")
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


def _build_defaults(fast: bool, force: bool) -> int:
    info = _module("defaults").build_defaults(fast=fast, force=force)
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
    parser = argparse.ArgumentParser(
        prog="python -m captum_layer_saliency",
        description="Decoded Layer Saliency: compare attribution methods, build default models.",
    )
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
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("compare", help="explain, score and report (resumable)")
    p.add_argument("--task", required=True, help="a task name (see list-tasks)")
    p.add_argument(
        "--methods",
        required=True,
        help="comma-separated method names or aliases, or 'all' (see list-methods)",
    )
    p.add_argument("--metrics", help="comma-separated metric names (default: all that apply)")
    p.add_argument(
        "--model",
        help="a default model name (sst2, ag_news) or a Hugging Face path "
        "(default: the task's default model)",
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

    p = sub.add_parser("merge", help="merge the row files of a sharded run and write the report")
    p.add_argument("--out", required=True, help="the output directory of the sharded run")

    sub.add_parser("list-methods", help="the attribution methods and their aliases")
    sub.add_parser("list-tasks", help="the comparison tasks")

    p = sub.add_parser("build-defaults", help="train the default models and the MLM head")
    p.add_argument("--fast", action="store_true", help="tiny build for tests (useless models)")
    p.add_argument("--force", action="store_true", help="rebuild even valid artifacts")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("compare", "demo"):
        demo = args.command == "demo"
        return _compare(
            task_name="sst2" if demo else args.task,
            methods=list(DEMO_METHODS) if demo else (_split_list(args.methods) or []),
            out_dir=args.out,
            limit=args.limit,
            batch_size=args.batch_size,
            seed=args.seed,
            data_dir=args.data_dir,
            device=args.device,
            metrics=_split_list(args.metrics) or (list(DEMO_METRICS) if demo else None),
            model=None if demo else args.model,
            split=None if demo else args.split,
            progress=not args.no_progress,
            shard=None if demo else _parse_shard(args.shard),
        )
    if args.command == "report":
        return _report(args.out, args.reference, args.examples)
    if args.command == "merge":
        out = Path(args.out)
        if not out.is_dir():
            raise CLIError(f"{str(out)!r} is not a directory")
        merge_shards(out)
        return _report(args.out, None, 20)
    if args.command == "list-methods":
        return _list_methods()
    if args.command == "list-tasks":
        return _list_tasks()
    if args.command == "build-defaults":
        return _build_defaults(args.fast, args.force)
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 on a user error, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (
        CLIError,
        InvalidComparisonError,
        ConfigMismatchError,
        CorruptResultsError,
        EmptyDatasetError,
        NoResultsError,
        DataUnavailableError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
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
