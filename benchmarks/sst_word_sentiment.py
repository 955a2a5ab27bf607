"""LAFA's Table 3 on the default SST-2 classifier: Pearson r with the SST word sentiment.

Zhang et al. (NAACL 2022, Table 3) score attributions by the Pearson correlation between a
sentence's word attributions and its SST word sentiments (``|leaf label - 2|``), mean (sd) over
the SST-2 test sentences, with a fine-tuned DistilBERT. This script does the same for the
default SST-2 classifier (``load_default("sst2")``, MiniLM-L6), every method of that table plus
DLS, with the paper's reductions (the sum of squares over the hidden dimension for every gradient
method, its Eq. 3), the target being the predicted class. Sub-words merge to SST words by summing
(:mod:`captum_layer_saliency.metrics.sentiment_correlation`).

Every (method, sentence) correlation is appended to ``<out>/rows.jsonl`` as soon as its batch is
done, so a rerun resumes; ``--limit METHOD=N`` runs a costly method on the first ``N`` sentences
only. The summary (mean, sd, bootstrap 95 % CI of the mean, and paired differences with bootstrap
CIs on the sentences both methods scored) goes to ``<out>/summary.md`` and stdout.

    python benchmarks/sst_word_sentiment.py                          # Table 3, SST-2 test
    python benchmarks/sst_word_sentiment.py --split validation --limit '*=100' --out ...
    python benchmarks/sst_word_sentiment.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap
from tqdm.auto import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from captum_layer_saliency.compare.methods.registry import get_method  # noqa: E402
from captum_layer_saliency.data.sst_words import load_sst_word_sentiment  # noqa: E402
from captum_layer_saliency.metrics.sentiment_correlation import (  # noqa: E402
    sentiment_correlation,
    token_word_ids,
)

RESULTS = Path(__file__).parent / "results"
#: The paper's Table 3 (fine-tuned DistilBERT, SST-2 test, 1,821 sentences): mean (sd).
PAPER = {
    "random": (0.039, 0.074),
    "gradient": (0.441, 0.083),
    "input_x_gradient": (0.456, 0.080),
    "integrated_gradients": (0.468, 0.071),
    "smoothgrad": (0.484, 0.073),
    "kernel_shap": (0.400, 0.087),
    "lafa": (0.494, 0.070),
}
SQ = "squared_l2"
#: Row name -> (registry method, options): the paper's methods with its reduction, plus DLS.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "gradient": ("saliency", {"norm": SQ}),
    "input_x_gradient": ("input_x_gradient", {"reduction": SQ}),
    "integrated_gradients": ("integrated_gradients", {"reduction": SQ}),
    "smoothgrad": ("smoothgrad", {"reduction": SQ}),
    "kernel_shap": ("kernel_shap", {}),
    "lafa": ("lafa", {}),
    "dls": ("dls", {}),
}


def parse_limits(items: Sequence[str]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in items:
        name, _, value = item.partition("=")
        limits[name] = int(value)
    return limits


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs, values read as JSON where they parse (numbers, true, null)."""
    options: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def load_rows(path: Path) -> dict[str, dict[int, float | None]]:
    done: dict[str, dict[int, float | None]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done.setdefault(row["method"], {})[row["idx"]] = row["rho"]
    return done


def run_method(
    name: str,
    method: Any,
    clf: Any,
    examples: list[dict[str, Any]],
    done: dict[int, float | None],
    out: Path,
    batch_size: int,
) -> None:
    todo = [e for e in examples if e["idx"] not in done]
    if not todo:
        return
    bar = tqdm(total=len(todo), desc=name)
    # Longest first within the remaining rows, so batches pad little.
    todo.sort(key=lambda e: -len(e["text"]))
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        enc = clf.encode([e["text"] for e in batch], truncation="truncate")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            target = clf.forward_func(ids, mask).argmax(-1)
        scores = method.attribute(ids, mask, target)
        word_ids = torch.full(ids.shape, -1, dtype=torch.long)
        sentiment = torch.full((len(batch), max(len(e["words"]) for e in batch)), math.nan)
        for i, e in enumerate(batch):
            real = mask[i].bool()
            word_ids[i, real] = torch.tensor(
                token_word_ids(clf.tokenizer, e["text"], e["words"], ids[i, real].tolist())
            )
            sentiment[i, : len(e["words"])] = torch.tensor(e["word_sentiment"])
        rho = sentiment_correlation(scores.cpu(), word_ids, sentiment)
        with out.open("a") as handle:
            for e, r in zip(batch, rho.tolist(), strict=True):
                value = None if math.isnan(r) else r
                done[e["idx"]] = value
                handle.write(json.dumps({"method": name, "idx": e["idx"], "rho": value}) + "\n")
        bar.update(len(batch))
    bar.close()


def _ci(values: np.ndarray) -> tuple[float, float]:
    if len(values) < 2:
        return (math.nan, math.nan)
    res = bootstrap((values,), np.mean, n_resamples=2000, random_state=0, method="percentile")
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise(done: dict[str, dict[int, float | None]], reference: str) -> str:
    lines = [
        "| method | sentences | defined | mean r | sd | 95 % CI of the mean | paper mean (sd) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in done.items():
        values = np.array([v for v in rows.values() if v is not None])
        low, high = _ci(values)
        paper = PAPER.get(name)
        lines.append(
            f"| {name} | {len(rows)} | {len(values)} | {values.mean():.3f} | "
            f"{values.std(ddof=1):.3f} | [{low:.3f}, {high:.3f}] | "
            f"{'' if paper is None else f'{paper[0]:.3f} ({paper[1]:.3f})'} |"
        )
    common = (
        set.intersection(*({i for i, v in rows.items() if v is not None} for rows in done.values()))
        if done
        else set()
    )
    if len(done) > 1 and len(common) > 1:
        lines += [
            "",
            f"On the {len(common)} sentences every method scored (same sentences, so the "
            "orderings compare like with like):",
            "",
            "| method | mean r | 95 % CI |",
            "|---|---|---|",
        ]
        order = sorted(done, key=lambda m: -np.mean([done[m][i] for i in common]))
        for name in order:
            values = np.array([done[name][i] for i in sorted(common)])
            low, high = _ci(values)
            lines.append(f"| {name} | {values.mean():.3f} | [{low:.3f}, {high:.3f}] |")
    if reference in done:
        lines += [
            "",
            f"Paired differences (method - {reference}) on the sentences both scored:",
            "",
            "| method | pairs | mean diff | 95 % CI |",
            "|---|---|---|---|",
        ]
        ref = done[reference]
        for name, rows in done.items():
            if name == reference:
                continue
            common = [i for i, v in rows.items() if v is not None and ref.get(i) is not None]
            diff = np.array([rows[i] - ref[i] for i in common])  # type: ignore[operator]
            if len(diff) < 2:
                continue
            low, high = _ci(diff)
            lines.append(
                f"| {name} | {len(diff)} | {diff.mean():+.3f} | [{low:+.3f}, {high:+.3f}] |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument(
        "--limit", nargs="*", default=[], help="METHOD=N: only the first N sentences; '*=N' all"
    )
    parser.add_argument(
        "--lafa", nargs="*", default=[], help="key=value options for lafa (e.g. layer=3 lam=1)"
    )
    parser.add_argument(
        "--options", nargs="*", default=[], help="key=value options for every method run"
    )
    parser.add_argument("--name", default=None, help="the row name (default: the method's)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reference", default="smoothgrad")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    out_dir = args.out or RESULTS / f"sst_word_sentiment_{args.split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = out_dir / "rows.jsonl"
    done = load_rows(rows_path)
    if not args.summary_only:
        from captum_layer_saliency.zoo.load import load_default

        dataset, match = load_sst_word_sentiment(args.split)
        print(
            f"SST-2 {args.split}: {match.matched} of {match.sentences} sentences match a tree",
            file=sys.stderr,
        )
        examples = [dict(row) for row in dataset]
        clf = load_default("sst2")
        limits = parse_limits(args.limit)
        for name in args.methods:
            registry, options = METHODS[name]
            options = {**options, **parse_options(args.options)}
            if registry == "lafa":
                options = {**options, **parse_options(args.lafa)}
            n = limits.get(name, limits.get("*", len(examples)))
            row_name = args.name or name
            if all(e["idx"] in done.get(row_name, {}) for e in examples[:n]):
                continue
            run_method(
                row_name,
                get_method(registry, clf, **options),
                clf,
                examples[:n],
                done.setdefault(row_name, {}),
                rows_path,
                args.batch_size,
            )
    summary = summarise(done, args.reference)
    (out_dir / "summary.md").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
