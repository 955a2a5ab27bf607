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

from captum_layer_saliency._utils import atomic_write, lock_directory, truncate_torn_tail
from captum_layer_saliency._version import __version__
from captum_layer_saliency.cli import common
from captum_layer_saliency.cli.common import (
    CLIError,
    attach_lm_head,
    pick_device,
    to_device,
)
from captum_layer_saliency.compare.methods import registry as method_registry
from captum_layer_saliency.compare.results import check_writable
from captum_layer_saliency.data import DataUnavailableError
from captum_layer_saliency.data.table import read_table, text_column
from captum_layer_saliency.explaining import (
    explain_batch,
    make_attributor,
    prepare,
    resolve_target,
)
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.viz.explanation import (
    Explanation,
    explanations_html,
    load_explanations,
    save_explanations,
)

__all__ = ["run"]

#: Texts whose top words are printed; the rest are in the files.
PRINT_LIMIT = 20
RUN_FILE = "explain.json"
ROWS_FILE = "explanations.jsonl"
HTML_FILE = "explanations.html"


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


def _load_classifier(args: argparse.Namespace) -> TextClassifier:
    clf = common.load_model(args.model or args.default or "sst2")
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


def _resume(out: Path, config: dict[str, Any], inputs: _Inputs) -> list[Explanation]:
    run_file, rows_file = out / RUN_FILE, out / ROWS_FILE
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = f"{str(run_file)!r} is unreadable"
            raise CLIError(f"{reason} ({exc}); choose another --out") from None
        if previous != config:
            changed = sorted(k for k in config if previous.get(k) != config[k])
            raise CLIError(
                f"{str(out)!r} holds explanations of another run (different {', '.join(changed)});"
                " choose another --out, or delete it"
            )
    elif rows_file.exists():
        raise CLIError(f"{str(rows_file)!r} exists but has no {RUN_FILE}: choose another --out")
    text = json.dumps(config, indent=2)
    atomic_write(run_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if not rows_file.exists():
        return []
    # Only a torn last line (a write cut short) is cut; the complete rows are never rewritten.
    truncate_torn_tail(rows_file)
    done = load_explanations(rows_file)
    _check_done(rows_file, done, inputs)
    return done


def _check_done(rows_file: Path, done: Sequence[Explanation], inputs: _Inputs) -> None:
    """Refuse kept rows that are not the first explanations of these inputs (id and text)."""
    if len(done) > len(inputs.texts):
        raise CLIError(
            f"{str(rows_file)!r} holds {len(done)} explanations for {len(inputs.texts)} texts: "
            "it was not written by this command alone; choose another --out"
        )
    for i, explanation in enumerate(done):
        if explanation.id != inputs.ids[i] or explanation.text != inputs.texts[i]:
            raise CLIError(
                f"{str(rows_file)!r}: row {i + 1} (id {explanation.id!r}) does not match text "
                f"{i + 1} of the input (id {inputs.ids[i]!r}); choose another --out"
            )


def run(args: argparse.Namespace) -> int:
    """Run ``explain`` (the CLI's ``main`` reports user errors).

    Args:
        args: the parsed command line.

    Returns:
        The exit code.

    Raises:
        CLIError: a user mistake.
    """
    inputs = _read_inputs(args)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.top < 0:
        raise CLIError(f"--top must be non-negative, got {args.top}")
    try:
        method = method_registry.resolve_method_name(args.method)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    out = check_writable(args.out) if args.out else None
    if out is None:
        return _run(args, inputs, method, None)
    with lock_directory(out):  # a second process on the same --out stops here, naming this one
        return _run(args, inputs, method, out)


def _run(
    args: argparse.Namespace,
    inputs: _Inputs,
    method: str,
    out: Path | None,
) -> int:
    options = _dls_options(args, method)
    clf = _load_classifier(args)
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
    done = _resume(out, config, inputs) if out is not None else []
    if done:
        print(f"resuming: {len(done)} of {len(inputs.texts)} texts already explained in {out}")
    attributor = _attributor(clf, method, options)
    explanations = list(done)
    start = len(done)
    todo = range(start, len(inputs.texts))
    if len(todo):
        try:
            prepare(attributor, inputs.texts)  # e.g. DLS's layer, once, only when work remains
        except ValueError as exc:  # e.g. NaN in the model's output met by DLS's calibration
            raise CLIError(str(exc)) from None
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
            if not (out / name).exists():  # resumable: PNGs are written whole or not at all
                explanation.plot(save=out / name)
    title = f"Explanations: {explanations[0].method} on {explanations[0].model}"
    page = explanations_html(explanations, title=title, images=images)
    atomic_write(out / HTML_FILE, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    print(f"wrote {out / ROWS_FILE} ({len(explanations)} explanations), {out / HTML_FILE}")
    if png:
        print(f"      {out / 'png'} ({len(explanations)} PNGs)")
