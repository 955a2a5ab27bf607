"""How many real tokens choose the layer: the auto-calibration budget, measured.

    python benchmarks/calibration_budget.py [--texts sst2=1024 ag_news=512]
        [--out benchmarks/results/calibration_budget.json]

For each default model, every layer's ``self_recovery`` coherence is measured per text on
unlabelled training texts (the task's default corpus, seed 0; forward passes only). The
elbow rule, with the last block excluded (its gradient does not reach the word tokens), is
applied to all of them (the reference choice) and to random prefixes holding ``budget`` word
tokens (300 shuffles per budget, seed 0). The table gives how often a prefix picks the
reference layer. ``DEFAULT_CALIBRATION_TOKENS`` is the smallest budget at which both models
agree in at least 99 % of shuffles, rounded up.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captum_layer_saliency import LayerCoherenceSelector, load_default  # noqa: E402
from captum_layer_saliency.attr import layer_outputs  # noqa: E402
from captum_layer_saliency.attr.decoding import candidate_mask, decode_top1  # noqa: E402
from captum_layer_saliency.data.corpora import default_corpus  # noqa: E402
from captum_layer_saliency.models.surgery import find_model_parts  # noqa: E402

BUDGETS = (250, 500, 1000, 1500, 2000, 3000, 4000)


@torch.no_grad()
def per_text_hits(task: str, n: int) -> list[dict[str, Any]]:
    clf = load_default(task)
    texts = default_corpus(task, size=n)
    layers = find_model_parts(clf.model).layers
    rows = []
    for i in range(0, len(texts), 16):
        enc = clf.encode(texts[i : i + 16], truncation="truncate")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        hidden = layer_outputs(clf.forward_func, layers, ids, (mask,))
        words = candidate_mask(ids, mask, clf.special_token_ids)
        hits = torch.stack(
            [((decode_top1(h, ids, clf.lm_head) == ids) & words).sum(1) for h in hidden], 1
        )
        rows += [{"n": int(words[b].sum()), "hits": hits[b].tolist()} for b in range(len(ids))]
    return rows


def agreement(rows: list[dict[str, Any]], n_layers: int) -> dict[str, Any]:
    selector = LayerCoherenceSelector(rule="elbow")
    selector.exclude([n_layers - 1])

    def pick(subset: list[dict[str, Any]]) -> int:
        total = sum(r["n"] for r in subset)
        curve = [sum(r["hits"][k] for r in subset) / total for k in range(n_layers)]
        return selector.select(torch.tensor(curve))[0][0]

    reference = pick(rows)
    rng = random.Random(0)
    out = {}
    for budget in BUDGETS:
        same = 0
        for _ in range(300):
            order = rows[:]
            rng.shuffle(order)
            prefix, seen = [], 0
            for r in order:
                prefix.append(r)
                seen += r["n"]
                if seen >= budget:
                    break
            same += pick(prefix) == reference
        out[str(budget)] = same / 300
    return {"reference_layer": reference, "tokens": sum(r["n"] for r in rows), "agreement": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", nargs="+", default=["sst2=1024", "ag_news=512"])
    parser.add_argument("--out", default="benchmarks/results/calibration_budget.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {}
    for item in args.texts:
        task, n = item.split("=")
        rows = per_text_hits(task, int(n))
        report[task] = {"texts": int(n), **agreement(rows, len(rows[0]["hits"]))}
        print(task, json.dumps(report[task]))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
