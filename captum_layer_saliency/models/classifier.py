"""Hugging Face integration: the classifier bundle, its forward, special tokens and encoding.

Everything that knows how a Hugging Face sequence classifier is called lives here, so the
attribution methods, the baselines and the metrics all see the same
``(input_ids, attention_mask) -> logits`` function and the same special-token mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from captum_layer_saliency._options import TRUNCATION_MODES
from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.models.inputs import ClassifierForward, segment_ids, special_mask
from captum_layer_saliency.models.targets import log_probabilities, output_activation

ForwardFunc = Callable[..., Tensor]


class TokenizerMismatchError(CaptumLayerSaliencyError, ValueError):
    """A tokenizer whose ids do not fit the model's embedding (it belongs to another model)."""


def classifier_forward(model: nn.Module, tokenizer: Any = None) -> ClassifierForward:
    """Return ``f(input_ids, attention_mask=None, *extra) -> logits`` for a HF sequence classifier.

    Captum passes ``additional_forward_args`` positionally, so the mask is the second positional
    argument; the model's other inputs follow as :func:`~captum_layer_saliency.models.inputs.
    forward_args` packs them. Segment ids (when ``tokenizer`` makes them) and, under left
    padding, position ids are derived from the ids and mask of every call (see
    :mod:`captum_layer_saliency.models.inputs`).

    Args:
        model: a ``*ForSequenceClassification`` model.
        tokenizer: its tokenizer (optional): gives the separator that delimits a pair's segments.
    """
    return ClassifierForward(model, _segment_separator(tokenizer))


#: How the package tokenises a user's text: ``[SEP]``, ``[PAD]``, ``<s>``... written in the text
#: are split like any other characters (``split_special_tokens`` in transformers), never turned
#: into the model's special tokens; only the tokenizer adds those.
USER_TEXT: dict[str, Any] = {"split_special_tokens": True}


def _segment_separator(tokenizer: Any) -> int | None:
    """The separator id when the tokenizer's encodings carry ``token_type_ids``, else ``None``."""
    if tokenizer is None or "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
        return None
    sep = getattr(tokenizer, "sep_token_id", None)
    return int(sep) if isinstance(sep, int) else None


def special_token_ids(tokenizer: Any) -> list[int]:
    """The ids that never receive saliency ([CLS], [SEP], <s>, padding, ...), sorted.

    The unknown token is left out: it stands for a real word of the input, which deserves its
    share of the explanation like any other.
    """
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None}
    if getattr(tokenizer, "pad_token_id", None) is not None:
        ids.add(int(tokenizer.pad_token_id))
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        ids.discard(int(unk))
    return sorted(ids)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def config_labels(model: nn.Module) -> list[str]:
    """The class names of the model's config (``id2label``, in index order), or ``[]``.

    Args:
        model: a Hugging Face classifier (any module: one without a config has no names).

    Returns:
        ``[id2label[0], id2label[1], ...]`` when the config names every index from 0, else ``[]``.
    """
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    try:
        names = {int(k): str(v) for k, v in dict(id2label).items()}
    except (TypeError, ValueError):
        return []
    if sorted(names) != list(range(len(names))):
        return []
    return [names[i] for i in range(len(names))]


@dataclass
class TextClassifier:
    """A Hugging Face sequence classifier with what explaining it needs.

    Attributes:
        model: an eval-mode ``*ForSequenceClassification`` model.
        tokenizer: its tokenizer.
        lm_head: a module mapping hidden states ``(..., K)`` to vocabulary logits ``(..., V)``
            (the pre-trained backbone's language-model head), or ``None``.
        labels: the class names, indexed like the logits (default: the model config's
            ``id2label``, so a classifier built from a model has its label names).
        name: a short name used in reports.
        max_length: the longest token sequence :meth:`encode` accepts.
    """

    model: nn.Module
    tokenizer: Any
    lm_head: nn.Module | None = None
    labels: list[str] = field(default_factory=list)
    name: str = "model"
    max_length: int = 128

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = config_labels(self.model)

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on; inputs are moved there."""
        return model_device(self.model)

    @property
    def special_token_ids(self) -> list[int]:
        """The tokenizer's special token ids ([CLS], [SEP], padding, ...)."""
        return special_token_ids(self.tokenizer)

    @property
    def forward_func(self) -> ClassifierForward:
        """``f(input_ids, attention_mask, *extra) -> logits`` (see :func:`classifier_forward`)."""
        return classifier_forward(self.model, self.tokenizer)

    @property
    def activation(self) -> str:
        """``"softmax"``, or ``"sigmoid"`` for a multi-label head (from the model's config)."""
        return output_activation(self.model)

    def special_mask(self, input_ids: Tensor) -> Tensor:
        """``True`` where ``input_ids`` ``(batch, seq)`` holds a special token (same shape)."""
        return special_mask(input_ids, self.special_token_ids)

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model's position embeddings allow, when it declares one."""
        value = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def check_tokenizer(self) -> None:
        """Check, before any work, that every id the tokenizer can produce fits the model.

        A tokenizer of another model would otherwise fail deep inside the embedding lookup (on a
        GPU as an opaque device-side assert), or worse, run on the wrong vocabulary. Only a
        tokenizer *larger* than the embedding is certain to be wrong: many models pad their
        embedding matrix beyond the tokenizer's size.

        Raises:
            TokenizerMismatchError: the tokenizer has more tokens than the model's input
                embedding has rows.
        """
        embedding = getattr(self.model, "get_input_embeddings", lambda: None)()
        rows = getattr(embedding, "num_embeddings", None)
        if rows is None:
            rows = getattr(getattr(self.model, "config", None), "vocab_size", None)
        try:
            n_tokens = len(self.tokenizer)
        except TypeError:  # a tokenizer-like object without __len__: nothing to compare
            return
        if isinstance(rows, int) and n_tokens > rows:
            raise TokenizerMismatchError(
                f"the tokenizer has {n_tokens} tokens but the model's input embedding has only "
                f"{rows} rows: this tokenizer does not belong to the model (load both from the "
                "same checkpoint)"
            )

    def token_lengths(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None
    ) -> list[int]:
        """The number of tokens of each text (or pair), special tokens included, uncut.

        Args:
            texts: the texts.
            text_pairs: the second texts of sentence pairs, one per text (optional).

        Returns:
            One length per text.
        """
        if not texts:
            return []
        pairs = list(text_pairs) if text_pairs is not None else None
        ids = self.tokenizer(list(texts), pairs, truncation=False, verbose=False, **USER_TEXT)
        ids = ids["input_ids"]
        return [len(x) for x in ids]

    def encode(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        max_length: int | None = None,
        truncation: str = "error",
    ) -> dict[str, Tensor]:
        """Tokenise ``texts`` (or sentence pairs) into padded tensors on the model device.

        Args:
            texts: one text or a sequence of texts (the first sentences of pairs).
            text_pairs: the second sentences, one per text, for a sentence-pair classifier
                (entailment, paraphrase...); ``None`` for single texts.
            max_length: the token budget, special tokens included (default ``self.max_length``);
                it may not exceed the model's positions (``max_position_embeddings``).
            truncation: ``"error"`` (default) raises on a text longer than ``max_length``;
                ``"truncate"`` cuts it (a pair: the longer sentence first) and warns. Nothing
                is ever cut silently.

        Returns:
            A dict with ``input_ids`` and ``attention_mask``, both ``(batch, seq)``, and
            ``token_type_ids`` ``(batch, seq)`` when the tokenizer makes segment ids and the
            model takes them. Pass it as ``explainer.attribute(enc["input_ids"],
            attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"])``.

        Raises:
            ValueError: no texts, an empty text, pairs of another length than the texts, an
                unknown truncation mode, a ``max_length`` over the model's positions, or (with
                ``truncation="error"``) a text over the budget.
        """
        if truncation not in TRUNCATION_MODES:
            raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}")
        batch = _text_list(texts, "text")
        pairs = None if text_pairs is None else _text_list(text_pairs, "text pair")
        if pairs is not None and len(pairs) != len(batch):
            raise ValueError(f"{len(batch)} texts but {len(pairs)} text pairs: give one per text")
        budget = max_length or self.max_length
        limit = self.max_positions
        if limit is not None and max_length is None:
            budget = min(budget, limit)  # the default budget never exceeds the model
        if limit is not None and budget > limit:
            raise ValueError(
                f"max_length={budget} is longer than the model's {limit} positions "
                f"(max_position_embeddings): pass max_length <= {limit}, with "
                "truncation='truncate' to cut longer texts (CLI: --max-length, --truncation)"
            )
        lengths = self.token_lengths(batch, pairs)
        too_long = [(i, n) for i, n in enumerate(lengths) if n > budget]
        if too_long:
            i, n = too_long[0]
            if truncation == "error":
                raise ValueError(
                    f"text {i} has {n} tokens, more than max_length={budget} "
                    f"({len(too_long)} text(s) too long); pass truncation='truncate' to cut "
                    "them, or a larger max_length (CLI: --truncation truncate, --max-length)"
                )
            warn_user(
                f"{len(too_long)} text(s) longer than {budget} tokens were truncated "
                f"(the longest had {max(n for _, n in too_long)})"
            )
        forward = self.forward_func
        # Encoders classify from the first position: it must not be padding.
        side = {"padding_side": "right"} if forward.pools_first_token else {}
        enc = self.tokenizer(
            batch,
            pairs,
            **side,
            padding=True,
            truncation="longest_first",
            max_length=budget,
            return_tensors="pt",
            **USER_TEXT,
        )
        _check_real_tokens(enc["input_ids"], enc["attention_mask"], self.special_token_ids)
        device = self.device
        out = {
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
        }
        if "token_type_ids" in enc and "token_type_ids" in forward.input_names:
            out["token_type_ids"] = enc["token_type_ids"].to(device)
            sep = forward.sep_token_id
            derived = (
                None if sep is None else segment_ids(enc["input_ids"], enc["attention_mask"], sep)
            )
            if derived is None or not torch.equal(
                derived, enc["token_type_ids"] * enc["attention_mask"]
            ):
                warn_user(
                    "this tokenizer's segment ids do not follow the [SEP] convention the metrics "
                    "derive them by; pass token_type_ids explicitly to every explainer"
                )
        return out

    @torch.no_grad()
    def predict_proba(self, texts: str | Sequence[str], **encode_kwargs: Any) -> Tensor:
        """Class probabilities ``(batch, labels)``: softmax, or sigmoid per label (multi-label)."""
        enc = self.encode(texts, **encode_kwargs)
        logits = self.forward_func(enc.pop("input_ids"), enc.pop("attention_mask"), **enc)
        return log_probabilities(logits.float(), self.activation).exp()

    def predict(self, texts: str | Sequence[str], **encode_kwargs: Any) -> list[str]:
        """Predicted label names (multi-label: the labels over 0.5 joined by ``+``, or the top)."""
        proba = self.predict_proba(texts, **encode_kwargs)

        def name(i: int) -> str:
            return self.labels[i] if i < len(self.labels) else str(i)

        if self.activation == "sigmoid":
            out = []
            for row in proba:
                on = (row > 0.5).nonzero().flatten().tolist() or [int(row.argmax())]
                out.append("+".join(name(i) for i in on))
            return out
        return [name(i) for i in proba.argmax(-1).tolist()]


def _text_list(texts: str | Sequence[str], what: str) -> list[str]:
    batch = [texts] if isinstance(texts, str) else list(texts)
    if not batch:
        raise ValueError(f"no {what}s to encode: got an empty sequence")
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise TypeError(f"{what} {i} is a {type(text).__name__}, not a str")
        if not text.strip():
            raise ValueError(f"{what} {i} is empty or only whitespace; there is nothing to explain")
    return batch


def _check_real_tokens(input_ids: Tensor, mask: Tensor, special_ids: Sequence[int]) -> None:
    """Refuse a row with no token but the special ones: a text that tokenises to nothing."""
    real = mask.bool() & ~special_mask(input_ids, special_ids)
    empty = (~real.any(dim=-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"text {empty[0]} has no token the tokenizer keeps (only invisible or special "
            "characters); there is nothing to explain"
        )


@runtime_checkable
class TokenAttributor(Protocol):
    """Anything that scores the tokens of a batch for a target class.

    The one attributor protocol of the package: the registry's methods implement it, and the
    harness, ``explain`` and LAFA (its base saliency) call it.
    """

    def attribute(self, input_ids: Tensor, attention_mask: Tensor, target: Tensor) -> Tensor:
        """Return detached float ``(batch, seq)`` scores, 0 on padding and special tokens."""
        ...
