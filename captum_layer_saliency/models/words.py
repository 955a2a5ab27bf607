"""Word-level scores: merge sub-word token scores into the words of the text.

A word is what the tokenizer itself calls one: the ``word_ids()`` of a Hugging Face *fast*
tokenizer (its pre-tokenizer's words: for BERT, whitespace-separated runs split at punctuation,
so ``"isn't"`` is three words ``isn``, ``'``, ``t``), and the word's text is the span of the
original text its tokens' character offsets cover. A slow (Python) tokenizer is converted once
with ``transformers.convert_slow_tokenizer`` and checked to give the same token ids on every
text. Special tokens ([CLS], [SEP], padding) belong to no word and are dropped.

The alignment is computed one text at a time, from the text alone, and matched against the real
(attention-mask) positions of its row in the batch, so the result does not depend on the batch,
on padding side or on padding length: batched and one-at-a-time agree.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency._options import REDUCTIONS
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.models.classifier import USER_TEXT, special_token_ids

__all__ = [
    "REDUCTIONS",
    "WordAlignment",
    "WordAlignmentError",
    "WordScores",
    "aggregate_to_words",
    "align_words",
    "reduce_to_words",
    "word_index",
]


_FAST_COPIES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class WordAlignmentError(CaptumLayerSaliencyError, ValueError):
    """Tokens that cannot be matched to words (a tokenizer without word ids, or other ids)."""


@dataclass(frozen=True)
class WordAlignment:
    """Which word each token of one text belongs to.

    Attributes:
        words: the words, in order (for a text pair, the first text's words then the second's);
            each is the substring of its text that the word's tokens cover.
        token_words: one entry per token of the text's encoding (special tokens included, no
            padding): the index into ``words``, or ``-1`` for a special token.
        segments: one entry per word: 0 for a word of the text, 1 for one of the text pair.
    """

    words: list[str]
    token_words: list[int]
    segments: list[int]


@dataclass(frozen=True)
class WordScores:
    """The word-level explanation of one text.

    Attributes:
        words: the words (see :class:`WordAlignment`).
        scores: one score per word.
        token_words: the word index of each real token of the row (``-1``: special token).
        reduce: the reduction that merged the token scores (one of :data:`REDUCTIONS`).
    """

    words: list[str]
    scores: list[float]
    token_words: list[int]
    reduce: str


def _fast_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` if it is fast, else its fast conversion (cached per tokenizer)."""
    if getattr(tokenizer, "is_fast", False):
        return tokenizer
    try:
        cached = _FAST_COPIES.get(tokenizer)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    try:
        fast = PreTrainedTokenizerFast(tokenizer_object=convert_slow_tokenizer(tokenizer))
    except Exception as exc:  # transformers raises ValueError, KeyError, ImportError...
        raise WordAlignmentError(
            f"word-level scores need a fast tokenizer (word ids); {type(tokenizer).__name__} "
            f"has none and cannot be converted ({exc}); load the tokenizer with use_fast=True"
        ) from None
    with contextlib.suppress(TypeError):  # not weak-referenceable: convert each time
        _FAST_COPIES[tokenizer] = fast
    return fast


def align_words(
    tokenizer: Any,
    text: str,
    text_pair: str | None = None,
    *,
    input_ids: Sequence[int] | None = None,
) -> WordAlignment:
    """The words of ``text`` (and ``text_pair``) and the word of each of its tokens.

    Args:
        tokenizer: the model's Hugging Face tokenizer (fast, or convertible to fast).
        text: the text.
        text_pair: the second text of a pair, or ``None``.
        input_ids: the real token ids of the row that was explained (no padding), to match;
            a shorter row is taken as truncated (the encoding is truncated to its length).
            Default: the untruncated encoding of the text.

    Returns:
        The alignment; ``len(token_words) == len(input_ids)``.

    Raises:
        WordAlignmentError: the tokenizer has no word ids, or its ids differ from ``input_ids``
            (the row does not hold this text, or was encoded by another tokenizer).
    """
    fast = _fast_tokenizer(tokenizer)
    kwargs: dict[str, Any] = {"return_offsets_mapping": True, "verbose": False, **USER_TEXT}
    if input_ids is not None:
        kwargs.update(truncation=True, max_length=len(input_ids))
    enc = fast(text, text_pair, **kwargs) if text_pair is not None else fast(text, **kwargs)
    ids = list(enc["input_ids"])
    if input_ids is not None and [int(i) for i in input_ids] != ids:
        raise WordAlignmentError(
            f"the tokens of the row ({len(input_ids)}) are not the tokenizer's encoding of the "
            f"text {text[:40]!r} ({len(ids)}): pass the texts in the order they were encoded, "
            "with the model's own tokenizer"
        )
    special = set(special_token_ids(tokenizer))
    word_ids = enc.word_ids()
    sequence_ids = enc.sequence_ids()
    offsets = enc["offset_mapping"]
    sources = (text, text_pair or "")
    index: dict[tuple[int, int], int] = {}
    spans: list[list[int]] = []
    segments: list[int] = []
    token_words: list[int] = []
    for token_id, word, segment, (start, end) in zip(
        ids, word_ids, sequence_ids, offsets, strict=True
    ):
        if word is None or segment is None or token_id in special:
            token_words.append(-1)
            continue
        key = (int(segment), int(word))
        if key not in index:
            index[key] = len(spans)
            spans.append([start, end])
            segments.append(int(segment))
        else:
            span = spans[index[key]]
            span[0], span[1] = min(span[0], start), max(span[1], end)
        token_words.append(index[key])
    # Byte-level BPE tokenizers (GPT-2, RoBERTa) may count a word's leading space in its span.
    words = [sources[seg][a:b].strip() for seg, (a, b) in zip(segments, spans, strict=True)]
    return WordAlignment(words=words, token_words=token_words, segments=segments)


def reduce_to_words(
    scores: Sequence[float] | Tensor, token_words: Sequence[int], n_words: int, reduce: str = "sum"
) -> list[float]:
    """Merge one row of token scores into word scores.

    Args:
        scores: one score per token (the same tokens as ``token_words``).
        token_words: the word index of each token (``-1``: belongs to no word, ignored).
        n_words: the number of words.
        reduce: one of :data:`REDUCTIONS`.

    Returns:
        ``n_words`` scores (0.0 for a word with no scored token, e.g. one truncated away).

    Raises:
        ValueError: an unknown reduction, or lengths that differ.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown word reduction {reduce!r}; choose from {REDUCTIONS}")
    values = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu()
    if values.numel() != len(token_words):
        raise ValueError(f"{values.numel()} token scores for {len(token_words)} tokens")
    pieces: list[list[float]] = [[] for _ in range(n_words)]
    for value, word in zip(values.tolist(), token_words, strict=True):
        if word >= 0:
            pieces[word].append(value)
    if reduce == "sum":
        return [float(sum(p)) for p in pieces]
    if reduce == "mean":
        return [float(sum(p) / len(p)) if p else 0.0 for p in pieces]
    return [float(max(p)) if p else 0.0 for p in pieces]


def aggregate_to_words(
    scores: Tensor,
    texts: str | Sequence[str],
    tokenizer: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    text_pairs: Sequence[str | None] | None = None,
    reduce: str = "sum",
) -> list[WordScores]:
    """Merge the token scores of a batch into word scores, text by text.

    Works with any explanation of the batch ``input_ids`` (DLS, or any Captum method reduced to
    one score per token); the tokens of each row are matched to its text by the tokenizer's own
    word ids and character offsets. Padding (``attention_mask == 0``) is skipped, so left and
    right padding give the same words, and special tokens are dropped.

    Example::

        enc = clf.encode(texts)
        scores = dls.attribute(enc["input_ids"], attention_mask=enc["attention_mask"])
        words = aggregate_to_words(scores, texts, clf.tokenizer, enc["input_ids"],
                                   enc["attention_mask"])
        words[0].words, words[0].scores

    Args:
        scores: ``(batch, seq)`` token scores (or ``(seq,)`` for one text).
        texts: the ``batch`` texts that were encoded, in order.
        tokenizer: the tokenizer that encoded them (fast, or convertible to fast).
        input_ids: ``(batch, seq)`` (or ``(seq,)``) the encoded ids.
        attention_mask: ``(batch, seq)``, 1 on real tokens (default: every position is real).
        text_pairs: the second texts of pairs (``None`` entries for single texts).
        reduce: ``"sum"`` (default; word scores add up to the token scores), ``"mean"`` or
            ``"max"``.

    Returns:
        One :class:`WordScores` per text.

    Raises:
        ValueError: shapes or counts that do not match, or an unknown reduction.
        WordAlignmentError: a row whose tokens are not its text's encoding.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown word reduction {reduce!r}; choose from {REDUCTIONS}")
    batch = [texts] if isinstance(texts, str) else list(texts)
    ids = input_ids.reshape(1, -1) if input_ids.dim() == 1 else input_ids
    values = scores.reshape(1, -1) if scores.dim() == 1 else scores
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    if values.shape != ids.shape:
        raise ValueError(f"scores {tuple(values.shape)} and input_ids {tuple(ids.shape)} differ")
    if len(batch) != ids.shape[0]:
        raise ValueError(f"{len(batch)} texts for a batch of {ids.shape[0]} rows")
    pairs = list(text_pairs) if text_pairs is not None else [None] * len(batch)
    if len(pairs) != len(batch):
        raise ValueError(f"{len(pairs)} text pairs for {len(batch)} texts")
    out = []
    for row, (text, pair) in enumerate(zip(batch, pairs, strict=True)):
        real = mask[row].bool().cpu()
        row_ids = ids[row].cpu()[real].tolist()
        alignment = align_words(tokenizer, text, pair, input_ids=row_ids)
        row_scores = values[row].detach().cpu()[real]
        word_scores = reduce_to_words(
            row_scores, alignment.token_words, len(alignment.words), reduce
        )
        out.append(WordScores(alignment.words, word_scores, alignment.token_words, reduce))
    return out


def _row_words(tokenizer: Any, fast: Any, ids: list[int], special: set[int]) -> list[int]:
    """The word index of each token of one row (``-1``: special), from the ids alone."""
    out = [-1] * len(ids)
    offset, start = 0, 0
    for end in [*(i for i, t in enumerate(ids) if t in special), len(ids)]:
        run = ids[start:end]
        if run:
            text = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(run))
            enc = fast(text, add_special_tokens=False, verbose=False)
            words = enc.word_ids()
            if list(enc["input_ids"]) != run or any(w is None for w in words):
                words = list(range(len(run)))  # no round trip: each token is its own word
            first = {w: n for n, w in enumerate(dict.fromkeys(words))}
            renumbered = [offset + first[w] for w in words]
            out[start:end] = renumbered
            offset = max(renumbered) + 1
        start = end + 1
    return out


def word_index(tokenizer: Any, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The word of every token of a batch, from the token ids alone (no text needed).

    Each run of real non-special tokens is decoded and re-encoded by the fast tokenizer, whose
    ``word_ids()`` give the words (BERT: sub-words ``##..`` join the word before them); a run that
    does not re-encode to the same ids (rare: an ``[UNK]`` or a normaliser that changes the text)
    counts each of its tokens as a word of its own.

    Args:
        tokenizer: the model's tokenizer (fast, or convertible to fast).
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``, 1 on real tokens (default: all real).

    Returns:
        ``(batch, seq)`` long: words numbered ``0..n-1`` in order along each row, ``-1`` on
        special tokens and padding. A row's numbering does not depend on its batch.
    """
    fast = _fast_tokenizer(tokenizer)
    special = set(special_token_ids(tokenizer))
    ids = input_ids.reshape(-1, input_ids.shape[-1])
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    out = torch.full(ids.shape, -1, dtype=torch.long)
    for row in range(ids.shape[0]):
        real = mask[row].bool().cpu()
        row_ids = [int(i) for i in ids[row].cpu()[real]]
        out[row, real] = torch.tensor(
            _row_words(tokenizer, fast, row_ids, special), dtype=torch.long
        )
    return out.to(input_ids.device).reshape(input_ids.shape)
