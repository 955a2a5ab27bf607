"""Ablation of LAFA's options on the default classifiers: faithfulness and cost.

For each task, a seeded sample of evaluation sentences is explained (target = the predicted
class) by LAFA over a grid of ``k`` (neighbours), ``sigma`` (kernel width), the token
representation and the base gradient method, and by plain Input×Gradient on the same batches in
the same run. Every configuration is scored with ERASER comprehensiveness and sufficiency (AOPC,
tokens deleted) and timed; ``time ratio`` is LAFA's attribution time over Input×Gradient's.

Results are saved after every configuration to ``benchmarks/results/lafa_ablation.json``, so a
rerun resumes where the last one stopped (delete the file, or pass ``--fresh``, to start over);
the markdown table goes to ``benchmarks/results/lafa_ablation.md`` and to stdout.

    HF_HUB_OFFLINE=1 python benchmarks/ablation_lafa.py            # SST-2 (and AG News if built)
    HF_HUB_OFFLINE=1 python benchmarks/ablation_lafa.py --tasks sst2 --n 150
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from captum_layer_saliency import defaults  # noqa: E402
from captum_layer_saliency.attr.lafa import DEFAULTS, lafa_factory  # noqa: E402
from captum_layer_saliency.baselines import get_method  # noqa: E402
from captum_layer_saliency.data.tasks import get_task  # noqa: E402
from captum_layer_saliency.metrics import comprehensiveness, sufficiency  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EVAL_SPLITS = {"sst2": "validation", "ag_news": "heldout"}
BASELINE = "input_x_gradient"


def grid() -> list[dict[str, Any]]:
    """The configurations, ``k = 0`` (the base method itself) first for each base.

    The full ``k x sigma x token_repr`` grid runs on Input×Gradient; Saliency gets its base,
    ``k = 5`` at both widths and ``k = 3, sigma = 0.1`` with both representations. Integrated
    Gradients as a base costs ``(1 + k) x 25`` passes per example (about 150x Input×Gradient at
    ``k = 5``), so it is not in the grid: it is supported and tested (``k = 0`` is exactly IG),
    but not a default candidate.
    """
    configs: list[dict[str, Any]] = [
        {"base": "input_x_gradient", "k": 0, "sigma": 0.1, "token_repr": "embedding"}
    ]
    for k in (3, 5, 10):
        for sigma in (0.1, 0.5):
            for token_repr in ("embedding", "contextual"):
                configs.append(
                    {"base": "input_x_gradient", "k": k, "sigma": sigma, "token_repr": token_repr}
                )
    configs.append({"base": "saliency", "k": 0, "sigma": 0.1, "token_repr": "embedding"})
    for sigma in (0.1, 0.5):
        configs.append({"base": "saliency", "k": 5, "sigma": sigma, "token_repr": "embedding"})
    for token_repr in ("embedding", "contextual"):
        configs.append({"base": "saliency", "k": 3, "sigma": 0.1, "token_repr": token_repr})
    return configs


def config_name(config: dict[str, Any]) -> str:
    if config["k"] == 0:
        return f"{config['base']} (k=0)"
    return f"{config['base']} k={config['k']} σ={config['sigma']} {config['token_repr']}"


def available(task: str) -> bool:
    """Whether the default model of ``task`` loads without a (15-minute) build."""
    for directory in (defaults.resolve_cache_dir(), defaults.PACKAGED_DIR):
        manifest = defaults.read_manifest(directory)
        if manifest and all(n in manifest.get("entries", {}) for n in (defaults.HEAD, task)):
            return True
    return False


def save(path: Path, results: dict[str, Any]) -> None:
    defaults.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(var / len(finite))


def run_task(task: str, n: int, batch_size: int, results: dict[str, Any], path: Path) -> None:
    from tqdm.auto import tqdm

    clf = defaults.load_default(task)
    data = get_task(task).load(EVAL_SPLITS[task])
    rows = sorted(random.Random(0).sample(range(len(data)), min(n, len(data))))
    texts = [str(data[i]["text"]) for i in rows]
    texts.sort(key=len)  # short batches pad little
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = clf.encode(texts[start : start + batch_size], truncation="truncate")
        with torch.no_grad():
            target = clf.forward_func(enc["input_ids"], enc["attention_mask"]).argmax(-1)
        batches.append((texts[start : start + batch_size], enc, target))

    state = results.setdefault(task, {"n": len(texts), "configs": {}})
    if state["n"] != len(texts):
        raise SystemExit(f"{path} holds a run with n={state['n']}; pass --fresh to start over")

    reference = get_method(BASELINE, clf)
    pad = int(clf.tokenizer.pad_token_id)

    def evaluate(name: str, make: Any, config: dict[str, Any]) -> None:
        """Score and time one configuration (or only re-time it, if it has scores already).

        Input×Gradient runs on each batch right before the configuration, so the time ratio
        compares the two under the same machine load.
        """
        record = state["configs"].get(name)
        if record is not None and "ixg_seconds" in record:
            return
        attributor = make()
        comp: list[float] = []
        suff: list[float] = []
        seconds = ixg_seconds = 0.0
        for _texts, enc, target in tqdm(batches, desc=f"{task}: {name}", leave=False):
            ids, mask = enc["input_ids"], enc["attention_mask"]
            start = time.perf_counter()
            reference.attribute(ids, mask, target)
            ixg_seconds += time.perf_counter() - start
            start = time.perf_counter()
            scores = attributor.attribute(ids, mask, target)
            seconds += time.perf_counter() - start
            if record is None:
                with torch.no_grad():
                    args = (clf.forward_func, ids, mask, scores, target, clf.special_mask(ids))
                    comp += comprehensiveness(*args, pad_token_id=pad).tolist()
                    suff += sufficiency(*args, pad_token_id=pad).tolist()
        if record is None:
            record = {**config, "comprehensiveness": comp, "sufficiency": suff}
        record.update(seconds=seconds, ixg_seconds=ixg_seconds)
        state["configs"][name] = record
        save(path, results)

    t0 = time.perf_counter()
    lafa_factory(clf, task=task, k=1)  # builds (or loads) the cached reference index
    state.setdefault("index_seconds_first_call", time.perf_counter() - t0)
    evaluate(BASELINE + " (registry)", lambda: reference, {"base": BASELINE})
    for config in tqdm(grid(), desc=f"{task}: configurations"):
        evaluate(config_name(config), lambda c=config: lafa_factory(clf, task=task, **c), config)


def table(task: str, state: dict[str, Any]) -> str:
    configs = state["configs"]
    lines = [
        f"**{task}** ({state['n']} sentences; target = predicted class; AOPC over bins "
        "1/5/10/20/50 %, tokens deleted; mean ± s.e.)",
        "",
        "| configuration | comprehensiveness ↑ | sufficiency ↓ | Δcomp vs its base | time ratio |",
        "|---|---|---|---|---|",
    ]
    for name, row in configs.items():
        comp, comp_se = mean_se(row["comprehensiveness"])
        suff, suff_se = mean_se(row["sufficiency"])
        base_row = configs.get(f"{row.get('base')} (k=0)")
        delta = "—"
        if base_row is not None and row.get("k", 0) > 0:
            diffs = [
                a - b
                for a, b in zip(
                    row["comprehensiveness"], base_row["comprehensiveness"], strict=True
                )
                if a is not None and b is not None
            ]
            d, d_se = mean_se(diffs)
            delta = f"{d:+.3f} ± {d_se:.3f}"
        lines.append(
            f"| {name} | {comp:.3f} ± {comp_se:.3f} | {suff:.3f} ± {suff_se:.3f} | {delta} | "
            f"{row['seconds'] / row.get('ixg_seconds', math.nan):.1f}× |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["sst2", "ag_news"])
    parser.add_argument("--n", type=int, default=120, help="sentences per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "lafa_ablation.json")
    parser.add_argument("--fresh", action="store_true", help="ignore saved results")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {}
    if args.out.is_file() and not args.fresh:
        results = json.loads(args.out.read_text())
    results["defaults"] = DEFAULTS
    for task in args.tasks:
        if not available(task):
            print(f"skipping {task}: its default model is not built", file=sys.stderr)
            continue
        run_task(task, args.n, args.batch_size, results, args.out)
    save(args.out, results)
    # Every task ablated so far, not only this run's: the file is the record of all of them.
    done = [task for task in results if task != "defaults"]
    markdown = "\n\n".join(table(task, results[task]) for task in done)
    defaults.atomic_write(args.out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown + "\n"))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
