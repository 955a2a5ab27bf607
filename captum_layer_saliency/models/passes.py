"""Counting forward and backward passes in full-pass equivalents.

:class:`~captum_layer_saliency.compare.methods.registry.PassCounter` counts the rows that go
through a model's
forward (and back). Some methods run only part of the network: DLS's layer methods run the
blocks below the selected layer once and, per integration step, only the blocks above it. They
say so here, so that a counter books each row at the fraction of the network it ran:

* :func:`partial_passes` scales every row the counter sees inside the block (the model's own
  ``forward`` runs, with the skipped modules stubbed out);
* :func:`report_passes` books passes that never reach the model's output (a forward stopped at
  a layer), which a hook on the model cannot see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["listening", "partial_passes", "pass_scale", "report_passes"]

_SCALE: ContextVar[float] = ContextVar("captum_layer_saliency_pass_scale", default=1.0)
_LISTENERS: list[Callable[[float, float], None]] = []


def pass_scale() -> float:
    """The share of the network the forward runs now (1.0 outside :func:`partial_passes`)."""
    return _SCALE.get()


@contextmanager
def partial_passes(fraction: float) -> Iterator[None]:
    """Book every row through the model's forward (and back) inside the block as ``fraction``.

    Args:
        fraction: the share of the network's blocks that actually run, in ``(0, 1]``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    token = _SCALE.set(fraction)
    try:
        yield
    finally:
        _SCALE.reset(token)


def report_passes(forwards: float, backwards: float = 0.0) -> None:
    """Book ``forwards`` and ``backwards`` (rows x fraction of the network) with every counter."""
    for listener in list(_LISTENERS):
        listener(forwards, backwards)


@contextmanager
def listening(callback: Callable[[float, float], None]) -> Iterator[None]:
    """Call ``callback(forwards, backwards)`` for every :func:`report_passes` in the block."""
    _LISTENERS.append(callback)
    try:
        yield
    finally:
        _LISTENERS.remove(callback)
