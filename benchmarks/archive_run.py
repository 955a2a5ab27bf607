"""Copy a finished ``compare`` run into ``benchmarks/results/`` for the record.

Usage::

    python benchmarks/archive_run.py runs/full/sst2 benchmarks/results/full_sst2

Copies ``run.json``, ``summary.{md,csv,json}`` and the PNG plots, and writes
``rows.jsonl.gz``: every row without its per-token payload (ids, tokens, text, attributions,
rationale), which keeps the file small while still holding every metric, curve, timing and pass
count. ``gunzip -k rows.jsonl.gz`` makes the directory readable by ``report`` and ``summarize``
again (their tables need nothing that was dropped; the HTML gallery shows no tokens then).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

from captum_layer_saliency.compare import load_rows

KEPT_FILES = (
    "run.json",
    "summary.md",
    "summary.csv",
    "summary.json",
    "aopc_curves.png",
    "cost_vs_faithfulness.png",
)
DROPPED_FIELDS = ("input_ids", "tokens", "text", "attributions", "rationale")


def archive(run: Path, dest: Path) -> Path:
    """Copy the run's summary files and its trimmed rows into ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
    rows = load_rows(run)
    with gzip.open(dest / "rows.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        for row in rows:
            slim = {k: v for k, v in row.items() if k not in DROPPED_FIELDS}
            fh.write(json.dumps(slim, sort_keys=True, allow_nan=False) + "\n")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a compare output directory")
    parser.add_argument("dest", type=Path, help="where to put the record")
    args = parser.parse_args()
    out = archive(args.run, args.dest)
    size = (out / "rows.jsonl.gz").stat().st_size
    print(f"archived {args.run} -> {out} (rows.jsonl.gz: {size:,} bytes)")


if __name__ == "__main__":
    main()
