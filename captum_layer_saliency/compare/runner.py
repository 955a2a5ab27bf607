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

import importlib
import inspect
import os
import sys
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from captum_layer_saliency._utils import seed_everything as _seed_everything
from captum_layer_saliency.compare import results
from captum_layer_saliency.compare.plan import format_plan, plan_comparison
from captum_layer_saliency.data.tasks import EmptyDatasetError
from captum_layer_saliency.models.classifier import (
    TRUNCATION_MODES,
    TextClassifier,
    TokenAttributor,
)
from captum_layer_saliency.models.label_sets import attribute_targets
from captum_layer_saliency.models.targets import predicted_target, target_list

#: Columns every dataset row must have, and the two that carry word-level human rationales.
REQUIRED_COLUMNS = ("text", "label")
RATIONALE_COLUMNS = ("words", "rationale")
#: The column of per-word SST sentiments (``|label - 2|``) that ``word_sentiment_r`` needs.
WORD_SENTIMENT = "word_sentiment"
#: The metrics that are the mean over bins of :func:`metrics.aopc_curves`' curves.
AOPC_METRICS = ("comprehensiveness", "sufficiency")
#: AOPC scaled to per-example bounds; the bounds depend on the inputs only (cached per batch).
NORMALISED_AOPC = {
    "normalised_comprehensiveness": "comprehensiveness",
    "normalised_sufficiency": "sufficiency",
}


class InvalidComparisonError(ValueError):
    """A comparison's arguments or data cannot work (caught before any work starts)."""


class ModelOutputError(ValueError):
    """The model produced NaN or infinite logits for some examples (rows so far are kept)."""


def _module(name: str) -> ModuleType:
    # Resolved at call time through importlib (which reads sys.modules), so the registries are
    # imported only when a comparison runs and tests can substitute small fakes.
    return importlib.import_module(f"captum_layer_saliency.{name}")


def canonical_method(name: str) -> str:
    """A method's registry name, with aliases resolved (``ig`` -> ``integrated_gradients``).

    Raises:
        ValueError: the name is not a known method or alias.
    """
    name_: str = _module("compare.methods.registry").resolve_method_name(name)
    return name_


def _build_method(
    name: str, clf: TextClassifier, seed: int, options: Mapping[str, Any]
) -> TokenAttributor:
    """``get_method`` with the run's seed passed to methods that take one (unless overridden)."""
    baselines = _module("compare.methods.registry")
    factory = getattr(baselines.METHODS.get(name), "factory", None)
    takes_seed = factory is not None and "seed" in inspect.signature(factory).parameters
    if takes_seed and "seed" not in options:
        # The registry's stochastic methods seed their own draws; without this, --seed would
        # not reach them.
        options = {**options, "seed": seed}
    attributor: TokenAttributor = baselines.get_method(name, clf, **options)
    return attributor


def _needs_word_sentiment(metric: Any) -> bool:
    return getattr(metric, "inputs", "rationale") == WORD_SENTIMENT


def default_metrics(has_rationales: bool, has_word_sentiment: bool = False) -> list[str]:
    """Every faithfulness metric, plus the plausibility ones the data supports (rationales;
    SST word sentiments for ``word_sentiment_r``)."""
    registry = _module("metrics").METRICS
    return [
        name
        for name, metric in registry.items()
        if metric.kind == "faithfulness"
        or (
            has_rationales
            and metric.kind == "plausibility"
            and (has_word_sentiment or not _needs_word_sentiment(metric))
        )
    ]


def check_metrics(
    names: Sequence[str], has_rationales: bool, has_word_sentiment: bool | None = None
) -> list[str]:
    """Validate metric names against the registry and the data, dropping repeats.

    Args:
        names: metric names.
        has_rationales: whether the data has human rationales (needed by plausibility metrics).
        has_word_sentiment: whether the rows have SST word sentiments (needed by
            ``word_sentiment_r``); ``None``: not known yet, not checked.

    Returns:
        The names, in order, without repeats.

    Raises:
        InvalidComparisonError: an unknown name, no names, or a plausibility metric without
            rationales.
    """
    registry = _module("metrics").METRICS
    if not names:
        raise InvalidComparisonError(f"no metrics given; known metrics: {', '.join(registry)}")
    out = []
    for name in names:
        key = name.strip()
        if key not in registry:
            raise InvalidComparisonError(
                f"unknown metric {name!r}; known metrics: {', '.join(registry)}"
            )
        if registry[key].kind == "plausibility" and not has_rationales:
            raise InvalidComparisonError(
                f"metric {key!r} needs human rationales, and this dataset has none "
                "(choose a task with rationales, or drop the plausibility metrics)"
            )
        if has_word_sentiment is False and _needs_word_sentiment(registry[key]):
            raise InvalidComparisonError(
                f"metric {key!r} needs SST word sentiments (a '{WORD_SENTIMENT}' column), and "
                "this dataset has none (use the task sst2_words)"
            )
        if key not in out:
            out.append(key)
    return out


def _metric_fn(name: str) -> Any:
    # A Metric may carry its function; otherwise the metrics module exports it under its name.
    metrics = _module("metrics")
    return getattr(metrics.METRICS[name], "fn", None) or getattr(metrics, name)


def derive_seed(seed: int, batch_no: int, method: str) -> int:
    """The seed of one (batch, method) pair: stable across runs, platforms and resumes."""
    return zlib.crc32(f"{seed}:{batch_no}:{method}".encode())


def _examples(dataset: Any, limit: int | None) -> list[dict[str, Any]]:
    """The dataset rows as dicts (first ``limit`` of them), every one checked.

    Every row is checked, not just the first: the batch plan puts the shortest texts last, so a
    bad row found only when its batch came up would stop a run after most of its work.
    """
    n = len(dataset)
    if limit is not None:
        if limit < 0:
            raise InvalidComparisonError(f"limit must be non-negative, got {limit}")
        n = min(n, limit)
    rows = [dict(dataset[i]) for i in range(n)]
    if not rows:
        raise EmptyDatasetError(
            "the dataset is empty" + (f" (limit={limit})" if limit is not None else "")
        )
    # Rationales are all or nothing: the first row decides whether plausibility is scored.
    needed = REQUIRED_COLUMNS + (
        RATIONALE_COLUMNS if all(c in rows[0] for c in RATIONALE_COLUMNS) else ()
    )
    for i, row in enumerate(rows):
        where = f"example {i} (idx {row.get('idx', i)})"
        missing = [c for c in needed if c not in row]
        if missing:
            raise InvalidComparisonError(
                f"{where} lacks the field(s) {missing}; it has {sorted(row)}"
            )
        if not isinstance(row["text"], str):
            raise InvalidComparisonError(
                f"{where}: text is a {type(row['text']).__name__}, not a string"
            )
        if not row["text"].strip():
            raise InvalidComparisonError(
                f"{where}: the text is empty or only whitespace; there is nothing to explain "
                "(drop such rows)"
            )
        label = row["label"]
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise InvalidComparisonError(f"{where}: label {label!r} is not a class index (an int)")
    return rows


def _check_labels(examples: Sequence[Mapping[str, Any]], clf: TextClassifier) -> None:
    """Refuse gold labels outside the model's classes: data and model of different tasks."""
    n_classes = len(clf.labels) or getattr(getattr(clf.model, "config", None), "num_labels", 0)
    if not n_classes:
        return
    for i, row in enumerate(examples):
        if not 0 <= int(row["label"]) < n_classes:
            raise InvalidComparisonError(
                f"example {i} (idx {row.get('idx', i)}) has label {int(row['label'])}, but the "
                f"model has {n_classes} classes {list(clf.labels) or ''}: the data and the model "
                "belong to different tasks"
            )


def token_budget(clf: TextClassifier, max_length: int | None) -> int:
    """The token budget of a run: ``max_length`` or the classifier's, checked against the model.

    Args:
        clf: the classifier.
        max_length: the requested budget, special tokens included. ``None`` takes
            ``clf.max_length``, capped at the model's position embeddings (a default should
            never fail); an explicit request over that limit is an error instead.

    Returns:
        The budget.

    Raises:
        InvalidComparisonError: the budget is too small to hold a word between the special
            tokens, or an explicit one exceeds the model's position embeddings.
    """
    limit = clf.max_positions
    if max_length is None:
        return clf.max_length if limit is None else min(clf.max_length, limit)
    if max_length < 3:
        raise InvalidComparisonError(f"max_length must be at least 3 tokens, got {max_length}")
    if limit is not None and max_length > limit:
        raise InvalidComparisonError(
            f"max_length={max_length} exceeds the model's {limit} position embeddings; use "
            f"max_length <= {limit} (with truncation='truncate' for longer texts)"
        )
    return max_length


def _truncation_plan(
    examples: Sequence[Mapping[str, Any]],
    lengths: Sequence[int],
    budget: int,
    truncation: str,
) -> list[bool]:
    """Which examples will be truncated; refuses or warns (once) when there are any."""
    if truncation not in TRUNCATION_MODES:
        raise InvalidComparisonError(
            f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}"
        )
    cut = [n > budget for n in lengths]
    n_cut = sum(cut)
    if not n_cut:
        return cut
    first = cut.index(True)
    longest = max(lengths)
    detail = (
        f"{n_cut} of {len(cut)} example(s) are longer than max_length={budget} tokens (the "
        f"longest has {longest}; the first is idx {examples[first].get('idx', first)})"
    )
    if truncation == "error":
        raise InvalidComparisonError(
            f"{detail}; pass truncation='truncate' (CLI: --truncation truncate) to cut them, "
            "or a larger max_length"
        )
    warnings.warn(
        f"{detail}; they are truncated to fit, and their rows say so (truncated, "
        "n_tokens_original)",
        stacklevel=3,
    )
    return cut


def text_pairs(examples: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """The second sentences of a pair task's rows (``text_pair``), or ``None`` for single texts.

    Raises:
        InvalidComparisonError: some rows have a ``text_pair`` and others do not.
    """
    has = [e.get("text_pair") is not None for e in examples]
    if not any(has):
        return None
    if not all(has):
        raise InvalidComparisonError(
            f"{has.count(False)} of {len(has)} rows have no text_pair: a pair task needs both "
            "sentences in every row"
        )
    return [str(e["text_pair"]) for e in examples]


def batch_plan(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Positions grouped into batches of similar length (longest first), deterministically.

    Args:
        texts: the examples' texts.
        batch_size: examples per batch.

    Returns:
        Lists of positions into ``texts``.
    """
    if batch_size < 1:
        raise InvalidComparisonError(f"batch_size must be at least 1, got {batch_size}")
    # Character length is a good proxy for token length and needs no tokenisation; ties keep
    # dataset order, so the plan is a pure function of the data.
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def word_rationale_to_tokens(
    tokenizer: Any, text: str, words: Sequence[str], rationale: Sequence[int], input_ids: list[int]
) -> list[int]:
    """Map a per-word rationale onto the tokens of ``text``.

    Uses the fast tokenizer's character offsets: a token belongs to the whitespace word whose
    character span contains the token's first character, and takes that word's label. Special
    tokens (empty offsets) get 0. Offsets are used rather than ``word_ids()`` because the
    tokenizer's notion of a word (punctuation split off) differs from the dataset's whitespace
    words. Words cut off by truncation simply have no tokens.

    Args:
        tokenizer: a fast (Rust) Hugging Face tokenizer.
        text: the example's text, as encoded.
        words: its whitespace words, in order (``text == " ".join(words)`` in our loaders).
        rationale: one 0/1 label per word.
        input_ids: the unpadded ids the example was encoded to, used to check the alignment.

    Returns:
        One 0/1 label per token of ``input_ids``.

    Raises:
        ValueError: lengths disagree, a word is not found in the text, the tokenizer is not a
            fast one, or re-encoding does not reproduce ``input_ids``.
    """
    if len(words) != len(rationale):
        raise ValueError(f"{len(words)} words but {len(rationale)} rationale labels")
    word_ids = _module("metrics.sentiment_correlation").token_word_ids(
        tokenizer, text, words, input_ids
    )
    return [int(bool(rationale[w])) if w >= 0 else 0 for w in word_ids]


def _finite_list(values: Tensor) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values.detach().cpu().double().tolist()]


def _pass_counter(model: torch.nn.Module) -> Any:
    return _module("compare.methods.registry").PassCounter(model)


class _Batch:
    """One encoded batch: ids, masks, prediction, target and (optionally) token rationales."""

    def __init__(
        self,
        clf: TextClassifier,
        examples: list[dict[str, Any]],
        with_rationales: bool,
        max_length: int,
        indices: Sequence[int],
        with_word_sentiment: bool = False,
    ) -> None:
        texts = [str(e["text"]) for e in examples]
        with warnings.catch_warnings():
            # The run already warned once, up front, about every text it truncates.
            warnings.filterwarnings("ignore", message=r".*longer than .* were truncated")
            # A sentence pair is encoded as one; its segment ids are derived again from the
            # ids in every forward, so methods and metrics need not carry them.
            enc = clf.encode(
                texts, text_pairs(examples), max_length=max_length, truncation="truncate"
            )
        # Tensors stay on the model's device; the host copies below are made once per batch.
        self.input_ids: Tensor = enc.pop("input_ids")
        self.attention_mask: Tensor = enc.pop("attention_mask")
        self.special: Tensor = clf.special_mask(self.input_ids)
        self.valid: Tensor = self.attention_mask.bool() & ~self.special
        # The tokenizer's other inputs that the forward cannot derive: every method and metric
        # gets them by keyword (they follow the tokens through the metrics' deletions).
        forward = clf.forward_func
        self.model_inputs = forward.underivable(self.input_ids, self.attention_mask, enc)
        with torch.no_grad():
            logits = forward(self.input_ids, self.attention_mask, **self.model_inputs)
        bad = (~torch.isfinite(logits).all(-1)).nonzero().flatten().tolist()
        if bad:
            raise ModelOutputError(
                f"the model's logits hold NaN or inf for example(s) idx "
                f"{[indices[i] for i in bad]}; no method can explain them (check the model's "
                "weights and dtype). The rows written so far are kept"
            )
        self.prediction: Tensor = logits.argmax(-1)
        # The explained target is the prediction, by the package's one rule: the predicted class,
        # or a multi-label head's predicted label set (models.targets.predicted_target).
        self.target: Tensor = predicted_target(logits, forward.activation)
        keep = self.attention_mask.bool().cpu()
        ids_host = self.input_ids.cpu()
        self.ids: list[list[int]] = [ids_host[i][keep[i]].tolist() for i in range(len(examples))]
        self.tokens = [clf.tokenizer.convert_ids_to_tokens(ids) for ids in self.ids]
        # Leave-one-out importance depends on the inputs only: filled by the first method whose
        # metrics need it and reused by the others (it costs one forward per token).
        self.leave_one_out: Tensor | None = None
        self.aopc_bounds: dict[str, Tensor] | None = None
        self.rationale: Tensor | None = None
        if with_rationales:
            # Built on the host (one small list per example), moved to the device once.
            rat = torch.zeros(ids_host.shape, dtype=torch.long)
            for i, ex in enumerate(examples):
                labels = word_rationale_to_tokens(
                    clf.tokenizer, texts[i], ex["words"], ex["rationale"], self.ids[i]
                )
                rat[i, keep[i].nonzero().flatten()] = torch.tensor(labels, dtype=torch.long)
            self.rationale = rat.to(self.input_ids.device) & self.valid.long()
        self.word_ids: Tensor | None = None
        self.word_sentiment: Tensor | None = None
        if with_word_sentiment:
            token_word_ids = _module("metrics.sentiment_correlation").token_word_ids
            word_ids = torch.full(ids_host.shape, -1, dtype=torch.long)
            widest = max(len(ex["words"]) for ex in examples)
            sentiment = torch.full((len(examples), widest), float("nan"), dtype=torch.float64)
            for i, ex in enumerate(examples):
                found = token_word_ids(clf.tokenizer, texts[i], ex["words"], self.ids[i])
                word_ids[i, keep[i].nonzero().flatten()] = torch.tensor(found, dtype=torch.long)
                values = [float(v) for v in ex[WORD_SENTIMENT]]
                sentiment[i, : len(values)] = torch.tensor(values, dtype=torch.float64)
            self.word_ids, self.word_sentiment = word_ids, sentiment


def _score(
    metric_names: Sequence[str],
    clf: TextClassifier,
    batch: _Batch,
    scores: Tensor,
    metric_batch_size: int,
) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Every requested metric on one batch, plus the per-bin AOPC curves when comp/suff asked."""
    metrics = _module("metrics")
    forward = clf.forward_func
    # Deleting tokens re-packs the inputs, padded with the model's own padding id.
    pad_id = getattr(clf.tokenizer, "pad_token_id", None)
    common = {
        "batch_size": metric_batch_size,
        "pad_token_id": 0 if pad_id is None else pad_id,
        **batch.model_inputs,
    }
    args = (forward, batch.input_ids, batch.attention_mask, scores, batch.target, batch.special)
    curves = None
    values: dict[str, Tensor] = {}
    if set(AOPC_METRICS + tuple(NORMALISED_AOPC)) & set(metric_names):
        curves = metrics.aopc_curves(*args, **common)
    for name in metric_names:
        if curves is not None and name in AOPC_METRICS:
            # ERASER's AOPC is the mean of the per-bin curve (as metrics.comprehensiveness and
            # metrics.sufficiency compute it): reusing the curves halves the AOPC forwards.
            values[name] = curves[name].mean(-1)
        elif curves is not None and name in NORMALISED_AOPC:
            if batch.leave_one_out is None:
                batch.leave_one_out = metrics.leave_one_out(*args[:3], *args[4:], **common)
            if batch.aopc_bounds is None:
                batch.aopc_bounds = metrics.aopc_bounds(
                    *args[:3], *args[4:], **common, loo=batch.leave_one_out
                )
            key = NORMALISED_AOPC[name]
            values[name] = metrics.normalise_aopc(
                curves[key].mean(-1), batch.aopc_bounds[key].to(curves[key])
            )
        elif _needs_word_sentiment(metrics.METRICS[name]):
            assert batch.word_ids is not None and batch.word_sentiment is not None
            values[name] = _metric_fn(name)(scores.cpu(), batch.word_ids, batch.word_sentiment)
        elif metrics.METRICS[name].kind == "plausibility":
            assert batch.rationale is not None
            values[name] = _metric_fn(name)(scores, batch.rationale, batch.valid)
        elif name == "kendall_tau_loo":
            if batch.leave_one_out is None:
                batch.leave_one_out = metrics.leave_one_out(
                    forward,
                    batch.input_ids,
                    batch.attention_mask,
                    batch.target,
                    batch.special,
                    **common,
                )
            values[name] = metrics.kendall_tau_loo(*args, **common, loo=batch.leave_one_out)
        else:
            values[name] = _metric_fn(name)(*args, **common)
    return values, curves


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
        methods: method names or aliases from :mod:`captum_layer_saliency.compare.methods.registry`.
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
    out = Path(out_dir)
    names = [canonical_method(m) for m in methods]
    names = list(dict.fromkeys(names))  # drop repeats, keep the user's order
    if not names:
        raise InvalidComparisonError("no methods to run")
    options = {canonical_method(k): dict(v) for k, v in (method_options or {}).items()}
    examples = _examples(dataset, limit)
    has_rationales = all(c in examples[0] for c in RATIONALE_COLUMNS)
    has_sentiment = has_rationales and WORD_SENTIMENT in examples[0]
    metric_names = check_metrics(
        default_metrics(has_rationales, has_sentiment) if metrics is None else metrics,
        has_rationales,
        has_sentiment,
    )
    with_sentiment = any(_needs_word_sentiment(_module("metrics").METRICS[m]) for m in metric_names)
    rank, world = shard if shard is not None else (0, 1)
    if world < 1 or not 0 <= rank < world:
        raise InvalidComparisonError(
            f"shard must be (rank, world_size) with 0 <= rank < world, got {shard}"
        )
    clf.check_tokenizer()
    _check_labels(examples, clf)
    budget = token_budget(clf, max_length)
    texts = [str(e["text"]) for e in examples]
    n_tokens = clf.token_lengths(texts, text_pairs(examples))
    truncated = _truncation_plan(examples, n_tokens, budget, truncation)
    out = results.check_writable(out)
    if progress:  # the plan of this run (or shard), before any work
        count_special = getattr(clf.tokenizer, "num_special_tokens_to_add", lambda: 2)
        n_special = int(count_special())
        scored = [max(1, min(n, budget) - n_special) for n in n_tokens]
        share = [
            scored[i]
            for k, b in enumerate(batch_plan(texts, batch_size))
            if k % world == rank
            for i in b
        ]
        cost = plan_comparison(names, metric_names, share, options)
        print(format_plan(cost, task=task or "custom", model=clf.name), file=sys.stderr)

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
    results.check_or_write_config(out, config)

    own_file = results.rows_path(out, None if shard is None else rank)
    done: set[results.RowKey] = set()
    for path in results.rows_files(out):
        # Only our own file may be repaired: another rank may be appending to its file right now,
        # so a torn last line there is expected and not worth a warning.
        with warnings.catch_warnings():
            if path != own_file:
                warnings.simplefilter("ignore")
            rows_on_disk = results.read_rows(path, repair=path == own_file)
        done.update(map(results.row_key, rows_on_disk))

    indices = [int(e.get("idx", i)) for i, e in enumerate(examples)]
    if len(set(indices)) != len(indices):
        raise InvalidComparisonError(
            "the dataset's idx column repeats values; rows could not be told apart"
        )
    plan = batch_plan(texts, batch_size)
    mine = [(k, b) for k, b in enumerate(plan) if k % world == rank]
    total = sum(len(b) for _, b in mine) * len(names)
    already = sum((indices[i], m) in done for _, b in mine for i in b for m in names)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=already,
        unit="row",
        desc=f"{config['task']}: {len(names)} method(s)",
        disable=not progress,
    )
    prepared: set[str] = set()
    try:
        with results.RowWriter(own_file) as writer:
            for batch_no, positions in mine:
                todo = [m for m in names if any((indices[i], m) not in done for i in positions)]
                if not todo:
                    continue
                batch_examples = [examples[i] for i in positions]
                batch_indices = [indices[i] for i in positions]
                batch = _Batch(
                    clf, batch_examples, has_rationales, budget, batch_indices, with_sentiment
                )
                for method in todo:
                    if method not in prepared:  # after the resume check: only if rows remain
                        prepared.add(method)
                        _prepare(attributors[method], method, texts, out)
                    _seed_everything(derive_seed(seed, batch_no, method))
                    rows = _explain_batch(
                        clf,
                        attributors[method],
                        method,
                        batch,
                        batch_examples,
                        batch_indices,
                        [n_tokens[i] for i in positions],
                        metric_names,
                        metric_batch_size,
                    )
                    for row in rows:
                        key = results.row_key(row)
                        if key in done:
                            continue
                        writer.write(row)
                        done.add(key)
                        bar.update(1)
    finally:
        bar.close()
    if report and shard is None:
        from captum_layer_saliency.compare.report import write_report

        write_report(out)
    return out


def _prepare(attributor: Any, method: str, texts: Sequence[str], out: Path) -> None:
    """Let a method make its one-off choice (DLS: its layer) and record it in ``run.json``."""
    prepare = getattr(attributor, "prepare", None)
    record = prepare(texts) if callable(prepare) else None
    if record is not None:
        results.record_run_info(out, "layer_selection", method, record)


def _explain_batch(
    clf: TextClassifier,
    attributor: TokenAttributor,
    method: str,
    batch: _Batch,
    examples: list[dict[str, Any]],
    indices: list[int],
    n_tokens: list[int],
    metric_names: Sequence[str],
    metric_batch_size: int,
) -> list[results.Row]:
    """One method on one batch: its scores, their metrics, and one row per example.

    The scores and metrics stay on the model's device until they are all computed, then come to
    the host in one copy each: per-example ``.cpu()``/``float()`` calls would each wait for the
    device.
    """
    n = len(examples)
    start = time.perf_counter()
    with _pass_counter(clf.model) as counter:
        scores = attribute_targets(
            attributor.attribute,
            clf.model,
            batch.input_ids,
            batch.attention_mask,
            batch.target,
            batch.model_inputs,
        )
    elapsed = time.perf_counter() - start
    # Methods are asked to zero pads and specials; enforce it so that no method gains or loses
    # on a metric through positions that no metric should read.
    scores = scores.detach().float().masked_fill(~batch.valid, 0.0)
    with torch.no_grad():
        values, curves = _score(metric_names, clf, batch, scores, metric_batch_size)
    keep = batch.attention_mask.bool().cpu()
    scores_host = scores.cpu()
    metric_values = {name: _finite_list(v.reshape(-1)) for name, v in values.items()}
    curves_host = {k: v.detach().cpu() for k, v in curves.items()} if curves is not None else None
    target = target_list(batch.target)
    prediction = batch.prediction.tolist()
    rationale = batch.rationale.cpu() if batch.rationale is not None else None
    labels = list(clf.labels)
    rows = []
    for i in range(n):
        row: results.Row = {
            "index": indices[i],
            "method": method,
            "input_ids": batch.ids[i],
            "tokens": batch.tokens[i],
            "text": str(examples[i]["text"]),
            "target": target[i],
            "label": int(examples[i]["label"]),
            "prediction": int(prediction[i]),
            "prediction_name": labels[prediction[i]]
            if prediction[i] < len(labels)
            else str(prediction[i]),
            "truncated": len(batch.ids[i]) < n_tokens[i],
            "n_tokens_original": n_tokens[i],
            "attributions": _finite_list(scores_host[i][keep[i]]),
            "metrics": {name: v[i] for name, v in metric_values.items()},
            # Attribution time only (not the metrics), amortised over the batch.
            "seconds": elapsed / n,
            "forwards": counter.forwards / n,
            "backwards": counter.backwards / n,
        }
        if curves_host is not None:
            row["curves"] = {
                key: _finite_list(curves_host[key][i])
                for key in ("comprehensiveness", "sufficiency")
                if key in curves_host
            }
            if "bins" in curves_host:
                row["curves"]["bins"] = [float(b) for b in curves_host["bins"]]
        if rationale is not None:
            row["rationale"] = rationale[i][keep[i]].tolist()
        rows.append(row)
    return rows


def _versions() -> dict[str, str]:
    import captum
    import transformers

    return {
        "torch": torch.__version__,
        "captum": str(captum.__version__),
        "transformers": transformers.__version__,
    }
