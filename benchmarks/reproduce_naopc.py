"""Reproduce Edin et al.'s published per-example AOPC for IG and DecompX with this package.

Edin et al., "Normalized AOPC" (ACL 2024), publish per-example comprehensiveness and sufficiency
(words masked by [MASK] along the whole curve, on the probability of the label) for
textattack/bert-base-uncased-SST-2 in their repository ``JoakimEdin/naopc``. This script runs
the same protocol with :mod:`captum_layer_saliency.metrics.edin` and the registry's ``decompx``
and ``integrated_gradients`` (50 steps, [MASK] baseline), and compares per example:

    python benchmarks/reproduce_naopc.py                      # needs the hub and GitHub
    python benchmarks/reproduce_naopc.py --model DIR --data FILE --published FILE --limit 20

``--data`` is their SST-2 set (columns ``id``, ``text``, ``label``; default: their short set,
every text at most 10 words, so the NAOPC bounds are exact), ``--published`` their results CSV
(columns ``id``, ``explanation_method``, ``comprehensiveness``, ``sufficiency``); both are read
from their repository at a fixed commit unless given as local files (nothing is vendored). The
explained class is each row's label, as theirs. Output: ``<out>/reproduce_naopc.json`` and a
markdown table on stdout (means of ours and theirs, mean absolute difference, Pearson r).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.metrics.edin import edin_bounds, edin_curves, replacement_token_id
from captum_layer_saliency.metrics.normalised import normalise_aopc
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.words import word_index

REPO = "https://raw.githubusercontent.com/JoakimEdin/naopc"
DATA = f"{REPO}/2e94e8717449cfc59722f6e755b2c4d59e73121e/data/sst2_test_short.csv"
PUBLISHED = (
    f"{REPO}/b3293821d7776b30cb495be1df18048f1e5d7fb0/results/aopc_scores_short/"
    "sst2_bert-base-uncased-SST-2.csv"
)
MODEL = "textattack/bert-base-uncased-SST-2"
#: Our registry method -> (its options, the method's name in the published CSV).
METHODS: dict[str, tuple[dict[str, Any], str]] = {
    "decompx": ({}, "decompx"),
    "integrated_gradients": ({"n_steps": 50, "baseline": "mask"}, "integrated_gradient"),
}


def load_classifier(model: str) -> TextClassifier:
    """The classifier and its tokenizer from a hub id or a ``save_pretrained`` directory."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    net = AutoModelForSequenceClassification.from_pretrained(model).eval()
    tokenizer = AutoTokenizer.from_pretrained(model)
    labels = [str(net.config.id2label[i]) for i in range(net.config.num_labels)]
    return TextClassifier(model=net, tokenizer=tokenizer, labels=labels, name=model)


def _method(name: str, clf: TextClassifier, options: dict[str, Any]) -> Any:
    opts = dict(options)
    if opts.pop("baseline", None) == "mask":
        opts["baseline_token_id"] = replacement_token_id(clf.tokenizer)
    return get_method(name, clf, **opts)


def run(
    clf: TextClassifier, data: pd.DataFrame, batch_size: int = 8
) -> dict[str, dict[str, list[float]]]:
    """Our per-example comprehensiveness, sufficiency and NAOPC of each method, row by row."""
    out: dict[str, dict[str, list[float]]] = {
        m: {k: [] for k in ("id", "comp", "suff", "naopc_comp", "naopc_suff")} for m in METHODS
    }
    mask_id = replacement_token_id(clf.tokenizer)
    methods = {m: _method(m, clf, opts) for m, (opts, _) in METHODS.items()}
    for start in range(0, len(data), batch_size):
        rows = data.iloc[start : start + batch_size]
        enc = clf.encode([str(t).strip() for t in rows["text"]])
        ids, mask = enc["input_ids"], enc["attention_mask"]
        target = torch.tensor([int(v) for v in rows["label"]])
        special = clf.special_mask(ids)
        words = word_index(clf.tokenizer, ids, mask)
        common = {"word_ids": words, "mask_token_id": mask_id}
        bounds = edin_bounds(clf.forward_func, ids, mask, target, special, **common)
        for name, method in methods.items():
            scores = method.attribute(ids, mask, target)
            curves = edin_curves(clf.forward_func, ids, mask, scores, target, special, **common)
            comp = curves["comprehensiveness"].nanmean(-1)
            suff = curves["sufficiency"].nanmean(-1)
            record = out[name]
            record["id"] += [int(i) for i in rows["id"]]
            record["comp"] += comp.tolist()
            record["suff"] += suff.tolist()
            record["naopc_comp"] += normalise_aopc(comp, bounds["comprehensiveness"]).tolist()
            record["naopc_suff"] += normalise_aopc(suff, bounds["sufficiency"]).tolist()
    return out


def compare_with_published(
    ours: dict[str, dict[str, list[float]]], published: pd.DataFrame
) -> dict[str, dict[str, float]]:
    """Per method and metric: our mean, theirs, mean |difference| and Pearson r, on shared ids."""
    summary: dict[str, dict[str, float]] = {}
    for name, (_, theirs_name) in METHODS.items():
        theirs = published[published["explanation_method"] == theirs_name].set_index("id")
        mine = pd.DataFrame(ours[name]).set_index("id")
        shared = mine.index.intersection(theirs.index)
        row: dict[str, float] = {"n": float(len(shared))}
        for ours_key, their_key in (("comp", "comprehensiveness"), ("suff", "sufficiency")):
            a = mine.loc[shared, ours_key].to_numpy(float)
            b = theirs.loc[shared, their_key].to_numpy(float)
            row[f"{ours_key}_ours"] = float(np.mean(a)) if len(a) else float("nan")
            row[f"{ours_key}_published"] = float(np.mean(b)) if len(b) else float("nan")
            row[f"{ours_key}_mean_abs_diff"] = float(np.mean(np.abs(a - b))) if len(a) else np.nan
            row[f"{ours_key}_pearson_r"] = (
                float(stats.pearsonr(a, b).statistic) if len(a) > 2 else float("nan")
            )
        row["naopc_comp_ours"] = float(np.nanmean(mine["naopc_comp"]))
        row["naopc_suff_ours"] = float(np.nanmean(mine["naopc_suff"]))
        summary[name] = row
    return summary


def markdown(summary: dict[str, dict[str, float]]) -> str:
    """The comparison as a markdown table."""
    lines = [
        "| method | n | comp ours | comp published | mean abs diff | r | suff ours | "
        "suff published | mean abs diff | r | NAOPC comp ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary.items():
        lines.append(
            f"| {name} | {int(r['n'])} | {r['comp_ours']:.3f} | {r['comp_published']:.3f} | "
            f"{r['comp_mean_abs_diff']:.3f} | {r['comp_pearson_r']:.2f} | {r['suff_ours']:.3f} | "
            f"{r['suff_published']:.3f} | {r['suff_mean_abs_diff']:.3f} | "
            f"{r['suff_pearson_r']:.2f} | {r['naopc_comp_ours']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the reproduction; returns the summary (also written to ``<out>``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL, help="hub id or save_pretrained directory")
    parser.add_argument("--data", default=DATA, help="Edin et al.'s SST-2 set (URL or CSV)")
    parser.add_argument("--published", default=PUBLISHED, help="their results (URL or CSV)")
    parser.add_argument("--limit", type=int, help="only the first N texts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/reproduce_naopc")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = pd.read_csv(args.data)
    if args.limit:
        data = data.iloc[: args.limit]
    published = pd.read_csv(args.published)
    ours = run(load_classifier(args.model), data, args.batch_size)
    summary = compare_with_published(ours, published)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model, "data": args.data, "published": args.published}
    (out / "reproduce_naopc.json").write_text(
        json.dumps({**record, "summary": summary, "per_example": ours}, indent=1)
    )
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
