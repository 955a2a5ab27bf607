"""Counting forward and backward passes in full-pass equivalents.

:class:`PassCounter` counts the rows that go through a model's forward (and back); the comparison
runner and the DLS benchmarks use it. Some methods run only part of the network: DLS's layer methods
run the blocks below the selected layer once and, per integration step, only the blocks above it.
They say so here, so that a counter books each row at the fraction of the network it ran:

* :func:`partial_passes` scales every row the counter sees inside the block (the model's own
  ``forward`` runs, with the skipped modules stubbed out);
* :func:`report_passes` books passes that never reach the model's output (a forward stopped at
  a layer), which a hook on the model cannot see.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from torch import Tensor, nn

__all__ = ["LISTENERS", "PassCounter", "listening", "partial_passes", "pass_scale", "report_passes"]

_SCALE: ContextVar[float] = ContextVar("captum_layer_saliency_pass_scale", default=1.0)
#: The callbacks of the :class:`PassCounter` s open in this thread (each thread, and each
#: asyncio task, has its own: a counter never books another thread's passes).
#: ``LISTENERS.get()`` is empty when none listens, so callers may skip reporting.
LISTENERS: ContextVar[tuple[Callable[[float, float], None], ...]] = ContextVar(
    "captum_layer_saliency_pass_listeners", default=()
)


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
    for listener in LISTENERS.get():
        listener(forwards, backwards)


@contextmanager
def listening(callback: Callable[[float, float], None]) -> Iterator[None]:
    """Call ``callback(forwards, backwards)`` for every :func:`report_passes` in the block."""
    LISTENERS.set((*LISTENERS.get(), callback))
    try:
        yield
    finally:  # by identity, so counters closed out of order each leave only themselves
        LISTENERS.set(tuple(c for c in LISTENERS.get() if c is not callback))


class PassCounter:
    """Counts the rows a model processes forward and backward in the thread that opened it.

    A call on the same model from another thread is not counted.

    ``forwards`` is the number of examples (batch rows) that went through the model's forward,
    summed over calls; ``backwards`` the number of rows through which a gradient flowed back from
    the logits. So explaining 8 sentences with IG at 25 steps counts ``forwards == 200`` (plus
    any extra pass the method makes), and the cost per explained example is
    ``forwards / 8`` (:meth:`per_example`). Raw call counts are in ``forward_calls`` and
    ``backward_calls``. Methods that run only part of the network (DLS's layer methods run the
    blocks above the selected layer per step) book each row at that fraction
    (:func:`partial_passes`, :func:`report_passes`), so the counts are in full-pass equivalents.

    Args:
        model: the ``nn.Module`` whose ``forward`` is counted (the classifier itself).
        listen: also count the passes reported by :func:`report_passes` (the default). False
            counts only what the hook on ``model`` sees: a method that runs on its own copy of
            the model counts the copy so, and reports the counts to the user's model's counter
            (reported passes reach every listening counter once).
    """

    def __init__(self, model: nn.Module, *, listen: bool = True) -> None:
        """Prepare a counter for ``model``; counting starts when the context opens."""
        self.model = model
        self.listen = listen
        self.forwards: float = 0
        self.backwards: float = 0
        self.forward_calls = self.backward_calls = 0
        self._handle: Any = None
        self._listening: Any = None
        self._thread: int | None = None

    def __enter__(self) -> PassCounter:
        """Start counting: hook the model's forward and listen for reported passes."""
        self._thread = threading.get_ident()
        self._handle = self.model.register_forward_hook(self._on_forward)
        if self.listen:
            self._listening = listening(self._on_report)
            self._listening.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop counting: remove the hook and the listener (also after an exception)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._listening is not None:
            self._listening.__exit__(None, None, None)
            self._listening = None

    def _on_report(self, forwards: float, backwards: float) -> None:
        self.forwards += forwards
        self.backwards += backwards

    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() != self._thread:
            return  # another thread's call on the same model
        logits = getattr(output, "logits", None)
        if logits is None:
            logits = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(logits, Tensor):
            return
        rows = (int(logits.shape[0]) if logits.dim() > 0 else 1) * pass_scale()
        self.forwards += rows
        self.forward_calls += 1
        if logits.requires_grad:
            # The hook runs when autograd computes the logits' gradient, i.e. once per backward
            # pass through this forward (torch.autograd.grad included).
            logits.register_hook(functools.partial(self._on_backward, rows))

    def _on_backward(self, rows: float, grad: Tensor) -> None:
        self.backwards += rows
        self.backward_calls += 1

    def per_example(self, n_examples: int) -> dict[str, float]:
        """The counts per explained example.

        Args:
            n_examples: how many examples were explained.

        Returns:
            ``{"forwards": ..., "backwards": ...}`` divided by ``n_examples``.

        Raises:
            ValueError: ``n_examples`` is not positive.
        """
        if n_examples <= 0:
            raise ValueError(f"n_examples must be positive, got {n_examples}")
        return {"forwards": self.forwards / n_examples, "backwards": self.backwards / n_examples}
