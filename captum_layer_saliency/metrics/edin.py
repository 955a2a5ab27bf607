"""Edin et al.'s protocol (``"edin"``): word-level AOPC along the whole curve, and NAOPC.

Edin, Motzkus, Maistro, Kusters and Lipton, "Normalized AOPC: Fixing Misleading Faithfulness
Metrics for Feature Attribution Explainability" (ACL 2024) evaluate an explanation as follows,
and so does this module (the default protocol of :mod:`captum_layer_saliency.metrics`,
``"eraser"``, deletes *tokens* in bins of 1/5/10/20/50 % instead):

* **units are words**: the token scores of a word (the tokenizer's word ids, see
  :func:`~captum_layer_saliency.models.words.word_index`) are summed into one score;
* a removed word's tokens are **replaced by [MASK]** (``mask_token_id``; positions are kept);
* **the whole curve**, ``k = 1 .. n`` words: with ``S_k`` the ``k`` highest-scored words (ties:
  the earlier word first) and ``p`` the probability of the explained class,

      comprehensiveness = mean_k [p(x) - p(x with S_k masked)]        (higher is better)
      sufficiency       = mean_k [p(x) - p(x with all but S_k masked)] (lower is better);

* **NAOPC** scales each to the best and worst value that *any* ordering of the words reaches on
  that example, ``(AOPC - AOPC_min) / (AOPC_max - AOPC_min)``: 1 is the best ordering there is
  for comprehensiveness, 0 the best for sufficiency. The bounds are **exact** for texts of at most
  ``exact_max_words`` words (default :data:`EXACT_MAX_WORDS` = 12): the probability of every
  subset of words masked (``2^n`` forwards, batched), then the best and worst chain of nested
  subsets by dynamic programming. Longer texts use **beam search** (beam :data:`BEAM` = 5) over
  the same chains, whose bounds lie inside the exact ones; a method that beats a beam bound
  there is counted at the bound (0 or 1), as :func:`~.normalised.normalise_aopc` widens them.

Every function takes the arguments of the other faithfulness metrics, plus ``word_ids`` (the
``(batch, seq)`` word of each token, ``-1`` on special tokens and padding; default: every valid
token is its own word) and ``mask_token_id``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.metrics.deletion import (
    ForwardFunc,
    Perturbations,
    nan_where_empty,
    prepare,
    ranks_of,
    token_ranks,
)
from captum_layer_saliency.metrics.normalised import normalise_aopc

__all__ = [
    "BEAM",
    "EDIN",
    "ERASER",
    "EXACT_MAX_WORDS",
    "PROTOCOLS",
    "edin_bounds",
    "edin_comprehensiveness",
    "edin_curves",
    "edin_sufficiency",
    "naopc_comprehensiveness",
    "naopc_sufficiency",
    "replacement_token_id",
    "word_scores",
]

ERASER, EDIN = "eraser", "edin"
#: The evaluation protocols: ERASER's token bins (the default) and Edin et al.'s.
PROTOCOLS = (ERASER, EDIN)
#: Texts of at most this many words get exact NAOPC bounds (2^n forwards); longer, beam search.
EXACT_MAX_WORDS = 12
#: The beam width of the bounds' search above :data:`EXACT_MAX_WORDS`.
BEAM = 5


def replacement_token_id(tokenizer: Any) -> int:
    """The tokenizer's ``[MASK]`` id, else its ``[PAD]`` id (Edin et al. mask words).

    Raises:
        ValueError: the tokenizer has neither.
    """
    for name in ("mask_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    raise ValueError("the tokenizer has no [MASK] and no [PAD] token to replace words with")


def _word_ids(word_ids: Tensor | None, valid: Tensor) -> Tensor:
    """The checked ``(batch, seq)`` word of each token, ``-1`` outside the valid tokens."""
    if word_ids is None:
        return torch.where(valid, valid.long().cumsum(-1) - 1, torch.full_like(valid, -1).long())
    if word_ids.shape != valid.shape:
        raise ValueError(
            f"word_ids {tuple(word_ids.shape)} must be (batch, seq) like input_ids "
            f"{tuple(valid.shape)}"
        )
    words = word_ids.to(valid.device).long()
    return torch.where(valid, words, torch.full_like(words, -1))


def word_scores(scores: Tensor, word_ids: Tensor) -> list[Tensor]:
    """Each row's word scores: the sum of its tokens' scores, words ``0..n-1`` (float64)."""
    out = []
    for row, words in zip(scores.detach().to(torch.float64), word_ids, strict=True):
        n = int(words.max()) + 1 if words.numel() else 0
        sums = torch.zeros(max(n, 0), dtype=torch.float64, device=scores.device)
        real = words >= 0
        out.append(sums.index_add_(0, words[real], row[real]))
    return out


def _order(values: Tensor) -> Tensor:
    """Word indices, highest score first, ties by position (the metrics' ranking rule)."""
    valid = torch.ones(1, values.numel(), dtype=torch.bool, device=values.device)
    return torch.argsort(token_ranks(values[None], valid)[0])


class _Subsets:
    """``p(target)`` of one example with any subset of its words masked, cached by bitmask."""

    def __init__(self, pert: Perturbations, row: int, word_ids: Tensor) -> None:
        self.pert, self.row = pert, row
        self.words = word_ids  # (seq,)
        self.n = int(word_ids.max()) + 1
        self.cache: dict[int, float] = {}

    def keep(self, mask: int) -> Tensor:
        """The ``(seq,)`` keep mask of the tokens with the words of ``mask`` replaced."""
        removed = [w for w in range(self.n) if mask >> w & 1]
        hit = torch.isin(self.words, torch.tensor(removed, device=self.words.device))
        return ~hit

    def probs(self, masks: list[int]) -> list[float]:
        """``p`` for each bitmask of masked words (evaluating the new ones in batches)."""
        new = [m for m in dict.fromkeys(masks) if m not in self.cache]
        if new:
            keep = torch.stack([self.keep(m) for m in new])
            rows = torch.full((len(new),), self.row, device=keep.device)
            values = self.pert.log_probs(keep, rows).exp().tolist()
            self.cache.update(zip(new, values, strict=True))
        return [self.cache[m] for m in masks]


def _chain_dp(values: list[float], n: int, better: Callable[[float, float], bool]) -> float:
    """The best sum of ``values[S_1] + ... + values[S_n]`` over chains of nested subsets."""
    best = [0.0] * (1 << n)
    for subset in range(1, 1 << n):
        choice = None
        for j in range(n):
            if subset >> j & 1:
                candidate = best[subset ^ (1 << j)]
                if choice is None or better(candidate, choice):
                    choice = candidate
        assert choice is not None
        best[subset] = values[subset] + choice
    return best[(1 << n) - 1]


def _chain_beam(
    subsets: _Subsets, value_of: Callable[[int], int], better: Callable[[float, float], bool]
) -> float:
    """The best chain sum found by beam search (beam :data:`BEAM`), one word added per step."""
    n = subsets.n
    beams: list[tuple[int, float]] = [(0, 0.0)]
    for _ in range(n):
        grown: dict[int, float] = {}
        for mask, total in beams:
            for j in range(n):
                if not mask >> j & 1:
                    grown.setdefault(mask | 1 << j, total)
                    if better(total, grown[mask | 1 << j]):
                        grown[mask | 1 << j] = total
        masks = list(grown)
        probs = subsets.probs([value_of(m) for m in masks])
        scored = [(m, grown[m] + p) for m, p in zip(masks, probs, strict=True)]
        scored.sort(key=lambda item: item[1], reverse=better(1.0, 0.0))
        beams = scored[:BEAM]
    return beams[0][1]


def _same(mask: int) -> int:
    return mask


def _lower(a: float, b: float) -> bool:
    return a < b


def _higher(a: float, b: float) -> bool:
    return a > b


def edin_bounds(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Tensor,
    special_mask: Tensor,
    word_ids: Tensor | None = None,
    mask_token_id: int = 103,
    exact_max_words: int = EXACT_MAX_WORDS,
    batch_size: int = 64,
    pad_token_id: int = 0,
    **model_inputs: Tensor,
) -> dict[str, Tensor]:
    """Per-example bounds of Edin comprehensiveness and sufficiency over all word orderings.

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        target: ``(batch,)`` explained classes (or label sets).
        special_mask: ``(batch, seq)`` True on special tokens.
        word_ids: ``(batch, seq)`` the word of each token (default: one word per valid token).
        mask_token_id: the token that replaces a masked word's tokens.
        exact_max_words: the longest text with exact bounds (``2^n`` forwards); longer texts
            get beam-search bounds.
        batch_size: perturbed inputs per forward call.
        pad_token_id: unused by replacement; accepted for the shared options.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``{"comprehensiveness": (batch, 2), "sufficiency": (batch, 2)}`` lower and upper
        bounds (NaN for an example without words), ``"exact": (batch,)`` bool and
        ``"n_words": (batch,)``.

    Raises:
        ValueError: as the other metrics, or ``exact_max_words`` above 20.
    """
    if not 0 <= exact_max_words <= 20:
        raise ValueError(
            f"exact_max_words must be in [0, 20] (2^n forwards), got {exact_max_words}"
        )
    options = {"replacement": mask_token_id, "pad_token_id": pad_token_id, "batch_size": batch_size}
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    words = _word_ids(word_ids, pert.valid)
    full = pert.full_log_probs().exp().tolist()
    batch = input_ids.shape[0]
    comp = torch.full((batch, 2), float("nan"), dtype=torch.float64)
    suff = comp.clone()
    exact = torch.zeros(batch, dtype=torch.bool)
    n_words = torch.zeros(batch, dtype=torch.long)
    for row in range(batch):
        if not bool((words[row] >= 0).any()):
            continue
        subsets = _Subsets(pert, row, words[row])
        n = subsets.n
        everything = (1 << n) - 1
        n_words[row] = n
        if n <= exact_max_words:
            exact[row] = True
            masked = subsets.probs(list(range(1 << n)))
            kept = [masked[everything ^ s] for s in range(1 << n)]
            chains = [
                _chain_dp(masked, n, _lower),
                _chain_dp(masked, n, _higher),
                _chain_dp(kept, n, _higher),
                _chain_dp(kept, n, _lower),
            ]
        else:
            complement = functools.partial(operator.xor, everything)
            chains = [
                _chain_beam(subsets, _same, _lower),
                _chain_beam(subsets, _same, _higher),
                _chain_beam(subsets, complement, _higher),
                _chain_beam(subsets, complement, _lower),
            ]
        aopc = [full[row] - c / n for c in chains]
        comp[row] = torch.tensor([aopc[1], aopc[0]])
        suff[row] = torch.tensor([aopc[2], aopc[3]])
    device = input_ids.device
    return {
        "comprehensiveness": comp.to(device),
        "sufficiency": suff.to(device),
        "exact": exact.to(device),
        "n_words": n_words.to(device),
    }


def edin_curves(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    word_ids: Tensor | None = None,
    mask_token_id: int = 103,
    batch_size: int = 64,
    pad_token_id: int = 0,
    **model_inputs: Tensor,
) -> dict[str, Tensor]:
    """The whole word-deletion curves of Edin et al.'s protocol (``k = 1 .. n`` words).

    Args:
        forward: as for :func:`edin_bounds`.
        input_ids: as for :func:`edin_bounds`.
        attention_mask: as for :func:`edin_bounds`.
        scores: ``(batch, seq)`` token scores (summed into word scores).
        target: as for :func:`edin_bounds`.
        special_mask: as for :func:`edin_bounds`.
        word_ids: as for :func:`edin_bounds`.
        mask_token_id: as for :func:`edin_bounds`.
        batch_size: as for :func:`edin_bounds`.
        pad_token_id: as for :func:`edin_bounds`.
        **model_inputs: as for :func:`edin_bounds`.

    Returns:
        ``{"comprehensiveness": (batch, max_n), "sufficiency": (batch, max_n)}``: column
        ``k - 1`` is ``p(x) - p(x with the top k words masked)`` (resp. ``p(x) - p(only the top k
        words kept)``), NaN beyond a row's ``n`` words; ``"n_words": (batch,)``.
    """
    options = {"replacement": mask_token_id, "pad_token_id": pad_token_id, "batch_size": batch_size}
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    ranks_of(scores, pert)  # checks the shape and finiteness on the valid tokens
    words = _word_ids(word_ids, pert.valid)
    per_row = word_scores(scores.to(input_ids.device), words)
    n_words = torch.tensor([len(w) for w in per_row], dtype=torch.long)
    width = max(1, int(n_words.max()) if len(per_row) else 1)
    keeps, rows, where = [], [], []
    for row, values in enumerate(per_row):
        order = _order(values)
        for k in range(1, len(values) + 1):
            top = torch.isin(words[row], order[:k])
            other = (words[row] >= 0) & ~top
            keeps += [~top, ~other]
            rows += [row, row]
            where.append((row, k - 1))
    comp = torch.full((len(per_row), width), float("nan"), dtype=torch.float64)
    suff = comp.clone()
    if keeps:
        probs = pert.log_probs(torch.stack(keeps), torch.tensor(rows, device=input_ids.device))
        full = pert.full_log_probs().exp().cpu()
        probs = probs.exp().cpu()
        for i, (row, col) in enumerate(where):
            comp[row, col] = full[row] - probs[2 * i]
            suff[row, col] = full[row] - probs[2 * i + 1]
    device = input_ids.device
    return {
        "comprehensiveness": nan_where_empty(comp, n_words).to(device),
        "sufficiency": nan_where_empty(suff, n_words).to(device),
        "n_words": n_words.to(device),
    }


def _mean(curve: Tensor) -> Tensor:
    return curve.nanmean(-1)


def edin_comprehensiveness(*args: Any, **options: Any) -> Tensor:
    """Edin comprehensiveness: mean over ``k = 1..n`` of ``p(x) - p(top k words masked)`` (↑).

    Takes the arguments of :func:`edin_curves`; returns ``(batch,)``, NaN without words.
    """
    return _mean(edin_curves(*args, **options)["comprehensiveness"])


def edin_sufficiency(*args: Any, **options: Any) -> Tensor:
    """Edin sufficiency: mean over ``k = 1..n`` of ``p(x) - p(only the top k words)`` (↓).

    Takes the arguments of :func:`edin_curves`; returns ``(batch,)``, NaN without words.
    """
    return _mean(edin_curves(*args, **options)["sufficiency"])


def _naopc(key: str, args: tuple[Any, ...], options: dict[str, Any]) -> Tensor:
    bounds = options.pop("bounds", None)
    exact_max_words = options.pop("exact_max_words", EXACT_MAX_WORDS)
    forward, input_ids, attention_mask, scores, target, special_mask = args
    value = _mean(edin_curves(*args, **options)[key])
    if bounds is None:
        bounds = edin_bounds(
            forward,
            input_ids,
            attention_mask,
            target,
            special_mask,
            exact_max_words=exact_max_words,
            **options,
        )
    return normalise_aopc(value, bounds[key].to(value))


def naopc_comprehensiveness(*args: Any, **options: Any) -> Tensor:
    """Edin et al.'s NAOPC of comprehensiveness: 1 = the best word ordering there is (↑).

    Takes the arguments of :func:`edin_curves`, plus ``bounds`` (precomputed
    :func:`edin_bounds`) and ``exact_max_words``; returns ``(batch,)`` in ``[0, 1]``, NaN where
    the bounds coincide.
    """
    return _naopc("comprehensiveness", args, dict(options))


def naopc_sufficiency(*args: Any, **options: Any) -> Tensor:
    """Edin et al.'s NAOPC of sufficiency: 0 = the best word ordering there is (↓).

    Takes the arguments of :func:`naopc_comprehensiveness`.
    """
    return _naopc("sufficiency", args, dict(options))
