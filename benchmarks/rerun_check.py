"""Did a re-run give the same numbers? Paired per-example differences between two row files.

    python benchmarks/rerun_check.py OLD/rows.jsonl NEW/rows.jsonl [--out FILE.md]

Both files are ``rows.jsonl`` of :mod:`layer_methods` or :mod:`frontier` (one row per batch:
``index`` and, per method, per-example metric lists), or of ``compare`` (one row per example
and method, with its ``metrics`` and ``attributions``). For every method and metric the two
runs share, on the examples both explained: the means, the paired mean difference (new − old)
with a 95 % bootstrap CI (``scipy.stats.bootstrap``, 2,000 resamples, seed 0) and the largest
absolute per-example difference — 0 up to float rounding where a method is deterministic and
its maps did not change. For ``compare``'s rows, a row ``attributions`` gives the largest
absolute difference of the maps themselves.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

METRICS = ("comprehensiveness", "sufficiency")


def per_example(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """``{method: {metric: {example index: value}}}`` from a rows file."""
    values: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if "method" in row:  # compare's rows: one example and method each
            for metric in METRICS:
                if metric in row.get("metrics", {}):
                    values[row["method"]][metric][int(row["index"])] = row["metrics"][metric]
            continue
        for method, result in row["methods"].items():
            for metric in METRICS:
                for index, value in zip(row["index"], result.get(metric, []), strict=False):
                    values[method][metric][int(index)] = float(value)
    return values


def attribution_differences(old: Path, new: Path) -> dict[str, tuple[int, float]]:
    """``{method: (n, largest absolute difference)}`` of the maps in two ``compare`` rows files."""
    maps: list[dict[tuple[str, int], np.ndarray]] = [{}, {}]
    for k, path in enumerate((old, new)):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "method" in row and "attributions" in row:
                maps[k][(row["method"], int(row["index"]))] = np.asarray(row["attributions"])
    out: dict[str, tuple[int, float]] = {}
    for key in sorted(set(maps[0]) & set(maps[1])):
        a, b = maps[0][key], maps[1][key]
        gap = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
        n, worst = out.get(key[0], (0, 0.0))
        out[key[0]] = (n + 1, max(worst, gap))
    return out


def compare(old: Path, new: Path) -> str:
    """The Markdown table of paired differences between the two runs."""
    before, after = per_example(old), per_example(new)
    lines = [
        "| method | metric | n | old | new | new − old (95 % CI) | max abs per-example |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in after:
        for metric in METRICS:
            shared = sorted(
                set(after[method][metric]) & set(before.get(method, {}).get(metric, {}))
            )
            if not shared:
                continue
            a = np.array([before[method][metric][i] for i in shared])
            b = np.array([after[method][metric][i] for i in shared])
            diff = b - a
            if np.ptp(diff) > 0:
                ci = stats.bootstrap(
                    (diff,), np.mean, n_resamples=2000, random_state=0, method="percentile"
                ).confidence_interval
                low, high = ci.low, ci.high
            else:
                low = high = float(diff.mean())
            lines.append(
                f"| {method} | {metric} | {len(shared)} | {a.mean():.4f} | {b.mean():.4f} | "
                f"{diff.mean():+.4f} [{low:+.4f}, {high:+.4f}] | {np.abs(diff).max():.1e} |"
            )
    for method, (n, gap) in attribution_differences(old, new).items():
        lines.append(f"| {method} | attributions | {n} | | | | {gap:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    table = compare(args.old, args.new)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
