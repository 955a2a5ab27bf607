"""Which layer DLS explains at: one concept, one module.

Coherence is a property of a model's layers, measured once over many texts; per-sentence
curves are too noisy to choose from (``docs/method.md``, findings' second study). So
:class:`~captum_layer_saliency.DecodedLayerSaliency` chooses its layer once per model:

* from a :class:`LayerSelection` stored in the model's config (``config.dls_layer_selection``,
  which ``save_pretrained`` writes to ``config.json``; the default models carry theirs);
* from calibration texts given at construction;
* or on its first ``attribute`` calls, until a budget of real tokens has been scored, after
  which the choice is frozen.

A layer whose gradient does not reach the input tokens (for a BERT-style pooler the last block:
the pooler reads only [CLS], so every word position gets exactly zero gradient) is detected from
the gradients of one backward pass and never chosen: its identity map would be all zeros.

The pieces, in order: the stored selection, the calibration budget, reachability and the
warnings (:class:`LayerSelection`, :class:`Calibrator`, :func:`builtin_calibration_texts`); the
candidate layers' one naming scheme, resolution and check (:func:`name_layers`,
:func:`resolve_layers`, :func:`check_layers_in_model`); and :class:`LayerChooser`, the one
collaborator DLS holds as ``layer_selection``: the per-model choice, its calibration and its
records, and how a call picks its map among layers.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.attr._upper_model import layer_gradients_and_outputs
from captum_layer_saliency.attr.coherence import (
    LayerCoherenceSelector,
    layer_position_coherence,
    position_coherence,
)
from captum_layer_saliency.attr.decoding import candidate_mask, check_hidden_states, decode_top1
from captum_layer_saliency.attr.layer_methods import states_until
from captum_layer_saliency.models.classifier import model_device
from captum_layer_saliency.models.heads import default_layers
from captum_layer_saliency.models.surgery import UnsupportedModelError, find_model_parts

logger = logging.getLogger("captum_layer_saliency")

__all__ = [
    "CONFIG_KEY",
    "Calibrator",
    "DEFAULT_CALIBRATION_TOKENS",
    "DEFAULT_POSITION_SAMPLE",
    "DEGENERATE_COHERENCE",
    "LayerChooser",
    "LayerSelection",
    "SELECTIONS",
    "builtin_calibration_texts",
    "check_layers_in_model",
    "model_layers",
    "name_layers",
    "name_with_path",
    "owner_model",
    "resolve_layers",
    "sampled_self_recovery",
    "store_selection",
    "stored_selection",
    "unreachable_candidates",
    "warn_degenerate_head",
    "warn_small_calibration",
    "warn_zero_maps",
]

#: ``"model"``: one layer per model, chosen before or at the first explanation (default);
#: ``"example"``: each example's own coherence curve picks its layer.
SELECTIONS = ("model", "example")
#: The model-config attribute a fitted selection is stored under.
CONFIG_KEY = "dls_layer_selection"
#: Real (non-special) tokens scored before an auto-calibrated selection freezes. Chosen by
#: measurement (``benchmarks/calibration_budget.py``, BENCHMARKS.md): random 1,000-token
#: prefixes of SST-2 training text pick the layer of a 15k-token fit 99.7 % of the time,
#: 1,500-token prefixes always; AG News needs 250. 2,000 leaves a margin (about 100 SST-2
#: sentences, or 40 news texts).
DEFAULT_CALIBRATION_TOKENS = 2000
#: Per-example selection scores at most this fraction of each example's word positions.
DEFAULT_POSITION_SAMPLE = 0.25
#: Fewest word positions per example that per-example selection scores (all if fewer).
MIN_SAMPLED_POSITIONS = 4
#: Below this best-layer ``self_recovery``, the head recovers almost no input token.
DEGENERATE_COHERENCE = 0.1
#: A layer whose word positions get less than this share of its gradient norm is unreachable.
REACH_TOLERANCE = 1e-6


def name_with_path(name: str, path: str) -> str:
    """``"block 5 (bert.encoder.layer.4)"``; a generic name that is its path is not repeated.

    Args:
        name: the layer's name in the one scheme, or a module's generic name.
        path: its module path (``""`` when unknown).

    Returns:
        The name, with the path in parentheses when it adds something.
    """
    return f"{name} ({path})" if path and path != name else name


@dataclass
class LayerSelection:
    """A fitted per-model layer choice, as stored with a model.

    Attributes:
        layer: the chosen layer's index (0 = embeddings, ``l`` = block ``l``).
        layer_indices: the index of every candidate layer scored, shallow to deep.
        layer_names: their names (``"embeddings"``, ``"block 1"``, ...).
        layer_paths: their module paths inside the model (``"bert.encoder.layer.4"``).
        scores: the mean coherence of each candidate layer (higher is more coherent).
        score: the coherence score (``self_recovery``: share of word positions whose top
            decoded token is their own input token).
        rule: the selection rule that picked ``layer`` from ``scores``.
        unreachable: layer indices whose gradient never reaches the input tokens.
        n_positions: word positions the scores average over.
        calibration: what the scores were measured on (texts, how many, label-free).
        head: the LM head's description (vocabulary and hidden size, source).
    """

    layer: int
    layer_indices: list[int]
    layer_names: list[str]
    layer_paths: list[str]
    scores: list[float]
    score: str
    rule: str
    unreachable: list[int] = field(default_factory=list)
    n_positions: int = 0
    calibration: str = ""
    head: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``"block 5 (bert.encoder.layer.4)"``."""
        k = self.layer_indices.index(self.layer)
        return name_with_path(self.layer_names[k], self.layer_paths[k])

    def curve(self) -> str:
        """The coherence curve as text: ``embeddings 0.764, block 1 0.790, ...``."""
        marks = {i: " (unreachable)" for i in self.unreachable}
        return ", ".join(
            f"{n} {s:.3f}{marks.get(i, '')}"
            for i, n, s in zip(self.layer_indices, self.layer_names, self.scores, strict=True)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSelection:
        """The selection a :meth:`to_dict` wrote (unknown keys are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def stored_selection(model: nn.Module) -> LayerSelection | None:
    """The selection stored in ``model.config``; ``None`` when absent or unreadable."""
    data = getattr(getattr(model, "config", None), CONFIG_KEY, None)
    if not isinstance(data, dict):
        return None
    try:
        return LayerSelection.from_dict(data)
    except (TypeError, ValueError) as err:
        warn_user(f"ignoring the unreadable {CONFIG_KEY} in the model config ({err})")
        return None


def store_selection(model: nn.Module, selection: LayerSelection) -> None:
    """Store ``selection`` in ``model.config``, so ``save_pretrained`` keeps it in config.json.

    Raises:
        ValueError: the model has no Hugging Face config to store it in.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config to store the layer selection in")
    setattr(config, CONFIG_KEY, selection.to_dict())


def unreachable_candidates(grads: Sequence[Tensor], words: Tensor) -> list[int]:
    """Candidates whose gradient (almost) never reaches a word position.

    Args:
        grads: one ``(B, n, K)`` gradient per candidate layer.
        words: ``(B, n)`` bool, the real non-special positions.

    Returns:
        The indices (into ``grads``) of the layers where the word positions carry less than
        :data:`REACH_TOLERANCE` of the layer's gradient norm (all of it zero included).
    """
    out = []
    rows = words.float()
    for k, grad in enumerate(grads):
        norms = grad.float().norm(dim=-1)
        total = float(norms.sum())
        on_words = float((norms * rows).sum())
        if on_words <= REACH_TOLERANCE * total or total == 0.0:
            out.append(k)
    return out


class Calibrator:
    """Counts the real tokens an auto-calibration has scored, with a progress bar.

    Args:
        budget: the real (non-special) tokens to score before the selection freezes.
    """

    def __init__(self, budget: int) -> None:
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"calibration_tokens must be a positive int, got {budget!r}")
        self.budget = budget
        self.seen = 0
        self._bar: Any = None

    @property
    def done(self) -> bool:
        """Whether the budget of word tokens has been scored."""
        return self.seen >= self.budget

    def add(self, tokens: int) -> bool:
        """Count ``tokens`` more; return True once the budget is reached (the bar closes)."""
        if self._bar is None:
            self._bar = tqdm(total=self.budget, desc="DLS layer calibration", unit="tok")
        step = min(tokens, self.budget - self.seen)
        self.seen += tokens
        self._bar.update(max(step, 0))
        if self.done:
            self._bar.close()
        return self.done


def sample_positions(words: Tensor, fraction: float) -> Tensor:
    """At most ``ceil(fraction * n_words)`` evenly spaced word positions per example.

    At least :data:`MIN_SAMPLED_POSITIONS` (or all words, if fewer). Depends only on the
    example's own words, so a batch gives each example what it gets alone.

    Args:
        words: ``(B, n)`` bool.
        fraction: in ``(0, 1]``.

    Returns:
        ``(B, n)`` bool, a subset of ``words``.
    """
    out = torch.zeros_like(words)
    for b in range(words.shape[0]):
        where = words[b].nonzero().flatten()
        n = where.numel()
        if n == 0:
            continue
        k = min(n, max(MIN_SAMPLED_POSITIONS, math.ceil(fraction * n)))
        picks = torch.linspace(0, n - 1, k).round().long().unique()
        out[b, where[picks]] = True
    return out


def sampled_self_recovery(
    hidden: Sequence[Tensor], ids: Tensor, rows: Tensor, lm_head: nn.Module, chunk_size: int
) -> list[Tensor]:
    """``self_recovery`` ``(B, n)`` of every layer, at the positions in ``rows`` only (0 elsewhere).

    Decodes only the gathered positions, and every layer's in the same head calls: for a few
    rows the head's cost is reading its ``K x V`` unembedding, so one call for all layers costs
    about what one call for one layer does.

    Args:
        hidden: one ``(B, n, K)`` hidden state per layer.
        ids: ``(B, n)`` input ids.
        rows: ``(B, n)`` bool, the positions to score.
        lm_head: the decoding head.
        chunk_size: rows decoded at once (at least all sampled rows of all layers are
            decoded together when they fit).

    Returns:
        One ``(B, n)`` float tensor per layer.
    """
    counts = rows.sum(-1)
    width = max(int(counts.max()), 1)
    # Each example's chosen positions first (stable sort keeps their order), then padding.
    order = torch.sort((~rows).to(torch.int8), dim=-1, stable=True).indices[:, :width]
    index = order[..., None].expand(-1, -1, hidden[0].shape[-1])
    gathered = torch.cat([h.gather(1, index) for h in hidden], dim=1)  # (B, L * width, K)
    gathered_ids = ids.gather(1, order).repeat(1, len(hidden))
    chunk = max(chunk_size, gathered.shape[0] * gathered.shape[1])
    hits = (decode_top1(gathered, gathered_ids, lm_head, chunk) == gathered_ids).float()
    valid = torch.arange(width, device=ids.device)[None, :] < counts[:, None]
    out = []
    for k in range(len(hidden)):
        layer = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        layer.scatter_(1, order, hits[:, k * width : (k + 1) * width] * valid)
        out.append(layer * rows)
    return out


def warn_degenerate_head(selector: LayerCoherenceSelector, names: Sequence[str]) -> None:
    """Warn when the head recovers almost no input token at any layer (``self_recovery``)."""
    scores = selector.scores_
    if selector.score != "self_recovery" or scores is None or scores.numel() == 0:
        return
    best = float(scores.max())
    if best < DEGENERATE_COHERENCE:
        warn_user(
            f"the LM head decodes at most {best:.1%} of the input tokens back to themselves at "
            f"any layer ({', '.join(names)}): it is random, untrained or from another model, so "
            "the layer choice is meaningless. Load the pre-trained backbone's head "
            "(load_lm_head('<backbone checkpoint>')) or fix the layer with layers=<index>"
        )


def warn_small_calibration(n_tokens: int, n_texts: int, budget: int) -> None:
    """Warn (once per calibration) when explicit calibration texts are too few.

    Too few: fewer word tokens than the automatic calibration's budget
    (``calibration_tokens``, :data:`DEFAULT_CALIBRATION_TOKENS`).
    """
    if n_tokens >= budget:
        return
    warn_user(
        f"DLS chose its layer on {n_tokens} word tokens ({n_texts} calibration texts), fewer "
        f"than the {budget} recommended (calibration_tokens, what the automatic calibration "
        "collects): on too few tokens the coherence curve is noisy and the layer chosen can "
        "differ from the one a full fit picks (BENCHMARKS.md: 1,000 SST-2 tokens give the "
        "full-fit layer in 99.7 % of resamples, 1,500 in 100 %). Pass more unlabelled in-domain "
        f"texts (about {budget // 20} sentences), fix the layer with layers=<index>, or leave "
        "calibration_texts out to calibrate on the first explained texts"
    )


def warn_zero_maps(maps: Tensor, words: Tensor, where: str, aggregation: str) -> None:
    """Warn when an example's map is zero at every real word position."""
    has_words = words.any(-1)
    zero = has_words & ~((maps != 0) & words).any(-1)
    if bool(zero.any()):
        which = zero.nonzero().flatten().tolist()
        warn_user(
            f"the attribution is zero at every word of example(s) {which[:10]} at {where}: "
            + (
                "gradcam's ReLU removed every position's saliency (try aggregation='grad_x_act')"
                if aggregation == "gradcam"
                else "the layer's gradient does not reach those tokens (e.g. the last block "
                "under a [CLS]-only pooler) or the target does not depend on them. Choose an "
                "earlier layer (layers=<index>) or use mapping='hybrid'"
            )
        )


def builtin_calibration_texts() -> list[str]:
    """The built-in unlabelled general-English texts (``attr/calibration/``, CC0).

    The layer of a model without a stored selection is chosen on them when no
    ``calibration_texts`` are given: one fixed set, so the choice never depends on the texts
    being explained.
    """
    text = (
        resources.files("captum_layer_saliency.attr")
        .joinpath("calibration/general_english.txt")
        .read_text(encoding="utf-8")
    )
    return [line.strip() for line in text.splitlines() if line.strip()]


def saved_tokenizer(model: nn.Module | None) -> Any:
    """The tokenizer saved with ``model`` (its ``config._name_or_path``), or ``None``.

    Read with ``local_files_only=True``: a folder the model was loaded from, or the Hugging
    Face cache of a hub model; never a download. ``None`` where there is no such path or no
    tokenizer there (a model built from a config, or a forward function).
    """
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not path:
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    logger.info("DLS encodes its calibration texts with the tokenizer saved at %s", path)
    return tokenizer


def log_selection(selection: LayerSelection, how: str) -> None:
    """Log the choice once: the layer's name, the coherence curve and where it came from.

    A choice made now (a calibration) is logged at WARNING, so that it is seen; one restored
    from the model's config at INFO.
    """
    logger.log(
        logging.INFO if how == "stored with the model" else logging.WARNING,
        "DLS uses %s, %s; %s coherence per layer: %s; calibration: %s",
        selection.name,
        how,
        selection.score,
        selection.curve(),
        selection.calibration or "unknown",
    )


# -- the candidate layers ----------------------------------------------------------------


def model_layers(model: nn.Module) -> tuple[list[nn.Module], list[str], list[str], list[int]]:
    """A Hugging Face model's candidate layers, with their one naming scheme.

    Args:
        model: a Hugging Face model of a family that
            :func:`~captum_layer_saliency.models.surgery.find_model_parts` knows.

    Returns:
        ``(modules, names, paths, indices)``: index 0 is the embeddings (``"embeddings"``),
        index ``l`` is block ``l`` (``"block l"``); ``paths`` are the module paths
        (``"bert.encoder.layer.4"`` for block 5). The embeddings are left out where no head
        can decode them (ELECTRA with an embedding projection), so indices may start at 1.
    """
    parts = find_model_parts(model)
    modules = default_layers(model)
    all_ids = [id(m) for m in parts.layers]
    indices = [all_ids.index(id(m)) for m in modules]
    names = [parts.layer_names[i] for i in indices]
    paths = [parts.layer_paths[i] for i in indices]
    return modules, names, paths, indices


def check_layers_in_model(layers: Sequence[nn.Module], model: nn.Module) -> None:
    """Refuse layers that are not modules of ``model``.

    Args:
        layers: the candidate layers.
        model: the model they must belong to.

    Raises:
        TypeError: a layer that is not a ``torch.nn.Module``.
        ValueError: a layer that is not a submodule of ``model``.
    """
    known = {id(m) for m in model.modules()}
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer {i} is a {type(layer).__name__}, not a torch.nn.Module")
        if id(layer) not in known:
            raise ValueError(
                f"layer {i} ({type(layer).__name__}) is not a submodule of the model "
                f"{type(model).__name__}"
            )


def resolve_layers(
    layers: Any, modules: Sequence[nn.Module], names: Sequence[str], indices: Sequence[int]
) -> list[nn.Module]:
    """The modules meant by ``layers``.

    Args:
        layers: an index (0 = embeddings, ``l`` = block ``l``; negative counts from the last
            block), a module, a list of either, or ``None`` (all of them).
        modules: the model's candidate layers (:func:`model_layers`).
        names: their names.
        indices: their indices.

    Returns:
        The modules, in the order given (modules given as such are checked by the caller).

    Raises:
        ValueError: an index out of range.
    """
    single = isinstance(layers, (nn.Module, int))
    items: list[Any] = [layers] if single else list(modules if layers is None else layers)
    chosen: list[nn.Module] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            position = item if item >= 0 else indices[-1] + 1 + item
            if position not in indices:
                raise ValueError(
                    f"layer index {item} is out of range: the model's layers are "
                    f"{indices[0]} ({names[0]}) .. {indices[-1]} ({names[-1]})"
                )
            chosen.append(modules[list(indices).index(position)])
        else:
            chosen.append(item)  # checked by the caller
    return chosen


def owner_model(forward_func: Any) -> nn.Module | None:
    """The model behind a forward function, when it can be told; else ``None``.

    Args:
        forward_func: a module; an object with a ``model`` module (``classifier_forward``); a
            bound method of a module (``model.forward``); a ``functools.partial`` of one of
            these; or a closure over exactly one module (``lambda ids, m: model(ids, m).logits``).

    Returns:
        The module, or ``None`` for a function behind which no single module can be found.
    """
    if isinstance(forward_func, nn.Module):
        return forward_func
    for attribute in ("model", "__self__"):
        found = getattr(forward_func, attribute, None)
        if isinstance(found, nn.Module):
            return found
    if isinstance(forward_func, functools.partial):
        inner = [owner_model(forward_func.func)] + [
            a for a in forward_func.args if isinstance(a, nn.Module)
        ]
        modules = [m for m in inner if m is not None]
        return modules[0] if modules else None
    cells = getattr(forward_func, "__closure__", None) or ()
    modules = []
    for cell in cells:
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(content, nn.Module):
            modules.append(content)
    return modules[0] if len({id(m) for m in modules}) == 1 else None


def name_layers(
    layers: Sequence[nn.Module], model: nn.Module | None
) -> tuple[list[int], list[str], list[str]]:
    """Name candidate layers in the one scheme, whichever way they were given.

    A layer that is one of ``model``'s embeddings or blocks (by identity, among
    :func:`~captum_layer_saliency.models.surgery.find_model_parts`'s) gets its index and name
    (``0``/``"embeddings"``, ``l``/``"block l"``). Any other module keeps a generic name that
    says what it is: its module path in ``model`` (``"bert.encoder.layer.1.output"``), else its
    class and position (``"Linear (candidate 2)"``).

    Args:
        layers: the candidate layers, shallow to deep.
        model: the model they belong to (``None`` when unknown).

    Returns:
        ``(indices, names, paths)``: the layer indices when every layer is an embeddings or a
        block, else the positions ``0 .. len(layers) - 1`` (an index must name one layer);
        the names; the module paths (``""`` when unknown).
    """
    parts = None
    if model is not None:
        try:
            parts = find_model_parts(model)
        except UnsupportedModelError:  # an unknown family: generic names by module path
            parts = None
    where = {id(m): i for i, m in enumerate(parts.layers)} if parts is not None else {}
    paths_of = {id(m): n for n, m in model.named_modules()} if model is not None else {}
    known = [where.get(id(m)) for m in layers]
    paths = [paths_of.get(id(m), "") for m in layers]
    names = []
    for k, (layer, index, path) in enumerate(zip(layers, known, paths, strict=True)):
        if index is not None and parts is not None:
            names.append(parts.layer_names[index])
        else:
            names.append(path or f"{type(layer).__name__} (candidate {k})")
    if all(i is not None for i in known):
        return [int(i) for i in known if i is not None], names, paths
    return list(range(len(layers))), names, paths


def _fuse(maps: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum of per-layer maps ``(B, L, n)``.

    Gradient scales differ by orders of magnitude across layers, so with several layers each
    map is first scaled to unit L1 norm per example; otherwise the largest layer would decide.
    """
    if maps.shape[1] > 1:
        maps = maps / maps.abs().sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.einsum("l,bln->bn", weights.to(maps), maps)


def _layer_means(position_scores: Sequence[Tensor], rows: Tensor) -> Tensor:
    """Each example's mean coherence per layer ``(B, L)`` over its scored rows."""
    weights = rows.float()
    return torch.stack(
        [(scores * weights).sum(-1) / weights.sum(-1).clamp_min(1) for scores in position_scores],
        dim=1,
    )


# -- the layer choice, DecodedLayerSaliency's collaborator ----------------------------------------


Batch = Mapping[str, Tensor] | tuple[Tensor, Tensor]

# One layer choice at a time: two threads' first calls choose once, on the same texts.
_CHOOSING = threading.Lock()


class LayerChooser:
    """Which layer a :class:`~captum_layer_saliency.DecodedLayerSaliency` explains at.

    One collaborator, held by DLS as ``layer_selection`` and wired by its constructor: the
    per-model (default) or per-example choice, its calibration and its records
    (``selection_``, ``last_selected_``), and, per call, the plan of the layers to attribute at
    (:meth:`plan`) and the one map per example chosen from their maps (:meth:`finish`).

    Args:
        layer: the layer, or the candidate layers from shallow to deep.
        forward_func: the model or forward function (the selector's fit runs it).
        lm_head: the decoding head.
        selector: picks among several layers (``None``: one map per layer).
        explained_forward: returns the forward of the explained scalar (the prediction's
            logit), whose gradients show which layers reach the input tokens.
        selection: ``"model"`` or ``"example"``.
        calibration_tokens: word tokens an automatic calibration scores before freezing.
        position_sample: per-example selection's sampled fraction of word positions.
        decode_chunk_size: rows decoded at once.
        aggregation: the explainer's aggregation (named by the empty-map warning).
        special_token_ids: ids that are never word positions.
    """

    def __init__(
        self,
        layer: nn.Module | Sequence[nn.Module],
        forward_func: Callable[..., Any],
        lm_head: nn.Module,
        selector: LayerCoherenceSelector | None,
        explained_forward: Callable[[], Callable[..., Tensor]],
        *,
        selection: str = "model",
        calibration_tokens: int = DEFAULT_CALIBRATION_TOKENS,
        position_sample: float | None = DEFAULT_POSITION_SAMPLE,
        decode_chunk_size: int,
        aggregation: str,
        special_token_ids: Sequence[int],
    ) -> None:
        #: the layer, or the candidate layers shallow to deep (DLS's ``layer``).
        self.layer: Any = layer
        self.forward_func = forward_func
        self.lm_head = lm_head
        self.selector = selector
        # The explained scalar's forward (the prediction's logit), for the reachability check.
        self._explained_forward = explained_forward
        self.decode_chunk_size = decode_chunk_size
        self.aggregation = aggregation
        self.special_token_ids = list(special_token_ids)
        #: ``"model"`` or ``"example"`` (see DecodedLayerSaliency's constructor).
        self.selection = selection
        self.position_sample = position_sample
        #: counts the word tokens an automatic calibration has scored.
        self.calibrator = Calibrator(calibration_tokens)
        indices, names, paths = name_layers(_as_list(layer), owner_model(forward_func))
        #: each candidate's layer index (0 = embeddings, ``l`` = block ``l``; the position in
        #: ``layer`` when some candidate is neither the embeddings nor a block).
        self.layer_indices: list[int] = indices
        #: each candidate's name (``"embeddings"``, ``"block 1"``, ...; another module's path).
        self.layer_names: list[str] = names
        #: each candidate's module path in the model ("" when unknown).
        self.layer_paths: list[str] = paths
        #: the Hugging Face model (set by :meth:`attach`, from ``for_model``).
        self.model: nn.Module | None = None
        #: the tokenizer :meth:`calibrate` uses (set by :meth:`attach`).
        self.tokenizer: Any = None
        #: per-example coherence of each candidate layer in the last call ``(B, L)``.
        self.last_layer_scores_: Tensor | None = None
        #: per-example selected layer indices in the last call.
        self.last_selected_: list[list[int]] | None = None
        #: the per-model choice once made (layer, per-layer scores, calibration).
        self.selection_: LayerSelection | None = None
        #: layer indices whose gradient does not reach the input tokens (once checked).
        self.unreachable_layers_: list[int] | None = None
        self._frozen = self.selector is not None and self.selector.fitted
        # Whether the bare constructor's stored selection and saved tokenizer were looked for.
        self._looked_up = False

    # -- public ------------------------------------------------------------------------------

    def layer_name(self, index: int) -> str:
        """``"block 5 (bert.encoder.layer.4)"`` for the layer of index ``index``."""
        k = self.layer_indices.index(index)
        return name_with_path(self.layer_names[k], self.layer_paths[k])

    def fit(self, batches: Iterable[Batch], calibration: str = "") -> LayerCoherenceSelector:
        """Fit the selector once on unlabelled ``(input_ids, attention_mask)`` batches, and freeze.

        The first batch also takes one backward pass to find the layers whose gradient does
        not reach the input tokens; they are never selected. Afterwards :meth:`attribute`
        runs only the selected layer(s).

        Args:
            batches: ``{"input_ids", "attention_mask"}`` dicts or ``(input_ids, mask)`` pairs.
            calibration: a description of the texts, kept in ``selection_``.

        Returns:
            The fitted selector (``scores_``, ``selected_``, ``weights_``).
        """
        selector = self.selector
        if selector is None:
            raise ValueError("this DecodedLayerSaliency has no selector to fit")
        selector.reset()

        def checked(items: Iterable[Batch]) -> Iterator[Batch]:
            for i, batch in enumerate(items):
                if i == 0 and self.unreachable_layers_ is None:
                    ids, mask = _pair(batch)
                    self._check_reach(ids, mask)
                yield batch

        selector.fit(
            self.forward_func,
            _as_list(self.layer),
            checked(batches),
            special_token_ids=self.special_token_ids,
            lm_head=self.lm_head,
        )
        how = calibration or f"fit_selector on {selector.n_positions_} word tokens"
        self._freeze(how, "fitted")
        return selector

    def calibrate(
        self, texts: Sequence[str] | None = None, tokenizer: Any = None, batch_size: int = 32
    ) -> LayerSelection:
        """Choose the layer label-free on unlabelled texts, with a progress bar, and freeze.

        Args:
            texts: plain strings from the task's domain (labels are never used), or ``None``
                for the built-in general-English texts (what a model without a stored
                selection is calibrated on before its first explanation); they should
                hold at least ``calibration_tokens`` word tokens (default 2,000, about 100
                SST-2 sentences, the budget of the automatic calibration): with fewer, a
                ``UserWarning`` says how many were given, since the choice may then differ
                from a full fit's (BENCHMARKS.md).
            tokenizer: the model's tokenizer (default: the one given to
                ``DecodedLayerSaliency.for_model``).
            batch_size: texts per forward pass.

        Returns:
            The :class:`~captum_layer_saliency.attr.layer_selection.LayerSelection` (also in
            ``selection_``).

        Raises:
            ValueError: no texts, no tokenizer, or no selector.
        """
        if texts is None:
            return self._calibrate_on(
                builtin_calibration_texts(),
                tokenizer,
                batch_size,
                "the built-in unlabelled general-English texts",
            )
        texts = [t for t in texts if isinstance(t, str) and t.strip()]
        return self._calibrate_on(
            texts, tokenizer, batch_size, f"{len(texts)} unlabelled texts given to calibrate"
        )

    def _calibrate_on(
        self, texts: list[str], tokenizer: Any, batch_size: int, source: str
    ) -> LayerSelection:
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is None:
            raise ValueError("calibrate() needs the model's tokenizer (tokenizer=...)")
        if not texts:
            raise ValueError("calibrate() got no non-empty texts")
        model = self.model if self.model is not None else owner_model(self.forward_func)
        device = model_device(model) if model is not None else torch.device("cpu")
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", 512)
        starts = range(0, len(texts), batch_size)

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            # a one-off job: the bar shows it running, then goes (the WARNING line stays)
            for i in tqdm(starts, desc="DLS layer calibration", unit="batch", leave=False):
                enc = tok(
                    list(texts[i : i + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=min(int(limit), 512),
                    return_tensors="pt",
                    split_special_tokens=True,  # user text never becomes special tokens
                )
                yield enc["input_ids"].to(device), enc["attention_mask"].to(device)

        self.fit(batches(), calibration="pending")
        assert self.selection_ is not None
        self.selection_.calibration = f"{source} ({self.selection_.n_positions} word tokens)"
        warn_small_calibration(self.selection_.n_positions, len(texts), self.calibrator.budget)
        log_selection(self.selection_, "calibrated")
        return self.selection_

    def store(self) -> None:
        """Store the per-model choice in ``model.config``, where ``save_pretrained`` keeps it.

        ``DecodedLayerSaliency.for_model`` on the saved model then skips calibration.

        Raises:
            ValueError: nothing chosen yet, or no Hugging Face model.
        """
        model = self.model if self.model is not None else owner_model(self.forward_func)
        if self.selection_ is None or model is None:
            raise ValueError("no per-model selection to store yet (calibrate first)")
        store_selection(model, self.selection_)

    # -- internal ----------------------------------------------------------------------------

    def choose_before_explaining(self) -> None:
        """Choose the model's layer on the fixed calibration set, once, before explaining.

        The layer is a property of the model, never of the batch: a model without a stored
        selection gets its layer from the built-in general-English texts
        (:func:`~captum_layer_saliency.attr.layer_selection.builtin_calibration_texts`) before
        its first explanation, whatever texts that explanation is for. One thread chooses;
        the others wait for its choice. The bare constructor uses a selection stored with the
        model, as ``for_model`` does. The texts are encoded with the tokenizer given to
        ``for_model``, or else with the one saved beside the model (the bare constructor:
        ``config._name_or_path``, read from local files only, never downloaded). Without
        either, the texts cannot be encoded: the first calls calibrate on what they explain,
        as before, and say so (call :meth:`calibrate` with a tokenizer, or :meth:`fit`, to
        avoid it).
        """
        if self.mode() != "calibrate":
            return
        with _CHOOSING:
            if self.mode() != "calibrate":
                return  # another thread chose meanwhile
            if self.tokenizer is None and not self._looked_up:  # the bare constructor, once
                self._looked_up = True
                owner = owner_model(self.forward_func)
                if owner is not None:
                    self._use_stored_selection(owner)
                    if self.mode() != "calibrate":
                        return
                self.tokenizer = saved_tokenizer(owner)
            if self.tokenizer is not None:
                self.calibrate(None)

    def attach(
        self,
        model: nn.Module,
        tokenizer: Any,
        chosen: Sequence[nn.Module],
        calibration_texts: Sequence[str] | None,
    ) -> None:
        """Name the candidates in the model's scheme, then choose the layer (for_model)."""
        indices, names, paths = name_layers(chosen, model)
        self.layer_indices, self.layer_names, self.layer_paths = indices, names, paths
        self.model = model
        self.tokenizer = tokenizer
        if calibration_texts is not None:
            self.calibrate(calibration_texts)
        else:
            self._use_stored_selection(model)

    def _use_stored_selection(self, model: nn.Module) -> None:
        stored = stored_selection(model)
        selector = self.selector
        if (
            stored is None
            or selector is None
            or self.selection != "model"
            or self._frozen
            or isinstance(self.layer, nn.Module)
        ):
            return
        if stored.layer_indices != self.layer_indices or stored.score != selector.score:
            return  # scored on other candidates or with another score: calibrate anew
        selector.reset()
        self.unreachable_layers_ = list(stored.unreachable)
        selector.exclude(self.layer_indices.index(i) for i in stored.unreachable)
        selector.restore(stored.scores, stored.n_positions)
        self._freeze(stored.calibration, "stored with the model")

    def _check_reach(self, ids: Tensor, mask: Tensor) -> None:
        forward = self._explained_forward()
        grads, _ = layer_gradients_and_outputs(forward, _as_list(self.layer), ids, None, (mask,))
        self._note_reach(grads, candidate_mask(ids, mask, self.special_token_ids))

    def _note_reach(self, grads: Sequence[Tensor], words: Tensor) -> None:
        if self.unreachable_layers_ is not None or self.selector is None:
            return
        out = unreachable_candidates(grads, words)
        self.unreachable_layers_ = [self.layer_indices[k] for k in out]
        self.selector.exclude(out)

    def _freeze(self, calibration: str, how: str) -> None:
        selector = self.selector
        assert selector is not None and selector.scores_ is not None and selector.selected_
        self._frozen = True
        head = self.lm_head
        self.selection_ = LayerSelection(
            layer=self.layer_indices[selector.selected_[0]],
            layer_indices=list(self.layer_indices),
            layer_names=list(self.layer_names),
            layer_paths=list(self.layer_paths),
            scores=[round(float(v), 4) for v in selector.scores_],
            score=selector.score,
            rule=selector.rule,
            unreachable=list(self.unreachable_layers_ or []),
            n_positions=selector.n_positions_,
            calibration=calibration,
            head={
                "vocab_size": getattr(head, "vocab_size", None),
                "hidden_size": getattr(head, "hidden_size", None),
                "source": getattr(head, "source", None),
            },
        )
        if calibration != "pending":
            log_selection(self.selection_, how)
        warn_degenerate_head(selector, self.layer_names)

    def _position_scores(
        self,
        hidden: list[Tensor],
        decoded: list[Any] | None,
        ids: Tensor,
        mask: Tensor,
        words: Tensor,
        sample: bool,
    ) -> tuple[list[Tensor], Tensor]:
        """Per-position coherence of every candidate layer, and the rows they cover.

        Per-example selection with ``self_recovery`` and no decoded maps scores a sample of
        each example's word positions (``position_sample``), which bounds its decoding cost.
        """
        assert self.selector is not None
        score = self.selector.score
        if decoded is not None:
            return [position_coherence(d, ids, score) for d in decoded], words
        if sample and self.position_sample is not None and score == "self_recovery":
            rows = sample_positions(words, self.position_sample)
            return sampled_self_recovery(
                hidden, ids, rows, self.lm_head, self.decode_chunk_size
            ), rows
        return [
            layer_position_coherence(
                h, ids, mask, words, self.lm_head, score, self.decode_chunk_size
            )
            for h in hidden
        ], words

    def _select(
        self,
        maps: list[Tensor],
        position_scores: list[Tensor] | None,
        candidates: Tensor,
        online: bool,
        run_idx: list[int],
    ) -> Tensor:
        assert self.selector is not None
        stacked = torch.stack(maps, dim=1)  # (B, L, n)
        if not online:
            assert self.selector.weights_ is not None
            weights = self.selector.weights_.to(stacked)
            self.last_selected_ = [[self.layer_indices[i] for i in run_idx]] * stacked.shape[0]
            self.last_layer_scores_ = None
            return _fuse(stacked, weights)
        assert position_scores is not None
        per_example = _layer_means(position_scores, candidates)  # (B, L)
        out = torch.zeros_like(stacked[:, 0])
        chosen: list[list[int]] = []
        # The selector's rules run on the host: one copy for the batch, not one sync per example.
        per_example_host = per_example.detach().cpu()
        for b in range(stacked.shape[0]):
            picked, weights = self.selector.select(per_example_host[b])
            out[b] = _fuse(stacked[b : b + 1, picked], weights.to(stacked))[0]
            chosen.append([self.layer_indices[i] for i in picked])
        self.last_layer_scores_ = per_example.detach()
        self.last_selected_ = chosen
        return out

    def plan(
        self,
        forward: Callable[..., Tensor],
        call: tuple[Any, Tensor | None, Any],
        *,
        ids: Tensor,
        mask: Tensor,
        words: Tensor,
        to_input: bool,
        costly: bool,
    ) -> tuple[str, list[int], tuple[list[Tensor], Tensor, dict[str, float]] | None]:
        """The call's mode, the candidates to attribute at, and a choice made first (or None).

        ``mode`` is ``"all"`` (one map per layer), ``"frozen"``, ``"calibrate"`` or
        ``"example"``. With a ``costly`` layer method (anything but the gradient, identity
        mapping), a calibration step or per-example choice is made from the layers' states
        before attributing (:meth:`_choose_first`); a calibration step then reads as
        ``"frozen"`` for the rest of the call. The choice comes with its coherence, rows and
        extra passes per example (``{"forwards": f, "backwards": b}``).
        """
        mode = self.mode()
        run_idx = list(range(len(self.layer) if not isinstance(self.layer, nn.Module) else 1))
        if mode == "frozen":
            assert self.selector is not None and self.selector.selected_ is not None
            return mode, list(self.selector.selected_), None
        if not costly or mode not in ("calibrate", "example") or len(self.layer) < 2:
            return mode, run_idx, None
        inputs, targets, args = call
        run_idx, (scores, rows), backward = self._choose_first(
            mode, forward, inputs, targets, args, ids=ids, mask=mask, words=words, to_input=to_input
        )
        extra = {"forwards": 1.0, "backwards": 1.0 if backward else 0.0}
        return ("frozen" if mode == "calibrate" else mode), run_idx, (scores, rows, extra)

    def _choose_first(
        self,
        mode: str,
        forward: Callable[..., Tensor],
        inputs: Tensor | tuple[Tensor, ...],
        targets: Tensor | None,
        additional_forward_args: Any,
        *,
        ids: Tensor,
        mask: Tensor,
        words: Tensor,
        to_input: bool,
    ) -> tuple[list[int], tuple[list[Tensor], Tensor], bool]:
        """Choose the layers from their states before attributing (costly layer methods).

        Under a layer method other than the gradient, attributing at every candidate costs
        several passes per layer; the choice needs only the states (and, once, the gradients,
        which show the unreachable layers). So a calibration step or a per-example choice is
        made first, and the layer method then runs at the chosen layers only: the same maps as
        running it at every layer and choosing afterwards.

        Args:
            mode: ``"calibrate"`` or ``"example"``.
            forward: the checked forward (the prediction's logit when ``targets`` is None).
            inputs: the forward's inputs.
            targets: ``(B,)`` targets, or ``None`` (the prediction).
            additional_forward_args: the forward's further arguments.
            ids: ``(B, n)`` token ids.
            mask: ``(B, n)`` attention mask.
            words: ``(B, n)`` bool, the real non-special positions.
            to_input: the layers' inputs rather than their outputs.

        Returns:
            ``(run_idx, (position_scores, rows), backward)``: the candidate indices to attribute
            at, the coherence the choice used, and whether a backward pass was spent (the
            reachability check of the first call).
        """
        assert self.selector is not None
        layers = list(self.layer)
        backward = self.unreachable_layers_ is None
        if backward:
            grads, hidden = layer_gradients_and_outputs(
                forward, layers, inputs, targets, additional_forward_args, to_input=to_input
            )
            self._note_reach(grads, words)
        else:
            hidden = states_until(forward, layers, inputs, additional_forward_args, to_input)
        check_hidden_states(hidden, ids, self.lm_head)
        scores, rows = self._position_scores(
            hidden, None, ids, mask, words, sample=mode == "example"
        )
        if mode == "calibrate":
            self._calibration_step(scores, rows)
            assert self.selector.selected_ is not None
            return list(self.selector.selected_), (scores, rows), backward
        per_example = _layer_means(scores, rows).cpu()
        chosen = {i for b in range(ids.shape[0]) for i in self.selector.select(per_example[b])[0]}
        return sorted(chosen), (scores, rows), backward

    def finish(
        self,
        maps: list[Tensor],
        grads: list[Tensor],
        hidden: list[Tensor],
        decoded: list[Any] | None,
        ids: Tensor,
        mask: Tensor,
        words: Tensor,
        mode: str,
        run_idx: list[int],
        chosen_first: tuple[list[Tensor], Tensor] | None = None,
    ) -> Tensor | list[Tensor]:
        """The call's output from the maps of the layers that ran (``run_idx``), detached.

        One layer: its map (warning when empty). Several without a selector: one map per
        layer. With a selector: the frozen choice, or a calibration step or per-example choice
        from the layers' coherence (the gradients show which layers reach the tokens), unless
        :meth:`_choose_first` made it (``chosen_first``: its coherence and rows).
        """
        if isinstance(self.layer, nn.Module):
            warn_zero_maps(maps[0], words, self.layer_name(self.layer_indices[0]), self.aggregation)
            return maps[0].detach()
        if self.selector is None:
            return [m.detach() for m in maps]
        position_scores: list[Tensor] | None = None
        rows = words
        if chosen_first is not None:  # the layers were chosen before attributing
            position_scores, rows = chosen_first
            if mode == "example":  # maps of the layers no example chose are never read
                full = [torch.zeros_like(maps[0]) for _ in self.layer]
                for k, i in enumerate(run_idx):
                    full[i] = maps[k]
                maps = full
        elif mode in ("calibrate", "example") and len(self.layer) > 1:
            self._note_reach(grads, words)
            position_scores, rows = self._position_scores(
                hidden, decoded, ids, mask, words, sample=mode == "example"
            )
        return self._choose(maps, position_scores, rows, mode, run_idx, words).detach()

    def _choose(
        self,
        maps: list[Tensor],
        position_scores: list[Tensor] | None,
        rows: Tensor,
        mode: str,
        run_idx: list[int],
        words: Tensor,
    ) -> Tensor:
        """One map per example from the candidates' maps; warns on empty maps.

        The map is the frozen layer's, the current choice after a calibration step, or each
        example's own choice.
        """
        assert self.selector is not None
        if mode == "calibrate" and len(maps) > 1:
            assert position_scores is not None
            self._calibration_step(position_scores, rows)
            assert self.selector.selected_ is not None
            run_idx = list(self.selector.selected_)
            maps = [maps[i] for i in run_idx]
        out = self._select(maps, position_scores, rows, mode == "example", run_idx)
        where = (
            "the layers chosen per example"
            if mode == "example"
            else ", ".join(self.layer_name(self.layer_indices[i]) for i in run_idx)
        )
        warn_zero_maps(out, words, where, self.aggregation)
        return out

    def mode(self) -> str:
        """``"all"`` (one map per layer), ``"frozen"``, ``"calibrate"`` or ``"example"``."""
        if isinstance(self.layer, nn.Module) or self.selector is None:
            return "all"
        if self._frozen and self.selector.selected_ is not None:
            return "frozen"
        return "calibrate" if self.selection == "model" else "example"

    def _calibration_step(self, position_scores: Sequence[Tensor], rows: Tensor) -> None:
        assert self.selector is not None
        self.selector.update(*self.selector.layer_sums(position_scores, rows.float()))
        if self.calibrator.add(int(rows.sum())):
            self._freeze(
                f"the first {self.calibrator.seen} word tokens explained (auto-calibration)",
                "auto-calibrated",
            )


def _as_list(layer: Any) -> list[nn.Module]:
    return [layer] if isinstance(layer, nn.Module) else list(layer)


def _pair(batch: Batch) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        return batch["input_ids"], batch["attention_mask"]
    return batch[0], batch[1]
