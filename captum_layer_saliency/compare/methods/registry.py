"""A registry of named token-attribution methods over one Hugging Face classifier.

Every method is built by ``get_method(name, clf, **options)`` and returns a
:class:`TokenAttributor`, whose ``attribute(input_ids, attention_mask, target)`` gives detached
float ``(batch, seq)`` token scores, exactly 0 on padding and on special tokens. All methods see the
same forward (:attr:`TextClassifier.forward_func`), the same target and the same special tokens.

Defaults follow Thermostat (Feldhus et al., 2021), which runs Captum on Hugging Face models:

* **gradient methods** (Saliency, Input×Gradient, Integrated Gradients, DeepLift, DeepLiftSHAP,
  GradientSHAP) use Captum's *layer* variants on the embeddings module (word + position + type
  embeddings and their LayerNorm; option ``layer="word_embeddings"`` for the word embeddings
  alone) and sum the attribution over the hidden dimension (Saliency takes the gradient's L2 norm);
* their **baseline** replaces every real non-special token by ``[PAD]`` and keeps the special
  tokens and the padding in place ("the PAD baseline"); IG uses 25 steps, GradientSHAP 5 samples,
  DeepLiftSHAP 2 baselines (the PAD baseline and an all-``[PAD]`` input, as Thermostat does);
* **perturbation methods** (Occlusion with a window of 3 tokens, LIME with 25 samples, Shapley
  value sampling with 25 permutations, KernelSHAP with 25 samples) perturb whole tokens, one
  feature per token, by *replacing* them with ``[PAD]``; special tokens and padding are never
  perturbed. (The metrics in :mod:`captum_layer_saliency.metrics` *delete* tokens instead.)

Every method is seeded (option ``seed``, default 0): the global torch and NumPy generators are
seeded for the call and restored afterwards, so reruns are bit-identical on CPU. The stochastic
and sliding-window methods (GradientSHAP, Occlusion, LIME, KernelSHAP, Shapley sampling, random)
explain one example at a time, cut to its real tokens and seeded by ``seed`` and its token ids,
so a sentence's scores do not depend on the batch it comes in; the others run on whole batches.
Batching: IG takes ``internal_batch_size``; the perturbation methods ``perturbations_per_eval``
(model evaluations per forward call).
"""

from __future__ import annotations

import abc
import difflib
import functools
import importlib
import inspect
import re
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency._utils import seeded
from captum_layer_saliency.attr.reductions import check_reduction, reduce_hidden
from captum_layer_saliency.models import passes as _passes
from captum_layer_saliency.models.classifier import (
    TextClassifier,
    TokenAttributor,
    classifier_forward,
)
from captum_layer_saliency.models.inputs import (
    check_explainable,
    check_model_inputs,
    check_not_data_parallel,
    forward_args,
)
from captum_layer_saliency.models.surgery import UnsupportedModelError, find_model_parts
from captum_layer_saliency.models.targets import normalize_target

GRADIENT, PERTURBATION, ATTENTION, LAYER, CONTROL = (
    "gradient",
    "perturbation",
    "attention",
    "layer",
    "control",
)
METHOD_KINDS = (GRADIENT, PERTURBATION, ATTENTION, LAYER, CONTROL)
DLS_MODULE = "captum_layer_saliency.attr.decoded_layer_saliency"
_DLS_LAYER = re.compile(r"^dls_layer(\d+)$")


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    Attributes:
        name: the canonical name (lower case, underscores).
        description: one line for reports.
        factory: ``factory(clf, **options) -> TokenAttributor``; its keyword arguments are the
            method's options and their defaults.
        kind: one of ``"gradient"``, ``"perturbation"``, ``"attention"``, ``"layer"``,
            ``"control"``.
        notes: caveats a report should print next to the method's results.
    """

    name: str
    description: str
    factory: Callable[..., TokenAttributor]
    kind: str
    notes: str = ""


METHODS: dict[str, MethodSpec] = {}
ALIASES: dict[str, str] = {}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register_method(spec: MethodSpec, aliases: Iterable[str] = ()) -> None:
    """Add a method (and short aliases for it) to :data:`METHODS`.

    Args:
        spec: the method; re-registering a name replaces it.
        aliases: other names that resolve to ``spec.name``.

    Raises:
        ValueError: an unknown kind, or an alias that is already a method's name.
    """
    if spec.kind not in METHOD_KINDS:
        raise ValueError(f"kind must be one of {METHOD_KINDS}, got {spec.kind!r}")
    METHODS[spec.name] = spec
    for alias in aliases:
        alias = _normalise(alias)
        if alias in METHODS:
            raise ValueError(f"alias {alias!r} is already the name of a method")
        ALIASES[alias] = spec.name


def available_methods() -> list[str]:
    """The canonical names of the registered methods, in registration order.

    ``dls_layer<L>`` resolves for every layer ``L`` (0 = the embeddings, ``L`` = block ``L``)
    even when not listed here (see :func:`register_dls_layers`).
    """
    return list(METHODS)


def resolve_method_name(name: str) -> str:
    """The canonical name for ``name`` (an alias, any case, ``-`` or ``_``).

    Raises:
        ValueError: an unknown name, with the valid names and the closest matches.
    """
    key = _normalise(name)
    key = ALIASES.get(key, key)
    if key in METHODS or _DLS_LAYER.match(key):
        return key
    choices = sorted([*METHODS, *ALIASES])
    close = difflib.get_close_matches(key, choices, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown method {name!r}.{hint} Valid methods: {', '.join(METHODS)} "
        f"(aliases: {', '.join(sorted(ALIASES))}; and dls_layer<L> for a fixed layer L)"
    )


def get_method(name: str, clf: TextClassifier, **options: Any) -> TokenAttributor:
    """Build the attributor ``name`` for ``clf``.

    Args:
        name: a method name or alias (see :func:`available_methods`), or ``dls_layer<L>``.
        clf: the classifier bundle.
        **options: overrides of the method's defaults (the factory's keyword arguments).

    Returns:
        The attributor.

    Raises:
        ValueError: an unknown method or an option the method does not take.
    """
    key = resolve_method_name(name)
    match = _DLS_LAYER.match(key)
    if key not in METHODS and match:
        factory: Callable[..., TokenAttributor] = functools.partial(
            dls_factory, layer=int(match.group(1))
        )
    else:
        factory = METHODS[key].factory
    try:
        inspect.signature(factory).bind(clf, **options)
    except TypeError as err:
        params = [p for p in inspect.signature(factory).parameters if p != "clf"]
        raise ValueError(
            f"bad options {sorted(options)} for method {key!r} ({err}); "
            f"it takes: {', '.join(params) or 'no options'}"
        ) from None
    return factory(clf, **options)


# --------------------------------------------------------------------------------------------
# Shared helpers


def embedding_layer(model: nn.Module, layer: str = "embeddings") -> nn.Module:
    """The module whose output the gradient methods attribute to.

    Args:
        model: a Hugging Face model.
        layer: ``"embeddings"`` for the whole embeddings module (Thermostat's choice; DLS's
            layer 0) or ``"word_embeddings"`` for the token embedding table alone.

    Returns:
        The embeddings found by :func:`~captum_layer_saliency.models.surgery.find_model_parts`, or
        ``model.get_input_embeddings()`` for ``"word_embeddings"`` and unknown families.
    """
    if layer not in ("embeddings", "word_embeddings"):
        raise ValueError(f"layer must be 'embeddings' or 'word_embeddings', got {layer!r}")
    if layer == "embeddings":
        try:
            return find_model_parts(model).embeddings
        except UnsupportedModelError:
            pass  # fall back to the input embeddings, which every HF model exposes
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        raise ValueError(f"cannot find the input embeddings of {type(model).__name__}")
    module: nn.Module = get()
    return module


def pad_baseline(
    input_ids: Tensor, attention_mask: Tensor, special_mask: Tensor, token_id: int
) -> Tensor:
    """The PAD baseline: every real non-special token replaced by ``token_id``.

    Special tokens and padding stay in place, so a baseline differs from its input only where
    the input has content.
    """
    replace = attention_mask.bool() & ~special_mask
    return torch.where(replace, torch.full_like(input_ids, token_id), input_ids)


def token_feature_mask(valid: Tensor) -> Tensor:
    """One Captum feature per valid token: ids ``0..n-1`` in order along each row.

    Special and padding positions join feature 0. That is harmless because the perturbation
    baseline equals the input there (see :func:`pad_baseline`), so "ablating" them is a no-op,
    and it avoids a dummy feature that would cost model evaluations and bias KernelSHAP's
    sampling. Their scores are zeroed afterwards.
    """
    ids = valid.long().cumsum(-1) - 1
    return torch.where(valid, ids, torch.zeros_like(ids))


def example_seed(seed: int, input_ids: Tensor) -> int:
    """A seed for one example, from the method's seed and the example's real token ids.

    Seeding each example by its content makes a stochastic method's scores for a sentence
    independent of the batch it comes in (and of its position there), so a resumed or
    differently batched run reproduces an uninterrupted one.
    """
    digest = zlib.crc32(input_ids.detach().to("cpu", torch.int64).numpy().tobytes())
    return (seed * 1_000_003 + digest) % 2**63


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """Warn the first time ``key`` comes up in this process (a report needs it once)."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


def _resolve_token_id(clf: TextClassifier, token_id: int | None) -> int:
    """``token_id``, or the tokenizer's ``[PAD]`` id when it is None."""
    if token_id is not None:
        return int(token_id)
    pad = getattr(clf.tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError(
            "the tokenizer has no pad token; pass baseline_token_id=<id> to choose the token "
            "that replaces removed tokens"
        )
    return int(pad)


class _LogitsModule(nn.Module):
    """The classifier as an ``nn.Module`` returning logits (DeepLift needs a module)."""

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        self.model = model
        self._forward = classifier_forward(model, tokenizer)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *extra: Any) -> Tensor:
        return self._forward(input_ids, attention_mask, *extra)


# --------------------------------------------------------------------------------------------
# Attributors


class Attributor(abc.ABC):
    """Base of the built-in attributors: validation, seeding and the zeroing of special tokens.

    Subclasses implement :meth:`_scores`; ``self.options`` records the resolved settings for
    reports.
    """

    def __init__(self, clf: TextClassifier, seed: int = 0, **options: Any) -> None:
        check_not_data_parallel(clf.model)
        self.clf = clf
        self.seed = seed
        self.options: dict[str, Any] = {"seed": seed, **options}
        #: the model's other inputs of the batch being explained (see :meth:`_args`).
        self._inputs: dict[str, Tensor] = {}

    def attribute(
        self, input_ids: Tensor, attention_mask: Tensor, target: Any, **model_inputs: Tensor
    ) -> Tensor:
        """Score every token of a batch for its target class.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)`` 1 on real tokens, 0 on padding.
            target: ``(batch,)`` class indices (an int applies to every example); floats and
                indices outside the model's classes raise ``ValueError``.
            **model_inputs: the model's other inputs by their Hugging Face names
                (``token_type_ids=``...), each ``(batch, seq, ...)``; segment ids and, under
                left padding, position ids are otherwise derived from the ids and mask.

        Returns:
            Detached float32 ``(batch, seq)`` scores, 0 on padding and special tokens.
        """
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask "
                f"{tuple(attention_mask.shape)} must both be (batch, seq)"
            )
        check_explainable(self.clf.model, "the model")
        n_classes = getattr(getattr(self.clf.model, "config", None), "num_labels", None)
        checked = normalize_target(
            target,
            input_ids.shape[0],
            n_classes if isinstance(n_classes, int) else None,
            device=input_ids.device,
        )
        if checked is None:
            raise ValueError("target is required: pass the class to explain for every example")
        special = self.clf.special_mask(input_ids)
        valid = attention_mask.bool() & ~special
        self._inputs = check_model_inputs(model_inputs, input_ids, self.clf.model)
        try:
            with seeded(self.seed, input_ids.device):
                scores = self._scores(input_ids, attention_mask, checked, special, valid)
        finally:
            self._inputs = {}
        scores = scores.detach().to(torch.float32).reshape(input_ids.shape)
        return torch.where(valid, scores, torch.zeros_like(scores))

    def _all_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """The model's other inputs: derived from the ids and mask, then the explicit ones."""
        return {**self.clf.forward_func.derived(input_ids, attention_mask), **self._inputs}

    def _args(self, attention_mask: Tensor) -> tuple[Any, ...]:
        """Captum's ``additional_forward_args``: the mask and the model's other inputs."""
        return forward_args(attention_mask, self._inputs)

    @abc.abstractmethod
    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor: ...

    def _each_example(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        valid: Tensor,
        explain: Callable[[Tensor, Tensor, Tensor], Tensor],
    ) -> Tensor:
        """Explain the examples one at a time, each cut to its real tokens and seeded by content.

        Used by the stochastic and sliding-window methods, whose results would otherwise depend
        on the batch: on its random draws, or (Occlusion) on windows reaching into padding.

        Args:
            input_ids: ``(batch, seq)``.
            attention_mask: ``(batch, seq)``.
            target: ``(batch,)``.
            valid: ``(batch, seq)`` real non-special tokens; rows without any are skipped.
            explain: ``explain(ids, mask, target)`` on one ``(1, n)`` example -> ``n`` scores.

        Returns:
            ``(batch, seq)`` float scores, 0 where not computed.
        """
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        batch_inputs = self._inputs
        try:
            for b in range(input_ids.shape[0]):
                if not valid[b].any():
                    continue  # nothing to explain
                real = attention_mask[b].bool()
                ids, mask = input_ids[b, real][None], attention_mask[b, real][None]
                # The model's other inputs follow the example's real tokens.
                self._inputs = {k: v[b, real][None] for k, v in batch_inputs.items()}
                if "position_ids" in self._inputs:
                    self._inputs["position_ids"] = self._inputs["position_ids"] - int(
                        self._inputs["position_ids"].min()
                    )
                with seeded(example_seed(self.seed, ids), input_ids.device):
                    out[b, real] = explain(ids, mask, target[b : b + 1]).reshape(-1).float()
        finally:
            self._inputs = batch_inputs
        return out

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class _EmbeddingAttributor(Attributor):
    """A Captum layer method on the embeddings, summed over the hidden dimension."""

    def __init__(
        self,
        clf: TextClassifier,
        seed: int,
        layer: str,
        baseline_token_id: int | None,
        **options: Any,
    ) -> None:
        super().__init__(clf, seed, layer=layer, baseline_token_id=baseline_token_id, **options)
        self.layer = embedding_layer(clf.model, layer)
        self.forward = clf.forward_func
        self.baseline_token_id = _resolve_token_id(clf, baseline_token_id)
        #: how the hidden dimension is reduced (:mod:`captum_layer_saliency.attr.reductions`)
        self.reduction = check_reduction(options.get("reduction", "sum"))

    def _baseline(self, input_ids: Tensor, attention_mask: Tensor, special: Tensor) -> Tensor:
        return pad_baseline(input_ids, attention_mask, special, self.baseline_token_id)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        # Captum differentiates through the layer; callers may be under no_grad.
        with torch.enable_grad():
            attr = self._layer_attribution(input_ids, attention_mask, target, special)
        return self._reduce(attr)

    def _reduce(self, attr: Tensor) -> Tensor:
        return reduce_hidden(attr, self.reduction)

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        raise TypeError(f"{type(self).__name__} must override _layer_attribution or _scores")


class SaliencyAttributor(_EmbeddingAttributor):
    """Gradient of the target logit at the embeddings, reduced to its norm per token."""

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        layer: str = "embeddings",
        norm: str = "l2",
        baseline_token_id: int | None = None,
    ) -> None:
        if norm not in ("l1", "l2", "squared_l2"):
            raise ValueError(f"norm must be 'l1', 'l2' or 'squared_l2', got {norm!r}")
        super().__init__(clf, seed, layer, baseline_token_id, norm=norm)
        self.norm = norm

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        from captum.attr import LayerGradientXActivation

        method = LayerGradientXActivation(self.forward, self.layer, multiply_by_inputs=False)
        result: Tensor = method.attribute(
            input_ids, target=target, additional_forward_args=self._args(attention_mask)
        )
        return result

    def _reduce(self, attr: Tensor) -> Tensor:
        return reduce_hidden(attr, self.norm)


class InputXGradientAttributor(_EmbeddingAttributor):
    """Embedding output × gradient, summed over the hidden dimension (Thermostat's GxA).

    ``reduction`` (default ``"sum"``) may be any of
    :data:`~captum_layer_saliency.attr.reductions.REDUCTIONS` (``"squared_l2"``: LAFA's Eq. 3).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
        reduction: str = "sum",
    ) -> None:
        super().__init__(clf, seed, layer, baseline_token_id, reduction=reduction)

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        from captum.attr import LayerGradientXActivation

        result: Tensor = LayerGradientXActivation(self.forward, self.layer).attribute(
            input_ids, target=target, additional_forward_args=self._args(attention_mask)
        )
        return result


class IntegratedGradientsAttributor(_EmbeddingAttributor):
    """Layer Integrated Gradients from the PAD baseline, reduced by ``reduction`` (default
    ``"sum"``; see :data:`~captum_layer_saliency.attr.reductions.REDUCTIONS`)."""

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_steps: int = 25,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
        reduction: str = "sum",
    ) -> None:
        super().__init__(
            clf,
            seed,
            layer,
            baseline_token_id,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            reduction=reduction,
        )
        self.n_steps, self.method, self.internal_batch_size = n_steps, method, internal_batch_size

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        from captum.attr import LayerIntegratedGradients

        result: Tensor = LayerIntegratedGradients(self.forward, self.layer).attribute(
            input_ids,
            baselines=self._baseline(input_ids, attention_mask, special),
            target=target,
            additional_forward_args=self._args(attention_mask),
            n_steps=self.n_steps,
            method=self.method,
            internal_batch_size=self.internal_batch_size,
        )
        return result


class GradientShapAttributor(_EmbeddingAttributor):
    """Layer GradientSHAP: expected gradients at random points between the PAD baseline and x.

    Captum draws each sample's baseline from one distribution shared by the batch, but the PAD
    baseline is per example (it keeps each example's special tokens in place), so examples are
    explained one at a time (seeded by content), each with its ``n_samples`` points in one
    batch. No noise is added
    to the inputs (Captum's default ``stdevs=0``; noise on token ids would be meaningless).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_samples: int = 5,
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
    ) -> None:
        super().__init__(clf, seed, layer, baseline_token_id, n_samples=n_samples)
        self.n_samples = n_samples

    def _long_ids_forward(self, input_ids: Tensor, attention_mask: Tensor, *extra: Any) -> Tensor:
        # Captum's noise step turns the ids into floats (the noise itself is zero).
        return self.forward(input_ids.long(), attention_mask, *extra)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        from captum.attr import LayerGradientShap

        method = LayerGradientShap(self._long_ids_forward, self.layer)

        def explain(ids: Tensor, mask: Tensor, tgt: Tensor) -> Tensor:
            baseline = self._baseline(ids, mask, self.clf.special_mask(ids))
            attr: Tensor = method.attribute(
                ids,
                baselines=baseline,
                n_samples=self.n_samples,
                stdevs=0.0,
                target=tgt,
                additional_forward_args=self._args(mask),
            )
            return self._reduce(attr)

        with torch.enable_grad():
            return self._each_example(input_ids, attention_mask, target, valid, explain)


#: Module types DeepLift treats as linear (it has no rescale rule for them).
_DEEPLIFT_UNRULED = re.compile(r"gelu|silu|swish|mish|layernorm|rmsnorm", re.IGNORECASE)

DEEPLIFT_NOTES = (
    "Captum's DeepLift has rescale rules only for ReLU-like activations, Sigmoid, Tanh, Softmax "
    "modules and max-pooling. A transformer's GELU activations, LayerNorms and the functional "
    "softmax inside attention get no rule: plain gradients pass through them, so the result "
    "mixes DeepLift multipliers with gradients and its completeness is only approximate."
)


class DeepLiftAttributor(_EmbeddingAttributor):
    """Layer DeepLift (rescale rule) from the PAD baseline; DeepLiftSHAP with two baselines.

    DeepLiftSHAP is the mean of DeepLift over its baselines (which is what Captum's
    ``DeepLiftShap`` computes); running DeepLift once per baseline keeps per-example baselines
    and batching. The two default baselines follow Thermostat: the PAD baseline and an input
    that is ``[PAD]`` everywhere (special tokens included).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        shap: bool = False,
        layer: str = "embeddings",
        baseline_token_id: int | None = None,
    ) -> None:
        super().__init__(clf, seed, layer, baseline_token_id, shap=shap)
        self.shap = shap
        self.module = _LogitsModule(clf.model, clf.tokenizer)
        unruled = sorted(
            {
                type(m).__name__
                for m in clf.model.modules()
                if _DEEPLIFT_UNRULED.search(type(m).__name__)
            }
        )
        _warn_once(
            f"deeplift:{type(clf.model).__name__}",
            f"DeepLift on {type(clf.model).__name__}: no rule for {', '.join(unruled) or 'some'} "
            f"modules nor for softmax in attention. {DEEPLIFT_NOTES}",
        )

    def _layer_attribution(
        self, input_ids: Tensor, attention_mask: Tensor, target: Tensor, special: Tensor
    ) -> Tensor:
        from captum.attr import LayerDeepLift

        method = LayerDeepLift(self.module, self.layer)
        baselines = [self._baseline(input_ids, attention_mask, special)]
        if self.shap:
            baselines.append(torch.full_like(input_ids, self.baseline_token_id))
        with warnings.catch_warnings():
            # Captum warns on every call that it sets hooks on the activations; say it once.
            warnings.filterwarnings("ignore", message=".*hooks.*", category=UserWarning)
            attrs = [
                method.attribute(
                    input_ids,
                    baselines=baseline,
                    target=target,
                    additional_forward_args=self._args(attention_mask),
                )
                for baseline in baselines
            ]
        return torch.stack(attrs).mean(0)


class _PerturbationAttributor(Attributor):
    """A Captum perturbation method over whole tokens, replaced by ``[PAD]``."""

    def __init__(
        self,
        clf: TextClassifier,
        seed: int,
        perturbations_per_eval: int,
        baseline_token_id: int | None,
        **options: Any,
    ) -> None:
        super().__init__(
            clf,
            seed,
            perturbations_per_eval=perturbations_per_eval,
            baseline_token_id=baseline_token_id,
            **options,
        )
        self.forward = clf.forward_func
        self.perturbations_per_eval = perturbations_per_eval
        self.baseline_token_id = _resolve_token_id(clf, baseline_token_id)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        def explain(ids: Tensor, mask: Tensor, tgt: Tensor) -> Tensor:
            special_one = self.clf.special_mask(ids)
            baseline = pad_baseline(ids, mask, special_one, self.baseline_token_id)
            return self._perturb(ids, mask, tgt, baseline, mask.bool() & ~special_one)

        with torch.no_grad():
            return self._each_example(input_ids, attention_mask, target, valid, explain)

    @abc.abstractmethod
    def _perturb(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        baselines: Tensor,
        valid: Tensor,
    ) -> Tensor:
        """Scores for one example ``(1, n)`` cut to its real tokens."""
        ...


class OcclusionAttributor(_PerturbationAttributor):
    """Occlusion with a sliding window of ``window`` tokens and stride 1.

    A token's score is the mean drop of the target logit over the windows that cover it; the
    window slides over special tokens too, but they are not replaced (the baseline keeps them).
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        window: int = 3,
        stride: int = 1,
        perturbations_per_eval: int = 16,
        baseline_token_id: int | None = None,
    ) -> None:
        super().__init__(
            clf, seed, perturbations_per_eval, baseline_token_id, window=window, stride=stride
        )
        self.window, self.stride = window, stride

    def _perturb(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        baselines: Tensor,
        valid: Tensor,
    ) -> Tensor:
        from captum.attr import Occlusion

        window = min(self.window, input_ids.shape[1])
        result: Tensor = Occlusion(self.forward).attribute(
            input_ids,
            sliding_window_shapes=(window,),
            strides=self.stride,
            baselines=baselines,
            target=target,
            additional_forward_args=self._args(attention_mask),
            perturbations_per_eval=self.perturbations_per_eval,
        )
        return result


class _SampledAttributor(_PerturbationAttributor):
    """Captum perturbation methods driven by ``n_samples`` token coalitions or permutations
    (Shapley value sampling, LIME, KernelSHAP): one ``attribute`` call, one token per feature."""

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_samples: int = 25,
        perturbations_per_eval: int = 16,
        baseline_token_id: int | None = None,
    ) -> None:
        super().__init__(clf, seed, perturbations_per_eval, baseline_token_id, n_samples=n_samples)
        self.n_samples = n_samples

    def _perturb(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        baselines: Tensor,
        valid: Tensor,
    ) -> Tensor:
        result: Tensor = self._method().attribute(
            input_ids,
            baselines=baselines,
            target=target,
            additional_forward_args=self._args(attention_mask),
            feature_mask=token_feature_mask(valid),
            n_samples=self.n_samples,
            perturbations_per_eval=self.perturbations_per_eval,
        )
        return result

    @abc.abstractmethod
    def _method(self) -> Any: ...


class ShapleySamplingAttributor(_SampledAttributor):
    """Shapley value sampling over tokens (``n_samples`` random permutations, 25 by default)."""

    def _method(self) -> Any:
        from captum.attr import ShapleyValueSampling

        return ShapleyValueSampling(self.forward)


class LimeAttributor(_SampledAttributor):
    """LIME with Captum's defaults (Lasso, alpha 0.01; exponential cosine kernel), 25 samples."""

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_samples: int = 25,
        perturbations_per_eval: int = 16,
        baseline_token_id: int | None = None,
        interpretable_model: Any = None,
        similarity_func: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            clf,
            seed=seed,
            n_samples=n_samples,
            perturbations_per_eval=perturbations_per_eval,
            baseline_token_id=baseline_token_id,
        )
        self.interpretable_model, self.similarity_func = interpretable_model, similarity_func

    def _method(self) -> Any:
        from captum.attr import Lime

        return Lime(self.forward, self.interpretable_model, self.similarity_func)


class KernelShapAttributor(_SampledAttributor):
    """KernelSHAP over tokens with 25 coalitions by default (as LIME, for an equal budget)."""

    def _method(self) -> Any:
        from captum.attr import KernelShap

        return KernelShap(self.forward)


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Switch a model to eager attention for the duration (SDPA cannot return the weights)."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    if current in (None, "eager") or setter is None:
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(current)


def attention_maps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, **model_inputs: Tensor
) -> list[Tensor]:
    """Every layer's attention probabilities, ``(batch, heads, seq, seq)`` each.

    ``model_inputs`` are the model's other inputs (``token_type_ids``...), passed on.

    Raises:
        RuntimeError: the model returned none (load it with ``attn_implementation="eager"``).
    """
    with torch.no_grad(), eager_attention(model):
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_attentions=True,
            **model_inputs,
        )
    attentions = [a for a in (getattr(out, "attentions", None) or ()) if a is not None]
    if not attentions:
        raise RuntimeError(
            f"{type(model).__name__} returned no attention weights; load it with "
            "attn_implementation='eager'"
        )
    return attentions


def _first_real_position(attention_mask: Tensor) -> Tensor:
    """The index of each row's first real token: [CLS] / <s> for right- or left-padding."""
    return attention_mask.long().argmax(-1)


class AttentionCLSAttributor(Attributor):
    """Attention from the classification token (the first real token) in one layer, mean of heads.

    The target is ignored: attention does not depend on the class.
    """

    def __init__(self, clf: TextClassifier, *, seed: int = 0, layer: int = -1) -> None:
        super().__init__(clf, seed, layer=layer)
        self.layer = layer

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        attn = attention_maps(
            self.clf.model, input_ids, attention_mask, **self._all_inputs(input_ids, attention_mask)
        )[self.layer].mean(1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return attn[rows, _first_real_position(attention_mask)]


class AttentionRolloutAttributor(Attributor):
    """Attention rollout (Abnar & Zuidema, 2020) read from the classification token.

    Each layer's head-averaged attention is mixed with the identity for the residual stream,
    ``A' = (1 - residual) A + residual I``, re-normalised by row, and the layers are multiplied
    from the first to the last. The target is ignored.
    """

    def __init__(self, clf: TextClassifier, *, seed: int = 0, residual: float = 0.5) -> None:
        super().__init__(clf, seed, residual=residual)
        self.residual = residual

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        maps = attention_maps(
            self.clf.model, input_ids, attention_mask, **self._all_inputs(input_ids, attention_mask)
        )
        eye = torch.eye(input_ids.shape[1], device=input_ids.device, dtype=maps[0].dtype)
        rollout = eye.expand(input_ids.shape[0], -1, -1)
        for attn in maps:
            mixed = (1 - self.residual) * attn.mean(1) + self.residual * eye
            mixed = mixed / mixed.sum(-1, keepdim=True)
            rollout = mixed @ rollout
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return rollout[rows, _first_real_position(attention_mask)]


class RandomAttributor(Attributor):
    """Uniform random scores, seeded by ``seed`` and the example's tokens (a control)."""

    def __init__(self, clf: TextClassifier, *, seed: int = 0) -> None:
        super().__init__(clf, seed)

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        # Drawn per example from its content seed, so a sentence's scores do not depend on
        # its batch.
        return self._each_example(
            input_ids,
            attention_mask,
            target,
            valid,
            lambda ids, mask, tgt: torch.rand(ids.shape[1]).to(ids.device),
        )


class ExplainerAttributor(Attributor):
    """Adapts an explainer with ``attribute(ids, target=, attention_mask=)`` (DLS, LAFA) to
    :class:`TokenAttributor`."""

    def __init__(self, clf: TextClassifier, explainer: Any, seed: int = 0, **options: Any) -> None:
        super().__init__(clf, seed, **options)
        self.explainer = explainer
        #: ``(task, n)``: calibrate DLS's layer on ``n`` unlabelled training texts of ``task``
        #: (the run's own texts when ``task`` is None); set by :func:`dls_factory`.
        self.calibration_source: tuple[str | None, int] | None = None

    def prepare(self, texts: Sequence[str]) -> dict[str, Any] | None:
        """Make the explainer's one-off choice before its first explanation, and describe it.

        For DLS with ``selection="model"``: a layer selection stored with the model is used as
        it is (no cost); otherwise the layer is calibrated, label-free, on the task's training
        texts (default models) or on the first of ``texts`` (the texts to explain; labels are
        never read), the same way as ``DecodedLayerSaliency.calibrate``. Called by the
        comparison once it knows rows remain to compute, so a finished run never calibrates.

        Args:
            texts: the run's texts, in order.

        Returns:
            The selection (layer, names, per-layer coherence, calibration) plus
            ``calibration_seconds`` (0 for a stored selection), or None for other explainers.
        """
        explainer = self.explainer
        if not hasattr(explainer, "calibrate") or getattr(explainer, "selector", None) is None:
            return None
        seconds = 0.0
        if explainer.selection_ is None and self.calibration_source is not None:
            from captum_layer_saliency.attr.neighbours import default_corpus

            task, n = self.calibration_source
            chosen = default_corpus(task, size=n) if task is not None else list(texts)[:n]
            start = time.perf_counter()
            with torch.enable_grad():
                fitted = explainer.calibrate(chosen, tokenizer=self.clf.tokenizer)
            seconds = time.perf_counter() - start
            fitted.calibration = (
                f"{len(chosen)} unlabelled {task or 'run'} "
                f"{'training ' if task else ''}texts ({fitted.n_positions} word tokens)"
            )
        selection = explainer.selection_
        if selection is None:
            return None
        return {**selection.to_dict(), "name": selection.name, "calibration_seconds": seconds}

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        with torch.enable_grad():
            result = self.explainer.attribute(
                input_ids, target=target, attention_mask=attention_mask, **self._inputs
            )
        if isinstance(result, (list, tuple)):
            # One map per candidate layer (several layers and no selector): not a token score.
            if len(result) != 1:
                raise ValueError(
                    f"DLS returned {len(result)} maps (one per layer); give one layer or a selector"
                )
            result = result[0]
        scores: Tensor = result
        return scores


#: Unlabelled texts the ``dls`` method fits its layer selector on, for the default models.
DLS_CALIBRATION_TEXTS = 128


def dls_factory(
    clf: TextClassifier,
    layer: int | None = None,
    *,
    seed: int = 0,
    calibration: int = DLS_CALIBRATION_TEXTS,
    **options: Any,
) -> TokenAttributor:
    """Decoded Layer Saliency, at its defaults or fixed at one layer.

    The DLS module is imported here, not at module import, so the registry works without it.
    For the default models, the layer selector is fitted once, label-free, on ``calibration``
    unlabelled training texts of the model's task (the task's default reference corpus), so
    each explanation runs one layer; for other models (or ``calibration=0``) it selects per
    example, online, which decodes every candidate layer.

    Args:
        clf: the classifier bundle; ``clf.lm_head`` is the decoding head.
        layer: an index into DLS's candidate layers ``[embeddings, block 1, ..., block L]``
            (so ``dls_layer3`` is the output of block 3, "layer 3" in DLS's layer names), used
            alone with no selector; or None for DLS's default.
        seed: recorded for reports; DLS itself is deterministic.
        calibration: how many unlabelled texts fit the selector (0: select online).
        **options: passed to ``DecodedLayerSaliency.for_model``.

    Returns:
        The attributor.

    Raises:
        ImportError: the DLS module is not available.
        ValueError: ``layer`` is out of range.
    """
    try:
        module = importlib.import_module(DLS_MODULE)
    except ImportError as err:
        raise ImportError(f"DLS is unavailable: cannot import {DLS_MODULE} ({err})") from err
    if layer is not None:
        layers = find_model_parts(clf.model).layers
        if not 0 <= layer < len(layers):
            raise ValueError(
                f"dls_layer{layer}: the model has layers 0..{len(layers) - 1} "
                "(0 = embeddings, L = block L)"
            )
        # A bare module (not a list) makes DLS return one tensor rather than a list of one.
        options["layers"] = layers[layer]
    explainer = module.DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, tokenizer=clf.tokenizer, **options
    )
    recorded = {k: v for k, v in options.items() if k != "layers"}
    attributor = ExplainerAttributor(clf, explainer, seed=seed, layer=layer, **recorded)
    if layer is None and calibration > 0:
        from captum_layer_saliency.attr.neighbours import default_task_of

        task = default_task_of(clf)
        attributor.calibration_source = (task, calibration)
    return attributor


def register_dls_layers(model_or_count: nn.Module | int) -> list[str]:
    """Register ``dls_layer0 .. dls_layer{L}`` so they appear in :func:`available_methods`.

    (``get_method`` resolves ``dls_layer<L>`` without this; registering makes the names show up
    in listings, e.g. for a ``--methods all`` expansion.)

    Args:
        model_or_count: the classifier (its embeddings and blocks are counted), or the number
            of candidate layers (blocks + 1).

    Returns:
        The registered names.
    """
    if isinstance(model_or_count, nn.Module):
        count = len(find_model_parts(model_or_count).layers)
    else:
        count = int(model_or_count)
    names = []
    for i in range(count):
        where = "the embeddings" if i == 0 else f"block {i}"
        spec = MethodSpec(
            name=f"dls_layer{i}",
            description=f"Decoded Layer Saliency fixed at layer {i} ({where})",
            factory=functools.partial(dls_factory, layer=i),
            kind=LAYER,
        )
        register_method(spec)
        names.append(spec.name)
    return names


# --------------------------------------------------------------------------------------------
# Pass counting


class PassCounter:
    """Counts the rows a model processes forward and backward while the context is open.

    ``forwards`` is the number of examples (batch rows) that went through the model's forward,
    summed over calls; ``backwards`` the number of rows through which a gradient flowed back from
    the logits. So explaining 8 sentences with IG at 25 steps counts ``forwards == 200`` (plus
    any extra pass the method makes), and the cost per explained example is
    ``forwards / 8`` (:meth:`per_example`). Raw call counts are in ``forward_calls`` and
    ``backward_calls``. Methods that run only part of the network (DLS's layer methods run the
    blocks above the selected layer per step) book each row at that fraction
    (:mod:`captum_layer_saliency.models.passes`), so the counts are in full-pass equivalents.

    Args:
        model: the ``nn.Module`` whose ``forward`` is counted (the classifier itself).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forwards: float = 0
        self.backwards: float = 0
        self.forward_calls = self.backward_calls = 0
        self._handle: Any = None
        self._listening: Any = None

    def __enter__(self) -> PassCounter:
        self._handle = self.model.register_forward_hook(self._on_forward)
        self._listening = _passes.listening(self._on_report)
        self._listening.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        logits = getattr(output, "logits", None)
        if logits is None:
            logits = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(logits, Tensor):
            return
        rows = (int(logits.shape[0]) if logits.dim() > 0 else 1) * _passes.pass_scale()
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
        """``{"forwards": ..., "backwards": ...}`` divided by the number of explained examples."""
        if n_examples <= 0:
            raise ValueError(f"n_examples must be positive, got {n_examples}")
        return {"forwards": self.forwards / n_examples, "backwards": self.backwards / n_examples}


# --------------------------------------------------------------------------------------------
# The registry


def _lafa_factory(clf: TextClassifier, **options: Any) -> TokenAttributor:
    """LAFA, imported on first use (like DLS). ``register_lafa`` then replaces this spec with
    the real factory, whose signature ``get_method`` checks the options against."""
    importlib.import_module("captum_layer_saliency.compare.methods.lafa").register_lafa()
    return get_method("lafa", clf, **options)


def _smoothgrad_factory(clf: TextClassifier, **options: Any) -> TokenAttributor:
    """SmoothGrad, imported on first use; ``register_smoothgrad`` replaces this spec."""
    importlib.import_module(
        "captum_layer_saliency.compare.methods.smoothgrad"
    ).register_smoothgrad()
    return get_method("smoothgrad", clf, **options)


def _register_builtins() -> None:
    specs_and_aliases: list[tuple[MethodSpec, tuple[str, ...]]] = [
        (
            MethodSpec(
                "saliency",
                "L2 norm of the gradient at the embeddings",
                SaliencyAttributor,
                GRADIENT,
            ),
            ("grad", "gradient"),
        ),
        (
            MethodSpec(
                "input_x_gradient",
                "embeddings × gradient, summed over the hidden dim",
                InputXGradientAttributor,
                GRADIENT,
            ),
            ("ixg", "gxa", "grad_x_input"),
        ),
        (
            MethodSpec(
                "integrated_gradients",
                "Layer IG at the embeddings, 25 steps, PAD baseline",
                IntegratedGradientsAttributor,
                GRADIENT,
            ),
            ("ig", "lig"),
        ),
        (
            MethodSpec(
                "smoothgrad",
                "gradient at noisy embeddings, reduced per sample and averaged, 25 samples",
                _smoothgrad_factory,
                GRADIENT,
            ),
            ("sg", "smooth_grad"),
        ),
        (
            MethodSpec(
                "deeplift",
                "Layer DeepLift at the embeddings, PAD baseline",
                DeepLiftAttributor,
                GRADIENT,
                DEEPLIFT_NOTES,
            ),
            ("dl",),
        ),
        (
            MethodSpec(
                "deeplift_shap",
                "Layer DeepLiftSHAP, baselines: PAD and all-[PAD]",
                functools.partial(DeepLiftAttributor, shap=True),
                GRADIENT,
                DEEPLIFT_NOTES,
            ),
            ("dlshap", "deepliftshap"),
        ),
        (
            MethodSpec(
                "gradient_shap",
                "Layer GradientSHAP at the embeddings, 5 samples",
                GradientShapAttributor,
                GRADIENT,
            ),
            ("gshap", "gradshap", "gradientshap"),
        ),
        (
            MethodSpec(
                "occlusion",
                "Occlusion, window 3 tokens, replaced by [PAD]",
                OcclusionAttributor,
                PERTURBATION,
            ),
            ("occ",),
        ),
        (
            MethodSpec(
                "lime",
                "LIME over tokens, 25 samples, replaced by [PAD]",
                LimeAttributor,
                PERTURBATION,
            ),
            (),
        ),
        (
            MethodSpec(
                "shapley_sampling",
                "Shapley value sampling, 25 permutations",
                ShapleySamplingAttributor,
                PERTURBATION,
            ),
            ("svs", "shapley"),
        ),
        (
            MethodSpec(
                "kernel_shap",
                "KernelSHAP over tokens, 25 samples",
                KernelShapAttributor,
                PERTURBATION,
            ),
            ("kshap", "kernelshap"),
        ),
        (
            MethodSpec(
                "attention_cls",
                "last-layer attention from [CLS], mean over heads",
                AttentionCLSAttributor,
                ATTENTION,
            ),
            ("attention", "attn"),
        ),
        (
            MethodSpec(
                "attention_rollout",
                "attention rollout from [CLS]",
                AttentionRolloutAttributor,
                ATTENTION,
            ),
            ("rollout",),
        ),
        (MethodSpec("random", "uniform random scores (seeded)", RandomAttributor, CONTROL), ()),
        (
            MethodSpec("dls", "Decoded Layer Saliency at its defaults", dls_factory, LAYER),
            ("decoded_layer_saliency",),
        ),
        (
            MethodSpec(
                "dls_ig",
                "DLS with integrated gradients at its layer (2 steps, PAD baseline)",
                functools.partial(dls_factory, layer_method="integrated_gradients"),
                LAYER,
                "steps run only the blocks above the layer: about 2.2 forwards and 0.33 "
                "backwards per example at block 5 of 6",
            ),
            ("dls_integrated_gradients",),
        ),
        (
            MethodSpec(
                "lafa",
                "LAFA: a base saliency smoothed over k neighbours in the model's own hidden layer",
                _lafa_factory,
                GRADIENT,
            ),
            ("locally_aggregated_feature_attribution",),
        ),
    ]
    for spec, aliases in specs_and_aliases:
        register_method(spec, aliases)


_register_builtins()
