"""Shared machinery of the metrics: token ranking and batched evaluation of perturbed inputs.

Conventions, the same for every metric:

* **Valid tokens** are the real (``attention_mask == 1``), non-special tokens. Only they are ranked,
  removed or compared with rationales; special tokens are always kept and padding is ignored.
* **Ranking**: valid tokens sorted by score, highest first. **Ties are broken by position, earlier
  first**, so a constant score vector ranks tokens left to right and every metric is deterministic.
* **Removal** is either *deletion* (``"delete"``: the token is taken out and the sequence re-packed
  to the left, so the model sees a shorter input; the default) or *replacement* by a token id
  (an ``int``, e.g. the ``[PAD]`` or ``[MASK]`` id, keeping the length and positions).
* A re-packed batch is right-padded with ``pad_token_id``; a row with nothing left (only possible
  with a tokenizer that adds no special tokens) is one padding token under a zero attention mask.
* **The model's other inputs** (``token_type_ids``, a custom keyword...), passed to a metric by
  their Hugging Face names as DLS's ``attribute`` takes them, follow their tokens: each
  perturbed copy takes its example's row, and deletion moves them with the kept tokens (0 on the
  new padding); ``position_ids`` are renumbered from the row's first kept position, as a shorter
  input would be. They reach the forward as Captum-style ``additional_forward_args``
  (:func:`~captum_layer_saliency.models.inputs.forward_args`), the one way every method passes
  them. Without them, a :class:`~captum_layer_saliency.models.inputs.ClassifierForward` derives
  segment and position ids from each perturbed copy itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.models.inputs import (
    check_model_inputs,
    forward_args,
    position_ids_from_mask,
)
from captum_layer_saliency.models.targets import (
    explained_log_probability,
    log_probabilities,
    normalize_target,
)

ForwardFunc = Callable[..., Tensor]
Replacement = str | int

DELETE = "delete"


def valid_token_mask(attention_mask: Tensor, special_mask: Tensor) -> Tensor:
    """Boolean ``(batch, seq)`` mask of the real, non-special tokens.

    Args:
        attention_mask: ``(batch, seq)``, 1 on real tokens and 0 on padding.
        special_mask: ``(batch, seq)`` bool, True on special tokens.

    Returns:
        ``attention_mask.bool() & ~special_mask``.
    """
    return attention_mask.bool() & ~special_mask.bool()


def token_ranks(scores: Tensor, valid: Tensor) -> Tensor:
    """Rank of every position among the valid tokens of its row (0 = most important).

    Ties are broken by position (earlier first). Invalid positions get the rank ``seq``, after
    every valid token.

    Args:
        scores: ``(batch, seq)`` float scores.
        valid: ``(batch, seq)`` bool mask of the tokens to rank.

    Returns:
        ``(batch, seq)`` long ranks.

    Raises:
        ValueError: a valid token has a NaN or infinite score.
    """
    scores = scores.detach().to(torch.float64)
    if not torch.isfinite(scores[valid]).all():
        raise ValueError("scores must be finite on the valid (real, non-special) tokens")
    seq = scores.shape[-1]
    # Invalid positions sort after every valid one; a stable sort keeps ties in position order.
    key = torch.where(valid, scores, torch.full_like(scores, -torch.inf))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(seq, device=order.device).expand_as(order).contiguous())
    return torch.where(valid, ranks, torch.full_like(ranks, seq))


def top_k_mask(scores: Tensor, valid: Tensor, k: Tensor | int) -> Tensor:
    """The ``k`` highest-scoring valid tokens of each row, ties broken by position.

    Args:
        scores: ``(batch, seq)`` scores.
        valid: ``(batch, seq)`` bool mask of the candidate tokens.
        k: how many tokens per row, an int or a ``(batch,)`` tensor; more than a row has
            selects all of them.

    Returns:
        ``(batch, seq)`` bool mask.
    """
    k_t = torch.as_tensor(k, device=scores.device).reshape(-1, 1)
    # Invalid positions rank after every valid one, but a k beyond the row would reach them.
    return (token_ranks(scores, valid) < k_t) & valid


def tokens_for_fraction(fraction: float, n_valid: Tensor) -> Tensor:
    """``ceil(fraction * n)`` tokens, at least one and at most ``n`` (0 when ``n`` is 0).

    A tolerance of 1e-9 keeps exact products such as ``0.1 * 10`` from rounding up to 2.

    Args:
        fraction: a fraction in ``(0, 1]``.
        n_valid: ``(batch,)`` numbers of valid tokens.

    Returns:
        ``(batch,)`` long token counts.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fractions must be in (0, 1], got {fraction}")
    k = torch.ceil(n_valid.to(torch.float64) * fraction - 1e-9).long()
    return torch.minimum(k.clamp(min=1), n_valid.long())


def perturb(
    input_ids: Tensor,
    attention_mask: Tensor,
    keep: Tensor,
    replacement: Replacement = DELETE,
    pad_token_id: int = 0,
) -> tuple[Tensor, Tensor]:
    """Remove the real tokens where ``keep`` is False, by deletion or replacement.

    Args:
        input_ids: ``(n, seq)`` token ids.
        attention_mask: ``(n, seq)`` attention mask.
        keep: ``(n, seq)`` bool; False on the real tokens to remove (ignored on padding).
        replacement: ``"delete"`` to take the tokens out and re-pack each row to the left, or a
            token id to write in their place.
        pad_token_id: the id written into the padding of a re-packed batch.

    Returns:
        The perturbed ``(input_ids, attention_mask)``; deletion trims the batch to its longest row.

    Raises:
        ValueError: an unknown replacement string.
        TypeError: a replacement that is neither ``"delete"`` nor an int.
    """
    ids, mask, _ = perturb_with_inputs(
        input_ids, attention_mask, keep, replacement, pad_token_id, {}
    )
    return ids, mask


def perturb_with_inputs(
    input_ids: Tensor,
    attention_mask: Tensor,
    keep: Tensor,
    replacement: Replacement,
    pad_token_id: int,
    model_inputs: Mapping[str, Tensor],
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """:func:`perturb`, with the model's other inputs (``(n, seq, ...)`` each) moved alike.

    Returns:
        ``(input_ids, attention_mask, model_inputs)`` of the perturbed rows (see the module
        docstring for how the other inputs follow their tokens).
    """
    real = attention_mask.bool()
    if isinstance(replacement, str):
        if replacement != DELETE:
            raise ValueError(f"replacement must be {DELETE!r} or a token id, got {replacement!r}")
        kept = real & keep
        # A stable sort on "not kept" moves the kept tokens to the front in their original order.
        order = torch.sort((~kept).to(torch.int8), dim=-1, stable=True).indices
        new_mask = torch.gather(kept, -1, order)
        new_ids = torch.where(new_mask, torch.gather(input_ids, -1, order), pad_token_id)
        length = max(int(new_mask.sum(-1).max().item()) if new_mask.numel() else 0, 1)
        moved = {
            name: _repacked(name, value, order, new_mask)[:, :length]
            for name, value in model_inputs.items()
        }
        return new_ids[:, :length], new_mask[:, :length].to(attention_mask.dtype), moved
    if isinstance(replacement, bool) or not isinstance(replacement, int):
        raise TypeError(f"replacement must be {DELETE!r} or an int token id, got {replacement!r}")
    removed = real & ~keep
    return torch.where(removed, replacement, input_ids), attention_mask, dict(model_inputs)


def _repacked(name: str, value: Tensor, order: Tensor, new_mask: Tensor) -> Tensor:
    """One model input gathered like its tokens; 0 on the new padding."""
    index = order.reshape(*order.shape, *([1] * (value.dim() - 2))).expand_as(value)
    moved = torch.gather(value, 1, index)
    if name == "position_ids" and value.dim() == 2:
        # A shorter input's positions: consecutive from the row's first kept position.
        return moved[:, :1] + position_ids_from_mask(new_mask).to(moved)
    real = new_mask.reshape(*new_mask.shape, *([1] * (value.dim() - 2)))
    return torch.where(real, moved, torch.zeros_like(moved))


@dataclass
class Perturbations:
    """One metric call's checked inputs, and how it reads ``log p(target)`` of perturbed copies.

    Built by :func:`prepare`. ``target`` is ``(batch,)`` class indices or ``(batch, classes)``
    0/1 label weights (a multi-label prediction; see
    :func:`~captum_layer_saliency.models.targets.explained_log_probability`).
    """

    forward: ForwardFunc
    input_ids: Tensor
    attention_mask: Tensor
    target: Tensor
    valid: Tensor
    replacement: Replacement = DELETE
    pad_token_id: int = 0
    batch_size: int = 64
    model_inputs: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_valid(self) -> Tensor:
        """``(batch,)`` the number of valid tokens per example."""
        return self.valid.sum(-1)

    @torch.no_grad()
    def log_probs(
        self, keep: Tensor, rows: Tensor, replacement: Replacement | None = None
    ) -> Tensor:
        """``log p(target | perturbed input)`` for many perturbations, evaluated in batches.

        Args:
            keep: ``(n, seq)`` bool, one perturbation per row (see :func:`perturb`).
            rows: ``(n,)`` the example each perturbation applies to.
            replacement: overrides :attr:`replacement` (the unperturbed inputs use deletion,
                which keeps every token).

        Returns:
            ``(n,)`` float64 log-probabilities: the log-softmax of the logits, or the log-sigmoid
            per label when the forward's ``activation`` is ``"sigmoid"`` (a multi-label head;
            :class:`~captum_layer_saliency.models.inputs.ClassifierForward` reads it from the
            model's config), summed over a label set.
        """
        how = self.replacement if replacement is None else replacement
        out = torch.empty(keep.shape[0], dtype=torch.float64, device=self.input_ids.device)
        activation = getattr(self.forward, "activation", "softmax")
        for start in range(0, keep.shape[0], self.batch_size):
            idx = rows[start : start + self.batch_size]
            ids, mask, inputs = perturb_with_inputs(
                self.input_ids[idx],
                self.attention_mask[idx],
                keep[start : start + self.batch_size],
                how,
                self.pad_token_id,
                {name: value[idx] for name, value in self.model_inputs.items()},
            )
            logits = self.forward(ids, *forward_args(mask, inputs))
            log_p = log_probabilities(logits.to(torch.float64), activation)
            out[start : start + self.batch_size] = explained_log_probability(
                log_p, self.target[idx]
            )
        return out

    def full_log_probs(self) -> Tensor:
        """``(batch,)`` float64 ``log p(target | x)``, through the perturbations' path."""
        rows = torch.arange(self.input_ids.shape[0], device=self.input_ids.device)
        return self.log_probs(self.attention_mask.bool(), rows, DELETE)


def prepare(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Any,
    special_mask: Tensor,
    options: Mapping[str, Any],
    model_inputs: Mapping[str, Tensor],
) -> Perturbations:
    """Check a metric's inputs and bind them (the shared first step of every metric).

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        target: class indices (see
            :func:`~captum_layer_saliency.models.targets.normalize_target`) or a ``(batch,
            classes)`` label set.
        special_mask: ``(batch, seq)`` True on special tokens.
        options: ``replacement``, ``pad_token_id``, ``batch_size`` (any of them).
        model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        The bound :class:`Perturbations`.

    Raises:
        ValueError: shapes that differ, a missing or bad target, a non-positive batch size, a
            model input the model does not take or of another shape.
    """
    if attention_mask.shape != input_ids.shape or special_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} "
            f"and special_mask {tuple(special_mask.shape)} must all be (batch, seq)"
        )
    checked = normalize_target(target, input_ids.shape[0], device=input_ids.device, label_sets=True)
    if checked is None:
        raise ValueError("target is required: the class whose probability the metric reads")
    if options.get("batch_size", 64) < 1:
        raise ValueError(f"batch_size must be positive, got {options['batch_size']}")
    inputs = check_model_inputs(model_inputs, input_ids, getattr(forward, "model", None))
    return Perturbations(
        forward,
        input_ids,
        attention_mask,
        checked,
        valid_token_mask(attention_mask, special_mask.to(input_ids.device)),
        model_inputs=inputs,
        **options,
    )


def ranks_of(scores: Tensor, pert: Perturbations) -> Tensor:
    """Check ``scores`` against the inputs and rank the valid tokens (see :func:`token_ranks`).

    Raises:
        ValueError: scores of another shape than the ids, or not finite on a valid token.
    """
    if scores.shape != pert.input_ids.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} must be (batch, seq) like input_ids "
            f"{tuple(pert.input_ids.shape)}"
        )
    return token_ranks(scores.to(pert.input_ids.device), pert.valid)


def nan_where_empty(values: Tensor, n_valid: Tensor) -> Tensor:
    """Set the examples with no valid token to NaN (broadcast over trailing dims)."""
    empty = (n_valid == 0).reshape(-1, *([1] * (values.dim() - 1)))
    return values.masked_fill(empty, float("nan"))


def full_log_probs(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Any,
    pad_token_id: int = 0,
    batch_size: int = 64,
    **model_inputs: Tensor,
) -> Tensor:
    """``log p(target | x)`` on the unperturbed inputs, through the metrics' path.

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        target: ``(batch,)`` classes or a ``(batch, classes)`` label set.
        pad_token_id: the padding id.
        batch_size: rows per forward call.
        **model_inputs: the model's other inputs by name.

    Returns:
        ``(batch,)`` float64 log-probabilities.
    """
    special = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    options = {"pad_token_id": pad_token_id, "batch_size": batch_size}
    pert = prepare(forward, input_ids, attention_mask, target, special, options, model_inputs)
    return pert.full_log_probs()
