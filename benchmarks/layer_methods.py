"""DLS layer methods (gradient, integrated gradients, SmoothGrad, GradientSHAP at the selected
layer; decoded mappings and layer fusion under them) against IG-25, Input x Gradient and random.

Tuning (choose variants here only):

    python benchmarks/layer_methods.py --task sst2 --split validation --stop 300 --variants tune
    python benchmarks/layer_methods.py --task ag_news --start 0 --stop 200 --variants tune

Confirmation (data never used to choose anything; the target is the prediction):

    python benchmarks/layer_methods.py --task sst2 --split test --variants confirm
    python benchmarks/layer_methods.py --task ag_news --start 200 --stop 1200 --variants confirm

The selector's choice against every fixed layer (DLS's default, one step of integrated
gradients at the layer, at each listed layer; tuning data only), on a SmolLM2 default:

    python benchmarks/layer_methods.py --backbone smollm2 --task sst2 --split validation \
        --stop 48 --batch-size 8 --baselines input_x_gradient,random \
        --variants layers:0,1,2,3,4,6,8,10,12,15,18,21,24,27,30

Every method explains the same batches for the predicted class. Metrics: ERASER AOPC
comprehensiveness and sufficiency (tokens deleted, bins 1/5/10/20/50 %) and their normalised
versions (:mod:`captum_layer_saliency.metrics.normalised`, leave-one-out orderings as the
per-example bounds). Cost: seconds per example, and forward and backward passes per example in
full-pass equivalents (:class:`~captum_layer_saliency.compare.methods.registry.PassCounter`). Rows
are appended
batch by batch to ``<out>/rows.jsonl`` (rerun to resume; ``--summary-only`` to re-summarise);
the summary, with paired bootstrap CIs against IG-25 from the same run, goes to
``<out>/summary.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))
import resumable  # noqa: E402  (sets the offline switches)

REFERENCE = "integrated_gradients"
COST_REFERENCE = "input_x_gradient"
BASELINES = ("input_x_gradient", "integrated_gradients", "random")
IG = {"layer_method": "integrated_gradients"}
#: DLS variants: name -> DecodedLayerSaliency options (``fuse``: also the layer below).
VARIANTS: dict[str, dict[str, Any]] = {
    "dls": {"layer_method": "gradient"},  # the paper's grad x activation (the old default)
    "dls_ig1": {**IG, "n_steps": 1},
    "dls_ig2": {**IG, "n_steps": 2},
    "dls_ig4": {**IG, "n_steps": 4},
    "dls_ig8": {**IG, "n_steps": 8},
    "dls_ig2_zeros": {**IG, "n_steps": 2, "layer_baseline": "zeros"},
    "dls_smoothgrad4": {"layer_method": "smoothgrad", "n_steps": 4},
    "dls_gradient_shap4": {"layer_method": "gradient_shap", "n_steps": 4},
    "dls_ig2_hybrid": {**IG, "n_steps": 2, "mapping": "hybrid", "normalize": True},
    "dls_ig2_decoded": {
        **IG,
        "n_steps": 2,
        "mapping": "decoded",
        "special_rows": "exclude",
        "normalize": True,
        "prior": "example",
    },
    "dls_ig2_fuse_below": {**IG, "n_steps": 2, "fuse": 1},
    "dls_ig2_fuse_two_below": {**IG, "n_steps": 2, "fuse": 2},
}
SETS = {
    "tune": [v for v in VARIANTS if v != "dls_ig8"],
    # Fixed from the first 32 tuning sentences (SST-2 dev) before any confirmation row ran:
    # every layer method, and the one mapping/fusion variant that did not lose there.
    "confirm": [
        "dls",
        "dls_ig1",
        "dls_ig2",
        "dls_ig4",
        "dls_smoothgrad4",
        "dls_gradient_shap4",
        "dls_ig2_fuse_below",
    ],
}
#: Rows are explained in chunks of this many consecutive rows (each sorted by length into
#: batches), so that any prefix of a run is a prefix of the data, not its longest texts.
CHUNK = 64


class FusedLayers:
    """DLS at the selected layer and the ones below it, each map L1-normalised, averaged."""

    def __init__(self, explainer: Any) -> None:
        self.explainer = explainer

    def attribute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: Any):
        from captum_layer_saliency.attr.layer_selection import _fuse

        maps = self.explainer.attribute(input_ids, target=target, attention_mask=attention_mask)
        stacked = torch.stack(maps, dim=1)
        return _fuse(stacked, torch.full((len(maps),), 1.0 / len(maps)))


def build_methods(
    clf: Any, names: list[str], baselines: Sequence[str] = BASELINES
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The baselines, and every DLS variant at the layer DLS selects for the model.

    The layer is DLS's label-free per-model choice (stored with the default models, else
    calibrated on the task's unlabelled training texts); every variant runs at that layer.
    """
    from captum_layer_saliency import DecodedLayerSaliency
    from captum_layer_saliency.compare.methods.registry import ExplainerAttributor, get_method

    methods: dict[str, Any] = {name: get_method(name, clf) for name in baselines}
    base = get_method("dls", clf)
    base.prepare([])
    selection = base.explainer.selection_
    layer = selection.layer
    info = {
        "selected_layers": [selection.layer_paths[selection.layer_indices.index(layer)]],
        "selector_scores": list(selection.scores),
    }
    for name in names:
        fixed = re.fullmatch(r"dls_ig1_at_(\d+)", name)
        if fixed:  # DLS's default at a fixed layer (the selector's choice against each)
            methods[name] = get_method("dls", clf, layer=int(fixed[1]), **IG, n_steps=1)
            continue
        options = dict(VARIANTS[name])
        below = options.pop("fuse", 0)
        if below:
            explainer = DecodedLayerSaliency.for_model(
                clf.model,
                clf.lm_head,
                clf.tokenizer,
                layers=list(range(layer - below, layer + 1)),
                selector=None,
                **options,
            )
            methods[name] = ExplainerAttributor(clf, FusedLayers(explainer))
            continue
        methods[name] = get_method("dls", clf, layer=layer, **options)
    return methods, info


def run(args: argparse.Namespace) -> None:
    from captum_layer_saliency import load_default
    from captum_layer_saliency.metrics import aopc_bounds, aopc_curves, normalise_aopc
    from captum_layer_saliency.metrics.normalised import beyond_bounds

    clf = load_default(args.task, backbone=args.backbone)
    texts = resumable.load_texts(args.task, args.split, args.start, args.stop)
    names = SETS[args.variants] if args.variants in SETS else args.variants.split(",")
    if args.variants.startswith("layers:"):  # layers:0,1,2 -> DLS's default at each of them
        names = [f"dls_ig1_at_{layer}" for layer in args.variants[7:].split(",")]
    baselines = [b for b in args.baselines.split(",") if b]
    methods, info = build_methods(clf, names, baselines)
    config = {k: v for k, v in vars(args).items() if k != "summary_only"}
    config.update(info, methods=list(methods), n_texts=len(texts))
    if args.backbone == "minilm":  # the runs before --backbone existed resume as before
        config.pop("backbone", None)
    keys = ("task", "split", "start", "stop", "methods", "batch_size", "backbone")
    rows_path, done = resumable.open_rows(Path(args.out), config, keys)
    plan = resumable.plan_batches(texts, CHUNK, args.batch_size)
    pad = clf.tokenizer.pad_token_id
    forward = clf.forward_func
    with rows_path.open("a") as sink:
        for batch_no, positions in enumerate(tqdm(plan, desc=f"{args.task} {args.variants}")):
            if batch_no in done:
                continue
            ids, mask, special, target = resumable.encode_batch(clf, [texts[i] for i in positions])
            with torch.no_grad():
                bounds = aopc_bounds(forward, ids, mask, target, special, pad_token_id=pad)
            row: dict[str, Any] = {
                "batch": batch_no,
                "index": [args.start + i for i in positions],
                "n_tokens": mask.sum(-1).tolist(),
                "methods": {},
            }
            for name, method in methods.items():
                scores, result = resumable.timed_scores(clf, method, ids, mask, special, target)
                with torch.no_grad():
                    curves = aopc_curves(
                        forward, ids, mask, scores, target, special, pad_token_id=pad
                    )
                for key in ("comprehensiveness", "sufficiency"):
                    value = curves[key].mean(-1)
                    result[key] = value.tolist()
                    result[f"normalised_{key}"] = normalise_aopc(
                        value, bounds[key].to(value)
                    ).tolist()
                    result[f"beyond_{key}"] = beyond_bounds(value, bounds[key]).tolist()
                row["methods"][name] = result
            resumable.append_row(sink, row)


METRICS = (
    "comprehensiveness",
    "sufficiency",
    "normalised_comprehensiveness",
    "normalised_sufficiency",
)


def summarise(out: Path, extra: list[Path] | None = None) -> dict[str, Any]:
    """Means with bootstrap CIs, paired differences against IG-25 and against ``dls``.

    Rows of ``extra`` run directories (other row ranges of the same task) are pooled in; a
    method's paired differences use the rows that hold both methods.
    """
    from captum_layer_saliency.compare.report import bootstrap_ci

    config = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    dls = dls_reference(config)
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    pairs: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    ratio: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for directory in [out, *(extra or [])]:
        for line in (directory / "rows.jsonl").read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            n = len(row["index"])
            results = row["methods"]
            values = {
                name: {k: [np.nan if v is None else float(v) for v in res[k]] for k in METRICS}
                for name, res in results.items()
            }
            for name, res in results.items():
                for key in (*METRICS, "beyond_comprehensiveness", "beyond_sufficiency"):
                    per[name][key] += [np.nan if v is None else float(v) for v in res[key]]
                for key in ("seconds", "forwards", "backwards"):
                    per[name][key] += [res[key]] * n
                for ref in (REFERENCE, COST_REFERENCE, dls):
                    if ref in results and ref != name:
                        ratio[name, ref][0] += res["seconds"] * n
                        ratio[name, ref][1] += results[ref]["seconds"] * n
                for ref in (REFERENCE, dls):
                    if ref in results and ref != name:
                        for key in METRICS:
                            a, b = np.array(values[name][key]), np.array(values[ref][key])
                            pairs[name, ref, key] += list(a - b)
    table: dict[str, Any] = {}
    for name, d in per.items():
        a = {k: np.asarray(v, dtype=float) for k, v in d.items()}
        entry: dict[str, Any] = {"n": int(len(a["comprehensiveness"]))}
        for key in METRICS:
            entry[key] = list(bootstrap_ci(a[key], n_boot=2000, seed=0))
            for ref, tag in ((REFERENCE, "ig"), (dls, "dls")):
                if (name, ref, key) in pairs:
                    diffs = pairs[name, ref, key]
                    entry[f"{key}_minus_{tag}"] = list(bootstrap_ci(diffs, n_boot=2000, seed=1))
        for key in ("seconds", "forwards", "backwards"):
            entry[key] = float(np.mean(a[key]))
        entry["beyond_bounds_share"] = float(
            np.mean(np.maximum(a["beyond_comprehensiveness"], a["beyond_sufficiency"]))
        )
        for ref, tag in ((REFERENCE, "ig"), (COST_REFERENCE, "ixg"), (dls, "dls")):
            mine, theirs = ratio.get((name, ref), (0.0, 0.0))
            if name == ref:
                entry[f"seconds_vs_{tag}"] = 1.0
            elif theirs:
                entry[f"seconds_vs_{tag}"] = mine / theirs
        table[name] = entry
    config["dls_reference"] = dls
    if extra:
        config["pooled_with"] = [str(e) for e in extra]
    summary = {"config": config, "methods": table}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def dls_reference(config: dict[str, Any]) -> str:
    """The method the ``comp − dls`` column compares with: ``dls``, or in a layer sweep
    (``--variants layers:...``) the variant at the layer DLS selects (``model.layers.1`` and
    ``bert.encoder.layer.1`` are block 2)."""
    variants, selected = str(config.get("variants", "")), config.get("selected_layers") or []
    if variants.startswith("layers:") and len(selected) == 1:
        match = re.search(r"\.(\d+)$", selected[0])
        if match:
            return f"dls_ig1_at_{int(match.group(1)) + 1}"
    return "dls"


def _ci(v: list[float]) -> str:
    return f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"


def markdown(summary: dict[str, Any]) -> str:
    config, table = summary["config"], summary["methods"]
    n = max((e["n"] for e in table.values()), default=0)
    pooled = config.get("pooled_with")
    lines = [
        f"Task {config.get('task')} ({config.get('split') or 'default split'}, from row "
        f"{config.get('start')}{', pooled with ' + ', '.join(pooled) if pooled else ''}; "
        f"n = {n} texts); DLS layer: {', '.join(config.get('selected_layers', []))}"
        f" (`comp − dls`: against `{config.get('dls_reference', 'dls')}`). "
        "Differences are paired, with 95 % bootstrap CIs.",
        "",
        "| method | n | comp ↑ | suff ↓ | norm. comp ↑ | norm. suff ↓ | comp − IG-25 "
        "| norm. comp − IG-25 | comp − dls | fwd | bwd | s × IxG | s × IG-25 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(table, key=lambda m: -table[m]["comprehensiveness"][0])
    for name in order:
        e = table[name]
        cells = [
            _ci(e[k]) if e.get(k) else "—"
            for k in (
                "comprehensiveness_minus_ig",
                "normalised_comprehensiveness_minus_ig",
                "comprehensiveness_minus_dls",
            )
        ]
        lines.append(
            f"| {name} | {e['n']} | {e['comprehensiveness'][0]:.3f} | {e['sufficiency'][0]:.3f} | "
            f"{e['normalised_comprehensiveness'][0]:.3f} | {e['normalised_sufficiency'][0]:.3f} | "
            f"{' | '.join(cells)} | {e['forwards']:.2f} | {e['backwards']:.2f} | "
            f"{e.get('seconds_vs_ixg', float('nan')):.2f} | "
            f"{e.get('seconds_vs_ig', float('nan')):.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2", choices=["sst2", "ag_news"])
    parser.add_argument("--split", help="sst2: validation (tuning) or test; ag_news: heldout")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int)
    parser.add_argument(
        "--variants",
        default="tune",
        help="tune, confirm, a comma list, or layers:L1,L2,... (DLS's default at each layer)",
    )
    parser.add_argument(
        "--backbone", default="minilm", choices=["minilm", "smollm2"], help="the default model's"
    )
    parser.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help="comma list of registry methods run beside the variants (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="default benchmarks/results/layer_methods/<variants>_<task>")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument(
        "--pool", nargs="*", default=[], help="other run directories to pool into the summary"
    )
    args = parser.parse_args(argv)
    tag = args.variants.replace(":", "_").replace(",", "-")
    args.out = args.out or f"benchmarks/results/layer_methods/{tag}_{args.task}"
    torch.set_num_threads(args.threads)
    if not args.summary_only:
        run(args)
    print(markdown(summarise(Path(args.out), [Path(p) for p in args.pool])))


if __name__ == "__main__":
    main()
