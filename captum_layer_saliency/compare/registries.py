"""The method and metric registries a comparison draws from, as one value passed in.

The runner and the CLI take a :class:`Registries` argument (default: the real ones, from
:mod:`captum_layer_saliency.compare.methods` and :mod:`captum_layer_saliency.metrics`), so a test
swaps in small, cheap fakes by passing them, without touching any module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from captum_layer_saliency.compare.methods import (
    METHODS,
    PassCounter,
    get_method,
    resolve_method_name,
)
from captum_layer_saliency.compare.methods.registry import ALIASES
from captum_layer_saliency.metrics import METRICS, aopc_curves, leave_one_out
from captum_layer_saliency.models.classifier import TextClassifier, TokenAttributor

__all__ = ["WORD_SENTIMENT", "CountsPasses", "Registries", "needs_word_sentiment"]

#: The column of per-word SST sentiments (``|label - 2|``) that ``word_sentiment_r`` needs.
WORD_SENTIMENT = "word_sentiment"


class CountsPasses(Protocol):
    """What the runner reads of a pass counter (see ``compare.methods.PassCounter``)."""

    forwards: float
    backwards: float


def needs_word_sentiment(metric: Any) -> bool:
    """Whether a metric compares with SST word sentiments (rather than word rationales).

    Args:
        metric: a metric's metadata (a :class:`~captum_layer_saliency.metrics.Metric`).

    Returns:
        ``True`` for metrics whose ``inputs`` is ``"word_sentiment"``.
    """
    return getattr(metric, "inputs", "rationale") == WORD_SENTIMENT


@dataclass(frozen=True)
class Registries:
    """The methods and metrics a comparison can use; every field defaults to the real one.

    Attributes:
        methods: canonical method name -> its spec (``kind``, ``description``, ``factory``).
        aliases: alias -> canonical method name (for listings).
        resolve_method: a name or alias -> its canonical name; raises ``ValueError`` when
            unknown.
        get_method: ``get_method(name, clf, **options)`` -> a token attributor.
        pass_counter: ``pass_counter(model)`` -> a context manager counting the model's passes.
        metrics: metric name -> its metadata (``kind``, ``higher_is_better``, ``fn``, ``inputs``).
        aopc_curves: the per-bin comprehensiveness and sufficiency curves (one call gives both
            AOPC metrics).
        leave_one_out: per-token leave-one-out importance (shared by the metrics that need it).
    """

    # The live registry dicts (not copies): methods registered later are seen.
    methods: Mapping[str, Any] = field(default_factory=lambda: METHODS)
    aliases: Mapping[str, str] = field(default_factory=lambda: ALIASES)
    resolve_method: Callable[[str], str] = resolve_method_name
    get_method: Callable[..., TokenAttributor] = get_method
    pass_counter: Callable[[nn.Module], AbstractContextManager[CountsPasses]] = PassCounter
    metrics: Mapping[str, Any] = field(default_factory=lambda: METRICS)
    aopc_curves: Callable[..., dict[str, Any]] = aopc_curves
    leave_one_out: Callable[..., Any] = leave_one_out

    def canonical_method(self, name: str) -> str:
        """A method's registry name, with aliases resolved (``ig`` -> ``integrated_gradients``).

        Args:
            name: a method name or alias.

        Returns:
            The canonical name.

        Raises:
            ValueError: the name is not a known method or alias.
        """
        return self.resolve_method(name)

    def build_method(
        self, name: str, clf: TextClassifier, seed: int, options: Mapping[str, Any]
    ) -> TokenAttributor:
        """``get_method``, with the run's seed passed to methods that take one (unless set).

        Args:
            name: a canonical method name.
            clf: the classifier to explain.
            seed: the run's base seed.
            options: keyword options for the method's factory.

        Returns:
            The attributor.
        """
        factory = getattr(self.methods.get(name), "factory", None)
        takes_seed = factory is not None and "seed" in inspect.signature(factory).parameters
        if takes_seed and "seed" not in options:
            # The registry's stochastic methods seed their own draws; without this, --seed
            # would not reach them.
            options = {**options, "seed": seed}
        return self.get_method(name, clf, **options)

    def metric_fn(self, name: str) -> Callable[..., Any]:
        """The function computing metric ``name`` (one value per example)."""
        fn: Callable[..., Any] | None = getattr(self.metrics[name], "fn", None)
        if fn is None:
            raise ValueError(f"metric {name!r} has no function")
        return fn

    def default_metrics(self, has_rationales: bool, has_word_sentiment: bool = False) -> list[str]:
        """Every faithfulness metric, plus the plausibility ones the data supports.

        Args:
            has_rationales: the data has word-level human rationales.
            has_word_sentiment: the rows have SST word sentiments (for ``word_sentiment_r``).

        Returns:
            Metric names, in registry order.
        """
        return [
            name
            for name, metric in self.metrics.items()
            if metric.kind == "faithfulness"
            or (
                has_rationales
                and metric.kind == "plausibility"
                and (has_word_sentiment or not needs_word_sentiment(metric))
            )
        ]

    def needs_word_sentiment(self, names: Sequence[str]) -> bool:
        """Whether any of the metrics ``names`` needs SST word sentiments."""
        return any(needs_word_sentiment(self.metrics[name]) for name in names)
