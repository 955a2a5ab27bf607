"""The DLS ablation that sets the defaults: layer x aggregation x mapping x top_k x normalisation,
and the selector's score x rule x theta, on the default models.

    python benchmarks/ablation_dls.py --task sst2 --limit 300
    python benchmarks/ablation_dls.py --task ag_news --limit 300

Every variant is scored with ERASER AOPC comprehensiveness and sufficiency (tokens deleted,
bins {1, 5, 10, 20, 50} %, target = the predicted class) on the same examples, next to
Input x Gradient and Integrated Gradients from the same run. Per-example values are appended to
``benchmarks/results/ablation_dls_<task>.jsonl`` batch by batch, so an interrupted run resumes;
the summary (means, and paired differences with bootstrap 95 % CIs) goes to
``ablation_dls_<task>.json`` and ``.md``. Choose variants on these examples (the first
``--limit`` of the task), and confirm them on the rest with ``compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

AGGREGATIONS = ("grad_x_act", "gradcam", "grad_norm")
# (mapping, special_rows, top_k, normalize, prior). The grid is the contrasts that matter (on
# 2 CPU cores each map costs 10 perturbed forwards per example): the specification's decoded
# mapping, its best-known repairs (no special rows, top-k, normalised, frequency prior), the
# hybrid and the identity mapping.
Mapping = tuple[str, str, int | None, bool, str]
MAPPINGS: list[Mapping] = [
    ("identity", "include", None, False, "none"),
    ("hybrid", "include", None, True, "none"),
    ("decoded", "include", None, False, "none"),
    ("decoded", "exclude", 3, True, "none"),
    ("decoded", "exclude", None, True, "example"),
]
# The full mapping grid for grad_x_act; the other aggregations get the main contrasts only.
SMALL_MAPPINGS: list[Mapping] = [MAPPINGS[0]]
SELECTORS = [
    (score, rule, theta)
    for score in ("self_recovery", "input_mass", "own_prob")
    for rule, theta in [
        ("deepest", 0.7),
        ("deepest", 0.8),
        ("deepest", 0.85),
        ("deepest", 0.9),
        ("argmax", 1.0),
        ("elbow", 0.0),
        ("weighted", 0.8),
        ("weighted", 0.9),
    ]
]


def variant_name(aggregation: str, mapping: Mapping) -> str:
    kind, rows, top_k, norm, prior = mapping
    parts = [aggregation, kind]
    if kind == "decoded":
        parts.append(f"rows={rows}")
    if kind != "identity":
        parts += [f"tau={top_k or 'all'}", "norm" if norm else "raw"]
    if prior != "none":
        parts.append(f"prior={prior}")
    return "/".join(parts)


def bootstrap_ci(values: np.ndarray, seed: int = 0, n: int = 1000) -> tuple[float, float]:
    from captum_layer_saliency.compare.report import bootstrap_ci as mean_ci

    _, low, high = mean_ci(values, n_boot=n, seed=seed)
    return low, high


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2", choices=["sst2", "ag_news"])
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--calib", type=int, default=256, help="unlabelled texts to fit selectors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from captum_layer_saliency import DecodedLayerSaliency, LayerCoherenceSelector, load_default
    from captum_layer_saliency.compare.methods.registry import get_method
    from captum_layer_saliency.data.tasks import get_task
    from captum_layer_saliency.metrics import aopc_curves

    clf = load_default(args.task)
    task = get_task(args.task)
    data = task.load(limit=args.limit)
    texts = list(data["text"])
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = out_dir / f"ablation_dls_{args.task}.jsonl"
    done = set()
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            try:
                done.add(json.loads(line)["batch"])
            except (json.JSONDecodeError, KeyError):
                continue  # a torn last line from an interrupted run: that batch reruns

    # Calibration texts for fitted selectors: unlabelled text the explained examples never see.
    if args.task == "sst2":
        from captum_layer_saliency.data.sst2 import load_sst2

        calib_texts = list(load_sst2("train").shuffle(seed=0)["text"][: args.calib])
    else:
        from captum_layer_saliency.data.ag_news import load_ag_news

        calib_texts = list(load_ag_news("train_part").shuffle(seed=0)["text"][: args.calib])
    calib = [
        clf.encode(calib_texts[i : i + 32], truncation="truncate")
        for i in range(0, len(calib_texts), 32)
    ]

    forward = clf.forward_func
    variants: dict[str, DecodedLayerSaliency] = {}
    grid = [("grad_x_act", m) for m in MAPPINGS]
    grid += [(agg, m) for agg in AGGREGATIONS[1:] for m in SMALL_MAPPINGS]
    for agg, mapping in grid:
        kind, rows, top_k, norm, prior = mapping
        variants[variant_name(agg, mapping)] = DecodedLayerSaliency.for_model(
            clf.model,
            clf.lm_head,
            clf.tokenizer,
            selector=None,
            aggregation=agg,
            mapping=kind,
            special_rows=rows,
            top_k=top_k,
            normalize=norm,
            prior=prior,
            layer_method="gradient",  # the ablation of section 2 (before integrated gradients)
        )
    layer_names = next(iter(variants.values())).layer_names
    # The scores depend only on the score kind: fit once per kind, then apply every rule.
    fitted = {}
    for kind in dict.fromkeys(score for score, _, _ in SELECTORS):
        scorer = LayerCoherenceSelector(score=kind, rule="argmax")
        probe = DecodedLayerSaliency.for_model(
            clf.model, clf.lm_head, clf.tokenizer, selector=scorer
        )
        probe.fit_selector((e["input_ids"], e["attention_mask"]) for e in calib)
        assert scorer.scores_ is not None
        for score, rule, theta in SELECTORS:
            if score != kind:
                continue
            selected, weights = LayerCoherenceSelector(score=score, rule=rule, theta=theta).select(
                scorer.scores_
            )
            fitted[f"{score}/{rule}/{theta}"] = (
                selected,
                weights.tolist(),
                scorer.scores_.tolist(),
            )
    baselines = {
        name: get_method(name, clf) for name in ("input_x_gradient", "integrated_gradients")
    }

    batches = range(0, len(texts), args.batch_size)
    with rows_path.open("a") as sink:
        for start in tqdm(batches, desc=f"ablation {args.task}", unit="batch"):
            if start in done:
                continue
            enc = clf.encode(texts[start : start + args.batch_size], truncation="truncate")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            special = clf.special_mask(ids)
            with torch.no_grad():
                target = forward(ids, mask).argmax(-1)

            def score(
                scores: torch.Tensor, ids=ids, mask=mask, target=target, special=special
            ) -> tuple[list[float], list[float]]:
                curves = aopc_curves(
                    forward,
                    ids,
                    mask,
                    scores,
                    target,
                    special,
                    pad_token_id=clf.tokenizer.pad_token_id,
                )
                return (
                    curves["comprehensiveness"].mean(-1).tolist(),
                    curves["sufficiency"].mean(-1).tolist(),
                )

            row: dict[str, Any] = {"batch": start, "comp": {}, "suff": {}, "seconds": {}}
            for name, method in baselines.items():
                t0 = time.perf_counter()
                scores = method.attribute(ids, mask, target)
                row["seconds"][name] = time.perf_counter() - t0
                row["comp"][name], row["suff"][name] = score(scores)
            for name, dls in variants.items():
                t0 = time.perf_counter()
                maps = dls.attribute(ids, target=target, attention_mask=mask)
                row["seconds"][name] = time.perf_counter() - t0
                assert isinstance(maps, list)
                for layer, m in enumerate(maps):
                    key = f"{name}@{layer}"
                    row["comp"][key], row["suff"][key] = score(m)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            os.fsync(sink.fileno())

    summarise(rows_path, out_dir / f"ablation_dls_{args.task}", fitted, layer_names, args)


def summarise(rows_path: Path, stem: Path, fitted: dict, layer_names: list[str], args) -> None:
    comp: dict[str, list[float]] = defaultdict(list)
    suff: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    for line in rows_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        for k, v in row["comp"].items():
            comp[k] += v
        for k, v in row["suff"].items():
            suff[k] += v
        for k, v in row["seconds"].items():
            seconds[k].append(v)
    c = {k: np.array(v, dtype=float) for k, v in comp.items()}
    s = {k: np.array(v, dtype=float) for k, v in suff.items()}
    ixg_time = float(np.sum(seconds["input_x_gradient"]))
    table = []
    for key in c:
        name = key.split("@")[0]
        table.append(
            {
                "variant": key,
                "comp": float(np.nanmean(c[key])),
                "suff": float(np.nanmean(s[key])),
                "comp_ci": bootstrap_ci(c[key]),
                "cost_vs_ixg": float(np.sum(seconds[name])) / ixg_time if ixg_time else None,
            }
        )
    table.sort(key=lambda r: -r["comp"])
    best = next(r["variant"] for r in table if "@" in r["variant"])  # the best DLS variant
    ig = "integrated_gradients"
    diff = c[best] - c[ig]
    selectors = {}
    for key, (selected, weights, scores) in fitted.items():
        # The fitted selector's map for the best mapping/aggregation: one layer, or a fusion of
        # several scored as the mean of their per-layer comps (an approximation, marked so).
        base = best.split("@")[0]
        per_layer = [np.nanmean(c[f"{base}@{i}"]) for i in selected]
        selectors[key] = {
            "selected": [layer_names[i] for i in selected],
            "weights": weights,
            "scores": scores,
            "comp_of_selected": float(np.average(per_layer, weights=weights)),
        }
    summary = {
        "task": args.task,
        "examples": int(len(c[ig])),
        "layers": layer_names,
        "table": table,
        "best": best,
        "best_minus_ig_comp": {"mean": float(np.nanmean(diff)), "ci": bootstrap_ci(diff)},
        "selectors": selectors,
    }
    Path(f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# DLS ablation on {args.task} ({summary['examples']} examples)",
        "",
        "| variant @ layer | comp ↑ | 95 % CI | suff ↓ | cost ÷ IxG (all layers at once) |",
        "|---|---|---|---|---|",
    ]
    for r in table[:40]:
        lo, hi = r["comp_ci"]
        cost = f"{r['cost_vs_ixg']:.2f}" if r["cost_vs_ixg"] is not None else ""
        lines.append(
            f"| {r['variant']} | {r['comp']:.3f} | [{lo:.3f}, {hi:.3f}] | "
            f"{r['suff']:.3f} | {cost} |"
        )
    lines += [
        "",
        "| selector (score/rule/theta) | selected | comp of selected (best variant) |",
        "|---|---|---|",
    ]
    for key, v in selectors.items():
        lines.append(f"| {key} | {', '.join(v['selected'])} | {v['comp_of_selected']:.3f} |")
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
