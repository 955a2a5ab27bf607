"""Run attribution methods over a dataset, score them, and write one row per (example, method).

The flow: the examples are put in a fixed *batch plan* (sorted by length, so batches pad little),
each batch is encoded once, the target is the model's predicted class, every method explains the
batch, the metrics score the explanation, and the rows are appended to disk as soon as they exist.

Reproducibility and resume are designed together:

* the batch plan depends only on the data, ``limit`` and ``batch_size`` (all recorded in
  ``run.json``), never on what is already done;
* before a method explains a batch, the global RNGs (``random``, numpy, torch) are seeded from
  ``(seed, batch number, method)``;
* a resumed run recomputes a method on the *whole* batch whenever one of the batch's rows is
  missing, and writes only the missing rows.

So every row is the same whether the run went through in one go, was interrupted and resumed any
number of times, or was split across ranks. Stochastic methods must draw their randomness from
those global RNGs (Captum does).

Sharding (for ``torchrun``, see :mod:`captum_layer_saliency.compare.distributed`): pass
``shard=(rank, world_size)``. Batch ``b`` of the plan goes to rank ``b % world_size``, which writes
``rows.rank{rank}.jsonl``; when every rank is done, call
:func:`~captum_layer_saliency.compare.results.merge_shards` and
:func:`~captum_layer_saliency.compare.report.write_report` once. The shards are taken from the
batch plan rather than with ``datasets``' ``split_dataset_by_node`` on purpose: splitting the
*examples* before batching would change which examples share a batch (hence the padding, and the
seeds of stochastic methods) with the world size, so the rows would depend on how many processes
ran; splitting the *batches* keeps every row identical for any world size, lets a run resume with
a different number of processes, and, because the plan is sorted by length, deals long and short
batches round-robin so the ranks finish at about the same time.

Long texts are never cut silently: every text is tokenised up front; with
``truncation="error"`` a text over ``max_length`` tokens stops the run before any work, with
``truncation="truncate"`` (the default) the run warns once, and every row records ``truncated``
and ``n_tokens_original``.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import captum
import torch
import transformers
from tqdm.auto import tqdm

from captum_layer_saliency._utils import LOCK_FILE, lock_directory, seed_everything
from captum_layer_saliency.compare import results
from captum_layer_saliency.compare.batches import EncodedBatch, batch_plan, derive_seed
from captum_layer_saliency.compare.checks import (
    RATIONALE_COLUMNS,
    WORD_SENTIMENT,
    InvalidComparisonError,
    check_labels,
    check_metrics,
    check_real_tokens,
    check_shard,
    default_metrics,
    needs_word_sentiment,
    read_examples,
    text_pairs,
    token_budget,
    truncation_plan,
)
from captum_layer_saliency.compare.execute import explain_batch, prepare_method
from captum_layer_saliency.compare.methods import registry as method_registry
from captum_layer_saliency.compare.plan import dls_layers, format_plan, plan_comparison
from captum_layer_saliency.compare.report import write_report
from captum_layer_saliency.metrics import ERASER, PROTOCOLS, protocol_metrics
from captum_layer_saliency.models.classifier import TextClassifier, TokenAttributor

__all__ = ["run_comparison"]


def run_comparison(
    clf: TextClassifier,
    dataset: Any,
    methods: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    task: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    metric_batch_size: int = 64,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    report: bool = True,
    max_length: int | None = None,
    truncation: str = "truncate",
    protocol: str = ERASER,
) -> Path:
    """Explain every example with every method, score the explanations, write rows and a report.

    Rerunning the same call continues where an interrupted run stopped: pairs
    ``(index, method)`` already on disk are skipped, and the final rows are exactly those of an
    uninterrupted run (see the module docstring for why).

    Args:
        clf: the classifier to explain.
        dataset: a ``datasets.Dataset`` (or any sequence of dicts) with ``text`` and ``label``,
            optionally ``idx`` (the example's index; default its position) and ``words`` +
            ``rationale`` (per-word human rationales, enabling the plausibility metrics).
        methods: method names or aliases from :mod:`captum_layer_saliency.compare.methods`.
        out_dir: the output directory (created; may hold an earlier run of the same config).
        task: the task's name, recorded in ``run.json`` (default: ``"custom"``).
        limit: explain only the first ``limit`` examples.
        batch_size: examples per batch (part of the config: stochastic methods draw per batch).
        seed: the base seed.
        metrics: metric names (default: all faithfulness metrics, plus plausibility when the
            dataset has rationales).
        method_options: method name -> keyword options for ``get_method``.
        metric_batch_size: how many perturbed inputs the metrics evaluate per forward.
        progress: show a tqdm progress bar.
        shard: ``(rank, world_size)`` to do only this rank's share of the batches.
        report: write the report when done (ignored for a sharded run: merge first).
        max_length: the token budget per text, special tokens included (default
            ``clf.max_length``); part of the configuration.
        truncation: what to do with texts over the budget: ``"truncate"`` (cut them, warn once,
            and record ``truncated`` and ``n_tokens_original`` in their rows) or ``"error"``
            (refuse to start).
        protocol: how faithfulness is measured: ``"eraser"`` (the default: tokens deleted, bins
            of 1/5/10/20/50 %) or ``"edin"`` (Edin et al. 2024: words masked by [MASK] along the
            whole curve, and NAOPC; :mod:`captum_layer_saliency.metrics.edin`), whose metrics
            are ``comprehensiveness``, ``sufficiency``, ``naopc_comprehensiveness`` and
            ``naopc_sufficiency``. Part of the configuration.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: an unknown method (from the registry), or a head that does not fit the model
            (``HeadMismatchError``, when a DLS method is built).
        InvalidComparisonError: unknown metrics, bad arguments, a dataset row without text or
            label (or with an empty text, or a label outside the model's classes), or texts over
            the budget with ``truncation="error"``.
        TokenizerMismatchError: the tokenizer has more tokens than the model's embedding.
        EmptyDatasetError: nothing to explain.
        OutputDirError: ``out_dir`` cannot be created or written.
        ConfigMismatchError: ``out_dir`` holds rows of a different configuration.
        ModelOutputError: the model gives NaN or inf logits for an example (raised when its
            batch comes up; the rows written before are kept).

    Every error but the last is raised before any row is computed, so a mistake never costs
    work, and nothing already in ``out_dir`` is touched.
    """
    if protocol not in PROTOCOLS:
        raise InvalidComparisonError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    metric_table = protocol_metrics(protocol)
    resolve = method_registry.resolve_method_name
    names = list(dict.fromkeys(resolve(m) for m in methods))  # keep order
    if not names:
        raise InvalidComparisonError("no methods to run")
    options = {resolve(k): dict(v) for k, v in (method_options or {}).items()}

    # 1. Every check, before any work and before touching out_dir.
    examples = read_examples(dataset, limit)
    has_rationales = all(c in examples[0] for c in RATIONALE_COLUMNS)
    has_sentiment = has_rationales and WORD_SENTIMENT in examples[0]
    if metrics is None:
        metrics = default_metrics(has_rationales, has_sentiment, metric_table)
    metric_names = check_metrics(metrics, has_rationales, has_sentiment, metric_table)
    rank, world = check_shard(shard)
    clf.check_tokenizer()
    check_labels(examples, clf)
    check_real_tokens(examples, clf)
    budget = token_budget(clf, max_length)
    texts = [str(e["text"]) for e in examples]
    n_tokens = clf.token_lengths(texts, text_pairs(examples))
    truncated = truncation_plan(examples, n_tokens, budget, truncation)
    indices = [int(e.get("idx", i)) for i, e in enumerate(examples)]
    if len(set(indices)) != len(indices):
        raise InvalidComparisonError(
            "the dataset's idx column repeats values; rows could not be told apart"
        )
    out = results.check_writable(Path(out_dir))

    # 2. The batches of this run (or shard), and its plan, printed before any work.
    mine = [(k, b) for k, b in enumerate(batch_plan(texts, batch_size)) if k % world == rank]
    if progress:
        _print_plan(clf, names, metric_names, options, n_tokens, budget, mine, task, protocol)

    # 3. The methods, and the configuration a resumed run must match.
    attributors = {name: _build_method(name, clf, seed, options.get(name, {})) for name in names}
    config = {
        "task": task or "custom",
        "model": clf.name,
        "methods": names,
        "metrics": metric_names,
        "seed": seed,
        "limit": limit,
        "batch_size": batch_size,
        "method_options": {k: options[k] for k in sorted(options)},
        "labels": list(clf.labels),
        "rationales": has_rationales,
        "n_examples": len(examples),
        "max_length": budget,
        "truncation": truncation,
        "n_truncated": sum(truncated),
        "versions": _versions(),
    }
    if protocol != ERASER:  # absent for the default, so earlier runs still resume
        config["protocol"] = protocol
    # 4. Explain and score every (batch, method) with a row still missing; append the rows.
    own_file = results.rows_path(out, None if shard is None else rank)
    run = _Run(
        clf=clf,
        attributors=attributors,
        examples=examples,
        indices=indices,
        n_tokens=n_tokens,
        budget=budget,
        seed=seed,
        metric_names=metric_names,
        metric_batch_size=metric_batch_size,
        metric_table=metric_table,
        with_rationales=has_rationales,
        with_sentiment=any(needs_word_sentiment(metric_table[name]) for name in metric_names),
        out=out,
    )
    # One process per output directory (per shard): a second one stops here, naming the first.
    with lock_directory(out, LOCK_FILE if shard is None else f"{LOCK_FILE}.rank{rank}"):
        results.check_or_write_config(out, config)
        _write_rows(
            run, mine, names, own_file, f"{config['task']}: {len(names)} method(s)", progress
        )
        # 5. The report (a sharded run is merged first, then reported).
        if report and shard is None:
            write_report(out, metrics=metric_table, method_order=list(method_registry.METHODS))
    return out


def _write_rows(
    run: _Run,
    mine: Sequence[tuple[int, list[int]]],
    names: Sequence[str],
    own_file: Path,
    desc: str,
    progress: bool,
) -> None:
    """Explain and score every (batch, method) of ``mine`` without a row on disk; append it."""
    indices = run.indices
    done = _rows_done(run.out, own_file)
    total = sum(len(b) for _, b in mine) * len(names)
    already = sum((indices[i], m) in done for _, b in mine for i in b for m in names)
    with (
        tqdm(total=total, initial=already, unit="row", desc=desc, disable=not progress) as bar,
        results.RowWriter(own_file) as writer,
    ):
        for batch_no, positions in mine:
            for row in run.batch(batch_no, positions, done):
                writer.write(row)
                done.add(results.row_key(row))
                bar.update(1)


def _build_method(
    name: str, clf: TextClassifier, seed: int, options: Mapping[str, Any]
) -> TokenAttributor:
    """``get_method``, with the run's seed passed to methods that take one (unless set)."""
    factory = getattr(method_registry.METHODS.get(name), "factory", None)
    if factory is not None and "seed" in inspect.signature(factory).parameters:
        # The registry's stochastic methods seed their own draws; without this, --seed would
        # not reach them.
        options = {"seed": seed, **options}
    return method_registry.get_method(name, clf, **options)


def _print_plan(
    clf: TextClassifier,
    names: Sequence[str],
    metric_names: Sequence[str],
    options: Mapping[str, Mapping[str, Any]],
    n_tokens: Sequence[int],
    budget: int,
    mine: Sequence[tuple[int, list[int]]],
    task: str | None,
    protocol: str = ERASER,
) -> None:
    """Print the estimated cost of this run's (or shard's) batches to stderr."""
    count_special = getattr(clf.tokenizer, "num_special_tokens_to_add", lambda: 2)
    n_special = int(count_special())
    share = [max(1, min(n_tokens[i], budget) - n_special) for _, b in mine for i in b]
    layers = dls_layers(clf.model, names)
    cost = plan_comparison(names, metric_names, share, options, layers, protocol)
    print(format_plan(cost, task=task or "custom", model=clf.name), file=sys.stderr)


def _rows_done(out: Path, own_file: Path) -> set[results.RowKey]:
    """The ``(index, method)`` keys of every row already on disk, in any rank's file."""
    done: set[results.RowKey] = set()
    for path in results.rows_files(out):
        # Only our own file may be repaired: another rank may be appending to its file right now,
        # so a torn last line there is expected and not worth a warning.
        with warnings.catch_warnings():
            if path != own_file:
                warnings.simplefilter("ignore")
            rows_on_disk = results.read_rows(path, repair=path == own_file)
        done.update(map(results.row_key, rows_on_disk))
    return done


@dataclass
class _Run:
    """What every batch of one run shares: the model, the methods, the data and the metrics."""

    clf: TextClassifier
    attributors: Mapping[str, TokenAttributor]
    examples: Sequence[dict[str, Any]]
    indices: Sequence[int]
    n_tokens: Sequence[int]
    budget: int
    seed: int
    metric_names: Sequence[str]
    metric_batch_size: int
    metric_table: Mapping[str, Any]
    with_rationales: bool
    with_sentiment: bool
    out: Path
    prepared: set[str] = field(default_factory=set)

    def batch(
        self, batch_no: int, positions: Sequence[int], done: set[results.RowKey]
    ) -> Iterator[results.Row]:
        """The rows of batch ``batch_no`` not in ``done``, one method after the other.

        A method runs on the whole batch whenever one of its rows is missing (its seed and the
        padding depend on the batch), and only the missing rows are yielded.
        """
        indices = [self.indices[i] for i in positions]
        todo = [m for m in self.attributors if any((i, m) not in done for i in indices)]
        if not todo:
            return
        examples = [self.examples[i] for i in positions]
        batch = EncodedBatch(
            self.clf,
            examples,
            indices,
            self.budget,
            with_rationales=self.with_rationales,
            with_word_sentiment=self.with_sentiment,
        )
        for method in todo:
            if method not in self.prepared:  # after the resume check: only if rows remain
                self.prepared.add(method)
                texts = [str(e["text"]) for e in self.examples]
                prepare_method(self.attributors[method], method, texts, self.out)
            seed_everything(derive_seed(self.seed, batch_no, method))
            rows = explain_batch(
                self.clf,
                self.attributors[method],
                method,
                batch,
                examples,
                indices,
                [self.n_tokens[i] for i in positions],
                self.metric_names,
                self.metric_batch_size,
                self.metric_table,
            )
            yield from (row for row in rows if results.row_key(row) not in done)


def _versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "captum": str(captum.__version__),
        "transformers": transformers.__version__,
    }
