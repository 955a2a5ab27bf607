"""Targets and output activations: the one place every method and metric checks what it explains.

* :func:`normalize_target` turns a user's ``target`` (an int, a list, a tuple or a tensor, as in
  Captum) into one class index per example, refusing floats, booleans and indices outside the
  output, with a ``ValueError`` that says what was wrong.
* :func:`output_activation` reads from a Hugging Face config whether the classes compete
  (``"softmax"``, single-label) or are scored independently (``"sigmoid"``,
  ``problem_type="multi_label_classification"``); :func:`log_probabilities` applies it.
* :func:`prediction_weights` says what "explain the prediction" means for an output: the argmax
  class (softmax), or every label whose sigmoid is over 0.5 (multi-label; the most probable
  label when none is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "check_target_range",
    "log_probabilities",
    "normalize_target",
    "output_activation",
    "prediction_weights",
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
) -> Tensor | None:
    """One class index per example, checked, as a ``(batch,)`` long tensor.

    Args:
        target: ``None`` (explain the prediction; returned as ``None``), an int (every example),
            a one-element tuple ``(c,)`` (Captum's form of an int), or a list, tuple or tensor
            with one int per example (or a single one, broadcast).
        batch: the number of examples.
        n_outputs: the number of classes; when given, every index must be in
            ``[0, n_outputs)``.
        device: where the result lives.

    Returns:
        ``(batch,)`` long tensor, or ``None`` when ``target`` is ``None``.

    Raises:
        ValueError: a float or boolean target, a length that is neither 1 nor ``batch``, a
            nested target, or an index out of range.
    """
    if target is None:
        return None
    if isinstance(target, Tensor):
        if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
            raise ValueError(
                f"target must hold integer class indices, got a {target.dtype} tensor; "
                "floats are refused rather than truncated"
            )
        if target.dim() > 1 and not (target.dim() == 2 and target.shape[1] == 1):
            raise ValueError(
                f"target must be an int or one int per example, got shape {tuple(target.shape)}"
            )
        values = [int(v) for v in target.reshape(-1).tolist()]
    elif isinstance(target, bool):
        raise ValueError(f"target must be an int class index, got the bool {target}")
    elif isinstance(target, int):
        values = [int(target)]
    elif isinstance(target, float):
        raise ValueError(
            f"target must be an int class index, got the float {target}; floats are refused "
            "rather than truncated"
        )
    elif isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        values = []
        for i, item in enumerate(target):
            if isinstance(item, bool) or not isinstance(item, int):
                kind = type(item).__name__
                raise ValueError(
                    f"target[{i}] is a {kind} ({item!r}); a target holds int class indices, one "
                    "per example (floats are refused rather than truncated)"
                )
            values.append(int(item))
        if isinstance(target, tuple) and len(values) > 1 and batch != len(values):
            raise ValueError(
                f"a tuple target {target!r} indexes a multi-dimensional output, but a classifier's "
                "output is (batch, classes): pass an int or one int per example"
            )
    else:
        raise ValueError(
            f"target must be None, an int, a list/tuple of ints or an integer tensor, got "
            f"{type(target).__name__}"
        )
    if not values:
        raise ValueError("target is empty: pass an int or one int per example")
    if len(values) not in (1, batch):
        raise ValueError(f"target has {len(values)} entries for a batch of {batch} examples")
    if n_outputs is not None:
        check_target_range(values, n_outputs)
    if len(values) == 1:
        values = values * batch
    return torch.tensor(values, dtype=torch.long, device=device)


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
