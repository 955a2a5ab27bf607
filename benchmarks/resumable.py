"""What the resumable benchmarks share: their texts, batch plan, rows file and timed methods.

:mod:`frontier` and :mod:`layer_methods` explain the same batches with every method and append
one row per batch to ``<out>/rows.jsonl``; a rerun skips the batches already there. A script
imports this module after putting its own folder first on ``sys.path``; importing it makes
the Hugging Face libraries offline (unless the environment says otherwise).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def load_split(task: str, split: str | None) -> Any:
    """A task's split (SST-2 validation, AG News held-out, HateXplain test by default), through
    the package's loaders: a ``datasets.Dataset`` with ``text`` and ``label``."""
    if task == "sst2":
        from captum_layer_saliency.data.sst2 import load_sst2

        return load_sst2(split or "validation")
    if task == "ag_news":
        from captum_layer_saliency.data.ag_news import load_ag_news

        return load_ag_news(split or "heldout")
    from captum_layer_saliency.data.hatexplain import load_hatexplain

    return load_hatexplain(split or "test")


def load_texts(task: str, split: str | None, start: int, stop: int | None) -> list[str]:
    """The texts of a task's split, rows ``start:stop``, through the package's loaders."""
    return list(load_split(task, split)["text"])[start:stop]


def open_rows(out: Path, config: dict[str, Any], keys: Sequence[str]) -> tuple[Path, set[int]]:
    """Write ``config.json`` and return ``rows.jsonl`` with the batch numbers already in it.

    Raises:
        SystemExit: ``out`` holds rows of a configuration that differs in one of ``keys``.
    """
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    if rows_path.exists() and (out / "config.json").exists():
        old = json.loads((out / "config.json").read_text())
        if any(old.get(k) != config.get(k) for k in keys):
            raise SystemExit(f"{out} holds rows of another configuration; use another --out")
    (out / "config.json").write_text(json.dumps(config, indent=1))
    done: set[int] = set()
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            try:
                done.add(json.loads(line)["batch"])
            except (json.JSONDecodeError, KeyError):
                continue  # a torn last line: that batch reruns
    return rows_path, done


def plan_batches(texts: Sequence[str], chunk: int, batch_size: int) -> list[list[int]]:
    """Batches of positions in ``texts``: chunks of ``chunk`` consecutive rows, each sorted
    by length into batches, so that any prefix of a run is a prefix of the data."""
    from captum_layer_saliency.compare.runner import batch_plan

    return [
        [start + i for i in batch]
        for start in range(0, len(texts), chunk)
        for batch in batch_plan(list(texts[start : start + chunk]), batch_size)
    ]


def encode_batch(
    clf: Any, texts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ids, mask, special`` of ``texts`` and the predicted class of each."""
    enc = clf.encode(list(texts), truncation="truncate")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = clf.special_mask(ids)
    with torch.no_grad():
        target = clf.forward_func(ids, mask).argmax(-1)
    return ids, mask, special, target


def timed_scores(
    clf: Any,
    method: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    special: torch.Tensor,
    target: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The method's float scores (0 off the real non-special tokens) and its cost per example:
    ``seconds`` and the forward and backward passes."""
    from captum_layer_saliency.compare.methods.registry import PassCounter

    t0 = time.perf_counter()
    with PassCounter(clf.model) as counter:
        scores = method.attribute(ids, mask, target)
    seconds = time.perf_counter() - t0
    scores = scores.float().masked_fill(~(mask.bool() & ~special), 0.0)
    n = ids.shape[0]
    return scores, {"seconds": seconds / n, **counter.per_example(n)}


def append_row(sink: IO[str], row: dict[str, Any]) -> None:
    """Append one row and make it durable (flushed and fsync-ed)."""
    sink.write(json.dumps(row) + "\n")
    sink.flush()
    os.fsync(sink.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` whole: readers see the old file or the new one, never a part (the
    package's own atomic write)."""
    from captum_layer_saliency._utils import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(text))
