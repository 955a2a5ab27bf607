"""Quality against cost: DLS and the field's cheap explainers under both protocols (issue 23).

Every method explains the same batches for the predicted class of the default model; each
explanation is scored under ERASER (tokens deleted, bins 1/5/10/20/50 %) and under Edin et al.'s
protocol (words masked by [MASK] along the whole curve, NAOPC with exact bounds up to 12 words
and beam search above; :mod:`captum_layer_saliency.metrics.edin`):

    python benchmarks/frontier.py --task sst2 --split test --stop 100
    python benchmarks/frontier.py --task sst2 --split test --stop 200 --max-words 10  # short set
    python benchmarks/frontier.py --task ag_news --start 200 --stop 1200
    python benchmarks/frontier.py --task ag_news --start 200 --stop 296 --no-bounds  # no NAOPC
    python benchmarks/frontier.py --task hatexplain --split test

Tuning sets (choose DLS settings there only): SST-2 validation, AG News rows 0-199. Cost: seconds
per example relative to Input x Gradient *from the same run*, and forward/backward passes per
example (:class:`~captum_layer_saliency.models.passes.PassCounter`). Rows are appended batch by
batch to ``<out>/rows.jsonl`` (rerun to resume; ``--summary-only`` to re-summarise); the summary,
with paired 95 % bootstrap CIs (scipy) of DLS minus each method, goes to ``<out>/summary.json``,
``summary.md`` and ``frontier.png`` (quality against cost). ``--pool DIR... --out POOLED``
summarises slices of one dataset, run separately, together.

``--no-bounds`` skips NAOPC's per-example bounds (the dearest part: 2^n forwards, or about
10 n^2 by beam search, per text; an AG News text of 40 words costs ~16,000) and scores Edin et
al.'s unnormalised comprehensiveness and sufficiency only (2 n forwards per method and text).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))
import resumable  # noqa: E402  (sets the offline switches)

COST_REFERENCE = "input_x_gradient"
#: name -> (registry method, options)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "dls": ("dls", {}),
    "dls_gradient": ("dls", {"layer_method": "gradient"}),
    # the default with the [MASK] baseline at the layer (issue 23's "push DLS toward the
    # frontier"; the metrics of Edin et al. replace words with [MASK])
    "dls_mask": ("dls", {"layer_baseline": "mask"}),
    "integrated_gradients": ("integrated_gradients", {}),
    "input_x_gradient": ("input_x_gradient", {}),
    "gim": ("gim", {}),
    "attnlrp": ("attnlrp", {}),
    "dls_lrp": ("dls_lrp", {}),
    "gradient_shap": ("gradient_shap", {}),
    "lime": ("lime", {}),
    "occlusion": ("occlusion", {}),
    "loo": ("loo", {}),
    "decompx": ("decompx", {}),
    "random": ("random", {}),
}
REFERENCES = ("dls", "dls_gradient", "dls_lrp", "dls_mask")
METRICS = (
    "eraser_comprehensiveness",
    "eraser_sufficiency",
    "edin_comprehensiveness",
    "edin_sufficiency",
    "naopc_comprehensiveness",
    "naopc_sufficiency",
)
HIGHER_IS_BETTER = {m: "comprehensiveness" in m for m in METRICS}
#: Rows are explained in chunks of this many consecutive rows, so a prefix of a run is a prefix
#: of the data (not its longest texts).
CHUNK = 32


def _scores(
    clf: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    special: torch.Tensor,
    target: Any,
    with_bounds: bool = True,
):
    """Both protocols' metrics of ``scores`` -> a function of the method's scores (NAOPC is
    NaN without the bounds)."""
    from captum_layer_saliency.metrics import aopc_curves
    from captum_layer_saliency.metrics.edin import edin_bounds, edin_curves, replacement_token_id
    from captum_layer_saliency.metrics.normalised import normalise_aopc
    from captum_layer_saliency.models.words import word_index

    forward = clf.forward_func
    pad = clf.tokenizer.pad_token_id
    edin = {
        "word_ids": word_index(clf.tokenizer, ids, mask),
        "mask_token_id": replacement_token_id(clf.tokenizer),
    }
    bounds = edin_bounds(forward, ids, mask, target, special, **edin) if with_bounds else None

    def metrics(scores: torch.Tensor) -> dict[str, list[float]]:
        eraser = aopc_curves(forward, ids, mask, scores, target, special, pad_token_id=pad)
        curves = edin_curves(forward, ids, mask, scores, target, special, **edin)
        out: dict[str, list[float]] = {}
        for key in ("comprehensiveness", "sufficiency"):
            value = curves[key].nanmean(-1)
            out[f"eraser_{key}"] = eraser[key].mean(-1).tolist()
            out[f"edin_{key}"] = value.tolist()
            out[f"naopc_{key}"] = (
                normalise_aopc(value, bounds[key].to(value)).tolist()
                if bounds is not None
                else [float("nan")] * len(value)
            )
        return out

    return metrics, bounds["exact"].tolist() if bounds is not None else [False] * len(ids)


def _spec(name: str) -> tuple[str, dict[str, Any]]:
    """A method's registry name and options: :data:`METHODS`, or DLS fixed at one layer
    (``dls_layer<L>``: the default layer method at layer L, 0 = embeddings)."""
    if name in METHODS:
        return METHODS[name]
    if re.fullmatch(r"dls_layer\d+", name):
        return name, {}
    raise SystemExit(f"unknown method {name!r}: choose from {', '.join(METHODS)} or dls_layer<L>")


def run(args: argparse.Namespace) -> None:
    """Explain and score every batch not yet in ``rows.jsonl``."""
    from captum_layer_saliency import load_default
    from captum_layer_saliency.compare.methods.registry import get_method

    clf = load_default(args.task)
    texts = resumable.load_texts(args.task, args.split, args.start, args.stop)
    rows_index = [args.start + i for i in range(len(texts))]
    if args.max_words:  # Edin et al.'s "short" sets: texts whose NAOPC bounds are exact
        kept = [i for i, t in enumerate(texts) if len(t.split()) <= args.max_words]
        texts, rows_index = [texts[i] for i in kept], [rows_index[i] for i in kept]
    names = args.methods.split(",") if args.methods else list(METHODS)
    methods = {}
    for n in names:
        registry_name, options = _spec(n)
        methods[n] = get_method(registry_name, clf, **options)
    for method in methods.values():
        prepare = getattr(method, "prepare", None)
        if callable(prepare):
            prepare([])  # the default models carry DLS's layer choice
    config = {k: v for k, v in vars(args).items() if k != "summary_only"}
    if not args.no_bounds:
        del config["no_bounds"]  # so runs from before the switch still resume
    config.update(methods=names, n_texts=len(texts))
    keys = ("task", "split", "start", "stop", "methods", "batch_size", "max_words", "no_bounds")
    rows_path, done = resumable.open_rows(Path(args.out), config, keys)
    plan = resumable.plan_batches(texts, CHUNK, args.batch_size)
    with rows_path.open("a") as sink:
        for batch_no, positions in enumerate(tqdm(plan, desc=args.task)):
            if batch_no in done:
                continue
            ids, mask, special, target = resumable.encode_batch(clf, [texts[i] for i in positions])
            metrics, exact = _scores(clf, ids, mask, special, target, not args.no_bounds)
            row: dict[str, Any] = {
                "batch": batch_no,
                "index": [rows_index[i] for i in positions],
                "n_tokens": mask.sum(-1).tolist(),
                "exact_bounds": exact,
                "methods": {},
            }
            for name, method in methods.items():
                scores, cost = resumable.timed_scores(clf, method, ids, mask, special, target)
                with torch.no_grad():
                    values = metrics(scores)
                row["methods"][name] = {**cost, **values}
            resumable.append_row(sink, row)


def pool(runs: list[Path], out: Path) -> None:
    """Write the rows of several runs (slices of one dataset) as one run in ``out``.

    Keeps the methods every run has; refuses runs of different tasks or splits, and an example
    that two runs both explained. Each batch keeps its own cost measurement (seconds relative to
    Input x Gradient stay within-run ratios when every run has Input x Gradient).
    """
    configs = [json.loads((r / "config.json").read_text()) for r in runs]
    if len({(c["task"], c.get("split")) for c in configs}) != 1:
        raise SystemExit("--pool: the runs are of different tasks or splits")
    rows = [[json.loads(x) for x in (r / "rows.jsonl").read_text().splitlines() if x] for r in runs]
    common = [m for m in rows[0][0]["methods"] if all(m in rs[0]["methods"] for rs in rows)]
    seen: set[int] = set()
    pooled = []
    for run_rows in rows:
        for row in run_rows:
            if seen & set(row["index"]):
                raise SystemExit(f"--pool: examples {sorted(seen & set(row['index']))} twice")
            seen |= set(row["index"])
            methods = {m: row["methods"][m] for m in common}
            pooled.append({**row, "batch": len(pooled), "methods": methods})
    out.mkdir(parents=True, exist_ok=True)
    config = {**configs[0], "pooled_from": [str(r) for r in runs], "methods": common}
    resumable.write_atomic(out / "config.json", json.dumps(config, indent=1))
    resumable.write_atomic(out / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in pooled))


def _paired_ci(diff: np.ndarray) -> tuple[float, float, float]:
    diff = diff[np.isfinite(diff)]
    if diff.size < 2:
        return float("nan"), float("nan"), float("nan")
    res = stats.bootstrap(
        (diff,), np.mean, n_resamples=2000, method="percentile", random_state=0
    ).confidence_interval
    return float(diff.mean()), float(res.low), float(res.high)


def summarise(out: Path) -> dict[str, Any]:
    """Means, cost relative to Input x Gradient, paired CIs of DLS minus each method."""
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line]
    names = list(rows[0]["methods"])
    per: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        cols = {m: [] for m in (*METRICS, "seconds", "forwards", "backwards")}
        for row in rows:
            r = row["methods"][name]
            n = len(row["index"])
            for m in METRICS:
                cols[m] += [np.nan if v is None else v for v in r[m]]
            for m in ("seconds", "forwards", "backwards"):
                cols[m] += [r.get(m, np.nan)] * n
        per[name] = {m: np.asarray(v, dtype=np.float64) for m, v in cols.items()}
    ref_seconds = per[COST_REFERENCE]["seconds"].mean() if COST_REFERENCE in per else np.nan
    summary: dict[str, Any] = {
        "n": len(per[names[0]]["seconds"]),
        "exact_bounds": int(sum(sum(r["exact_bounds"]) for r in rows)),
        "methods": {},
    }
    for name in names:
        entry = {m: float(np.nanmean(per[name][m])) for m in METRICS}
        entry["seconds"] = float(per[name]["seconds"].mean())
        entry["cost_vs_ixg"] = float(entry["seconds"] / ref_seconds)
        entry["forwards"] = float(np.nanmean(per[name]["forwards"]))
        entry["backwards"] = float(np.nanmean(per[name]["backwards"]))
        for ref in REFERENCES:
            if ref in per and ref != name:
                entry[f"{ref}_minus"] = {m: _paired_ci(per[ref][m] - per[name][m]) for m in METRICS}
        summary["methods"][name] = entry
    resumable.write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    resumable.write_atomic(out / "summary.md", markdown(summary))
    _plot(summary, out / "frontier.png")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables (one per protocol)."""
    lines = [f"n = {summary['n']} (exact NAOPC bounds for {summary['exact_bounds']})", ""]
    for title, keys in (
        ("ERASER", ("eraser_comprehensiveness", "eraser_sufficiency")),
        ("Edin", ("edin_comprehensiveness", "edin_sufficiency", "naopc_comprehensiveness")),
    ):
        head = " | ".join(k.split("_", 1)[1] if title == "ERASER" else k for k in keys)
        lines += [
            f"**{title}**",
            "",
            f"| method | cost vs IxG | {head} | DLS - method ({keys[0]}) [95 % CI] "
            f"| dls_lrp - method [95 % CI] |",
            "|---|---|" + "---|" * len(keys) + "---|---|",
        ]
        ordered = sorted(summary["methods"].items(), key=lambda kv: -kv[1][keys[0]])
        for name, e in ordered:
            diffs = []
            for ref in ("dls", "dls_lrp"):
                ci = e.get(f"{ref}_minus", {}).get(keys[0])
                ok = ci is not None and np.isfinite(ci[0])
                diffs.append(f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]" if ok else "—")
            vals = " | ".join(f"{e[k]:.3f}" for k in keys)
            lines.append(f"| {name} | {e['cost_vs_ixg']:.2f}x | {vals} | {' | '.join(diffs)} |")
        lines.append("")
    return "\n".join(lines)


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    values = [e["naopc_comprehensiveness"] for e in summary["methods"].values()]
    edin = "naopc_comprehensiveness" if np.isfinite(values).any() else "edin_comprehensiveness"
    for ax, key in zip(axes, ("eraser_comprehensiveness", edin), strict=True):
        for name, e in summary["methods"].items():
            ax.scatter(e["cost_vs_ixg"], e[key])
            ax.annotate(name, (e["cost_vs_ixg"], e[key]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per example / Input x Gradient's (log)")
        ax.set_ylabel(key.replace("_", " "))
    fig.suptitle(f"quality against cost (n = {summary['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Parse the arguments, run (unless ``--summary-only``) and summarise."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("sst2", "ag_news", "hatexplain"), default="sst2")
    p.add_argument("--split")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int)
    p.add_argument("--methods", help=f"comma-separated, from {', '.join(METHODS)}, or dls_layer<L>")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--max-words",
        type=int,
        help="keep only the texts of at most this many (whitespace) words, as Edin et al.'s "
        "short sets (exact NAOPC bounds up to 12 words; beam search costs ~10 n^2 forwards)",
    )
    p.add_argument(
        "--no-bounds",
        action="store_true",
        help="skip NAOPC's per-example bounds (score Edin's comprehensiveness and sufficiency "
        "only): for long texts, whose beam-search bounds cost ~10 n^2 forwards each",
    )
    p.add_argument("--out")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument(
        "--pool",
        nargs="+",
        metavar="DIR",
        help="summarise these runs' rows together into --out (same task and split; the methods "
        "they all ran; each example once)",
    )
    args = p.parse_args()
    if args.out is None:
        args.out = f"benchmarks/results/frontier/{args.task}_{args.split}_{args.start}_{args.stop}"
    torch.set_num_threads(1)
    if args.pool:
        pool([Path(d) for d in args.pool], Path(args.out))
    elif not args.summary_only:
        run(args)
    print(markdown(summarise(Path(args.out))))


if __name__ == "__main__":
    main()
