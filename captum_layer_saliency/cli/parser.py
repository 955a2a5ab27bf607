"""The command line's parser: every command and option, built without torch.

This module imports nothing heavy (no torch, transformers or Captum), so ``--help``, a usage
error and ``list-tasks`` answer at once; :mod:`~captum_layer_saliency.cli.app` imports a
command's machinery only when that command runs. ``explain`` and ``compare`` share the token
budget options (:func:`add_budget_options`): one default, one wording.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from captum_layer_saliency._options import (
    DEFAULT_MODELS,
    DEFAULT_TRUNCATION,
    REDUCTIONS,
    TRUNCATION_MODES,
)
from captum_layer_saliency._version import __version__
from captum_layer_saliency.zoo.arguments import add_build_arguments

__all__ = [
    "DEFAULT_TOP",
    "DEMO_LIMIT",
    "DEMO_METHODS",
    "DEMO_METRICS",
    "DEMO_OUT",
    "EXIT_USAGE",
    "add_budget_options",
    "build_parser",
]

#: The quick, cheap methods of ``demo`` (and ``make demo``): gradient methods that cost about
#: one backward pass each, so the demo's comparison takes well under a minute on two CPU cores.
DEMO_METHODS = ("dls", "input_x_gradient", "saliency")
#: The demo's metrics: the headline faithfulness ones and the (cheap) plausibility ones. The
#: others (deletion/insertion AUC, Kendall tau against leave-one-out) cost a forward pass per
#: token and would dominate the demo's run time; `compare` computes them by default.
DEMO_METRICS = ("comprehensiveness", "sufficiency", "log_odds", "token_f1", "iou_f1", "auprc")
DEMO_LIMIT = 40
DEMO_OUT = "runs/demo"
#: The exit code of a user error (argparse's for a usage error, too).
EXIT_USAGE = 2
#: Words printed per text by ``explain``.
DEFAULT_TOP = 5


def add_budget_options(p: argparse.ArgumentParser) -> None:
    """Add ``--max-length`` and ``--truncation`` (the same for ``explain`` and ``compare``).

    Args:
        p: a command's parser.
    """
    p.add_argument(
        "--max-length",
        type=int,
        help="token budget per text, special tokens included (default: the model's, 128 for "
        "the default models)",
    )
    p.add_argument(
        "--truncation",
        choices=TRUNCATION_MODES,
        default=DEFAULT_TRUNCATION,
        help="texts over --max-length: 'truncate' (cut them, warn, and record it in the output; "
        "default) or 'error' (refuse to start)",
    )


def _device_option(p: argparse.ArgumentParser, *, torchrun: bool = True) -> None:
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs (default auto: CUDA when available"
        + ("; under torchrun each rank takes cuda:LOCAL_RANK)" if torchrun else ")"),
    )


def _run_options(p: argparse.ArgumentParser, *, demo: bool) -> None:
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
        help="a folder with the datasets (default: $CAPTUM_LAYER_SALIENCY_DATA; the Hugging Face "
        "hub is tried first)",
    )
    _device_option(p)
    add_budget_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_compare(sub: Any) -> None:
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
        default="eraser",
        help="how faithfulness is measured: eraser (tokens deleted, bins 1/5/10/20/50 %%; the "
        "default) or edin (Edin et al. 2024: words replaced by [MASK] ([PAD] without one) along "
        "the whole curve, and NAOPC, exact bounds up to 12 words, beam search 5 above)",
    )
    p.add_argument("--shard", help="RANK/WORLD: do only this rank's share (then run merge)")
    _run_options(p, demo=False)

    p = sub.add_parser(
        "demo",
        help=f"a quick comparison on {DEMO_LIMIT} SST-2 sentences: {', '.join(DEMO_METHODS)}",
    )
    p.add_argument(
        "--metrics", help=f"comma-separated metric names (default: {','.join(DEMO_METRICS)})"
    )
    _run_options(p, demo=True)


def _add_reports(sub: Any) -> None:
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


def _add_explain(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="explain your own texts (arguments or a CSV/TSV/JSONL file) with any method",
        description="Explain texts with a default model or your own, print the top words and "
        "optionally write explanations.jsonl, explanations.html and PNGs (resumable).",
    )
    p.add_argument("texts", nargs="*", help="texts to explain (or use --input)")
    p.add_argument("--input", help="a CSV, TSV, JSON Lines or .txt file of texts")
    p.add_argument("--text-column", default="text", help="the column of texts (default text)")
    p.add_argument("--text-pair-column", help="the column of second texts, for pair models")
    p.add_argument("--id-column", help="a column identifying each text (default: row number)")
    p.add_argument("--limit", type=int, help="explain only the first N texts of --input")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--default", choices=DEFAULT_MODELS, help="a default model (default sst2)")
    model.add_argument(
        "--model",
        help="a sequence classifier and its tokenizer: a local directory (save_pretrained) or a "
        "Hugging Face id",
    )
    p.add_argument(
        "--lm-head",
        help="the masked/causal LM (directory or id) of the classifier's pre-trained backbone, "
        "whose head DLS decodes with (needed by DLS with --model)",
    )
    p.add_argument("--method", default="dls", help="attribution method (default dls; list-methods)")
    p.add_argument(
        "--target",
        help="the class to explain: an index or a label name (default: each text's prediction)",
    )
    p.add_argument(
        "--words",
        nargs="?",
        const="sum",
        choices=REDUCTIONS,
        help="merge sub-word scores into the tokenizer's words: sum (default), mean or max",
    )
    p.add_argument(
        "--layer",
        type=int,
        help="DLS only: explain at this layer (0 = embeddings, L = block L) instead of the one "
        "chosen for the model",
    )
    p.add_argument(
        "--calibration-file",
        help="DLS only: a .txt file of unlabelled texts, one per line, to choose the model's "
        "layer on when it has no stored selection (default: DLS's built-in general-English "
        "texts; never the texts explained)",
    )
    p.add_argument("--out", help="write explanations.jsonl and explanations.html here (resumable)")
    p.add_argument("--png", action="store_true", help="also write one PNG heatmap per text")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help="words printed per text")
    p.add_argument("--batch-size", type=int, default=8, help="texts per batch (default 8)")
    add_budget_options(p)
    _device_option(p, torchrun=False)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


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
    _add_explain(sub)
    _add_compare(sub)
    _add_reports(sub)
    sub.add_parser("list-methods", help="the attribution methods and their aliases")
    sub.add_parser("list-tasks", help="the comparison tasks")
    p = sub.add_parser("build-defaults", help="train the default models and the MLM head")
    add_build_arguments(p)
    return parser
