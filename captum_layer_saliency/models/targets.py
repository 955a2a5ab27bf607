"""Targets and output activations: the one place every method and metric checks what it explains.

* :func:`normalize_target` turns a user's ``target`` (an int, a list, a tuple or a tensor, as in
  Captum) into one class index per example, refusing floats, booleans and indices outside the
  output, with a ``ValueError`` that says what was wrong.
* :func:`output_activation` reads from a Hugging Face config whether the classes compete
  (``"softmax"``, single-label) or are scored independently (``"sigmoid"``,
  ``problem_type="multi_label_classification"``); :func:`log_probabilities` applies it.
* :func:`prediction_weights` says what "explain the prediction" means for an output: the argmax
  class (softmax), or every label whose sigmoid is over 0.5 (multi-label; the most probable
  label when none is). :func:`predicted_target` gives it in the form every method, metric and the
  harness take: class indices, or the predicted **label set** of a multi-label head.
* A label set is a ``(batch, classes)`` 0/1 target (:func:`normalize_target` with
  ``label_sets=True``). What is explained for it is the sum of its labels' logits (a method's
  explained scalar, :func:`explained_logit`) and the sum of their log-probabilities (a metric's
  log-probability, :func:`explained_log_probability`: the probability that every label of the set
  is on, the labels being independent under the sigmoid). For one label both are that label's.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "check_target_range",
    "class_index",
    "explained_log_probability",
    "explained_logit",
    "log_probabilities",
    "normalize_target",
    "output_activation",
    "predicted_target",
    "prediction_weights",
    "target_list",
]

Activation = Literal["softmax", "sigmoid"]
#: The output activations: ``"softmax"`` over the classes, or an independent ``"sigmoid"`` per
#: label (multi-label classification).
ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid")


def normalize_target(
    target: Any,
    batch: int,
    n_outputs: int | None = None,
    device: torch.device | str | None = None,
    label_sets: bool = False,
) -> Tensor | None:
    """One class index per example, checked, as a ``(batch,)`` long tensor (or a label set).

    Args:
        target: ``None`` (explain the prediction; returned as ``None``), an int (every example),
            a one-element tuple ``(c,)`` (Captum's form of an int), or a list, tuple or tensor
            with one int per example (or a single one, broadcast).
        batch: the number of examples.
        n_outputs: the number of classes; when given, every index must be in
            ``[0, n_outputs)``.
        device: where the result lives.
        label_sets: also accept a ``(batch, classes)`` (or ``(1, classes)``) tensor of 0/1
            label weights, with ``classes > 1``: the labels explained together per example
            (a multi-label prediction, see :func:`predicted_target`).

    Returns:
        ``(batch,)`` long tensor, ``(batch, classes)`` float 0/1 label weights (a label set), or
        ``None`` when ``target`` is ``None``.

    Raises:
        ValueError: a float or boolean target, a length that is neither 1 nor ``batch``, a
            nested target, or an index out of range; a label set with values other than 0/1,
            an empty row, or another number of classes than the output's.
    """
    if target is None:
        return None
    if label_sets and isinstance(target, Tensor) and target.dim() == 2 and target.shape[1] > 1:
        return _label_set(target, batch, n_outputs, device)
    if _is_array(target):  # a NumPy array: the rule of a tensor
        target = torch.as_tensor(target)
    values = _tensor_values(target) if isinstance(target, Tensor) else _values(target, batch)
    if not values:
        raise ValueError("target is empty: pass an int or one int per example")
    if len(values) not in (1, batch):
        raise ValueError(f"target has {len(values)} entries for a batch of {batch} examples")
    if n_outputs is not None:
        check_target_range(values, n_outputs)
    if len(values) == 1:
        values = values * batch
    return torch.tensor(values, dtype=torch.long, device=device)


def _tensor_values(target: Tensor) -> list[int]:
    """The class indices of a tensor target (integer, one per example or one for all)."""
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(
            f"target must hold integer class indices, got a {target.dtype} tensor; "
            "floats are refused rather than truncated"
        )
    if target.dim() > 1 and not (target.dim() == 2 and target.shape[1] == 1):
        raise ValueError(
            f"target must be an int or one int per example, got shape {tuple(target.shape)}"
        )
    return [int(v) for v in target.reshape(-1).tolist()]


def _is_array(value: Any) -> bool:
    """A NumPy array (or anything array-like with a dtype that is not a tensor or a scalar)."""
    return hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape")


def class_index(value: Any) -> int | None:
    """``value`` as a class index if it is an integer (NumPy's, a 0-d tensor's), else ``None``.

    A float (``1.7``, ``1.0``) or a bool is never a class index.
    """
    if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _values(target: Any, batch: int) -> list[int]:
    """The class indices of an int, list or tuple target."""
    if isinstance(target, bool):
        raise ValueError(f"target must be an int class index, got the bool {target}")
    index = class_index(target)
    if index is not None:
        return [index]
    if isinstance(target, float) or "float" in str(getattr(target, "dtype", "")):
        raise ValueError(
            f"target must be an int class index, got the float {target}; floats are refused "
            "rather than truncated"
        )
    if not isinstance(target, Sequence) or isinstance(target, (str, bytes)):
        raise ValueError(
            f"target must be None, an int, a list/tuple of ints or an integer tensor, got "
            f"{type(target).__name__}"
        )
    values = []
    for i, item in enumerate(target):
        index = class_index(item)
        if index is None:
            kind = type(item).__name__
            raise ValueError(
                f"target[{i}] is a {kind} ({item!r}); a target holds int class indices, one "
                "per example (floats are refused rather than truncated)"
            )
        values.append(index)
    if isinstance(target, tuple) and len(values) > 1 and batch != len(values):
        raise ValueError(
            f"a tuple target {target!r} indexes a multi-dimensional output, but a classifier's "
            "output is (batch, classes): pass an int or one int per example"
        )
    return values


def _label_set(
    target: Tensor, batch: int, n_outputs: int | None, device: torch.device | str | None
) -> Tensor:
    """A checked ``(batch, classes)`` float 0/1 label-set target (see :func:`normalize_target`)."""
    if target.shape[0] not in (1, batch):
        raise ValueError(f"a label-set target has {target.shape[0]} rows for {batch} examples")
    if n_outputs is not None and target.shape[1] != n_outputs:
        raise ValueError(
            f"a label-set target has {target.shape[1]} columns; the output has {n_outputs} classes"
        )
    weights = target.detach().to(device=device, dtype=torch.float64)
    if not bool(((weights == 0) | (weights == 1)).all()):
        raise ValueError("a label-set target holds 0/1 (or bool) label weights only")
    if not bool((weights.sum(-1) > 0).all()):
        raise ValueError("every row of a label-set target needs at least one label")
    return weights.expand(batch, -1).clone()


def check_target_range(values: Sequence[int] | Tensor, n_outputs: int) -> None:
    """Raise ``ValueError`` when a class index is outside ``[0, n_outputs)``.

    Args:
        values: class indices.
        n_outputs: the number of classes of the output.
    """
    items = values.reshape(-1).tolist() if isinstance(values, Tensor) else list(values)
    bad = [v for v in items if not 0 <= int(v) < n_outputs]
    if bad:
        raise ValueError(
            f"target {bad[0]} is out of range for an output of {n_outputs} classes "
            f"(valid: 0..{n_outputs - 1})"
        )


def output_activation(model_or_config: Any) -> Activation:
    """The activation that turns the model's logits into probabilities, from its config.

    Args:
        model_or_config: a Hugging Face model (its ``config`` is read), a config, or anything
            else (then ``"softmax"``).

    Returns:
        ``"sigmoid"`` for ``problem_type == "multi_label_classification"``, else ``"softmax"``.
    """
    config = getattr(model_or_config, "config", model_or_config)
    problem = getattr(config, "problem_type", None)
    return "sigmoid" if problem == "multi_label_classification" else "softmax"


def log_probabilities(logits: Tensor, activation: str = "softmax") -> Tensor:
    """``log p`` of every class: log-softmax, or the per-label log-sigmoid (multi-label).

    Args:
        logits: ``(..., classes)``.
        activation: ``"softmax"`` or ``"sigmoid"``.

    Returns:
        A tensor shaped like ``logits``.
    """
    if activation == "softmax":
        return torch.log_softmax(logits, dim=-1)
    if activation == "sigmoid":
        return torch.nn.functional.logsigmoid(logits)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def prediction_weights(logits: Tensor, activation: str = "softmax") -> Tensor:
    """Which classes "the prediction" is, as a ``(batch, classes)`` 0/1 float matrix.

    The explained scalar of an example is ``(logits * weights).sum(-1)``: the argmax class's logit
    (softmax), or, for a multi-label head (sigmoid), the sum of the logits of every label whose
    sigmoid is over 0.5 (the labels predicted), or the most probable label's when none is.

    Args:
        logits: ``(batch, classes)``.
        activation: ``"softmax"`` or ``"sigmoid"``.

    Returns:
        ``(batch, classes)`` detached weights, 1 on the predicted classes.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    logits = logits.detach()
    top = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    if activation == "softmax":
        return top
    on = (logits > 0).to(logits.dtype)  # sigmoid(z) > 0.5  <=>  z > 0
    return torch.where(on.sum(-1, keepdim=True) > 0, on, top)


def predicted_target(logits: Tensor, activation: str = "softmax") -> Tensor:
    """The target that "explain the prediction" explains: the one rule of the package.

    Args:
        logits: ``(batch, classes)``.
        activation: ``"softmax"`` or ``"sigmoid"`` (a multi-label head).

    Returns:
        ``(batch,)`` argmax classes (softmax), or the ``(batch, classes)`` float 0/1 label set of
        every label whose sigmoid is over 0.5, the most probable label's where none is (sigmoid;
        see :func:`prediction_weights`). Both forms are accepted by every method, the metrics
        and ``normalize_target(..., label_sets=True)``.
    """
    weights = prediction_weights(logits, activation)
    if activation == "softmax":
        return weights.argmax(-1)
    return weights.to(torch.float64)


def explained_logit(logits: Tensor, target: Tensor) -> Tensor:
    """The scalar a method explains per example: the target's logit, or a label set's summed logits.

    Args:
        logits: ``(n, classes)``.
        target: ``(n,)`` class indices or ``(n, classes)`` 0/1 label weights.

    Returns:
        ``(n,)`` in the logits' dtype.
    """
    if target.dim() == 2:
        _check_width(target, logits.shape[-1])
        return (logits * target.to(logits)).sum(-1)
    check_target_range(target, logits.shape[-1])
    return logits.gather(-1, target.reshape(-1, 1).to(logits.device)).squeeze(-1)


def explained_log_probability(log_p: Tensor, target: Tensor) -> Tensor:
    """``log p`` of the explained output: the class's, or the sum over a label set's labels.

    Args:
        log_p: ``(n, classes)`` log-probabilities (:func:`log_probabilities`).
        target: ``(n,)`` class indices or ``(n, classes)`` 0/1 label weights.

    Returns:
        ``(n,)``: ``log p[target]``, or ``sum_c w_c log p_c`` -- under a sigmoid head, the log of
        the probability that every label of the set is on.
    """
    return explained_logit(log_p, target)


def _check_width(weights: Tensor, n_outputs: int) -> None:
    if weights.shape[-1] != n_outputs:
        raise ValueError(
            f"a label-set target has {weights.shape[-1]} columns; the output has {n_outputs} "
            "classes"
        )


def target_list(target: Tensor) -> list[Any]:
    """A target as plain values for result rows: an int per class, a list of labels per set.

    Args:
        target: ``(batch,)`` class indices or ``(batch, classes)`` 0/1 label sets.

    Returns:
        One int (class) or sorted list of ints (label set) per example.
    """
    host = target.detach().cpu()
    if host.dim() == 1:
        return [int(t) for t in host.tolist()]
    return [row.nonzero().flatten().tolist() for row in host]
