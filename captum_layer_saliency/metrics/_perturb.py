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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from captum_layer_saliency.models.targets import check_target_range, log_probabilities

ForwardFunc = Callable[[Tensor, Tensor], Tensor]
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
        return new_ids[:, :length], new_mask[:, :length].to(attention_mask.dtype)
    if isinstance(replacement, bool) or not isinstance(replacement, int):
        raise TypeError(f"replacement must be {DELETE!r} or an int token id, got {replacement!r}")
    removed = real & ~keep
    return torch.where(removed, replacement, input_ids), attention_mask


@torch.no_grad()
def target_log_probs(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    keep: Tensor,
    rows: Tensor,
    target: Tensor,
    replacement: Replacement = DELETE,
    pad_token_id: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """``log p(target | perturbed input)`` for many perturbations, evaluated in batches.

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)`` the original inputs.
        attention_mask: ``(batch, seq)``.
        keep: ``(n, seq)`` bool, one perturbation per row (see :func:`perturb`).
        rows: ``(n,)`` the example each perturbation applies to.
        target: ``(batch,)`` the class whose probability is read.
        replacement: ``"delete"`` or a token id.
        pad_token_id: the padding id of re-packed batches.
        batch_size: perturbations per forward call.

    Returns:
        ``(n,)`` float64 log-probabilities: the log-softmax of the logits, or the target
        label's log-sigmoid when the forward's ``activation`` is ``"sigmoid"`` (a multi-label
        head; :class:`~captum_layer_saliency.models.inputs.ClassifierForward` reads it from the
        model's config).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = torch.empty(keep.shape[0], dtype=torch.float64, device=input_ids.device)
    activation = getattr(forward, "activation", "softmax")
    for start in range(0, keep.shape[0], batch_size):
        idx = rows[start : start + batch_size]
        ids, mask = perturb(
            input_ids[idx],
            attention_mask[idx],
            keep[start : start + batch_size],
            replacement,
            pad_token_id,
        )
        logits = forward(ids, mask)
        check_target_range(target[idx], logits.shape[-1])
        log_p = log_probabilities(logits.to(torch.float64), activation)
        out[start : start + batch_size] = log_p.gather(-1, target[idx].reshape(-1, 1)).squeeze(-1)
    return out


def full_log_probs(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Tensor,
    pad_token_id: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """``log p(target | x)`` on the unperturbed inputs, through the same path as the perturbations.

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        target: ``(batch,)``.
        pad_token_id: the padding id.
        batch_size: rows per forward call.

    Returns:
        ``(batch,)`` float64 log-probabilities.
    """
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    return target_log_probs(
        forward,
        input_ids,
        attention_mask,
        attention_mask.bool(),
        rows,
        target,
        DELETE,
        pad_token_id,
        batch_size,
    )
