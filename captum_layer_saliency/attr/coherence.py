"""Label-free layer coherence, and the selector that picks layers with it.

A layer is *coherent* where decoding its hidden states with the pre-trained LM head gives back
the input: the paper's observation is that fine-tuning erodes this in the last layers, and that
saliency is best read where coherence still holds. Scores are averaged over the real,
non-special positions (the rows of actual words); special tokens ([CLS], [SEP]) decode to
nothing in the input and would only add noise.

What "gives back the input" means depends on the family. A masked LM's hidden state at
position ``i`` is trained to decode to token ``i`` (``self_recovery``); a causal LM's hidden
state at position ``i`` is trained to predict token ``i + 1`` (``next_token_recovery``, the
logit lens of nostalgebraist, 2020). :func:`default_coherence_score` picks the one that fits the
model's family, and :func:`coherence_retention` compares a classifier's per-layer coherence with
its pre-trained backbone's, which shows what fine-tuning eroded. See ``docs/method.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.attr._upper_model import layer_outputs
from captum_layer_saliency.attr.decoding import (
    DEFAULT_DECODE_CHUNK,
    DecodedLayer,
    candidate_mask,
    decode_layer,
    decode_top1,
)
from captum_layer_saliency.models.surgery import FAMILIES

__all__ = [
    "COHERENCE_SCORES",
    "SELECTION_RULES",
    "LayerCoherenceSelector",
    "coherence_retention",
    "default_coherence_score",
    "layer_position_coherence",
    "next_token_hits",
    "position_coherence",
]


def _input_mass(decoded: DecodedLayer, input_ids: Tensor) -> Tensor:
    return decoded.contributions.sum(-1)


def _self_recovery(decoded: DecodedLayer, input_ids: Tensor) -> Tensor:
    return (decoded.top1 == input_ids).float()


def _own_prob(decoded: DecodedLayer, input_ids: Tensor) -> Tensor:
    return decoded.own_prob


def _neg_entropy(decoded: DecodedLayer, input_ids: Tensor) -> Tensor:
    return -decoded.entropy


def next_token_hits(top1: Tensor, input_ids: Tensor, candidates: Tensor) -> Tensor:
    """``1`` where position ``i``'s top decoded token is input token ``i + 1``, else ``0``.

    Only a next position that is itself a candidate (real, non-special) can be hit, so a
    decoded end-of-sequence token never matches right padding, and the last real position
    always scores 0: its share is the same at every layer, so the selection rules (which
    compare layers) do not see it.

    Args:
        top1: ``(B, n)`` most probable decoded token of every position.
        input_ids: ``(B, n)``.
        candidates: ``(B, n)`` bool: real, non-special positions.

    Returns:
        ``(B, n)`` float.

    Examples::

        >>> ids = torch.tensor([[5, 6, 7, 0]])
        >>> top1 = torch.tensor([[6, 9, 0, 0]])   # position 0 predicts 6, position 2 predicts pad
        >>> next_token_hits(top1, ids, ids != 0)
        tensor([[1., 0., 0., 0.]])
    """
    hits = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    hits[:, :-1] = ((top1[:, :-1] == input_ids[:, 1:]) & candidates[:, 1:].bool()).float()
    return hits


def _next_token_recovery(decoded: DecodedLayer, input_ids: Tensor) -> Tensor:
    # A candidate column j of the contributions holds P_i[t_j] > 0 for some row i.
    candidates = decoded.contributions.amax(1) > 0
    return next_token_hits(decoded.top1, input_ids, candidates)


#: Per-position coherence scores; higher means more coherent.
COHERENCE_SCORES: dict[str, Callable[[DecodedLayer, Tensor], Tensor]] = {
    # How much of the decoded distribution lies on tokens of the input.
    "input_mass": _input_mass,
    # Whether the top decoded token is the position's own input token.
    "self_recovery": _self_recovery,
    # The probability the decoding gives the position's own token.
    "own_prob": _own_prob,
    # Minus the entropy of the decoded distribution (nats).
    "neg_entropy": _neg_entropy,
    # Whether the top decoded token is the next input token (causal LMs: the logit lens).
    "next_token_recovery": _next_token_recovery,
}

#: Coherence score per LM-head kind (:class:`~captum_layer_saliency.models.surgery.FamilySpec`).
_SCORE_FOR_HEAD = {"masked": "self_recovery", "causal": "next_token_recovery"}


def default_coherence_score(model_or_config: Any) -> str:
    """The coherence score that fits a model's family: what its pre-trained head was trained for.

    Masked-LM families (BERT, RoBERTa, MiniLM, ...) decode position ``i`` to token ``i``:
    ``"self_recovery"``. Causal families (GPT-2, Llama, Mistral, Qwen2) decode position ``i``
    to token ``i + 1``: ``"next_token_recovery"``; their self-recovery falls to a few per cent
    after the first block of a pre-trained model, before any fine-tuning, so it cannot show
    what fine-tuning erodes. Anything else (no Hugging Face config, an unknown family) gets
    ``"self_recovery"``.

    Args:
        model_or_config: a Hugging Face model, its config, or a ``model_type`` string.

    Returns:
        A key of :data:`COHERENCE_SCORES`.

    Examples::

        >>> default_coherence_score("llama")
        'next_token_recovery'
        >>> default_coherence_score(transformers.BertConfig(num_hidden_layers=2))
        'self_recovery'
    """
    if isinstance(model_or_config, str):
        model_type: Any = model_or_config
    else:
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", None)
    spec = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    return _SCORE_FOR_HEAD.get(spec.head, "self_recovery") if spec else "self_recovery"


def coherence_retention(
    classifier_scores: Sequence[float] | Tensor,
    backbone_scores: Sequence[float] | Tensor,
    floor: float = 1e-3,
) -> Tensor:
    """Per-layer coherence of a classifier as a share of its pre-trained backbone's.

    ``r_l = c_l(classifier) / max(c_l(backbone), floor)``: 1 where fine-tuning kept what the
    backbone's layer ``l`` decodes, below 1 where it eroded it. On a causal LM the backbone's
    next-token recovery varies with depth (low in the middle blocks, highest at the top), so
    the ratio separates fine-tuning's erosion from the backbone's own curve.

    Args:
        classifier_scores: ``(L,)`` mean coherence of the classifier's layers (e.g. a fitted
            :class:`LayerCoherenceSelector`'s ``scores_``).
        backbone_scores: ``(L,)`` the same score of the pre-trained backbone's layers, on the
            same texts.
        floor: the smallest backbone score divided by (layers the backbone itself cannot
            decode give no meaningful ratio).

    Returns:
        ``(L,)`` float ratios.

    Raises:
        ValueError: the two curves have different lengths, or ``floor`` is not positive.

    Examples::

        >>> coherence_retention([0.05, 0.10, 0.02], [0.05, 0.20, 0.20])
        tensor([1.0000, 0.5000, 0.1000])
    """
    ours = torch.as_tensor(classifier_scores, dtype=torch.float32).flatten()
    base = torch.as_tensor(backbone_scores, dtype=torch.float32).flatten()
    if ours.shape != base.shape:
        raise ValueError(
            f"the classifier's curve has {ours.numel()} layers and the backbone's "
            f"{base.numel()}: score the same candidate layers of both"
        )
    if floor <= 0:
        raise ValueError(f"floor must be positive, got {floor}")
    return ours / base.clamp_min(floor)


SELECTION_RULES = ("elbow", "deepest", "argmax", "fixed", "weighted")


def position_coherence(decoded: DecodedLayer, input_ids: Tensor, score: str) -> Tensor:
    """Per-position coherence ``(B, n)`` of one decoded layer under the named score."""
    try:
        return COHERENCE_SCORES[score](decoded, input_ids)
    except KeyError:
        raise ValueError(
            f"unknown coherence score {score!r}; choose from {sorted(COHERENCE_SCORES)}"
        ) from None


def layer_position_coherence(
    hidden: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    candidates: Tensor,
    lm_head: nn.Module,
    score: str,
    chunk_size: int = DEFAULT_DECODE_CHUNK,
) -> Tensor:
    """Per-position coherence ``(B, n)`` of one layer's hidden states.

    It decodes only what the score needs.

    ``self_recovery`` and ``next_token_recovery`` need only each position's most probable
    token (:func:`decode_top1`),
    which skips the normalisation of the ``positions x V`` logits that the other scores need;
    they go through the full :func:`decode_layer`. Either way the values equal
    ``position_coherence(decode_layer(...), input_ids, score)``.

    Args:
        hidden: ``(B, n, K)``.
        input_ids: ``(B, n)``.
        attention_mask: ``(B, n)``, 0 at padding.
        candidates: ``(B, n)`` bool: real, non-special positions.
        lm_head: the decoding head.
        score: one of :data:`COHERENCE_SCORES`.
        chunk_size: rows decoded at once.

    Returns:
        ``(B, n)`` float scores.
    """
    if score == "self_recovery":
        return (decode_top1(hidden, input_ids, lm_head, chunk_size) == input_ids).float()
    if score == "next_token_recovery":
        top1 = decode_top1(hidden, input_ids, lm_head, chunk_size)
        return next_token_hits(top1, input_ids, candidates)
    decoded = decode_layer(hidden, input_ids, attention_mask, candidates, lm_head, chunk_size)
    return position_coherence(decoded, input_ids, score)


class LayerCoherenceSelector:
    """Pick the layer(s) to read saliency from, by label-free coherence.

    Fit it once on unlabelled texts with :meth:`fit`, or leave it unfitted and
    :class:`~captum_layer_saliency.DecodedLayerSaliency` scores every candidate layer on each
    batch it explains (online). Rules, applied to the per-layer scores ``c_l``:

    * ``"elbow"``: the layer just before the steepest fall of coherence from one layer to the
      next (the last layer when coherence never falls): the deepest layer before fine-tuning
      stops preserving token identity. It needs no threshold;
    * ``"deepest"``: the deepest layer with ``c_l >= theta * max(c)``: late, but still coherent;
    * ``"argmax"``: the most coherent layer;
    * ``"fixed"``: layer ``layer`` whatever the scores (the scores are still recorded);
    * ``"weighted"``: every layer with ``c_l >= theta * max(c)``, its map weighted by
      ``c_l`` (weights sum to 1): a multi-layer fusion.

    Args:
        lm_head: the head that decodes hidden states; may be left ``None`` when the selector is
            given to a ``DecodedLayerSaliency``, which then lends its own.
        score: one of :data:`COHERENCE_SCORES`.
        rule: one of :data:`SELECTION_RULES`.
        theta: the fraction of the best score a layer must reach (``deepest``, ``weighted``).
        layer: the candidate index used by ``rule="fixed"``.
        decode_chunk_size: rows decoded at once.

    Attributes:
        scores_: per-layer mean coherence ``(L,)`` after :meth:`fit` or the last online batch.
        selected_: the chosen candidate indices.
        weights_: one weight per selected layer (summing to 1).
        n_positions_: how many positions the fitted scores average over.
    """

    def __init__(
        self,
        lm_head: nn.Module | None = None,
        score: str = "self_recovery",
        rule: str = "elbow",
        theta: float = 0.85,
        layer: int | None = None,
        decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
    ) -> None:
        """Check and keep the options (see the class docstring)."""
        if score not in COHERENCE_SCORES:
            raise ValueError(
                f"unknown coherence score {score!r}; choose from {sorted(COHERENCE_SCORES)}"
            )
        if rule not in SELECTION_RULES:
            raise ValueError(f"unknown selection rule {rule!r}; choose from {SELECTION_RULES}")
        if rule == "fixed" and layer is None:
            raise ValueError("rule='fixed' needs layer=<candidate index>")
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must lie in [0, 1], got {theta}")
        self.lm_head = lm_head
        self.score = score
        self.rule = rule
        self.theta = theta
        self.layer = layer
        self.decode_chunk_size = decode_chunk_size
        #: candidate indices never selected (their gradient cannot reach the input tokens);
        #: a property of the model, so :meth:`reset` keeps it.
        self.excluded_: set[int] = set()
        self.reset()

    def reset(self) -> None:
        """Forget what :meth:`fit` learned."""
        self._sums: Tensor | None = None
        self._counts: int = 0
        self.scores_: Tensor | None = None
        self.selected_: list[int] | None = None
        self.weights_: Tensor | None = None
        self.n_positions_: int = 0

    def exclude(self, indices: Iterable[int]) -> None:
        """Never select these candidate indices (their scores are still kept and shown).

        :class:`~captum_layer_saliency.DecodedLayerSaliency` excludes a layer whose gradient
        does not reach the input tokens (the last block under a [CLS]-only pooler).
        """
        self.excluded_ = set(self.excluded_) | {int(i) for i in indices}
        if self.scores_ is not None:
            self.selected_, self.weights_ = self.select(self.scores_)

    def restore(self, scores: Sequence[float], n_positions: int) -> None:
        """Set the per-layer scores of an earlier fit (e.g. stored with a model) and select."""
        values = torch.as_tensor(list(scores), dtype=torch.float64)
        self._sums = values * n_positions
        self._counts = max(int(n_positions), 1)
        self.n_positions_ = self._counts
        self.scores_ = values.float()
        self.selected_, self.weights_ = self.select(self.scores_)

    @property
    def fitted(self) -> bool:
        """Whether per-layer scores were fitted (or restored) and a layer selected."""
        return self.selected_ is not None and self._counts > 0

    def __repr__(self) -> str:
        """The options and the current selection."""
        return (
            f"LayerCoherenceSelector(score={self.score!r}, rule={self.rule!r}, "
            f"theta={self.theta}, layer={self.layer}, selected_={self.selected_})"
        )

    # -- scoring -----------------------------------------------------------------------------

    @staticmethod
    def layer_sums(position_scores: Sequence[Tensor], rows: Tensor) -> tuple[Tensor, int]:
        """Sum of each layer's ``(B, n)`` position scores over ``rows``, and the number of rows."""
        sums = torch.stack([(scores * rows).sum() for scores in position_scores]).detach()
        return sums.double().cpu(), int(rows.sum())

    def select(self, scores: Tensor) -> tuple[list[int], Tensor]:
        """Apply the rule to per-layer scores.

        Layers in :attr:`excluded_` keep their place in the curve (the elbow still sees the
        fall into them) but are never returned; when every layer is excluded, the exclusion is
        ignored.

        Args:
            scores: ``(L,)`` mean coherence per candidate layer.

        Returns:
            The selected candidate indices and their weights (summing to 1).
        """
        n_layers = scores.numel()
        allowed = [i for i in range(n_layers) if i not in self.excluded_] or list(range(n_layers))
        if self.rule == "fixed":
            assert self.layer is not None
            index = self.layer if self.layer >= 0 else n_layers + self.layer
            if not 0 <= index < n_layers:
                raise ValueError(f"layer={self.layer} is out of range for {n_layers} candidates")
            return [index], torch.ones(1)
        if self.rule == "argmax":
            return [max(allowed, key=lambda i: float(scores[i]))], torch.ones(1)
        if self.rule == "elbow":
            falls = {i: float(scores[i] - scores[i + 1]) for i in allowed if i + 1 < n_layers}
            if not falls or max(falls.values()) <= 0:
                return [allowed[-1]], torch.ones(1)
            return [max(falls, key=lambda i: (falls[i], -i))], torch.ones(1)
        # A coherence threshold needs a positive scale: shift scores that can be negative.
        shifted = scores - min(0.0, float(scores.min()))
        best = max(float(shifted[i]) for i in allowed)
        good = [i for i in allowed if shifted[i] >= self.theta * best]
        if not good:
            good = [max(allowed, key=lambda i: float(scores[i]))]
        if self.rule == "deepest":
            return [good[-1]], torch.ones(1)
        weights = shifted[good].double()
        weights = weights / weights.sum() if float(weights.sum()) > 0 else torch.ones(len(good))
        return good, weights.float() / float(weights.sum())

    def update(self, sums: Tensor, count: int) -> None:
        """Add per-layer score sums over ``count`` positions, and re-select."""
        if self._sums is not None and self._sums.shape != sums.shape:
            raise ValueError(
                f"the selector was fitted on {self._sums.numel()} candidate layers, "
                f"got {sums.numel()}; call reset() to refit"
            )
        self._sums = sums if self._sums is None else self._sums + sums
        self._counts += count
        self.n_positions_ = self._counts
        self.scores_ = (self._sums / max(self._counts, 1)).float()
        self.selected_, self.weights_ = self.select(self.scores_)

    # -- fitting -----------------------------------------------------------------------------

    @torch.no_grad()
    def fit(
        self,
        forward_func: Callable[..., Any],
        layers: Sequence[nn.Module],
        batches: Iterable[Mapping[str, Tensor] | tuple[Tensor, Tensor]],
        special_token_ids: Sequence[int] | None = None,
        lm_head: nn.Module | None = None,
        attribute_to_layer_input: bool = False,
    ) -> LayerCoherenceSelector:
        """Score the candidate layers on unlabelled batches (forward passes only).

        Args:
            forward_func: ``f(input_ids, attention_mask)``, e.g. the classifier's forward.
            layers: the candidate layers, shallow to deep.
            batches: ``{"input_ids", "attention_mask"}`` dicts or ``(input_ids, mask)`` pairs.
            special_token_ids: ids excluded from the scores ([CLS], [SEP], padding, ...).
            lm_head: overrides the selector's own head.
            attribute_to_layer_input: decode the layers' inputs instead of their outputs.

        Returns:
            ``self``, with ``scores_``, ``selected_`` and ``weights_`` set. Calling ``fit``
            again adds to the same running means; call :meth:`reset` to start over.
        """
        head = lm_head if lm_head is not None else self.lm_head
        if head is None:
            raise ValueError("the selector has no LM head: pass lm_head=")
        seen = 0
        for batch in batches:
            if isinstance(batch, Mapping):
                input_ids, mask = batch["input_ids"], batch["attention_mask"]
            else:
                input_ids, mask = batch
            hidden = layer_outputs(
                forward_func, list(layers), input_ids, (mask,), to_input=attribute_to_layer_input
            )
            rows = candidate_mask(input_ids, mask, special_token_ids)
            scores = [
                layer_position_coherence(
                    h, input_ids, mask, rows, head, self.score, self.decode_chunk_size
                )
                for h in hidden
            ]
            self.update(*self.layer_sums(scores, rows.float()))
            seen += 1
        if seen == 0:
            raise ValueError("fit() got no batches")
        return self
