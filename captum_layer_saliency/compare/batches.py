"""The batches of a comparison: a fixed plan, per-(batch, method) seeds, and encoded batches.

The plan depends only on the texts and the batch size, never on what is already done, so a
resumed or sharded run puts every example in the same batch as an uninterrupted one (see
:mod:`captum_layer_saliency.compare.runner`).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.compare.checks import WORD_SENTIMENT, InvalidComparisonError, text_pairs
from captum_layer_saliency.errors import ModelOutputError
from captum_layer_saliency.metrics.sentiment_correlation import token_word_ids
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.targets import predicted_target

__all__ = [
    "EncodedBatch",
    "ModelOutputError",
    "batch_plan",
    "derive_seed",
    "word_rationale_to_tokens",
]


def derive_seed(seed: int, batch_no: int, method: str) -> int:
    """The seed of one (batch, method) pair: stable across runs, platforms and resumes."""
    return zlib.crc32(f"{seed}:{batch_no}:{method}".encode())


def batch_plan(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Positions grouped into batches of similar length (longest first), deterministically.

    Args:
        texts: the examples' texts.
        batch_size: examples per batch.

    Returns:
        Lists of positions into ``texts``.
    """
    if batch_size < 1:
        raise InvalidComparisonError(f"batch_size must be at least 1, got {batch_size}")
    # Character length is a good proxy for token length and needs no tokenisation; ties keep
    # dataset order, so the plan is a pure function of the data.
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def word_rationale_to_tokens(
    tokenizer: Any, text: str, words: Sequence[str], rationale: Sequence[int], input_ids: list[int]
) -> list[int]:
    """Map a per-word rationale onto the tokens of ``text``.

    Uses the fast tokenizer's character offsets: a token belongs to the whitespace word whose
    character span contains the token's first character, and takes that word's label. Special
    tokens (empty offsets) get 0. Offsets are used rather than ``word_ids()`` because the
    tokenizer's notion of a word (punctuation split off) differs from the dataset's whitespace
    words. Words cut off by truncation simply have no tokens.

    Args:
        tokenizer: a fast (Rust) Hugging Face tokenizer.
        text: the example's text, as encoded.
        words: its whitespace words, in order (``text == " ".join(words)`` in our loaders).
        rationale: one 0/1 label per word.
        input_ids: the unpadded ids the example was encoded to, used to check the alignment.

    Returns:
        One 0/1 label per token of ``input_ids``.

    Raises:
        ValueError: lengths disagree, a word is not found in the text, the tokenizer is not a
            fast one, or re-encoding does not reproduce ``input_ids``.
    """
    if len(words) != len(rationale):
        raise ValueError(f"{len(words)} words but {len(rationale)} rationale labels")
    word_ids = token_word_ids(tokenizer, text, words, input_ids)
    return [int(bool(rationale[w])) if w >= 0 else 0 for w in word_ids]


class EncodedBatch:
    """One batch, encoded once and shared by every method and metric.

    Attributes:
        input_ids: ``(batch, seq)`` token ids, on the model's device.
        attention_mask: ``(batch, seq)``, 1 for real tokens.
        special: ``(batch, seq)`` bool, the special tokens.
        valid: ``(batch, seq)`` bool, the real non-special tokens (the ones methods score).
        model_inputs: the model's other inputs that the forward cannot derive from the ids and
            the mask, by name (passed by keyword to every method and metric).
        prediction: ``(batch,)`` the model's top classes.
        target: the explained prediction: ``(batch,)`` classes, or ``(batch, classes)`` 0/1
            label sets for a multi-label head.
        ids: each example's unpadded ids, on the host.
        tokens: each example's unpadded tokens.
        keep: ``(batch, seq)`` bool on the host, the attention mask (which positions are rows').
        rationale: ``(batch, seq)`` 0/1 token rationales, or ``None`` without rationales.
        word_ids: ``(batch, seq)`` the SST word of each token (-1: none), or ``None``.
        word_sentiment: ``(batch, words)`` the SST word sentiments (NaN padded), or ``None``.
        leave_one_out: per-token leave-one-out importance, filled by the first metric needing
            it and reused by the others (it depends on the inputs only).
        aopc_bounds: the per-example AOPC bounds, cached likewise.
    """

    def __init__(
        self,
        clf: TextClassifier,
        examples: Sequence[dict[str, Any]],
        indices: Sequence[int],
        max_length: int,
        *,
        with_rationales: bool,
        with_word_sentiment: bool = False,
    ) -> None:
        """Encode ``examples`` and predict their classes.

        Args:
            clf: the classifier.
            examples: the batch's rows (``text``, optionally ``text_pair``, ``words``,
                ``rationale``, ``word_sentiment``).
            indices: the rows' dataset indices (for error messages).
            max_length: the token budget; longer texts are truncated (the run warned once).
            with_rationales: map the rows' word rationales onto the tokens.
            with_word_sentiment: map the rows' SST word sentiments onto the tokens.

        Raises:
            ModelOutputError: the model's logits hold NaN or inf for some example.
        """
        texts = [str(e["text"]) for e in examples]
        with warnings.catch_warnings():
            # The run already warned once, up front, about every text it truncates.
            warnings.filterwarnings("ignore", message=r".*longer than .* were truncated")
            # A sentence pair is encoded as one; its segment ids are derived again from the
            # ids in every forward, so methods and metrics need not carry them.
            enc = clf.encode(
                texts, text_pairs(examples), max_length=max_length, truncation="truncate"
            )
        # Tensors stay on the model's device; the host copies below are made once per batch.
        self.input_ids: Tensor = enc.pop("input_ids")
        self.attention_mask: Tensor = enc.pop("attention_mask")
        self.special: Tensor = clf.special_mask(self.input_ids)
        self.valid: Tensor = self.attention_mask.bool() & ~self.special
        # The tokenizer's other inputs that the forward cannot derive: every method and metric
        # gets them by keyword (they follow the tokens through the metrics' deletions).
        forward = clf.forward_func
        self.model_inputs = forward.underivable(self.input_ids, self.attention_mask, enc)
        with torch.no_grad():
            logits = forward(self.input_ids, self.attention_mask, **self.model_inputs)
        bad = (~torch.isfinite(logits).all(-1)).nonzero().flatten().tolist()
        if bad:
            raise ModelOutputError(
                f"the model's logits hold NaN or inf for example(s) idx "
                f"{[indices[i] for i in bad]}; no method can explain them (check the model's "
                "weights and dtype). The rows written so far are kept"
            )
        self.prediction: Tensor = logits.argmax(-1)
        # The explained target is the prediction, by the package's one rule: the predicted class,
        # or a multi-label head's predicted label set (models.targets.predicted_target).
        self.target: Tensor = predicted_target(logits, forward.activation)
        self.keep: Tensor = self.attention_mask.bool().cpu()
        ids_host = self.input_ids.cpu()
        self.ids: list[list[int]] = [ids_host[i][self.keep[i]].tolist() for i in range(len(texts))]
        self.tokens = [clf.tokenizer.convert_ids_to_tokens(ids) for ids in self.ids]
        self.leave_one_out: Tensor | None = None
        self.aopc_bounds: dict[str, Tensor] | None = None
        self.rationale: Tensor | None = None
        if with_rationales:
            self.rationale = self._rationale(clf.tokenizer, texts, examples)
        self.word_ids: Tensor | None = None
        self.word_sentiment: Tensor | None = None
        if with_word_sentiment:
            self.word_ids, self.word_sentiment = self._word_sentiment(
                clf.tokenizer, texts, examples
            )

    def _padded(self, per_example: Sequence[Sequence[int]], fill: int) -> Tensor:
        """Per-example token values (unpadded) scattered into a ``(batch, seq)`` host tensor."""
        out = torch.full(tuple(self.keep.shape), fill, dtype=torch.long)
        for i, values in enumerate(per_example):
            out[i, self.keep[i].nonzero().flatten()] = torch.tensor(values, dtype=torch.long)
        return out

    def _rationale(
        self, tokenizer: Any, texts: Sequence[str], examples: Sequence[dict[str, Any]]
    ) -> Tensor:
        # Built on the host (one small list per example), moved to the device once.
        labels = [
            word_rationale_to_tokens(tokenizer, texts[i], ex["words"], ex["rationale"], self.ids[i])
            for i, ex in enumerate(examples)
        ]
        return self._padded(labels, 0).to(self.input_ids.device) & self.valid.long()

    def _word_sentiment(
        self, tokenizer: Any, texts: Sequence[str], examples: Sequence[dict[str, Any]]
    ) -> tuple[Tensor, Tensor]:
        found = [
            token_word_ids(tokenizer, texts[i], ex["words"], self.ids[i])
            for i, ex in enumerate(examples)
        ]
        widest = max(len(ex["words"]) for ex in examples)
        sentiment = torch.full((len(examples), widest), float("nan"), dtype=torch.float64)
        for i, ex in enumerate(examples):
            values = [float(v) for v in ex[WORD_SENTIMENT]]
            sentiment[i, : len(values)] = torch.tensor(values, dtype=torch.float64)
        return self._padded(found, -1), sentiment
