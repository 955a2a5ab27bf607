"""LAFA's neighbour scores: the base saliency of each neighbour text, once per (text, class)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.models.classifier import TokenAttributor

#: Cached neighbour scores kept at most (the cache is cleared when it grows past this).
CACHE_LIMIT = 200_000
#: Neighbour texts explained per call of the base.
CHUNK = 32


class NeighbourScores:
    """The base scores of neighbour texts, cached per (text, class) for the owner's lifetime.

    Every base LAFA uses is deterministic for a given text and class, so a cached score is the
    score the base would give again.

    Args:
        base: the base saliency, ``attribute(input_ids, attention_mask, target) -> (B, n)``.
        tokenizer: turns the texts into ids.
        max_length: texts are truncated to this many tokens.
        pad_token_id: the id that pads the returned ids.
    """

    def __init__(
        self, base: TokenAttributor, tokenizer: Any, max_length: int, pad_token_id: int
    ) -> None:
        self.base, self.tokenizer = base, tokenizer
        self.max_length, self.pad_token_id = max_length, pad_token_id
        self._cache: dict[tuple[str, int], tuple[list[int], list[float]]] = {}

    def __call__(
        self, texts: list[list[str]], target: Tensor, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Padded ids and base scores of each example's neighbours.

        Only the (text, class) pairs not yet cached are computed.

        Args:
            texts: per example, its neighbour texts (up to ``k``).
            target: ``(B,)`` the class each example (and so each of its neighbours) is
                explained for.
            device: where the results go.

        Returns:
            ``(ids, scores)``, both ``(B, k, m)``: the neighbours' token ids (padded with
            ``pad_token_id``) and their base scores (NaN marks empty slots).
        """
        classes = target.tolist()
        wanted = {(text, int(t)) for row, t in zip(texts, classes, strict=True) for text in row}
        self._compute(sorted(key for key in wanted if key not in self._cache), wanted, device)
        k = max((len(row) for row in texts), default=0)
        width = max((len(self._cache[key][0]) for key in wanted), default=0)
        out_ids = torch.full((len(texts), k, width), self.pad_token_id, dtype=torch.long)
        out_scores = torch.full((len(texts), k, width), float("nan"))
        for b, (row, t) in enumerate(zip(texts, classes, strict=True)):
            for j, text in enumerate(row):
                tok, sc = self._cache[(text, int(t))]
                out_ids[b, j, : len(tok)] = torch.tensor(tok)
                out_scores[b, j, : len(sc)] = torch.tensor(sc)
        return out_ids.to(device), out_scores.to(device)

    def _compute(
        self, missing: list[tuple[str, int]], wanted: set[tuple[str, int]], device: torch.device
    ) -> None:
        """Explain the ``missing`` pairs in chunks (all ``wanted`` ones if the cache is full)."""
        if len(self._cache) + len(missing) > CACHE_LIMIT:
            self._cache.clear()
            missing = sorted(wanted)
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            enc = self.tokenizer(
                [text for text, _ in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                split_special_tokens=True,  # user text never becomes special tokens
            )
            nb_ids = enc["input_ids"].to(device)
            nb_mask = enc["attention_mask"].to(device)
            classes = torch.tensor([c for _, c in chunk], device=device)
            got = self.base.attribute(nb_ids, nb_mask, classes).float()
            for j, key in enumerate(chunk):
                real = nb_mask[j].bool()
                self._cache[key] = (nb_ids[j, real].tolist(), got[j, real].tolist())
