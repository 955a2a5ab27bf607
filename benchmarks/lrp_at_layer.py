"""Tuning experiment: DLS's gradient x activation at a layer, through AttnLRP's backward.

    python benchmarks/lrp_at_layer.py --stop 96 [--layers 1,2,4,8] [--split test] [--out DIR]
    python benchmarks/lrp_at_layer.py --task ag_news --split heldout --start 0 --stop 200 --layers 2
    python benchmarks/lrp_at_layer.py --backbone minilm --task sst2 --stop 400 --layers 4,5

On SmolLM2's SST-2 default, AttnLRP (one modified backward) is far ahead of DLS (BENCHMARKS.md
§ 9). This asks what the layer view adds to it: DLS with ``layer_method="gradient"`` built on
AttnLRP's copy of the model (:func:`~captum_layer_saliency.compare.methods.attnlrp.attnlrp_model`),
so the gradient at the layer comes back through AttnLRP's rules in the blocks above it, scored
position by position at the layer (identity mapping). Against AttnLRP at the word embeddings,
DLS's default and ``dls_gradient`` (plain backward), and Input×Gradient. Tuning data: SST-2
validation and AG News held-out rows 0-199; held-out data (to confirm what tuning chose): SST-2
test and AG News held-out rows from 200. ERASER comprehensiveness and sufficiency of each
method's map for the predicted class; paired 95 % bootstrap CIs (scipy) against DLS's default
and against AttnLRP; cost = seconds relative to Input×Gradient in the same run. One row per
batch is appended to ``<out>/rows.jsonl`` (a rerun resumes), the table goes to
``<out>/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
import resumable  # noqa: E402  (sets the offline switches)

_METRICS = ("comprehensiveness", "sufficiency")


def _paired(a: list[float], b: list[float]) -> str:
    diff = np.asarray(a) - np.asarray(b)
    if np.ptp(diff) == 0:
        return f"{diff.mean():+.3f}"
    ci = stats.bootstrap(
        (diff,), np.mean, n_resamples=2000, random_state=0, method="percentile"
    ).confidence_interval
    return f"{diff.mean():+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"


def main() -> None:
    """Run the methods on the tuning rows and write the per-example values and the table."""
    from captum_layer_saliency import DecodedLayerSaliency, load_default
    from captum_layer_saliency.compare.methods.attnlrp import attnlrp_model
    from captum_layer_saliency.compare.methods.ours import ExplainerAttributor
    from captum_layer_saliency.compare.methods.registry import get_method
    from captum_layer_saliency.metrics import aopc_curves

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="sst2", choices=["sst2", "ag_news"])
    p.add_argument("--backbone", default="smollm2", choices=["smollm2", "minilm"])
    p.add_argument("--start", type=int, default=0, help="first row of the split")
    p.add_argument("--stop", type=int, default=96, help="rows start..stop-1 of the split")
    p.add_argument(
        "--split",
        default=None,
        help="the task's split: SST-2 validation (tuning, the default) or test (held out); "
        "AG News heldout (rows 0-199 tune, rows 200+ confirm)",
    )
    p.add_argument("--layers", default="1,2,4,8")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/smollm2/lrp_at_layer_sst2_dev")
    args = p.parse_args()
    torch.set_num_threads(1)
    clf = load_default(args.task, backbone=args.backbone)
    texts = resumable.load_texts(args.task, args.split, args.start, args.stop)
    twin = attnlrp_model(clf.model)
    methods: dict[str, Any] = {
        "attnlrp": get_method("attnlrp", clf),
        "dls": get_method("dls", clf),
        "dls_gradient": get_method("dls", clf, layer_method="gradient"),
        "input_x_gradient": get_method("input_x_gradient", clf),
    }
    for layer in (int(v) for v in args.layers.split(",")):
        dls = DecodedLayerSaliency.for_model(
            twin, clf.lm_head, clf.tokenizer, layers=layer, selector=None, layer_method="gradient"
        )
        methods[f"dls_lrp_layer{layer}"] = ExplainerAttributor(clf, dls)
    config = {k: getattr(args, k) for k in ("task", "backbone", "split", "start", "stop")}
    config.update(layers=args.layers, batch_size=args.batch_size)
    rows_path, done = resumable.open_rows(Path(args.out), config, list(config))
    pad = clf.tokenizer.pad_token_id
    batches = list(range(0, len(texts), args.batch_size))
    with rows_path.open("a") as sink:
        for number, start in enumerate(batches):
            if number in done:
                continue
            ids, mask, special, target = resumable.encode_batch(
                clf, texts[start : start + args.batch_size]
            )
            row: dict[str, Any] = {"batch": number}
            for name, method in methods.items():
                scores, cost = resumable.timed_scores(clf, method, ids, mask, special, target)
                with torch.no_grad():
                    curves = aopc_curves(
                        clf.forward_func, ids, mask, scores, target, special, pad_token_id=pad
                    )
                row[name] = {k: curves[k].mean(-1).tolist() for k in _METRICS}
                row[name]["seconds"] = [cost["seconds"]] * ids.shape[0]
            resumable.append_row(sink, row)
            print(f"{min(start + args.batch_size, len(texts))}/{len(texts)}", flush=True)
    rows: dict[str, dict[str, list[float]]] = {
        m: {k: [] for k in (*_METRICS, "seconds")} for m in methods
    }
    stored = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    for row in sorted(stored, key=lambda r: r["batch"]):
        for name in methods:
            for key in rows[name]:
                rows[name][key] += row[name][key]
    out = Path(args.out)
    ixg = float(np.mean(rows["input_x_gradient"]["seconds"]))
    lines = [
        f"{args.task} {args.split or 'default split'} rows {args.start}-"
        f"{args.start + len(texts) - 1}, {args.backbone} {args.task} default",
        "",
        "| method | comprehensiveness | sufficiency | cost × IxG | − dls (comp) "
        "| − attnlrp (comp) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {np.mean(r['comprehensiveness']):.3f} | {np.mean(r['sufficiency']):.3f} "
            f"| {np.mean(r['seconds']) / ixg:.2f} "
            f"| {_paired(r['comprehensiveness'], rows['dls']['comprehensiveness'])} "
            f"| {_paired(r['comprehensiveness'], rows['attnlrp']['comprehensiveness'])} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
