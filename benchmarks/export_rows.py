"""Rows of a task's split as a ``compare --data-file`` (JSON Lines: idx, text, label).

    python benchmarks/export_rows.py --task ag_news --split heldout --start 200 --stop 600 \
        --out ag_news_heldout_200_600.jsonl

``compare --limit N`` explains the first N rows of a split; this gives any other slice (the
reporting rows 200-1,199 of AG News held-out, say) to ``compare --data-file`` with the same
texts and labels the package's loaders read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import resumable  # noqa: E402  (sets the offline switches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=["sst2", "ag_news", "hatexplain"])
    parser.add_argument("--split", help="the loader's split (default: the loader's default)")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = resumable.load_split(args.task, args.split)
    stop = len(data) if args.stop is None else min(args.stop, len(data))
    rows = data.select(range(args.start, stop))
    lines = [
        json.dumps(
            {
                "idx": int(row.get("idx", args.start + i)),
                "text": row["text"],
                "label": int(row["label"]),
            }
        )
        for i, row in enumerate(rows)
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    where = f"{args.task} {args.split or 'default split'} {args.start}:{stop}"
    print(f"wrote {len(lines)} rows ({where}) to {args.out}")


if __name__ == "__main__":
    main()
