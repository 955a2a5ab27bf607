"""The default path is the benchmarked path: the README snippet against the fitted selector.

    python benchmarks/bench_default_path.py [--n 200] [--out benchmarks/results/default_path_sst2]

On the first ``--n`` sentences of the SST-2 **test** split (GLUE's unlabelled test file: the
explained class is the prediction, so no labels are needed, and nothing in the project was
tuned on it), with the default SST-2 model, one sentence per call as in the README:

* ``readme``: ``DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)``, copied
  as written (it uses the layer selection stored with the default model; the default layer
  method, integrated gradients at the layer with 1 step from the PAD baseline);
* ``readme_gradient``: the same with ``layer_method="gradient"`` (the paper's gradient x
  activation, the default before integrated gradients);
* ``fitted``: the same after ``fit_selector`` on 128 unlabelled SST-2 training sentences (the
  path the comparison benchmarks measured);
* ``auto``: the same model with its stored selection removed, so DLS chooses its layer on its
  built-in general-English texts before the first call (since issue 21; before, it calibrated
  on its first calls' texts) and then freezes: what any other model gets;
* ``per_example`` / ``per_example_all``: ``selection="example"``, scoring a quarter of each
  sentence's positions (the default) or all of them (the old default);
* ``input_x_gradient``: the harness's Input×Gradient, the cost reference.

Every method explains each sentence in turn (rotating order), so they share the machine's
state; cost = the method's total seconds / Input×Gradient's, from the first call on (the
calibration of ``auto`` included; ``fitted``'s ``fit_selector`` is timed separately as
``fit_seconds``), and the median over sentences of the per-sentence ratio, which one stalled
call on a shared machine cannot move. Faithfulness: the library's ERASER comprehensiveness and
sufficiency (AOPC, bins 1/5/10/20/50 %, tokens deleted), with paired bootstrap CIs
(scipy.stats.bootstrap, 2,000 resamples, seed 0) of each method minus ``fitted``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captum_layer_saliency import DecodedLayerSaliency, load_default  # noqa: E402
from captum_layer_saliency.attr.layer_selection import CONFIG_KEY  # noqa: E402
from captum_layer_saliency.compare.methods.registry import get_method  # noqa: E402
from captum_layer_saliency.data.corpora import default_corpus  # noqa: E402
from captum_layer_saliency.metrics import METRICS  # noqa: E402

PATHS = (
    "readme",
    "readme_gradient",
    "fitted",
    "auto",
    "per_example",
    "per_example_all",
    "input_x_gradient",
)


def test_sentences(n: int) -> list[str]:
    from captum_layer_saliency.data.sst2 import load_sst2

    return [t.strip() for t in load_sst2("test")["text"][:n]]


def build(clf: Any, wanted: list[str]) -> dict[str, Any]:
    """Each path's ``explain(ids, mask) -> (scores, target)``; ``fit_seconds`` for ``fitted``."""
    readme = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
    readme_gradient = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layer_method="gradient"
    )

    fitted = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
    fit_seconds = 0.0
    if "fitted" in wanted:
        texts = default_corpus("sst2", size=128)
        start = time.perf_counter()
        encoded = [clf.encode(texts[i : i + 32], truncation="truncate") for i in range(0, 128, 32)]
        fitted.fit_selector((e["input_ids"], e["attention_mask"]) for e in encoded)
        fit_seconds = time.perf_counter() - start

    stored = getattr(clf.model.config, CONFIG_KEY)
    delattr(clf.model.config, CONFIG_KEY)
    try:
        auto = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
    finally:
        setattr(clf.model.config, CONFIG_KEY, stored)
    per_example = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, selection="example"
    )
    per_example_all = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, selection="example", position_sample=None
    )
    ixg = get_method("input_x_gradient", clf)

    def dls(explainer: DecodedLayerSaliency) -> Any:
        def explain(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scores = explainer.attribute(ids, attention_mask=mask)
            assert isinstance(scores, torch.Tensor) and explainer.last_target_ is not None
            return scores, explainer.last_target_

        return explain

    def reference(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            target = clf.forward_func(ids, mask).argmax(-1)
        return ixg.attribute(ids, mask, target), target

    paths = {
        "readme": dls(readme),
        "readme_gradient": dls(readme_gradient),
        "fitted": dls(fitted),
        "auto": dls(auto),
        "per_example": dls(per_example),
        "per_example_all": dls(per_example_all),
        "input_x_gradient": reference,
    }
    explainers = {
        "readme": readme,
        "readme_gradient": readme_gradient,
        "fitted": fitted,
        "auto": auto,
    }
    return {
        "paths": {m: paths[m] for m in wanted},
        "explainers": {m: e for m, e in explainers.items() if m in wanted},
        "per_example": per_example,
        "objects": {
            **explainers,
            "per_example": per_example,
            "per_example_all": per_example_all,
        },
        "fit_seconds": fit_seconds,
    }


def paired_ci(diff: np.ndarray) -> list[float]:
    from captum_layer_saliency.compare.report import bootstrap_ci

    _, low, high = bootstrap_ci(diff, n_boot=2000, seed=0)
    return [low, high]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/default_path_sst2")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    clf = load_default("sst2")
    sentences = test_sentences(args.n)
    built = build(clf, list(dict.fromkeys([*args.paths, "input_x_gradient"])))
    paths = built["paths"]
    names = list(paths)
    seconds = {m: [] for m in names}
    comp = {m: [] for m in names}
    suff = {m: [] for m in names}
    layers: dict[str, list[Any]] = {"per_example": []}
    passes: dict[str, list[dict[str, float]]] = {m: [] for m in names}
    special_ids = torch.tensor(clf.special_token_ids)
    from tqdm.auto import tqdm

    with (out.with_suffix(".jsonl")).open("w", encoding="utf-8") as rows:
        for k, sentence in enumerate(tqdm(sentences, desc="sentences")):
            enc = clf.encode(sentence, truncation="truncate")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            order = names[k % len(names) :] + names[: k % len(names)]
            row: dict[str, Any] = {"index": k, "n_tokens": int(mask.sum())}
            for m in order:
                start = time.perf_counter()
                scores, target = paths[m](ids, mask)
                seconds[m].append(time.perf_counter() - start)
                special = torch.isin(ids, special_ids)
                c = METRICS["comprehensiveness"].fn(
                    clf.forward_func, ids, mask, scores, target, special
                )
                s = METRICS["sufficiency"].fn(clf.forward_func, ids, mask, scores, target, special)
                comp[m].append(float(c[0]))
                suff[m].append(float(s[0]))
                row[m] = {"seconds": seconds[m][-1], "comp": comp[m][-1], "suff": suff[m][-1]}
                cost = getattr(built["objects"].get(m), "last_cost_", None)
                if cost is not None:  # DLS's passes per example (full-pass equivalents)
                    passes[m].append(cost)
                    row[m].update(cost)
            if "per_example" in paths:
                layers["per_example"].append(built["per_example"].last_selected_[0][0])
            rows.write(json.dumps(row) + "\n")

    ref = sum(seconds["input_x_gradient"])
    summary: dict[str, Any] = {
        "command": "python benchmarks/bench_default_path.py " + " ".join(sys.argv[1:]),
        "n": len(sentences),
        "data": "SST-2 test (GLUE, unlabelled), first n sentences; target = prediction",
        "fit_seconds_fitted": built["fit_seconds"],
        "methods": {},
    }
    base = "fitted" if "fitted" in names else "readme"
    summary["paired_reference"] = base
    fitted_comp = np.array(comp[base])
    for m in names:
        c, s = np.array(comp[m]), np.array(suff[m])
        entry = {
            "comprehensiveness": float(np.nanmean(c)),
            "sufficiency": float(np.nanmean(s)),
            "cost_vs_input_x_gradient": sum(seconds[m]) / ref,
            # robust to a stalled call on a shared machine: the median per-sentence ratio
            "cost_median_vs_input_x_gradient": float(
                np.median(np.array(seconds[m]) / np.array(seconds["input_x_gradient"]))
            ),
            "cost_first_10_vs_input_x_gradient": sum(seconds[m][:10])
            / sum(seconds["input_x_gradient"][:10]),
        }
        if passes[m]:
            entry["forwards"] = float(np.mean([p["forwards"] for p in passes[m]]))
            entry["backwards"] = float(np.mean([p["backwards"] for p in passes[m]]))
        if m != base:
            diff = c - fitted_comp
            diff = diff[np.isfinite(diff)]
            entry["comp_minus_reference"] = float(diff.mean())
            entry["comp_minus_reference_ci95"] = paired_ci(diff)
        summary["methods"][m] = entry
    for m, explainer in built["explainers"].items():
        sel = explainer.selection_
        summary["methods"][m]["layer"] = sel.name if sel else None
        summary["methods"][m]["calibration"] = sel.calibration if sel else None
        summary["methods"][m]["coherence"] = sel.curve() if sel else None
    picks = layers["per_example"]
    if picks:
        summary["methods"]["per_example"]["layers_chosen"] = {
            str(i): picks.count(i) for i in sorted(set(picks))
        }
    with out.with_suffix(".json").open("w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
