"""LAFA of a multi-label prediction: each label set explained as the sum of its logits.

The rule and the mechanism are the package's (:mod:`captum_layer_saliency.models.label_sets`):
the rows are grouped by their set, and while a set is explained the model's output column of its
first label holds the set's summed logits, for the input, LAFA's base and its neighbours alike.
The neighbours' scores cached per (text, class) are set aside meanwhile, since under the hook
that class column means the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from captum_layer_saliency.attr._lafa_scores import NeighbourScores
from captum_layer_saliency.models.label_sets import attribute_targets, label_set_active

__all__ = ["lafa_label_sets"]


def lafa_label_sets(
    lafa: Any,
    ids: Tensor,
    mask: Tensor,
    target: Tensor,
    texts: Sequence[str] | None,
    extra: dict[str, Tensor],
) -> Tensor:
    """``lafa.attribute`` of ``(B, C)`` 0/1 label sets, one call per distinct set.

    Args:
        lafa: the :class:`~captum_layer_saliency.attr.lafa.LAFA` explainer.
        ids: ``(B, n)`` token ids.
        mask: ``(B, n)`` attention mask.
        target: ``(B, C)`` label sets.
        texts: the inputs' texts, or ``None`` (decoded from the ids).
        extra: the model's other inputs by name.

    Returns:
        ``(B, n)`` scores; ``lafa.last_neighbours_`` and ``lafa.last_target_`` describe the whole
        batch.
    """
    if texts is None:
        texts = lafa.tokenizer.batch_decode(ids, skip_special_tokens=True)
    batch_texts = list(texts)
    found: dict[int, list[str]] = {}

    def one(i: Tensor, m: Tensor, t: Tensor, rows: Tensor, **kw: Tensor) -> Tensor:
        kept = lafa._neighbour_scores
        if label_set_active(lafa.model):
            lafa._neighbour_scores = NeighbourScores(
                kept.base, kept.tokenizer, kept.max_length, kept.pad_token_id
            )
        try:
            row_texts = [batch_texts[r] for r in rows.tolist()]
            out: Tensor = lafa.attribute(i, t, attention_mask=m, texts=row_texts, **kw)
        finally:
            lafa._neighbour_scores = kept
        found.update(zip(rows.tolist(), lafa.last_neighbours_ or [], strict=True))
        return out

    out = attribute_targets(one, lafa.model, ids, mask, target, extra, pass_rows=True)
    lafa.last_neighbours_ = [found.get(i, []) for i in range(ids.shape[0])]
    lafa.last_target_ = target
    return out
