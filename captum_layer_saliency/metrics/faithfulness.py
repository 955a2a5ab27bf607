"""Faithfulness as AOPC: ERASER comprehensiveness and sufficiency, their per-bin curves, log-odds.

Every faithfulness metric of the package (here, in :mod:`.curves` and :mod:`.leave_one_out`) is
pure and batched, and takes the same arguments:

* ``forward``: ``f(input_ids, attention_mask, *extra) -> logits`` (a
  :class:`~captum_layer_saliency.models.inputs.ClassifierForward`, such as
  ``TextClassifier.forward_func``, or any function of the ids and mask); probabilities are its
  softmax (the per-label sigmoid when ``forward.activation == "sigmoid"``: a multi-label head);
* ``input_ids``, ``attention_mask``: ``(batch, seq)`` the explained inputs (right-padded);
* ``scores``: ``(batch, seq)`` token attributions, higher = more important (signed: a negative
  score ranks below a zero one);
* ``target``: ``(batch,)`` the explained class (usually the predicted one), or a ``(batch,
  classes)`` 0/1 **label set** (the prediction of a multi-label head,
  :func:`~captum_layer_saliency.models.targets.predicted_target`), whose probability is the
  product of its labels' sigmoids (their log-probabilities summed);
* ``special_mask``: ``(batch, seq)`` bool, True on special tokens, which are never removed;
* ``**model_inputs``: the model's other inputs by their Hugging Face names, each ``(batch, seq,
  ...)`` (``token_type_ids=``, a custom keyword...), as DLS's ``attribute`` takes them. They
  follow their tokens through every deletion (see :mod:`.deletion`); without them a
  ``ClassifierForward`` derives segment and position ids from each perturbed copy.

Rules shared by all (see :mod:`captum_layer_saliency.metrics.deletion`): only valid tokens (real,
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
from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.metrics.deletion import (
    DELETE,
    ForwardFunc,
    Perturbations,
    Replacement,
    nan_where_empty,
    prepare,
    ranks_of,
    tokens_for_fraction,
)

__all__ = ["ERASER_BINS", "aopc_curves", "comprehensiveness", "log_odds", "sufficiency"]

ERASER_BINS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)


def bin_log_probs(pert: Perturbations, ranks: Tensor, bins: Sequence[float], mode: str) -> Tensor:
    """``log p(target)`` with the top-k tokens removed (``"remove"``) or alone kept (``"keep"``).

    Args:
        pert: the bound inputs.
        ranks: ``(batch, seq)`` token ranks.
        bins: fractions of the valid tokens.
        mode: ``"remove"`` or ``"keep"``.

    Returns:
        ``(batch, n_bins)`` log-probabilities.
    """
    batch, n_bins = pert.input_ids.shape[0], len(bins)
    k = torch.stack([tokens_for_fraction(f, pert.n_valid) for f in bins], dim=1)
    top = ranks[:, None, :] < k[:, :, None]  # (batch, n_bins, seq)
    real = pert.attention_mask.bool()[:, None, :]
    # "remove" deletes the top-k; "keep" deletes every other valid token (specials stay).
    keep = (real & ~top) if mode == "remove" else ((real & ~pert.valid[:, None, :]) | top)
    rows = torch.arange(batch, device=pert.input_ids.device).repeat_interleave(n_bins)
    return pert.log_probs(keep.reshape(batch * n_bins, -1), rows).reshape(batch, n_bins)


def _options(batch_size: int, pad_token_id: int, replacement: Replacement) -> dict[str, Any]:
    return {"batch_size": batch_size, "pad_token_id": pad_token_id, "replacement": replacement}


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
    **model_inputs: Tensor,
) -> dict[str, Tensor]:
    """Per-bin ERASER comprehensiveness and sufficiency, for AOPC plots.

    For each bin fraction ``f``, ``k = max(1, ceil(f * n))`` of the ``n`` valid tokens form the
    rationale (the top-k by score).

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes, or a ``(batch, classes)`` label set.
        special_mask: ``(batch, seq)`` True on special tokens.
        bins: fractions of the valid tokens, each in ``(0, 1]``.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` (ERASER) or a token id.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``{"comprehensiveness": (batch, n_bins), "sufficiency": (batch, n_bins),
        "k": (batch, n_bins) tokens per bin, "bins": (n_bins,) fractions}``, with NaN rows for
        examples without valid tokens. ``comprehensiveness = p(x) - p(x without top-k)``,
        ``sufficiency = p(x) - p(top-k and specials only)``.

    Raises:
        ValueError: shapes that differ, a bad target, scores not finite on a valid token, or a
            model input the model does not take.
    """
    options = _options(batch_size, pad_token_id, replacement)
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    ranks = ranks_of(scores, pert)
    p_full = pert.full_log_probs().exp()[:, None]
    p_removed = bin_log_probs(pert, ranks, bins, "remove").exp()
    p_kept = bin_log_probs(pert, ranks, bins, "keep").exp()
    return {
        "comprehensiveness": nan_where_empty(p_full - p_removed, pert.n_valid),
        "sufficiency": nan_where_empty(p_full - p_kept, pert.n_valid),
        "k": torch.stack([tokens_for_fraction(f, pert.n_valid) for f in bins], dim=1),
        "bins": torch.tensor(list(bins), dtype=torch.float64, device=input_ids.device),
    }


def _aopc(
    mode: str,
    args: tuple[ForwardFunc, Tensor, Tensor, Tensor, Tensor, Tensor],
    bins: Sequence[float],
    options: dict[str, Any],
    model_inputs: dict[str, Tensor],
) -> Tensor:
    """Mean over bins of ``p(x) - p(perturbed)``; computes only the side asked for."""
    forward, input_ids, attention_mask, scores, target, special_mask = args
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    ranks = ranks_of(scores, pert)
    p_full = pert.full_log_probs().exp()[:, None]
    p = bin_log_probs(pert, ranks, bins, mode).exp()
    return nan_where_empty((p_full - p).mean(-1), pert.n_valid)


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
    **model_inputs: Tensor,
) -> Tensor:
    """ERASER comprehensiveness as AOPC: mean over bins of ``p(x) - p(x without top-k)``.

    Higher is better. The plain mean over the given bins is used (ERASER's paper divides by
    ``|B| + 1`` to include a 0 % bin, whose comprehensiveness is 0). DeYoung et al., "ERASER: A
    Benchmark to Evaluate Rationalized NLP Models", ACL 2020.

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes, or a ``(batch, classes)`` label set.
        special_mask: ``(batch, seq)`` True on special tokens.
        bins: fractions of the valid tokens (at least one token per bin).
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        replacement: ``"delete"`` (ERASER) or a token id.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``(batch,)`` float64 AOPC, in probability units; NaN for examples without valid tokens.

    Raises:
        ValueError: as :func:`aopc_curves`.
    """
    args = (forward, input_ids, attention_mask, scores, target, special_mask)
    options = _options(batch_size, pad_token_id, replacement)
    return _aopc("remove", args, bins, options, model_inputs)


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
    **model_inputs: Tensor,
) -> Tensor:
    """ERASER sufficiency as AOPC: mean over bins of ``p(x) - p(only top-k and specials)``.

    Lower is better (it can be negative).

    Args:
        forward: as :func:`comprehensiveness`.
        input_ids: as :func:`comprehensiveness`.
        attention_mask: as :func:`comprehensiveness`.
        scores: as :func:`comprehensiveness`.
        target: as :func:`comprehensiveness`.
        special_mask: as :func:`comprehensiveness`.
        bins: as :func:`comprehensiveness`.
        batch_size: as :func:`comprehensiveness`.
        pad_token_id: as :func:`comprehensiveness`.
        replacement: as :func:`comprehensiveness`.
        **model_inputs: as :func:`comprehensiveness`.

    Returns:
        ``(batch,)`` float64 AOPC; NaN for examples without valid tokens.

    Raises:
        ValueError: as :func:`aopc_curves`.
    """
    args = (forward, input_ids, attention_mask, scores, target, special_mask)
    options = _options(batch_size, pad_token_id, replacement)
    return _aopc("keep", args, bins, options, model_inputs)


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
    **model_inputs: Tensor,
) -> Tensor:
    """``log p(target | x without top-k) - log p(target | x)``, with ``k = ceil(fraction * n)``.

    Lower (more negative) is better. Tokens are deleted by default; pass the ``[PAD]`` id as
    ``replacement`` for the replace-by-padding variant (Shrikumar et al., 2017; Chen et al.,
    2020).

    Args:
        forward: ``f(input_ids, attention_mask, *extra) -> logits``.
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        scores: ``(batch, seq)`` attributions.
        target: ``(batch,)`` explained classes, or a ``(batch, classes)`` label set.
        special_mask: ``(batch, seq)`` True on special tokens.
        fraction: the share of valid tokens removed (at least one token).
        replacement: ``"delete"`` or a token id.
        batch_size: perturbed inputs per forward call.
        pad_token_id: the padding id of re-packed inputs.
        **model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``.

    Returns:
        ``(batch,)`` float64 log-ratios (nats); NaN for examples without valid tokens.

    Raises:
        ValueError: as :func:`aopc_curves`.
    """
    options = _options(batch_size, pad_token_id, replacement)
    pert = prepare(forward, input_ids, attention_mask, target, special_mask, options, model_inputs)
    ranks = ranks_of(scores, pert)
    log_removed = bin_log_probs(pert, ranks, (fraction,), "remove")[:, 0]
    return nan_where_empty(log_removed - pert.full_log_probs(), pert.n_valid)
