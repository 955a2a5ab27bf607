"""Building the SmolLM2 defaults: the lower blocks' states cached once, the top blocks trained.

Only the top ``top_blocks`` blocks get LoRA adapters, so the hidden states entering them never
change during training: :func:`build_smollm2` runs the frozen lower blocks once per text (a full
forward, the dominant cost on a CPU), caches the states under the cache directory's
``smollm2_states/``, and each step runs only the top blocks, the final norm and the score head
on them. Right padding under the causal mask means the real tokens never see the padding, so the
cached states are those of each text alone. Used by :mod:`captum_layer_saliency.zoo.build`
(``build-defaults --backbone smollm2``); loading is :mod:`captum_layer_saliency.zoo.smollm2`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency._utils import atomic_write, resolve_cache_dir, sha256_file
from captum_layer_saliency.zoo._lora import add_lora, lora_state
from captum_layer_saliency.zoo._manifest import PACKAGED_DIR
from captum_layer_saliency.zoo.smollm2 import (
    SMOLLM2_LABELS,
    SMOLLM2_MANIFEST,
    SmolLM2BuildConfig,
    check_task,
    smollm2_artifact_name,
)

#: The linears of an adapted block that get LoRA factors.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# -- the upper model used in training ------------------------------------------------------------


def _run_blocks(model: Any, hidden: Tensor, start: int, stop: int) -> Tensor:
    """Blocks ``start..stop-1`` of a Llama on right-padded states, with the causal mask only.

    Right padding is never attended to by a real token under a causal mask, so the real
    positions' states equal those of each text alone.
    """
    batch, n, _ = hidden.shape
    positions = torch.arange(n, device=hidden.device)[None].expand(batch, -1)
    embeddings = model.model.rotary_emb(hidden, positions)
    for block in list(model.model.layers)[start:stop]:
        out = block(hidden, position_ids=positions, position_embeddings=embeddings)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


class _UpperStack(nn.Module):
    """The top blocks, the final norm and the score head of a Llama classifier, as one module.

    ``forward(states, lengths)``: states ``(B, n, K)`` entering block ``split`` of right-padded
    rows, ``lengths`` ``(B,)`` real tokens per row; returns the logits at each row's last real
    token, as ``LlamaForSequenceClassification`` reads them.
    """

    def __init__(self, model: Any, split: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(model.model.layers)[split:])
        self.rotary = model.model.rotary_emb
        self.norm = model.model.norm
        self.score = model.score

    def forward(self, states: Tensor, lengths: Tensor) -> Tensor:
        batch, n, _ = states.shape
        positions = torch.arange(n, device=states.device)[None].expand(batch, -1)
        embeddings = self.rotary(states, positions)
        hidden = states
        for block in self.blocks:
            # No mask: SDPA applies the causal mask, and right padding is never attended to.
            out = block(hidden, position_ids=positions, position_embeddings=embeddings)
            hidden = out[0] if isinstance(out, tuple) else out
        last = self.norm(hidden[torch.arange(batch), lengths - 1])
        return self.score(last)


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
    return tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )


@torch.no_grad()
def _lower_states(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    split: int,
    max_length: int,
    batch_size: int,
    log: Callable[[str], None],
) -> tuple[Tensor, Tensor]:
    """Hidden states entering block ``split`` (fp16, right-padded to ``max_length``) and lengths."""
    states = torch.zeros(len(texts), max_length, model.config.hidden_size, dtype=torch.float16)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        enc = _tokenize(tokenizer, texts[start : start + batch_size], max_length)
        hidden = _run_blocks(model, model.model.embed_tokens(enc["input_ids"]), 0, split)
        stop = start + hidden.shape[0]
        states[start:stop, : hidden.shape[1]] = hidden.half()
        lengths[start:stop] = enc["attention_mask"].sum(1)
        if (start // batch_size) % 10 == 0:
            done = stop / len(texts)
            log(
                f"  lower states {stop}/{len(texts)} "
                f"({time.perf_counter() - started:.0f} s, {done:.0%})"
            )
    return states, lengths


def _cached_states(
    key: str,
    cache_dir: Path,
    compute: Callable[[], tuple[Tensor, Tensor]],
    log: Callable[[str], None],
) -> tuple[Tensor, Tensor]:
    path = cache_dir / "smollm2_states" / f"{key}.pt"
    if path.is_file():
        log(f"  cached lower states: {path}")
        saved = torch.load(path, weights_only=True)
        return saved["states"], saved["lengths"]
    states, lengths = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: torch.save({"states": states, "lengths": lengths}, p))
    return states, lengths


def _task_texts(
    task: str, config: SmolLM2BuildConfig
) -> tuple[list[str], Tensor, list[str], Tensor]:
    """A seeded training sample and the evaluation split: texts and labels of each."""
    # Imported here: the data loaders are needed by the build only.
    if task == "sst2":
        from captum_layer_saliency.data.sst2 import load_sst2

        train, evaluation = load_sst2("train"), load_sst2("validation")
        # SST-2 train holds phrases; keep those of four words or more.
        keep = [i for i, t in enumerate(train["text"]) if len(t.split()) >= 4]
    else:
        from captum_layer_saliency.data.ag_news import load_ag_news

        # As the MiniLM default: train on the train part of AG News test, evaluate on the
        # held-out tuning rows 0-199 (rows 200-1,199 stay for reporting).
        train = load_ag_news("train_part")
        evaluation = load_ag_news("heldout").select(range(200))
        keep = list(range(len(train)))
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(keep), generator=generator)[: config.n_train].tolist()
    chosen = [keep[i] for i in order]
    texts = [train["text"][i] for i in chosen]
    labels = torch.tensor([train["label"][i] for i in chosen])
    n_eval = config.n_eval or len(evaluation)
    evaluation = evaluation.select(range(min(n_eval, len(evaluation))))
    return texts, labels, list(evaluation["text"]), torch.tensor(evaluation["label"])


@torch.no_grad()
def _accuracy(upper: nn.Module, states: Tensor, lengths: Tensor, labels: Tensor) -> float:
    upper.eval()
    correct = 0
    for start in range(0, len(labels), 64):
        logits = upper(states[start : start + 64].float(), lengths[start : start + 64])
        correct += int((logits.argmax(-1) == labels[start : start + 64]).sum())
    return correct / max(len(labels), 1)


def build_smollm2(
    task: str,
    out_dir: str | os.PathLike[str] | None = None,
    config: SmolLM2BuildConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a task's SmolLM2 default (LoRA on the top blocks + score head) and save it.

    Args:
        task: ``"sst2"`` or ``"ag_news"``.
        out_dir: where the artifact and ``smollm2_manifest.json`` go (default: the packaged
            ``zoo/artifacts``).
        config: the build configuration (default :class:`SmolLM2BuildConfig`).
        cache_dir: the package cache: the backbone checkpoint and the cached lower states.
        log: progress messages.

    Returns:
        The manifest entry: file, sha256, configuration and measurements (evaluation accuracy,
        seconds spent caching and training, seconds per step).
    """
    check_task(task)
    from captum_layer_saliency.models.backbones import smollm2_classifier, smollm2_tokenizer

    config = config or SmolLM2BuildConfig.for_task(task)
    directory = Path(out_dir) if out_dir is not None else PACKAGED_DIR
    cache = resolve_cache_dir(cache_dir)
    torch.manual_seed(config.seed)
    labels_names = SMOLLM2_LABELS[task]
    model = smollm2_classifier(len(labels_names), cache_dir=cache_dir, attn_implementation="sdpa")
    tokenizer = smollm2_tokenizer("right", cache_dir=cache_dir)
    split = model.config.num_hidden_layers - config.top_blocks
    if not 0 <= split < model.config.num_hidden_layers:
        raise ValueError(f"top_blocks={config.top_blocks} does not fit the model's blocks")
    train_texts, train_labels, eval_texts, eval_labels = _task_texts(task, config)

    started = time.perf_counter()
    tag = f"{task}-split{split}-len{config.max_length}-seed{config.seed}"
    cached = {}
    for part, texts in (("train", train_texts), ("eval", eval_texts)):
        cached[part] = _cached_states(
            f"{tag}-{part}{len(texts)}",
            cache,
            lambda texts=texts: _lower_states(  # type: ignore[misc]
                model, tokenizer, texts, split, config.max_length, config.batch_size, log
            ),
            log,
        )
    (train_states, train_lengths), (eval_states, eval_lengths) = cached["train"], cached["eval"]
    cache_seconds = time.perf_counter() - started

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    upper = _UpperStack(model, split)
    add_lora(upper.blocks, LORA_TARGETS, config.rank, config.alpha)
    for parameter in upper.score.parameters():
        parameter.requires_grad_(True)
    trainable = [p for p in upper.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.lr)
    from transformers import get_linear_schedule_with_warmup

    schedule = get_linear_schedule_with_warmup(optimiser, config.steps // 10, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    epochs = -(-config.steps * config.batch_size // len(train_labels))
    order = torch.cat(
        [torch.randperm(len(train_labels), generator=generator) for _ in range(epochs)]
    )
    started = time.perf_counter()
    upper.train()
    for step in range(config.steps):
        rows = order[step * config.batch_size : (step + 1) * config.batch_size]
        logits = upper(train_states[rows].float(), train_lengths[rows])
        loss = nn.functional.cross_entropy(logits, train_labels[rows])
        loss.backward()
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        if step % 10 == 0 or step == config.steps - 1:
            elapsed = time.perf_counter() - started
            log(f"  step {step + 1}/{config.steps} loss {float(loss):.3f} ({elapsed:.0f} s)")
    train_seconds = time.perf_counter() - started
    accuracy = _accuracy(upper, eval_states, eval_lengths, eval_labels)
    log(f"  {task}: evaluation accuracy {accuracy:.4f}")

    # Each factor is named after the classifier's own linear ("model.layers.<i>....").
    tensors = {
        _rename(k, split): v.half().contiguous() for k, v in lora_state(upper.blocks).items()
    }
    tensors["score.weight"] = upper.score.weight.detach().half().contiguous()
    measurements = {
        "eval_accuracy": round(accuracy, 4),
        "eval_split": "SST-2 validation" if task == "sst2" else "AG News heldout rows 0-199",
        "n_eval": len(eval_labels),
        "cache_seconds": round(cache_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(config.steps, 1), 2),
    }
    entry = _save(directory, task, tensors, config, measurements)
    log(f"  wrote {directory / entry['file']} ({entry['bytes'] / 1e6:.2f} MB)")
    return entry


def _rename(key: str, split: int) -> str:
    """``lora_A.0.self_attn.q_proj`` (block-list index) to ``lora_A.model.layers.<split>...``."""
    kind, _, rest = key.partition(".")
    index, _, tail = rest.partition(".")
    return f"{kind}.model.layers.{split + int(index)}.{tail}"


def _save(
    directory: Path,
    task: str,
    tensors: dict[str, Tensor],
    config: SmolLM2BuildConfig,
    measurements: dict[str, Any],
) -> dict[str, Any]:
    from safetensors.torch import save_file

    from captum_layer_saliency.models.backbones import smollm2_gguf

    directory.mkdir(parents=True, exist_ok=True)
    name = smollm2_artifact_name(task)
    metadata = {"config": json.dumps(asdict(config), sort_keys=True), "task": task}
    atomic_write(directory / name, lambda p: save_file(tensors, str(p), metadata=metadata))
    entry = {
        "file": name,
        "sha256": sha256_file(directory / name),
        "bytes": (directory / name).stat().st_size,
        "config": asdict(config),
        "backbone": {"gguf": smollm2_gguf().name, "bytes": smollm2_gguf().stat().st_size},
        "measurements": measurements,
    }
    manifest_path = directory / SMOLLM2_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.setdefault("entries", {})[task] = entry
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write(manifest_path, lambda p: p.write_text(text))
    return entry
