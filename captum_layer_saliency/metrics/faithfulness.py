"""Faithfulness metrics: how much the model's output depends on the tokens a method ranks first.

All functions are pure and batched. They take the same arguments:

* ``forward``: ``f(input_ids, attention_mask) -> logits``; probabilities are its softmax (the
  per-label sigmoid when ``forward.activation == "sigmoid"``: a multi-label head);
* ``input_ids``, ``attention_mask``: ``(batch, seq)`` the explained inputs (right-padded);
* ``scores``: ``(batch, seq)`` token attributions, higher = more important (signed: a negative
  score ranks below a zero one);
* ``target``: ``(batch,)`` the explained class (usually the predicted one);
* ``special_mask``: ``(batch, seq)`` bool, True on special tokens, which are never removed.

Rules shared by all (see :mod:`captum_layer_saliency.metrics._perturb`): only valid tokens (real,
non-special) are ranked and removed; **ties are broken by position, earlier first**; tokens are
**deleted** (taken out, the sequence re-packed, the specials kept) unless a replacement token id is
given. Note that the perturbation baselines *replace* tokens by ``[PAD]`` while these metrics
delete them; compare methods by paired differences on the same inputs.

**Edge cases.** An example with no valid token (all special) has nothing to explain: every metric
returns NaN for it, so aggregate with ``nanmean`` and report the count. With a single valid token,
every bin removes (or keeps) that one token. Kendall τ needs two valid tokens and a non-constant
score and leave-one-out vector, otherwise it is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_layer_saliency.metrics._perturb import (
    DELETE,
    ForwardFunc,
    Replacement,
    full_log_probs,
    target_log_probs,
    token_ranks,
    tokens_for_fraction,
    valid_token_mask,
)
from captum_layer_saliency.models.targets import normalize_target

ERASER_BINS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)


def _prepare(
    input_ids: Tensor, attention_mask: Tensor, scores: Tensor, target: Tensor, special_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate shapes; return the valid mask, the ranks, the valid counts and a long target."""
    if scores.shape != input_ids.shape or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} "
            f"and scores {tuple(scores.shape)} must all be (batch, seq)"
        )
    if special_mask.shape != input_ids.shape:
        raise ValueError(f"special_mask must be {tuple(input_ids.shape)}")
    checked = normalize_target(target, input_ids.shape[0], device=input_ids.device)
    if checked is None:
        raise ValueError("target is required: the class whose probability the metric reads")
    target = checked
    valid = valid_token_mask(attention_mask, special_mask.to(input_ids.device))
    ranks = token_ranks(scores.to(input_ids.device), valid)
    return valid, ranks, valid.sum(-1), target


def _nan_where_empty(values: Tensor, n_valid: Tensor) -> Tensor:
    """Set the examples with no valid token to NaN (broadcast over trailing dims)."""
    empty = (n_valid == 0).reshape(-1, *([1] * (values.dim() - 1)))
    return values.masked_fill(empty, float("nan"))


def _bin_log_probs(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    ranks: Tensor,
    valid: Tensor,
    n_valid: Tensor,
    target: Tensor,
    bins: Sequence[float],
    mode: str,
    replacement: Replacement,
    pad_token_id: int,
    batch_size: int,
) -> Tensor:
    """``log p(target)`` with the top-k tokens removed (``"remove"``) or alone kept (``"keep"``).

    Returns:
        ``(batch, n_bins)`` log-probabilities.
    """
    batch, n_bins = input_ids.shape[0], len(bins)
    k = torch.stack([tokens_for_fraction(f, n_valid) for f in bins], dim=1)  # (batch, n_bins)
    top = ranks[:, None, :] < k[:, :, None]  # (batch, n_bins, seq)
    real = attention_mask.bool()[:, None, :]
    # "remove" deletes the top-k; "keep" deletes every other valid token (specials stay).
    keep = (real & ~top) if mode == "remove" else ((real & ~valid[:, None, :]) | top)
    rows = torch.arange(batch, device=input_ids.device).repeat_interleave(n_bins)
    log_p = target_log_probs(
        forward,
        input_ids,
        attention_mask,
        keep.reshape(batch * n_bins, -1),
        rows,
        target,
        replacement,
        pad_token_id,
        batch_size,
    )
    return log_p.reshape(batch, n_bins)


def aopc_curves(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float] = ERASER_BINS,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
) -> dict[str, Tensor]:
    """Per-bin ERASER comprehensiveness and sufficiency, for AOPC plots.

    For each bin fraction ``f``, ``k = max(1, ceil(f * n))`` of the ``n`` valid tokens form the
    rationale (the top-k by score).

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes.
        special_mask: ``(batch, seq)`` True on special tokens.
        bins: fractions of the valid tokens, each in ``(0, 1]``.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` (ERASER) or a token id.

    Returns:
        ``{"comprehensiveness": (batch, n_bins), "sufficiency": (batch, n_bins),
        "k": (batch, n_bins) tokens per bin, "bins": (n_bins,) fractions}``, with NaN rows for
        examples without valid tokens. ``comprehensiveness = p(x) - p(x without top-k)``,
        ``sufficiency = p(x) - p(top-k and specials only)``.
    """
    valid, ranks, n_valid, target = _prepare(
        input_ids, attention_mask, scores, target, special_mask
    )
    p_full = full_log_probs(
        forward, input_ids, attention_mask, target, pad_token_id, batch_size
    ).exp()[:, None]
    common = (input_ids, attention_mask, ranks, valid, n_valid, target, bins)
    p_removed = _bin_log_probs(forward, *common, "remove", replacement, pad_token_id, batch_size)
    p_kept = _bin_log_probs(forward, *common, "keep", replacement, pad_token_id, batch_size)
    k = torch.stack([tokens_for_fraction(f, n_valid) for f in bins], dim=1)
    return {
        "comprehensiveness": _nan_where_empty(p_full - p_removed.exp(), n_valid),
        "sufficiency": _nan_where_empty(p_full - p_kept.exp(), n_valid),
        "k": k,
        "bins": torch.tensor(list(bins), dtype=torch.float64, device=input_ids.device),
    }


def _aopc(
    mode: str,
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float],
    batch_size: int,
    pad_token_id: int,
    replacement: Replacement,
) -> Tensor:
    """Mean over bins of ``p(x) - p(perturbed)``; computes only the side asked for."""
    valid, ranks, n_valid, target = _prepare(
        input_ids, attention_mask, scores, target, special_mask
    )
    p_full = full_log_probs(forward, input_ids, attention_mask, target, pad_token_id, batch_size)
    log_p = _bin_log_probs(
        forward,
        input_ids,
        attention_mask,
        ranks,
        valid,
        n_valid,
        target,
        bins,
        mode,
        replacement,
        pad_token_id,
        batch_size,
    )
    return _nan_where_empty((p_full.exp()[:, None] - log_p.exp()).mean(-1), n_valid)


def comprehensiveness(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float] = ERASER_BINS,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
) -> Tensor:
    """ERASER comprehensiveness as AOPC: mean over bins of ``p(x) - p(x without top-k)``.

    Higher is better. The plain mean over the given bins is used (ERASER's paper divides by
    ``|B| + 1`` to include a 0 % bin, whose comprehensiveness is 0).

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes.
        special_mask: ``(batch, seq)`` True on special tokens.
        bins: fractions of the valid tokens (at least one token per bin).
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` (ERASER) or a token id.

    Returns:
        ``(batch,)`` float64 AOPC; NaN for examples without valid tokens.
    """
    return _aopc(
        "remove",
        forward,
        input_ids,
        attention_mask,
        scores,
        target,
        special_mask,
        bins,
        batch_size,
        pad_token_id,
        replacement,
    )


def sufficiency(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    bins: Sequence[float] = ERASER_BINS,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
) -> Tensor:
    """ERASER sufficiency as AOPC: mean over bins of ``p(x) - p(only top-k and specials)``.

    Lower is better (it can be negative). Arguments as :func:`comprehensiveness`.

    Returns:
        ``(batch,)`` float64 AOPC; NaN for examples without valid tokens.
    """
    return _aopc(
        "keep",
        forward,
        input_ids,
        attention_mask,
        scores,
        target,
        special_mask,
        bins,
        batch_size,
        pad_token_id,
        replacement,
    )


def _curve_auc(
    insertion: bool,
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    replacement: Replacement,
    steps: int | None,
    batch_size: int,
    pad_token_id: int,
) -> Tensor:
    """Normalised trapezoid area under ``p(target)`` as tokens are removed or inserted in order."""
    valid, ranks, n_valid, target = _prepare(
        input_ids, attention_mask, scores, target, special_mask
    )
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be a positive int or None, got {steps}")
    batch, device = input_ids.shape[0], input_ids.device
    grid = int(n_valid.max().item()) if steps is None else steps
    j = torch.arange(grid + 1, device=device)[None, :]
    n = n_valid[:, None]
    # k tokens removed (inserted) at step j. Without `steps` every token is a step and rows shorter
    # than the longest repeat their last point, which adds no area.
    k = torch.minimum(j, n) if steps is None else torch.round(j * n / grid).long()
    # Evaluate each distinct (example, k) once; k <= seq, so seq + 1 separates the examples.
    base = input_ids.shape[1] + 1
    key = torch.arange(batch, device=device)[:, None] * base + k
    uniq, inverse = torch.unique(key.reshape(-1), return_inverse=True)
    rows, k_u = uniq // base, uniq % base
    top = ranks[rows] < k_u[:, None]
    real = attention_mask.bool()[rows]
    keep = ((real & ~valid[rows]) | top) if insertion else (real & ~top)
    probs = (
        target_log_probs(
            forward,
            input_ids,
            attention_mask,
            keep,
            rows,
            target,
            replacement,
            pad_token_id,
            batch_size,
        )
        .exp()[inverse]
        .reshape(batch, grid + 1)
    )
    x = k.to(torch.float64) / n.clamp(min=1)
    auc = torch.trapezoid(probs, x, dim=-1)
    return _nan_where_empty(auc, n_valid)


def deletion_auc(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    replacement: Replacement = DELETE,
    steps: int | None = None,
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> Tensor:
    """Area under ``p(target)`` as the valid tokens are removed, most important first.

    Lower is better. The x axis is the fraction of valid tokens removed, from 0 to 1, so the area
    lies in ``[0, 1]``. At the end only the special tokens are left.

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes.
        special_mask: ``(batch, seq)`` True on special tokens.
        replacement: ``"delete"`` or the token id that replaces removed tokens (e.g. ``[PAD]``).
        steps: ``None`` evaluates after every token (``n + 1`` points); an int ``m`` evaluates at
            ``k = round(j * n / m)`` tokens for ``j = 0..m`` (cheaper on long inputs).
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.

    Returns:
        ``(batch,)`` float64 areas; NaN for examples without valid tokens.
    """
    return _curve_auc(
        False,
        forward,
        input_ids,
        attention_mask,
        scores,
        target,
        special_mask,
        replacement,
        steps,
        batch_size,
        pad_token_id,
    )


def insertion_auc(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    replacement: Replacement = DELETE,
    steps: int | None = None,
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> Tensor:
    """Area under ``p(target)`` as the valid tokens are inserted, most important first.

    Higher is better. The curve starts from the special tokens alone (or every valid token
    replaced) and ends at the full input. Arguments as :func:`deletion_auc`.

    Returns:
        ``(batch,)`` float64 areas in ``[0, 1]``; NaN for examples without valid tokens.
    """
    return _curve_auc(
        True,
        forward,
        input_ids,
        attention_mask,
        scores,
        target,
        special_mask,
        replacement,
        steps,
        batch_size,
        pad_token_id,
    )


def log_odds(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    fraction: float = 0.2,
    replacement: Replacement = DELETE,
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> Tensor:
    """``log p(target | x without top-k) - log p(target | x)``, with ``k = ceil(fraction * n)``.

    Lower (more negative) is better. Tokens are deleted by default; pass the ``[PAD]`` id as
    ``replacement`` for the replace-by-padding variant.

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes.
        special_mask: ``(batch, seq)`` True on special tokens.
        fraction: the share of valid tokens removed (at least one token).
        replacement: ``"delete"`` or a token id.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.

    Returns:
        ``(batch,)`` float64 log-ratios; NaN for examples without valid tokens.
    """
    valid, ranks, n_valid, target = _prepare(
        input_ids, attention_mask, scores, target, special_mask
    )
    log_full = full_log_probs(forward, input_ids, attention_mask, target, pad_token_id, batch_size)
    log_removed = _bin_log_probs(
        forward,
        input_ids,
        attention_mask,
        ranks,
        valid,
        n_valid,
        target,
        (fraction,),
        "remove",
        replacement,
        pad_token_id,
        batch_size,
    )[:, 0]
    return _nan_where_empty(log_removed - log_full, n_valid)


def kendall_tau_b(x: Tensor, y: Tensor) -> float:
    """Kendall's τ-b between two 1-D vectors (ties handled as in ``scipy.stats.kendalltau``).

    Args:
        x: ``(n,)`` values.
        y: ``(n,)`` values.

    Returns:
        τ-b in ``[-1, 1]``; NaN when ``n < 2`` or either vector is constant.
    """
    x, y = x.to(torch.float64).reshape(-1), y.to(torch.float64).reshape(-1)
    if x.numel() < 2:
        return float("nan")
    sx = torch.sign(x[:, None] - x[None, :]).triu(diagonal=1)
    sy = torch.sign(y[:, None] - y[None, :]).triu(diagonal=1)
    # Pairs tied in x (or y) count in neither the concordant-minus-discordant sum nor that side
    # of the denominator: tau_b = (C - D) / sqrt((n0 - ties_x) * (n0 - ties_y)).
    untied_x, untied_y = sx.abs().sum(), sy.abs().sum()
    if untied_x == 0 or untied_y == 0:
        return float("nan")
    return float((sx * sy).sum() / torch.sqrt(untied_x * untied_y))


def leave_one_out(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Tensor,
    special_mask: Tensor,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
) -> Tensor:
    """Leave-one-out importance: ``p(x) - p(x without token i)`` for every valid token.

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        target: ``(batch,)`` explained classes.
        special_mask: ``(batch, seq)`` True on special tokens.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` or a token id.

    Returns:
        ``(batch, seq)`` float64, 0 on special tokens and padding.
    """
    zeros = torch.zeros(input_ids.shape, device=input_ids.device)
    valid, _, _, target = _prepare(input_ids, attention_mask, zeros, target, special_mask)
    rows, cols = valid.nonzero(as_tuple=True)
    keep = attention_mask.bool()[rows].clone()
    keep[torch.arange(rows.numel(), device=rows.device), cols] = False
    log_p = target_log_probs(
        forward,
        input_ids,
        attention_mask,
        keep,
        rows,
        target,
        replacement,
        pad_token_id,
        batch_size,
    )
    p_full = full_log_probs(
        forward, input_ids, attention_mask, target, pad_token_id, batch_size
    ).exp()
    loo = torch.zeros(input_ids.shape, dtype=torch.float64, device=input_ids.device)
    loo[rows, cols] = p_full[rows] - log_p.exp()
    return loo


def kendall_tau_loo(
    forward: ForwardFunc,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    batch_size: int = 64,
    pad_token_id: int = 0,
    replacement: Replacement = DELETE,
    loo: Tensor | None = None,
) -> Tensor:
    """Kendall τ-b between the scores and leave-one-out importance, over the valid tokens.

    Higher is better. Leave-one-out deletes one token at a time (see :func:`leave_one_out`).

    Args:
        forward: ``f(input_ids, attention_mask) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes.
        special_mask: ``(batch, seq)`` True on special tokens.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` or a token id.
        loo: the batch's :func:`leave_one_out` importance, when already computed. It does not
            depend on the scores, so a comparison of many methods on one batch computes it once
            (one forward per token) instead of once per method.

    Returns:
        ``(batch,)`` float64; NaN with fewer than two valid tokens or a constant side.
    """
    valid, _, _, target = _prepare(input_ids, attention_mask, scores, target, special_mask)
    if loo is None:
        loo = leave_one_out(
            forward,
            input_ids,
            attention_mask,
            target,
            special_mask,
            batch_size,
            pad_token_id,
            replacement,
        )
    elif loo.shape != input_ids.shape:
        raise ValueError(
            f"loo has shape {tuple(loo.shape)}; expected the inputs' {tuple(input_ids.shape)}"
        )
    # Kendall's tau runs on the host: copy the batch once rather than syncing per example.
    scores_host, loo_host, valid_host = scores.detach().cpu(), loo.cpu(), valid.cpu()
    taus = [
        kendall_tau_b(scores_host[b][valid_host[b]], loo_host[b][valid_host[b]])
        for b in range(input_ids.shape[0])
    ]
    return torch.tensor(taus, dtype=torch.float64, device=input_ids.device)
