"""What a comparison will cost, said before it starts: examples, methods, metrics, passes.

``compare`` prints :func:`format_plan` before any work, so a user sees that Shapley sampling
and the per-token curve metrics dominate a run (they cost a forward pass per token) before
waiting ten minutes for 16 texts. The numbers are *model forward passes* (rows through the
classifier), estimated from each method's settings and the texts' token counts; they are
estimates of work, not of seconds (a backward pass costs about two forwards; DLS also decodes
with the LM head).

One-off costs (a method's calibration or reference index, paid once per run, not per
example) are listed apart: :data:`ONE_OFF_NOTES` holds the standing notes, and a method's
factory options can add one (:func:`one_off_note`); this is the hook for the layer
calibration of DLS.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from captum_layer_saliency.attr.lafa import DEFAULTS
from captum_layer_saliency.attr.layer_methods import LayerMethod
from captum_layer_saliency.attr.layer_selection import stored_selection
from captum_layer_saliency.compare.methods import METHODS
from captum_layer_saliency.compare.methods.lafa import FACTORY_DEFAULTS
from captum_layer_saliency.metrics.edin import BEAM, EDIN, ERASER, EXACT_MAX_WORDS
from captum_layer_saliency.metrics.faithfulness import ERASER_BINS
from captum_layer_saliency.models.surgery import find_model_parts

__all__ = [
    "ONE_OFF_NOTES",
    "APPROX_LAYER",
    "ComparisonPlan",
    "dls_cost",
    "dls_layers",
    "edin_bound_passes",
    "format_plan",
    "method_passes",
    "metric_passes",
    "one_off_note",
    "plan_comparison",
]


def _option(method: str, name: str, options: Mapping[str, Any], default: int) -> int:
    """An option's value: the user's, else the factory's default, else ``default``."""
    if name in options:
        return int(options[name])
    factory = getattr(METHODS.get(method), "factory", None)
    if factory is not None:
        try:
            parameter = inspect.signature(factory).parameters.get(name)
        except (TypeError, ValueError):
            parameter = None
        if parameter is not None and isinstance(parameter.default, int):
            return int(parameter.default)
    return default


def _lafa_passes(n: int, options: Mapping[str, Any]) -> float:
    """At most ``k + 1`` runs of the base.

    The input and its neighbours; a neighbour's base scores are computed once per explainer and
    reused.
    """
    k = int(options.get("k", DEFAULTS["k"]))
    base = options.get("base", FACTORY_DEFAULTS["base"])
    base_options = {"n_samples": options.get("n_samples", FACTORY_DEFAULTS["n_samples"])}
    per_run = _METHOD_PASSES[base](n, base_options) if base in _METHOD_PASSES else 1
    return (k + 1) * per_run


#: Where DLS's layer is unknown before the run: block 5 of 6 (``APPROX_LAYER``), the layer its
#: label-free calibration chooses on the default models (BENCHMARKS.md); with a known depth
#: of ``L`` blocks, block ``L - 1``.
APPROX_LAYER = (5, 6)

_DLS_LAYER = re.compile(r"^dls_layer(\d+)$")
#: The ``DecodedLayerSaliency`` options that set its layer method.
_LAYER_METHOD_OPTIONS = {
    "layer_method": "name",
    "n_steps": "n_steps",
    "layer_baseline": "baseline",
    "integration": "integration",
}


def dls_cost(
    method: str,
    options: Mapping[str, Any] | None = None,
    layer: tuple[int | None, int | None] | None = None,
) -> dict[str, float]:
    """The passes per example of a DLS registry variant, from its actual options.

    Uses :meth:`LayerMethod.cost <captum_layer_saliency.attr.layer_methods.LayerMethod.cost>`,
    the formula DLS reports its ``last_cost_`` with, so the plan and the measured passes agree.

    Args:
        method: ``dls``, ``dls_gradient``, ``dls_ig``, ``dls_layer<L>`` or another ``dls*``
            registry name; its factory's bound options (e.g. ``dls_ig``'s ``n_steps=2``) apply.
        options: the user's options, overriding the factory's (``layer_method``, ``n_steps``,
            ``layer_baseline``, ``integration``).
        layer: ``(depth, n_blocks)``: the layer's index among ``[embeddings, block 1, ...,
            block L]`` and ``L``, where known (either may be None). ``dls_layer<L>`` gives its
            depth itself. Unknown: block ``L - 1`` of ``L``, or block 5 of 6
            (:data:`APPROX_LAYER`), the stated approximation.

    Returns:
        ``{"forwards": f, "backwards": b}`` per example, in full-pass equivalents (excluding a
        one-off calibration), for a call that names the explained class, as ``compare``'s do.
    """
    factory = getattr(METHODS.get(method), "factory", None)
    bound = dict(factory.keywords) if isinstance(factory, functools.partial) else {}
    merged = {**bound, **(options or {})}
    given = merged.get("layer_method", "integrated_gradients")
    if isinstance(given, LayerMethod):
        layer_method = given
    else:
        fields = {
            v: merged[k] for k, v in _LAYER_METHOD_OPTIONS.items() if merged.get(k) is not None
        }
        layer_method = LayerMethod(**{"name": "integrated_gradients", **fields})
    depth, n_blocks = layer or (None, None)
    match = _DLS_LAYER.match(method)
    if match:
        depth = int(match.group(1))
    elif merged.get("layer") is not None:
        depth = int(merged["layer"])
    if n_blocks is None:
        n_blocks = max(APPROX_LAYER[1], depth or 0)
    if depth is None:
        depth = n_blocks - 1  # APPROX_LAYER when the blocks are unknown too
    return layer_method.cost(depth, n_blocks, target_given=True)  # compare names the class


def dls_layers(
    model: nn.Module, methods: Sequence[str]
) -> dict[str, tuple[int | None, int | None]]:
    """What is known before a run of the layer each DLS method in ``methods`` will explain at.

    Args:
        model: the classifier.
        methods: canonical method names (others are ignored).

    Returns:
        DLS method -> ``(depth, n_blocks)``: ``n_blocks`` where the model's blocks are known
        (:func:`~captum_layer_saliency.models.surgery.find_model_parts`), ``depth`` where a
        layer selection is stored with the model (``dls_layer<L>`` give theirs by name).
    """
    try:
        n_blocks: int | None = len(find_model_parts(model).blocks)
    except (TypeError, ValueError, AttributeError):
        n_blocks = None
    stored = stored_selection(model)
    depth = stored.layer if stored is not None else None
    return {m: (depth, n_blocks) for m in methods if m.startswith("dls")}


#: Forward passes per example of each method, from its options and ``n`` (the example's
#: scored tokens). Gradient methods: one forward per path point or sample (each with a
#: backward); perturbation methods: one forward per perturbed input.
_METHOD_PASSES: dict[str, Callable[[int, Mapping[str, Any]], float]] = {
    "saliency": lambda n, o: 1,
    "input_x_gradient": lambda n, o: 1,
    "gim": lambda n, o: 1,
    "attnlrp": lambda n, o: 1,
    "smoothgrad": lambda n, o: _option("smoothgrad", "n_samples", o, 25),
    "integrated_gradients": lambda n, o: _option("integrated_gradients", "n_steps", o, 25),
    "deeplift": lambda n, o: 2,
    "deeplift_shap": lambda n, o: 4,
    "gradient_shap": lambda n, o: _option("gradient_shap", "n_samples", o, 5),
    "occlusion": lambda n, o: (
        1
        + max(
            1,
            (n - _option("occlusion", "window", o, 3)) // _option("occlusion", "stride", o, 1) + 1,
        )
    ),
    "lime": lambda n, o: _option("lime", "n_samples", o, 25) + 1,
    "kernel_shap": lambda n, o: _option("kernel_shap", "n_samples", o, 25) + 1,
    "shapley_sampling": lambda n, o: _option("shapley_sampling", "n_samples", o, 25) * n + 1,
    "attention_cls": lambda n, o: 1,
    "attention_rollout": lambda n, o: 1,
    "decompx": lambda n, o: 1,  # one forward (of parts), no backward
    "loo": lambda n, o: n + 1,  # the prediction, then one input per word or token left out
    "random": lambda n, o: 0,
    "dls": lambda n, o: dls_cost("dls", o)["forwards"],
    "lafa": _lafa_passes,
}

#: Standing one-off costs of methods, paid once per run (not per example).
ONE_OFF_NOTES: dict[str, str] = {
    "dls": "chooses its layer once per model, label-free: the default models carry their "
    "choice (no cost); another model calibrates on up to 256 of the run's texts (one forward "
    "and backward each), before its first row",
    "lafa": "encodes its reference corpus with the classifier into a neighbour index once "
    "(cached on disk); its passes are an upper bound (neighbours seen before are reused)",
}


def method_passes(
    method: str,
    n_tokens: int,
    options: Mapping[str, Any] | None = None,
    layer: tuple[int | None, int | None] | None = None,
) -> float:
    """Estimated forward passes for one example of ``n_tokens`` scored tokens.

    Args:
        method: a canonical method name; every ``dls*`` variant is costed by :func:`dls_cost`.
        n_tokens: the example's non-special tokens.
        options: the method's options (e.g. ``n_steps``), overriding its defaults.
        layer: for DLS, ``(depth, n_blocks)`` of its layer where known (see :func:`dls_cost`).

    Returns:
        The estimate, in full-pass equivalents; ``nan`` for a method this module does not
        know (a user's own).
    """
    if method.startswith("dls"):
        return float(dls_cost(method, options, layer)["forwards"])
    key = method
    estimate = _METHOD_PASSES.get(key)
    return float(estimate(max(1, n_tokens), options or {})) if estimate else float("nan")


def metric_passes(metric: str, n_tokens: int) -> float:
    """Estimated forward passes of one metric for one explanation of ``n_tokens`` tokens.

    ERASER comprehensiveness and sufficiency evaluate one input per bin; the deletion and
    insertion curves one per token (``n + 1`` points); log-odds one; Kendall tau's
    leave-one-out ``n`` (computed once per example and shared by every method, see
    :func:`plan_comparison`); the plausibility metrics none.
    """
    n = max(1, n_tokens)
    return float(
        {
            "comprehensiveness": len(ERASER_BINS),
            "sufficiency": len(ERASER_BINS),
            "deletion_auc": n + 1,
            "insertion_auc": n + 1,
            "log_odds": 1,
            "kendall_tau_loo": 0,  # counted once per example, not per method
        }.get(metric, 0)
    )


def edin_bound_passes(n_words: int) -> float:
    """Forward passes of one text's NAOPC bounds under Edin et al.'s protocol (an upper bound).

    Exact up to :data:`~captum_layer_saliency.metrics.edin.EXACT_MAX_WORDS` words (every subset,
    ``2^n``), beam search above (four searches of ``n`` steps, at most ``BEAM x (n - k)``
    new subsets each). Counted per token when words are not known, which overestimates.
    """
    n = max(1, n_words)
    if n <= EXACT_MAX_WORDS:
        return float(2**n)
    return float(4 * BEAM * n * (n + 1) // 2)


def one_off_note(method: str, options: Mapping[str, Any] | None = None) -> str | None:
    """What ``method`` pays once per run, if anything (e.g. a calibration), in words.

    A method's options may carry their own note under ``"one_off"`` (where the DLS layer
    calibration reports its size and source); otherwise :data:`ONE_OFF_NOTES` is used.
    """
    if options and options.get("one_off"):
        return str(options["one_off"])
    key = "dls" if method.startswith("dls") else method
    return ONE_OFF_NOTES.get(key)


@dataclass(frozen=True)
class ComparisonPlan:
    """The work of a comparison, before it starts.

    Attributes:
        n_examples: examples to explain (this run's share, before resuming).
        mean_tokens: their mean number of scored tokens.
        methods: method -> estimated forward passes for all examples (explanation only).
        metrics: metric -> estimated forward passes for all examples and methods.
        shared: passes shared by every method (predictions, Kendall tau's leave-one-out).
        one_off: method -> what it pays once.
    """

    n_examples: int
    mean_tokens: float
    methods: dict[str, float]
    metrics: dict[str, float]
    shared: float
    one_off: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """All estimated forward passes (``nan`` if a method's are unknown)."""
        return sum(self.methods.values()) + sum(self.metrics.values()) + self.shared


def plan_comparison(
    methods: Sequence[str],
    metrics: Sequence[str],
    token_counts: Sequence[int],
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    layers: Mapping[str, tuple[int | None, int | None]] | None = None,
    protocol: str = ERASER,
) -> ComparisonPlan:
    """Estimate the forward passes of a comparison.

    Args:
        methods: canonical method names.
        metrics: metric names.
        token_counts: each example's scored (non-special) tokens.
        method_options: method -> its options.
        layers: DLS method -> ``(depth, n_blocks)`` of its layer where known (a fixed layer or
            a stored selection); see :func:`dls_cost` for the approximation otherwise.
        protocol: ``"eraser"`` or ``"edin"`` (:func:`edin_passes`; its NAOPC bounds are shared
            by every method).

    Returns:
        The plan.
    """
    options = method_options or {}
    counts = [max(1, int(n)) for n in token_counts]
    where = layers or {}
    per_method = {
        m: sum(method_passes(m, n, options.get(m), where.get(m)) for n in counts) for m in methods
    }
    if protocol == EDIN:
        per_metric = {
            k: (0.0 if k.startswith("naopc_") else float(sum(counts))) * len(methods)
            for k in metrics
        }
    else:
        per_metric = {k: sum(metric_passes(k, n) for n in counts) * len(methods) for k in metrics}
    shared = float(len(counts))  # one prediction per example
    if protocol == EDIN and any(k.startswith("naopc_") for k in metrics):
        shared += sum(edin_bound_passes(n) for n in counts)
    if "kendall_tau_loo" in metrics:
        shared += sum(counts)
    notes = {m: note for m in methods if (note := one_off_note(m, options.get(m)))}
    mean = sum(counts) / len(counts) if counts else 0.0
    return ComparisonPlan(len(counts), mean, per_method, per_metric, shared, notes)


def _count(value: float) -> str:
    if value != value:  # nan
        return "?"
    return f"{value:,.0f}"


def format_plan(plan: ComparisonPlan, *, task: str = "custom", model: str = "model") -> str:
    """The plan as a few lines of text, most expensive first.

    Example::

        plan: 16 examples of ag_news (mean 41.3 scored tokens) with minilm-ag_news
          methods (forward passes to explain): shapley_sampling 16,541 · dls 16 · ...
          metrics (for all methods): deletion_auc 2,772 · insertion_auc 2,772 · ...
          shared: 677 (predictions, leave-one-out)
          total ≈ 23,000 forward passes
    """

    def ranked(costs: Mapping[str, float]) -> str:
        items = sorted(costs.items(), key=lambda kv: -(kv[1] if kv[1] == kv[1] else 1e18))
        return " · ".join(f"{name} {_count(value)}" for name, value in items) or "none"

    lines = [
        f"plan: {plan.n_examples} examples of {task} (mean {plan.mean_tokens:.1f} scored "
        f"tokens) with {model}",
        f"  methods (forward passes to explain): {ranked(plan.methods)}",
        f"  metrics (forward passes, all methods): {ranked(plan.metrics)}",
        f"  shared: {_count(plan.shared)} (one prediction per example"
        + (", Kendall tau's leave-one-out)" if "kendall_tau_loo" in plan.metrics else ")"),
        f"  total ≈ {_count(plan.total)} forward passes (a gradient method adds a backward "
        "to each of its passes)",
    ]
    for method, note in plan.one_off.items():
        lines.append(f"  one-off, {method}: {note}")
    return "\n".join(lines)
