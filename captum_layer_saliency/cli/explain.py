"""``captum-layer-saliency explain``: explain your own texts with a default or your own model.

::

    captum-layer-saliency explain --default sst2 "a gorgeous, witty, seductive movie."
    captum-layer-saliency explain --default sst2 --input my.csv --words --out runs/mine --png
    captum-layer-saliency explain --model DIR --lm-head BACKBONE --target positive "..."

It prints the top words (or tokens) of each text, and with ``--out DIR`` writes
``explanations.jsonl`` (one :class:`~captum_layer_saliency.viz.explanation.Explanation` per line,
appended batch by batch: rerun the same command to resume), ``explanations.html`` (escaped;
red = for the explained class, blue = against) and, with ``--png``, ``png/NNNN.png`` per text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from captum_layer_saliency._version import __version__
from captum_layer_saliency.cli.common import (
    Backends,
    CLIError,
    attach_lm_head,
    pick_device,
    to_device,
)
from captum_layer_saliency.data._source import DataUnavailableError
from captum_layer_saliency.data.table import read_table, text_column
from captum_layer_saliency.explaining import (
    explain_batch,
    make_attributor,
    prepare,
    resolve_target,
)
from captum_layer_saliency.models.classifier import TRUNCATION_MODES, TextClassifier
from captum_layer_saliency.models.words import REDUCTIONS
from captum_layer_saliency.viz.explanation import (
    Explanation,
    explanations_html,
    load_explanations,
    save_explanations,
)
from captum_layer_saliency.zoo import load as zoo_load

__all__ = ["add_parser", "run"]

DEFAULT_TOP = 5
#: Texts whose top words are printed; the rest are in the files.
PRINT_LIMIT = 20
RUN_FILE = "explain.json"
ROWS_FILE = "explanations.jsonl"
HTML_FILE = "explanations.html"


def add_parser(sub: Any) -> None:
    """Add the ``explain`` command to the CLI's sub-parsers.

    Args:
        sub: the parser's sub-parsers (``add_subparsers()``).
    """
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
    model.add_argument("--default", choices=zoo_load.TASKS, help="a default model (default sst2)")
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
    p.add_argument("--max-length", type=int, help="token budget per text (default the model's)")
    p.add_argument(
        "--truncation",
        choices=TRUNCATION_MODES,
        default="error",
        help="texts over the budget: refuse (error, default) or cut them (truncate; recorded)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


@dataclass(frozen=True)
class _Inputs:
    texts: list[str]
    pairs: list[str] | None
    ids: list[str | int]
    source: str


def _read_inputs(args: argparse.Namespace) -> _Inputs:
    if args.input and args.texts:
        raise CLIError("give texts as arguments or --input FILE, not both")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}")
    if not args.input:
        if not args.texts:
            raise CLIError('nothing to explain: give texts ("a fine film") or --input FILE')
        if args.text_pair_column:
            raise CLIError("--text-pair-column needs --input")
        empty = [i for i, t in enumerate(args.texts) if not t.strip()]
        if empty:
            raise CLIError(f"text {empty[0] + 1} is empty; there is nothing to explain")
        return _Inputs(list(args.texts), None, list(range(len(args.texts))), "arguments")
    rows = read_table(args.input, limit=args.limit)
    if not rows:
        raise CLIError(f"{args.input!r} holds no texts")
    texts = text_column(rows, args.text_column, args.input)
    pairs = text_column(rows, args.text_pair_column, args.input) if args.text_pair_column else None
    if args.id_column:
        missing = [i for i, r in enumerate(rows) if args.id_column not in r]
        if missing:
            raise CLIError(f"row {missing[0] + 1} has no column {args.id_column!r}")
        ids: list[str | int] = [rows[i][args.id_column] for i in range(len(rows))]
    else:
        ids = list(range(len(rows)))
    return _Inputs(texts, pairs, ids, str(Path(args.input).name))


def _fingerprint(inputs: _Inputs) -> str:
    digest = hashlib.sha256()
    pairs: list[str | None] = [None] * len(inputs.texts)
    if inputs.pairs is not None:
        pairs = list(inputs.pairs)
    for text, pair in zip(inputs.texts, pairs, strict=True):
        digest.update(json.dumps([text, pair]).encode("utf-8"))
    return digest.hexdigest()[:16]


def _load_classifier(args: argparse.Namespace, backends: Backends) -> TextClassifier:
    clf = backends.load_model(args.model or args.default or "sst2")
    if args.lm_head:
        clf = attach_lm_head(clf, args.lm_head)
    return to_device(clf, pick_device(args.device))


def _dls_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """``--layer`` and ``--calibration-file`` as DLS's options (a CLIError for other methods)."""
    options: dict[str, Any] = {}
    if args.layer is not None:
        options["layer"] = args.layer
    if args.calibration_file:
        path = Path(args.calibration_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CLIError(f"--calibration-file: cannot read {path}: {exc}") from None
        texts = [line.strip() for line in lines if line.strip()]
        if not texts:
            raise CLIError(f"--calibration-file: {path} has no texts (one per line)")
        options["calibration_texts"] = texts
    if options and not method.startswith("dls"):
        raise CLIError(f"--layer and --calibration-file apply to DLS methods, not {method!r}")
    return options


def _attributor(clf: TextClassifier, method: str, options: dict[str, Any]) -> Any:
    try:
        return make_attributor(clf, method, **options)
    except DataUnavailableError as exc:
        # DLS fits its layer selection on the default task's training texts when it can.
        print(
            f"note: DLS selects its layer per text (no calibration texts: {exc})",
            file=sys.stderr,
        )
        return make_attributor(clf, method, calibration=0, **options)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _print_top(explanation: Explanation, k: int) -> None:
    shown = explanation.text if len(explanation.text) <= 70 else explanation.text[:69] + "…"
    head = f"[{explanation.id}] {explanation.target_label} (p={explanation.target_probability:.2f})"
    if not explanation.explains_prediction:  # another class, or another label set
        head += f", predicted {explanation.predicted_label} (p={explanation.probability:.2f})"
    print(f"{head}  {shown}")
    units, scores = explanation.units()
    ranked = sorted(zip(units, scores, strict=True), key=lambda p: -p[1])
    for_ = [(u, s) for u, s in ranked if s > 0][:k]
    against = [(u, s) for u, s in reversed(ranked) if s < 0][: max(1, k // 2)] if k else []
    for name, pieces in (("for", for_), ("against", against)):
        if pieces:
            print(f"    {name + ':':<9}" + "  ".join(f"{u} {s:+.3f}" for u, s in pieces))


def _resume(out: Path, config: dict[str, Any]) -> list[Explanation]:
    run_file, rows_file = out / RUN_FILE, out / ROWS_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if previous != config:
            changed = sorted(k for k in config if previous.get(k) != config[k])
            raise CLIError(
                f"{str(out)!r} holds explanations of another run (different {', '.join(changed)});"
                " choose another --out, or delete it"
            )
    elif rows_file.exists():
        raise CLIError(f"{str(rows_file)!r} exists but has no {RUN_FILE}: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    if not rows_file.exists():
        return []
    done = load_explanations(rows_file, skip_partial_last=True)
    # Rewrite without a partial last line, so the appended rows stay parseable.
    save_explanations(rows_file, done)
    return done


def run(args: argparse.Namespace, backends: Backends | None = None) -> int:
    """Run ``explain`` (the CLI's ``main`` reports user errors).

    Args:
        args: the parsed command line.
        backends: the registries and model loader (default: the real ones).

    Returns:
        The exit code.

    Raises:
        CLIError: a user mistake.
    """
    backends = backends or Backends()
    inputs = _read_inputs(args)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.top < 0:
        raise CLIError(f"--top must be non-negative, got {args.top}")
    try:
        method = backends.registries.resolve_method(args.method)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    out = Path(args.out).expanduser() if args.out else None
    options = _dls_options(args, method)
    clf = _load_classifier(args, backends)
    try:
        target = resolve_target(args.target, clf.labels, len(clf.labels) or 2)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    config = {
        "model": clf.name,
        "method": method,
        "target": target,
        "words": args.words,
        "max_length": args.max_length,
        "truncation": args.truncation,
        "texts": len(inputs.texts),
        "fingerprint": _fingerprint(inputs),
        "version": __version__,
    }
    if options:  # DLS's layer options change the maps
        config["dls_options"] = {
            "layer": args.layer,
            "calibration_texts": len(options.get("calibration_texts", [])),
        }
    done = _resume(out, config) if out is not None else []
    if done:
        print(f"resuming: {len(done)} of {len(inputs.texts)} texts already explained in {out}")
    attributor = _attributor(clf, method, options)
    explanations = list(done)
    start = len(done)
    todo = range(start, len(inputs.texts))
    if len(todo):
        prepare(attributor, inputs.texts)  # e.g. DLS's layer, once, only when work remains
    with tqdm(
        total=len(inputs.texts),
        initial=start,
        unit="text",
        disable=args.no_progress or len(inputs.texts) <= args.batch_size,
        file=sys.stderr,
    ) as bar:
        for first in range(todo.start, todo.stop, args.batch_size):
            rows = range(first, min(todo.stop, first + args.batch_size))
            try:
                batch = explain_batch(
                    clf,
                    attributor,
                    [inputs.texts[i] for i in rows],
                    method=method,
                    text_pairs=[inputs.pairs[i] for i in rows] if inputs.pairs else None,
                    target=target,
                    words=args.words,
                    max_length=args.max_length,
                    truncation=args.truncation,
                    ids=[inputs.ids[i] for i in rows],
                )
            except ValueError as exc:
                raise CLIError(str(exc)) from None
            if out is not None:
                save_explanations(out / ROWS_FILE, batch, append=True)
            explanations += batch
            bar.update(len(rows))
    for explanation in explanations[:PRINT_LIMIT]:
        _print_top(explanation, args.top)
    if len(explanations) > PRINT_LIMIT:
        print(f"... and {len(explanations) - PRINT_LIMIT} more (see the files)")
    if out is not None:
        _write_pages(out, explanations, png=args.png, progress=not args.no_progress)
    return 0


def _write_pages(
    out: Path, explanations: Sequence[Explanation], *, png: bool, progress: bool
) -> None:
    images: list[str | None] = [None] * len(explanations)
    if png:
        (out / "png").mkdir(exist_ok=True)
        for i, explanation in enumerate(
            tqdm(explanations, desc="png", disable=not progress or len(explanations) < 20)
        ):
            name = f"png/{i + 1:04d}.png"
            images[i] = name
            if not (out / name).exists():  # resumable
                explanation.plot(save=out / name)
    title = f"Explanations: {explanations[0].method} on {explanations[0].model}"
    (out / HTML_FILE).write_text(
        explanations_html(explanations, title=title, images=images), encoding="utf-8"
    )
    print(f"wrote {out / ROWS_FILE} ({len(explanations)} explanations), {out / HTML_FILE}")
    if png:
        print(f"      {out / 'png'} ({len(explanations)} PNGs)")
