"""Explaining a multi-label prediction: a label set as one output, for any method.

"Explain the prediction" of a multi-label head is decided in one place,
:func:`~captum_layer_saliency.models.targets.predicted_target`: every label whose sigmoid is over
0.5 (the most probable where none is). The scalar explained for such a **label set** is the sum
of its labels' logits, as DLS does with ``target=None``. A method that explains one class per
example (every Captum method, the registry's, LAFA's base) explains a label set through
:func:`label_set_output`: while it is open, the model's output column of the set's first label
holds the set's summed logits, so the method's ordinary target machinery (Captum's batch
expansions included) explains exactly that scalar. :func:`attribute_targets` runs any
``attribute(ids, mask, target, **model_inputs)`` that way: rows with one label as usual, rows with
a label set grouped by their set, one call per distinct set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.models.inputs import logits_of

__all__ = ["attribute_targets", "label_set_active", "label_set_output", "target_groups"]

#: The models whose output a :func:`label_set_output` rewrites now (by ``id``), with the set.
_ACTIVE: dict[int, tuple[int, ...]] = {}


def label_set_active(model: nn.Module) -> tuple[int, ...] | None:
    """The label set whose summed logits ``model``'s output holds now, or ``None``.

    Args:
        model: the classifier.

    Returns:
        The set's label indices while a :func:`label_set_output` is open on it, else ``None``.
    """
    return _ACTIVE.get(id(model))


@contextmanager
def label_set_output(model: nn.Module, labels: Tensor) -> Iterator[int]:
    """While open, the model's output column ``labels[0]`` is the sum of the set's logits.

    A forward hook on ``model`` rewrites its logits (a tensor, ``.logits`` of a Hugging Face
    output, or the first item of a tuple); it is removed on exit, also after an exception. The
    weights and the other columns are untouched.

    Args:
        model: the classifier.
        labels: the label set, as ``(classes,)`` 0/1 float or bool weights, or a 1-D integer
            tensor of label indices.

    Yields:
        The column that holds the set's summed logits: pass it as the target.

    Raises:
        ValueError: an empty label set.
    """
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError("a label set is a non-empty 1-D tensor")
    as_weights = labels.dtype.is_floating_point or labels.dtype == torch.bool
    index = labels.nonzero().flatten() if as_weights else labels.long()
    if index.numel() == 0:
        raise ValueError("a label set needs at least one label")
    column = int(index[0])

    def summed(logits: Tensor) -> Tensor:
        w = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
        w[index.to(logits.device)] = 1
        out = logits.clone()
        out[..., column] = (logits * w).sum(-1)
        return out

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (summed(output[0]), *output[1:])
        if isinstance(output, Tensor):
            return summed(output)
        output.logits = summed(logits_of(output))
        return output

    handle = model.register_forward_hook(hook)
    _ACTIVE[id(model)] = tuple(index.tolist())
    try:
        yield column
    finally:
        handle.remove()
        del _ACTIVE[id(model)]


def target_groups(target: Tensor) -> list[tuple[Tensor, Tensor | None]]:
    """The rows of a label-set target, grouped: one-label rows together, then one group per set.

    Args:
        target: ``(batch, classes)`` 0/1 label sets.

    Returns:
        ``[(rows, labels)]``: ``labels`` is ``None`` for the rows with a single label (explain
        ``target[rows].argmax(-1)``), else the set's label indices (1-D, for
        :func:`label_set_output`).
    """
    counts = (target != 0).sum(-1)
    groups: list[tuple[Tensor, Tensor | None]] = []
    single = (counts == 1).nonzero().flatten()
    if single.numel():
        groups.append((single, None))
    multi = (counts > 1).nonzero().flatten()
    if multi.numel():
        sets, which = torch.unique(target[multi] != 0, dim=0, return_inverse=True)
        groups += [(multi[which == g], sets[g].nonzero().flatten()) for g in range(sets.shape[0])]
    return groups


def attribute_targets(
    attribute: Callable[..., Tensor],
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    target: Tensor,
    model_inputs: Mapping[str, Tensor] | None = None,
    *,
    pass_rows: bool = False,
) -> Tensor:
    """``attribute(ids, mask, target, **model_inputs)`` for class indices or label sets.

    Args:
        attribute: a method's ``attribute(input_ids, attention_mask, target, **model_inputs)``
            returning ``(batch, seq)`` scores for one class per example.
        model: the model the method runs (its output is rewritten for label sets).
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)``.
        target: ``(batch,)`` class indices, or ``(batch, classes)`` 0/1 label sets (as
            :func:`~captum_layer_saliency.models.targets.predicted_target` gives them).
        model_inputs: the model's other inputs by name, each ``(batch, seq, ...)``; passed to
            ``attribute`` by keyword, cut to each call's rows.
        pass_rows: also pass ``rows=``, the batch rows of each call (``(k,)`` indices).

    Returns:
        ``(batch, seq)`` scores: for a row with one label, the method's map of that label; for a
        row with several, its map of their summed logits (equal to the sum of the labels' maps
        for a method linear in the output, such as gradient x input or DLS).
    """
    model_inputs = dict(model_inputs or {})
    if target.dim() == 1:
        everyone = torch.arange(input_ids.shape[0], device=input_ids.device)
        rows_kw = {"rows": everyone} if pass_rows else {}
        return attribute(input_ids, attention_mask, target, **rows_kw, **model_inputs)
    out: Tensor | None = None
    for rows, labels in target_groups(target):
        inputs = {name: value[rows] for name, value in model_inputs.items()}
        if pass_rows:
            inputs = {**inputs, "rows": rows}
        args = (input_ids[rows], attention_mask[rows])
        if labels is None:
            scores = attribute(*args, target[rows].argmax(-1), **inputs)
        else:
            with label_set_output(model, labels) as column:
                column_t = torch.full((rows.numel(),), column, device=input_ids.device)
                scores = attribute(*args, column_t, **inputs)
        if out is None:
            out = torch.zeros(
                (input_ids.shape[0], *scores.shape[1:]), dtype=scores.dtype, device=scores.device
            )
        out[rows.to(out.device)] = scores
    assert out is not None
    return out
