"""DLS against IG-25 and Input x Gradient on a SmolLM2-135M-shaped classifier, at batch 1 and 32,
on whatever device is given (the GPU check of issue 24):

    python benchmarks/gpu_timing.py --device cuda --out gpu_timing.json
    python benchmarks/gpu_timing.py --device cuda --model smollm2_sst2   # the real classifier

Without ``--model`` the classifier is built from SmolLM2-135M's configuration (Llama, 30 blocks,
hidden 576, 9 heads, 3 key-value heads, vocabulary 49,152) with random weights, so the check
needs no download and no 100 MB checkpoint: **the time of these methods does not depend on the
weights' values**, only on the shapes. DLS runs at block 2 (the layer the SmolLM2 defaults
store), with the class named (as ``compare`` names it), eager attention (as the defaults load).
The inputs are random token ids of ``--seq-len`` tokens (64 by default, about an AG News text),
all real.

Methods, each the package's or Captum's own: ``dls`` (DLS's default: one step of integrated
gradients at block 2), ``integrated_gradients`` (Captum's ``LayerIntegratedGradients`` at the
embeddings, 25 steps, [PAD] baseline, in chunks of at most 4,096 tokens as the registry's) and
``input_x_gradient`` (Captum's ``LayerGradientXActivation`` at the embeddings). Time: the median
of ``--repeats`` interleaved calls after one warm-up, with the device synchronised; reported per
batch and as a ratio to Input x Gradient at the same batch size, measured in the same run. The
JSON records the device's name, torch's and CUDA's versions, and the dtype.

On a machine with PyTorch and transformers but without the package's other needs (the lent GPU
machines lack only Captum), carry Captum's wheel and run from the repository's root:

    pip download --no-deps captum==0.9.0 -d .whl
    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 benchmarks/gpu_timing.py --device cuda --out gpu_timing.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: SmolLM2-135M's shape (``HuggingFaceTB/SmolLM2-135M-Instruct``'s config.json).
SMOLLM2_SHAPE: dict[str, Any] = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "pad_token_id": 2,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
#: The block the SmolLM2 defaults store as their layer (BENCHMARKS.md section 9).
DLS_LAYER = 2


def build_model(
    model_dir: str | None, shape: dict[str, Any], num_labels: int
) -> tuple[Any, nn.Module]:
    """The classifier (eval, eager attention) and an LM head of its vocabulary."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    if model_dir:
        model: Any = LlamaForSequenceClassification.from_pretrained(
            model_dir, attn_implementation="eager"
        )
    else:
        torch.manual_seed(0)
        config: Any = LlamaConfig(**shape)
        config.num_labels = num_labels
        config._attn_implementation = "eager"
        model = LlamaForSequenceClassification(config)
    model.eval()
    hidden, vocab = model.config.hidden_size, model.config.vocab_size
    head = nn.Linear(hidden, vocab, bias=False)
    head.weight = model.get_input_embeddings().weight  # tied, as SmolLM2's
    return model, head


def methods(model: Any, head: nn.Module, pad_id: int) -> dict[str, Callable[..., Tensor]]:
    """Each method as ``f(ids, mask, target) -> attributions``."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    from captum_layer_saliency import DecodedLayerSaliency
    from captum_layer_saliency.attr.gradient_saliency import auto_internal_batch_size

    dls = DecodedLayerSaliency.for_model(model, head, layers=DLS_LAYER, pad_token_id=pad_id)
    embeddings = model.get_input_embeddings()

    def forward(ids: Tensor, mask: Tensor) -> Tensor:
        return model(input_ids=ids, attention_mask=mask).logits

    ig = LayerIntegratedGradients(forward, embeddings)
    ixg = LayerGradientXActivation(forward, embeddings)

    def run_dls(ids: Tensor, mask: Tensor, target: Tensor) -> Tensor:
        return dls.attribute(ids, target=target, attention_mask=mask)

    def run_ig(ids: Tensor, mask: Tensor, target: Tensor) -> Tensor:
        baseline = torch.full_like(ids, pad_id)
        rows = auto_internal_batch_size(ids)
        return ig.attribute(
            ids, baseline, target, (mask,), n_steps=25, internal_batch_size=rows
        ).sum(-1)

    def run_ixg(ids: Tensor, mask: Tensor, target: Tensor) -> Tensor:
        return ixg.attribute(ids, target, (mask,)).sum(-1)

    return {"dls": run_dls, "integrated_gradients": run_ig, "input_x_gradient": run_ixg}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(
    runs: dict[str, Callable[..., Tensor]],
    ids: Tensor,
    mask: Tensor,
    target: Tensor,
    repeats: int,
) -> dict[str, float]:
    """Median seconds per call of each method, interleaved, after one warm-up call each."""
    device = ids.device
    for run in runs.values():
        run(ids, mask, target)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            _synchronise(device)
            t0 = time.perf_counter()
            run(ids, mask, target)
            _synchronise(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def device_info(device: torch.device) -> dict[str, Any]:
    """The device's name and the software's versions."""
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = "cpu"
        info["threads"] = torch.get_num_threads()
    return info


def main(argv: list[str] | None = None, shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the timing and write (and return) its JSON record (``shape``: another config's
    fields, for the tests' tiny model)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--model",
        help="a saved LlamaForSequenceClassification (default: SmolLM2's shape, random weights)",
    )
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--out", default="gpu_timing.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    model, head = build_model(args.model, shape or SMOLLM2_SHAPE, num_labels=2)
    dtype = getattr(torch, args.dtype)
    model.to(device=device, dtype=dtype)
    pad_id = int(model.config.pad_token_id if model.config.pad_token_id is not None else 0)
    runs = methods(model, head, pad_id)
    record: dict[str, Any] = {
        **device_info(device),
        "dtype": args.dtype,
        "model": args.model
        or ("SmolLM2-135M shape" if shape is None else "given shape") + ", random weights",
        "blocks": model.config.num_hidden_layers,
        "dls_layer": DLS_LAYER,
        "seq_len": args.seq_len,
        "repeats": args.repeats,
        "batches": {},
    }
    generator = torch.Generator().manual_seed(0)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        low = max(pad_id, 3) + 1
        ids = torch.randint(
            low, model.config.vocab_size, (batch, args.seq_len), generator=generator
        )
        ids, mask = ids.to(device), torch.ones_like(ids, device=device)
        with torch.no_grad():
            target = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        seconds = time_methods(runs, ids, mask, target, args.repeats)
        base = seconds["input_x_gradient"]
        record["batches"][str(batch)] = {
            name: {"seconds": round(s, 6), "x_input_x_gradient": round(s / base, 3)}
            for name, s in seconds.items()
        }
        print(f"batch {batch}: " + ", ".join(f"{n} {s / base:.2f}x" for n, s in seconds.items()))
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out} ({record['name']})")
    return record


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
