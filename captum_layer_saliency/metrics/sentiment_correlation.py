"""Plausibility against SST word sentiment: LAFA's "human-centric" measure (Zhang et al., 2022).

For one sentence, the **Pearson correlation between the word attributions and the SST word
sentiments** (each word's leaf label, centred and in absolute value, ``|label - 2|``; see
:mod:`captum_layer_saliency.data.sst_words`); the paper reports its mean (sd) over the SST-2
test sentences (its Table 3).

**Sub-words to words.** Attributions come per token, the sentiment per SST word (a whitespace
word of the SST-2 text, e.g. ``"n't"``, ``"well-made"``). Each token belongs to the word whose
character span holds its first character (:func:`token_word_ids`, from the fast tokenizer's
offsets); a word's attribution is the **sum** of its tokens' (``merge="sum"``, the default: for
a sum-of-squares saliency it is the sum of squares over all the word's pieces, i.e. Eq. 3 at
the word level), or their ``"mean"``, ``"max"``, or the ``"first"`` token's. Special tokens and
padding belong to no word. Words without a token (cut by truncation) are left out.

**Edge cases.** A sentence with fewer than 2 scored words, or whose attributions or sentiments
are constant over its words (e.g. every leaf neutral), has no correlation: NaN. Aggregate with
``nanmean`` and report the count.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr
from torch import Tensor

from captum_layer_saliency.models.classifier import USER_TEXT

__all__ = ["MERGES", "merge_to_words", "sentiment_correlation", "token_word_ids"]

MERGES = ("sum", "mean", "max", "first")


def token_word_ids(
    tokenizer: Any, text: str, words: Sequence[str], input_ids: Sequence[int]
) -> list[int]:
    """The index of the whitespace word each token of ``text`` belongs to, -1 for none.

    A token belongs to the word whose character span contains the token's first character
    (from the fast tokenizer's offsets; the tokenizer's own ``word_ids()`` splits punctuation off,
    so it does not match the dataset's whitespace words). Special tokens get -1.

    Args:
        tokenizer: a fast (Rust) Hugging Face tokenizer.
        text: the text as encoded.
        words: its words, in order (``text == " ".join(words)`` in our loaders).
        input_ids: the unpadded ids the text was encoded to, used to check the alignment.

    Returns:
        One word index (or -1) per token of ``input_ids``.

    Raises:
        ValueError: a word not found in the text, a slow tokenizer, or re-encoding that does not
            reproduce ``input_ids``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("mapping words to tokens needs a fast tokenizer (character offsets)")
    starts, ends = [], []
    pos = 0
    for word in words:
        at = text.find(word, pos)
        if at < 0:
            raise ValueError(f"word {word!r} not found in the text after offset {pos}")
        starts.append(at)
        ends.append(at + len(word))
        pos = at + len(word)
    enc = tokenizer(
        text,
        truncation=True,
        max_length=len(input_ids),
        return_offsets_mapping=True,
        **USER_TEXT,
    )
    if list(enc["input_ids"]) != list(input_ids):
        raise ValueError("re-encoding the text for its offsets did not reproduce its token ids")
    out = []
    for start, end in enc["offset_mapping"]:
        w = bisect.bisect_right(starts, start) - 1 if end > start else -1
        out.append(w if w >= 0 and start < ends[w] else -1)
    return out


def merge_to_words(scores: Tensor, word_ids: Tensor, n_words: int, merge: str = "sum") -> Tensor:
    """Token scores ``(n,)`` to word scores ``(n_words,)``; NaN for a word without a token.

    Args:
        scores: one example's token scores.
        word_ids: ``(n,)`` each token's word, -1 for none.
        n_words: the number of words.
        merge: ``"sum"``, ``"mean"``, ``"max"`` or ``"first"`` (module docstring).

    Raises:
        ValueError: an unknown merge, or shapes that disagree.
    """
    if merge not in MERGES:
        raise ValueError(f"unknown merge {merge!r}; choose from {MERGES}")
    if scores.shape != word_ids.shape or scores.dim() != 1:
        raise ValueError(f"scores {tuple(scores.shape)} and word_ids {tuple(word_ids.shape)}")
    out = torch.full((n_words,), float("nan"), dtype=torch.float64)
    values = scores.detach().to("cpu", torch.float64).tolist()
    groups: dict[int, list[float]] = {}
    for value, w in zip(values, word_ids.tolist(), strict=True):
        if 0 <= w < n_words:
            groups.setdefault(int(w), []).append(value)
    for w, vs in groups.items():
        if merge == "sum":
            out[w] = sum(vs)
        elif merge == "mean":
            out[w] = sum(vs) / len(vs)
        elif merge == "max":
            out[w] = max(vs)
        else:
            out[w] = vs[0]
    return out


def sentiment_correlation(
    scores: Tensor, word_ids: Tensor, word_sentiment: Tensor, merge: str = "sum"
) -> Tensor:
    """Pearson's r between each example's word attributions and its SST word sentiments.

    Args:
        scores: ``(batch, seq)`` token attributions.
        word_ids: ``(batch, seq)`` each token's word index, -1 for special tokens and padding
            (:func:`token_word_ids`).
        word_sentiment: ``(batch, words)`` ``|label - 2|`` per word, NaN-padded past each
            example's last word.
        merge: how a word's tokens combine (:func:`merge_to_words`).

    Returns:
        ``(batch,)`` float64 correlations in ``[-1, 1]``; NaN where undefined (module docstring).

    Raises:
        ValueError: shapes that disagree or an unknown merge.
    """
    if scores.shape != word_ids.shape or scores.dim() != 2:
        raise ValueError(
            f"scores {tuple(scores.shape)} and word_ids {tuple(word_ids.shape)} must both be "
            "(batch, seq)"
        )
    if word_sentiment.dim() != 2 or word_sentiment.shape[0] != scores.shape[0]:
        raise ValueError(f"word_sentiment {tuple(word_sentiment.shape)} must be (batch, words)")
    out = []
    for b in range(scores.shape[0]):
        target = word_sentiment[b].detach().to("cpu", torch.float64)
        n_words = int(torch.isfinite(target).sum())
        merged = merge_to_words(scores[b], word_ids[b], n_words, merge)
        keep = torch.isfinite(merged) & torch.isfinite(target[:n_words])
        x, y = merged[keep].numpy(), target[:n_words][keep].numpy()
        if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(float("nan"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # near-constant input: scipy warns, r stays finite
            out.append(float(pearsonr(x, y).statistic))
    return torch.tensor(out, dtype=torch.float64, device=scores.device)
