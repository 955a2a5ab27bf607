"""Tuning experiment: DLS's gradient x activation at a layer, through AttnLRP's backward.

    python benchmarks/lrp_at_layer.py --stop 96 [--layers 1,2,4,8] [--split test] [--out DIR]

On SmolLM2's SST-2 default, AttnLRP (one modified backward) is far ahead of DLS (BENCHMARKS.md
§ 9). This asks what the layer view adds to it: DLS with ``layer_method="gradient"`` built on
AttnLRP's copy of the model (:func:`~captum_layer_saliency.compare.methods.attnlrp.attnlrp_model`),
so the gradient at the layer comes back through AttnLRP's rules in the blocks above it, scored
position by position at the layer (identity mapping). Against AttnLRP at the word embeddings,
DLS's default and ``dls_gradient`` (plain backward), and Input×Gradient, on **SST-2 validation
rows** (tuning data: nothing here is confirmed on held-out data). ERASER comprehensiveness and
sufficiency of each method's map for the predicted class; paired 95 % bootstrap CIs (scipy)
against DLS's default and against AttnLRP; cost = seconds relative to Input×Gradient in the same
run. Per-example values go to ``<out>/rows.json``, the table to ``<out>/summary.md``.
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
    p.add_argument("--stop", type=int, default=96, help="rows 0..stop-1 of the split")
    p.add_argument(
        "--split",
        default="validation",
        help="SST-2 split: validation (tuning) or test (held out: confirm what tuning chose)",
    )
    p.add_argument("--layers", default="1,2,4,8")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/smollm2/lrp_at_layer_sst2_dev")
    args = p.parse_args()
    torch.set_num_threads(1)
    clf = load_default("sst2", backbone="smollm2")
    texts = resumable.load_texts("sst2", args.split, 0, args.stop)
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
    rows: dict[str, dict[str, list[float]]] = {
        m: {"comprehensiveness": [], "sufficiency": [], "seconds": []} for m in methods
    }
    pad = clf.tokenizer.pad_token_id
    for start in range(0, len(texts), args.batch_size):
        ids, mask, special, target = resumable.encode_batch(
            clf, texts[start : start + args.batch_size]
        )
        for name, method in methods.items():
            scores, cost = resumable.timed_scores(clf, method, ids, mask, special, target)
            with torch.no_grad():
                curves = aopc_curves(
                    clf.forward_func, ids, mask, scores, target, special, pad_token_id=pad
                )
            for key in ("comprehensiveness", "sufficiency"):
                rows[name][key] += curves[key].mean(-1).tolist()
            rows[name]["seconds"] += [cost["seconds"]] * ids.shape[0]
        print(f"{min(start + args.batch_size, len(texts))}/{len(texts)}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(rows))
    ixg = float(np.mean(rows["input_x_gradient"]["seconds"]))
    lines = [
        f"SST-2 {args.split} rows 0-{len(texts) - 1}, SmolLM2 SST-2 default",
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
