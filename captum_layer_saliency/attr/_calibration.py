"""One label-free layer per model: the stored selection, calibration, reachability, warnings.

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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.attr.coherence import LayerCoherenceSelector
from captum_layer_saliency.attr.decoding import decode_top1

logger = logging.getLogger("captum_layer_saliency")

__all__ = [
    "builtin_calibration_texts",
    "CONFIG_KEY",
    "DEFAULT_CALIBRATION_TOKENS",
    "DEFAULT_POSITION_SAMPLE",
    "DEGENERATE_COHERENCE",
    "SELECTIONS",
    "Calibrator",
    "LayerSelection",
    "name_with_path",
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
