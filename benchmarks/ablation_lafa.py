"""Ablation of LAFA's options on the first SST-2 dev sentences, scored by the SST word sentiment.

Zhang et al. (NAACL 2022) tuned LAFA on a held-apart set; so does this script: the first
``--n`` (default 100) SST-2 **dev** sentences, target = the predicted class, scored by the mean
Pearson r between the word attributions and the SST word sentiments (their Table 3 measure,
:mod:`captum_layer_saliency.metrics.sentiment_correlation`). Starting from the paper's settings
(SmoothGrad base, sum of squares, layer 2, 10 neighbours, cut-off at the 0.39 distance
quantile, same class, lambda = 0.44, indicator kernel on word embeddings), one option moves at a
time: the layer of the neighbour index, lambda, the cut-off epsilon, same-class, the base, and
this project's first variant (``aggregation="weighted_mean"``, ``neighbours="encoder"``).
The base itself (lambda = 0) is in every table. The layer/lambda/epsilon grid runs on the cheap
gradient base (the neighbours' base scores are shared between configurations with the same
base, so a lambda step costs no gradient); the chosen setting is then run with each base.

Rows are appended to ``<out>/rows.jsonl`` (resumable); ``<out>/summary.md`` holds the table
(mean, 95 % bootstrap CI, paired difference with the base). Confirm the chosen setting on test
with ``benchmarks/sst_word_sentiment.py --methods lafa --lafa key=value ... --name lafa_tuned``.

    python benchmarks/ablation_lafa.py                    # 100 dev sentences
    python benchmarks/ablation_lafa.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

from sst_word_sentiment import load_rows, run_method, summarise  # noqa: E402

from captum_layer_saliency.compare.methods.lafa import lafa_for_model  # noqa: E402
from captum_layer_saliency.compare.methods.registry import ExplainerAttributor  # noqa: E402
from captum_layer_saliency.data.sst_words import load_sst_word_sentiment  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "lafa_ablation"


def name_of(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items())


def grid(base: str) -> list[dict[str, Any]]:
    """One option at a time around the paper's setting, on ``base``."""
    configs: list[dict[str, Any]] = [{"base": base, "lam": 0.0}, {"base": base}]
    configs += [{"base": base, "layer": layer} for layer in (0, 1, 3, 4, 6)]
    configs += [{"base": base, "lam": lam} for lam in (0.1, 1.0, 3.0, 10.0)]
    configs += [{"base": base, "epsilon": eps} for eps in (0.1, 0.2, 0.6, 1.0)]
    configs += [{"base": base, "k": k} for k in (3, 25)]
    configs += [{"base": base, "same_class": False}]
    configs += [{"base": base, "kernel": "exp", "min_similarity": 0.5}]
    configs += [{"base": base, "aggregation": "weighted_mean"}]
    configs += [{"base": base, "neighbours": "encoder"}]
    configs += [{"base": base, "neighbours": "encoder", "aggregation": "weighted_mean"}]
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--grid-base", default="saliency")
    parser.add_argument(
        "--bases",
        nargs="*",
        default=["smoothgrad", "input_x_gradient"],
        help="other bases run at --chosen (with lam=0 too)",
    )
    parser.add_argument("--chosen", nargs="*", default=[], help="key=value: the chosen setting")
    parser.add_argument(
        "--bases-n", type=int, default=None, help="sentences for the other bases (default --n)"
    )
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = args.out / "rows.jsonl"
    done = load_rows(rows)
    if not args.summary_only:
        from captum_layer_saliency.zoo.load import load_default

        dataset, _ = load_sst_word_sentiment("validation")
        examples = [dict(r) for r in dataset][: args.n]
        clf = load_default("sst2")
        chosen = {k: json.loads(v) for k, v in (c.split("=", 1) for c in args.chosen)}
        configs = [(c, args.n) for c in grid(args.grid_base)]
        for base in args.bases:
            n = args.bases_n or args.n
            configs += [({"base": base, "lam": 0.0}, n), ({"base": base, **chosen}, n)]
        caches: dict[str, dict[Any, Any]] = {}
        for config, n in configs:
            name = name_of(config)
            if all(e["idx"] in done.get(name, {}) for e in examples[:n]):
                continue
            options = dict(config)
            if options.get("neighbours") == "encoder" and options.get("aggregation") is None:
                options.setdefault("min_similarity", 0.999)
            explainer = lafa_for_model(clf, task="sst2", progress=True, **options)
            # Share the neighbours' base scores between configurations with the same base.
            explainer._cache = caches.setdefault(str(config["base"]), {})
            method = ExplainerAttributor(clf, explainer)
            run_method(name, method, clf, examples[:n], done.setdefault(name, {}), rows, 16)
    summary = summarise(done, name_of({"base": args.grid_base, "lam": 0.0}))
    (args.out / "summary.md").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
