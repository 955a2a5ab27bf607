"""LAFA's neighbour index as its paper defines it: reference texts in a hidden layer of the model.

Zhang et al. (NAACL 2022, Eq. 4) find the neighbours of an input among reference texts encoded
by a **hidden layer of the same fine-tuned classifier**, by **L2 distance** under a cut-off
``epsilon``, and (for sentiment) among texts of the **same class**. No external sentence encoder
enters the explanation.

* :func:`layer_vectors` pools one layer's hidden states into one vector per text (the mean over
  the real tokens, or the first token) and returns the classifier's prediction of each text.
* :class:`LayerIndex` holds those vectors, the predicted classes and the texts; it converts a
  quantile of the pairwise L2 distances into the cut-off (:meth:`LayerIndex.cutoff`) and returns,
  per query, the nearest texts within the cut-off (:meth:`LayerIndex.search`).
* :func:`cached_layer_index` builds an index once per (model weights, layer, pooling, corpus),
  in chunks saved as they finish, so an interrupted build resumes where it stopped; it shows a
  progress bar and keeps the result in the user cache (``$CAPTUM_LAYER_SALIENCY_CACHE``).

This module needs only the model and its tokenizer (no default model, no dataset).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_layer_saliency._utils import atomic_write, resolve_cache_dir, sha256_texts, text_key

__all__ = ["POOLINGS", "LayerIndex", "cached_layer_index", "layer_vectors", "model_fingerprint"]

#: How a text's token states become one vector: the mean over its real tokens, or the first
#: token (``[CLS]``).
POOLINGS = ("mean", "cls")
INDEX_FORMAT = 1
#: Pairs of texts sampled to estimate a distance quantile when the corpus has more pairs.
QUANTILE_PAIRS = 200_000


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's parameter names, shapes and values (a cache key for its weights)."""
    digest = hashlib.sha256()
    for name, param in model.state_dict().items():
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        digest.update(param.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _hidden_layers(model: nn.Module) -> int:
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ValueError(f"{type(model).__name__} has no config.num_hidden_layers")
    return layers


@torch.no_grad()
def layer_vectors(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    layer: int | None,
    pooling: str = "mean",
) -> tuple[Tensor, Tensor]:
    """One vector per text from hidden layer ``layer``, and the model's predicted class.

    Args:
        model: a Hugging Face ``*ForSequenceClassification`` model (it must accept
            ``output_hidden_states=True``).
        input_ids: ``(B, n)`` token ids.
        attention_mask: ``(B, n)``, 0 at padding.
        layer: 0 = the embeddings output, ``L`` = block ``L`` (``1..num_hidden_layers``);
            ``None``: every layer, stacked as ``(B, num_hidden_layers + 1, hidden)``.
        pooling: ``"mean"`` over the real tokens (special tokens included) or ``"cls"`` (the
            first token).

    Returns:
        ``(B, hidden)`` float32 vectors and ``(B,)`` predicted classes (argmax of the logits).

    Raises:
        ValueError: an unknown pooling or a layer out of range.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
    n_layers = _hidden_layers(model)
    if layer is not None and (not isinstance(layer, int) or not 0 <= layer <= n_layers):
        raise ValueError(f"layer must be an int in [0, {n_layers}], got {layer!r}")
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    chosen = range(n_layers + 1) if layer is None else [layer]
    states = torch.stack([out.hidden_states[i].float() for i in chosen], 1)  # (B, L, n, d)
    if pooling == "cls":
        vectors = states[:, :, 0]
    else:
        weight = attention_mask.to(states.dtype)[:, None, :, None]
        vectors = (states * weight).sum(2) / weight.sum(2).clamp_min(1.0)
    return (vectors if layer is None else vectors[:, 0]), out.logits.argmax(-1)


class LayerIndex:
    """Reference texts as vectors of one hidden layer of the classifier, searched by L2 distance.

    Args:
        texts: the reference corpus.
        vectors: ``(len(texts), hidden)`` pooled hidden states (:func:`layer_vectors`), or
            ``(len(texts), layers, hidden)`` for every layer (``layer=None``; pick one with
            :meth:`at_layer` before searching).
        classes: ``(len(texts),)`` the class of each text (the model's prediction, or labels).
        layer: the layer the vectors come from.
        pooling: how they were pooled.
        fingerprint: :func:`model_fingerprint` of the model that made them ("" if unknown).

    Raises:
        ValueError: an empty corpus, or vectors or classes that do not match the texts.
    """

    def __init__(
        self,
        texts: Sequence[str],
        vectors: Tensor,
        classes: Tensor,
        *,
        layer: int | None,
        pooling: str = "mean",
        fingerprint: str = "",
    ) -> None:
        """Check the vectors and classes against the texts (see the class docstring)."""
        texts = list(texts)
        if not texts:
            raise ValueError("the reference corpus is empty: LAFA needs texts to find neighbours")
        if vectors.dim() != (2 if layer is not None else 3) or vectors.shape[0] != len(texts):
            raise ValueError(
                f"vectors {tuple(vectors.shape)} must be ({len(texts)}, hidden), or "
                f"({len(texts)}, layers, hidden) with layer=None"
            )
        if classes.shape != (len(texts),):
            raise ValueError(f"classes {tuple(classes.shape)} must be ({len(texts)},)")
        self.texts = texts
        self.vectors = vectors.detach().to("cpu", torch.float32)
        self.classes = classes.detach().to("cpu", torch.long)
        self.layer, self.pooling, self.fingerprint = layer, pooling, fingerprint
        self._by_text: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            self._by_text.setdefault(text_key(text), []).append(i)
        self._cutoffs: dict[float, float] = {}

    def __len__(self) -> int:
        """The number of reference texts."""
        return len(self.texts)

    def __repr__(self) -> str:
        """The size, layer and pooling."""
        return f"LayerIndex({len(self)} texts, layer={self.layer}, pooling={self.pooling!r})"

    def at_layer(self, layer: int) -> LayerIndex:
        """The index of one layer, from an index holding every layer (``layer=None``).

        Raises:
            ValueError: this index holds one layer and it is another, or ``layer`` is out of
                range.
        """
        if self.layer is not None:
            if layer != self.layer:
                raise ValueError(f"this index holds layer {self.layer}, not {layer}")
            return self
        if not 0 <= layer < self.vectors.shape[1]:
            raise ValueError(f"layer must lie in [0, {self.vectors.shape[1] - 1}], got {layer}")
        return LayerIndex(
            self.texts,
            self.vectors[:, layer],
            self.classes,
            layer=layer,
            pooling=self.pooling,
            fingerprint=self.fingerprint,
        )

    def cutoff(self, quantile: float, *, seed: int = 0) -> float:
        """The L2 distance at ``quantile`` of the pairwise distances between reference texts.

        All pairs when there are at most :data:`QUANTILE_PAIRS`, else that many pairs sampled
        with ``seed`` (the estimate's error is then far below the spread of the distances).

        Args:
            quantile: in ``[0, 1]`` (the paper's cut-off for SST: 0.39).
            seed: the sampling seed.

        Returns:
            The distance ``epsilon`` (cached per quantile).
        """
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile!r}")
        self._one_layer()
        if quantile not in self._cutoffs:
            n = len(self)
            if n < 2:
                self._cutoffs[quantile] = 0.0
                return 0.0
            if n * (n - 1) // 2 <= QUANTILE_PAIRS:
                rows, cols = torch.triu_indices(n, n, offset=1)
            else:
                gen = torch.Generator().manual_seed(seed)
                rows = torch.randint(n, (QUANTILE_PAIRS,), generator=gen)
                cols = (rows + torch.randint(1, n, (QUANTILE_PAIRS,), generator=gen)) % n
            dist = (self.vectors[rows] - self.vectors[cols]).norm(dim=-1)
            self._cutoffs[quantile] = float(torch.quantile(dist.double(), quantile))
        return self._cutoffs[quantile]

    def search(
        self,
        queries: Tensor,
        k: int,
        *,
        radius: float = float("inf"),
        classes: Tensor | None = None,
        exclude_texts: Sequence[str] | None = None,
    ) -> list[list[int]]:
        """The nearest reference texts of each query within ``radius``, at most ``k``.

        Args:
            queries: ``(Q, hidden)`` vectors from the same layer and pooling.
            k: the most neighbours per query.
            radius: only texts at L2 distance ``<= radius`` (the cut-off ``epsilon``).
            classes: ``(Q,)`` if given, only texts of that class.
            exclude_texts: one text per query whose copies in the corpus (the same text up to
                case and whitespace, :func:`~captum_layer_saliency._utils.text_key`, so also
                the text decoded from its token ids) are never its neighbours, so an input is
                not its own neighbour.

        Returns:
            Per query, the indices of its neighbours, nearest first (possibly fewer than ``k``,
            or none).
        """
        self._one_layer()
        if queries.dim() != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(
                f"queries {tuple(queries.shape)} must be (Q, {self.vectors.shape[1]}): the "
                "index's layer width"
            )
        if k <= 0:
            return [[] for _ in range(queries.shape[0])]
        dist = torch.cdist(queries.detach().to("cpu", torch.float32), self.vectors)
        dist = dist.masked_fill(dist > radius, float("inf"))
        if classes is not None:
            other = self.classes[None, :] != classes.detach().cpu().reshape(-1, 1)
            dist = dist.masked_fill(other, float("inf"))
        if exclude_texts is not None:
            for q, text in enumerate(exclude_texts):
                for i in self._by_text.get(text_key(text), []):
                    dist[q, i] = float("inf")
        values, found = dist.topk(min(k, len(self)), dim=-1, largest=False)
        return [
            [i for v, i in zip(vs, fs, strict=True) if v != float("inf")]
            for vs, fs in zip(values.tolist(), found.tolist(), strict=True)
        ]

    def _one_layer(self) -> None:
        if self.layer is None:
            raise ValueError("this index holds every layer: pick one with at_layer(layer)")

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``vectors.safetensors`` and ``index.json`` (texts, layer, pooling) atomically."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"vectors": self.vectors.contiguous(), "classes": self.classes.contiguous()}
        atomic_write(path / "vectors.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        meta = {
            "format": INDEX_FORMAT,
            "layer": self.layer,
            "pooling": self.pooling,
            "fingerprint": self.fingerprint,
            "texts": self.texts,
        }
        atomic_write(path / "index.json", lambda tmp: tmp.write_text(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LayerIndex:
        """Read an index written by :meth:`save`.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: an unknown format.
        """
        path = Path(directory)
        meta = json.loads((path / "index.json").read_text())
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"unknown layer index format {meta.get('format')!r} in {path}")
        tensors = load_file(str(path / "vectors.safetensors"))
        return cls(
            meta["texts"],
            tensors["vectors"],
            tensors["classes"],
            layer=meta["layer"],
            pooling=meta["pooling"],
            fingerprint=meta["fingerprint"],
        )


def _save(path: Path, tensors: dict[str, Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def cached_layer_index(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    layer: int,
    pooling: str = "mean",
    max_length: int = 128,
    batch_size: int = 64,
    chunk_size: int = 1024,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> LayerIndex:
    """The :class:`LayerIndex` of ``texts`` at ``layer`` of ``model``, built once and cached.

    The cache key covers the model's weights (:func:`model_fingerprint`), the pooling, the
    token budget and the corpus; every layer is pooled in the same pass and cached together, so
    other layers come free afterwards. The texts are embedded in chunks of
    ``chunk_size``, each saved when done, so an interrupted build resumes at the first missing
    chunk; the finished index replaces the chunks.

    Args:
        model: the classifier (eval mode).
        tokenizer: its tokenizer.
        texts: the reference corpus.
        layer: 0 = embeddings, ``L`` = block ``L``.
        pooling: see :data:`POOLINGS`.
        max_length: texts are truncated to this many tokens.
        batch_size: texts per forward pass.
        chunk_size: texts per saved chunk.
        cache_dir: the cache root (default ``$CAPTUM_LAYER_SALIENCY_CACHE`` or
            ``~/.cache/captum_layer_saliency``); indexes go to its ``lafa_layer_index/``.
        progress: show a progress bar.

    Returns:
        The index.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("the reference corpus is empty: LAFA needs texts to find neighbours")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
    fingerprint = model_fingerprint(model)
    n_layers = _hidden_layers(model)
    if not isinstance(layer, int) or not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be an int in [0, {n_layers}], got {layer!r}")
    key = hashlib.sha256(
        f"{fingerprint}:{pooling}:{max_length}:{sha256_texts(texts)}".encode()
    ).hexdigest()[:20]
    directory = resolve_cache_dir(cache_dir) / "lafa_layer_index" / f"{pooling}-{key}"
    try:
        index = LayerIndex.load(directory)
        if index.texts == texts and index.fingerprint == fingerprint:
            return index.at_layer(layer)
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError, OSError):
        pass  # missing or unusable: (re)build below
    device = next(model.parameters()).device
    vectors, classes = [], []
    chunks = range(0, len(texts), chunk_size)
    bar = tqdm(total=len(texts), desc="LAFA index (all layers)", disable=not progress)
    for c, start in enumerate(chunks):
        part = directory / f"chunk-{c:05d}.safetensors"
        if part.is_file():
            saved = load_file(str(part))
            vectors.append(saved["vectors"])
            classes.append(saved["classes"])
            bar.update(saved["vectors"].shape[0])
            continue
        members = range(start, min(start + chunk_size, len(texts)))
        # Shortest first within the chunk, so each batch pads little; put back in order below.
        order = sorted(members, key=lambda i: len(texts[i]))
        chunk_v: list[Tensor] = []
        chunk_c: list[Tensor] = []
        for b in range(0, len(order), batch_size):
            rows = [texts[i] for i in order[b : b + batch_size]]
            enc = tokenizer(
                rows,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
                split_special_tokens=True,  # user text never becomes special tokens
            )
            v, y = layer_vectors(
                model, enc["input_ids"].to(device), enc["attention_mask"].to(device), None, pooling
            )
            chunk_v.append(v.cpu())
            chunk_c.append(y.cpu())
            bar.update(len(rows))
        back = torch.argsort(torch.tensor(order) - start)
        done = {
            "vectors": torch.cat(chunk_v)[back].contiguous(),
            "classes": torch.cat(chunk_c)[back].contiguous(),
        }
        _save(part, done)
        vectors.append(done["vectors"])
        classes.append(done["classes"])
    bar.close()
    index = LayerIndex(
        texts,
        torch.cat(vectors),
        torch.cat(classes),
        layer=None,
        pooling=pooling,
        fingerprint=fingerprint,
    )
    index.save(directory)
    for part in directory.glob("chunk-*.safetensors"):
        part.unlink()
    return index.at_layer(layer)
