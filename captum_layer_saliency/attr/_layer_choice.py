"""How a :class:`~captum_layer_saliency.DecodedLayerSaliency` call picks its map among layers.

A mixin (under :class:`._selection.SelectionMixin`): the call's mode (one map per layer, the
frozen per-model layer, a calibration step, or a per-example choice), the layers' per-position
coherence, and the fusion of the chosen layers' maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.attr import _calibration as cal
from captum_layer_saliency.attr._dls_inputs import check_hidden_states
from captum_layer_saliency.attr._layer_runner import states_until
from captum_layer_saliency.attr.coherence import (
    LayerCoherenceSelector,
    layer_position_coherence,
    position_coherence,
)
from captum_layer_saliency.models.capture import layer_gradients_and_outputs

__all__ = ["LayerChoiceMixin"]


class LayerChoiceMixin:
    """The per-call part of the layer selection."""

    # Set by DecodedLayerSaliency and SelectionMixin.
    selector: LayerCoherenceSelector | None
    layer: Any
    lm_head: nn.Module
    layer_indices: list[int]
    selection: str
    position_sample: float | None
    decode_chunk_size: int
    aggregation: str
    last_selected_: list[list[int]] | None
    last_layer_scores_: Tensor | None
    _frozen: bool
    _calibrator: cal.Calibrator
    layer_name: Callable[[int], str]
    _note_reach: Callable[..., None]
    _freeze: Callable[[str, str], None]
    unreachable_layers_: list[int] | None

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
            rows = cal.sample_positions(words, self.position_sample)
            return cal.sampled_self_recovery(
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

    def _plan(
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
        mode = self._mode()
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

    def _finish(
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
            cal.warn_zero_maps(
                maps[0], words, self.layer_name(self.layer_indices[0]), self.aggregation
            )
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
        cal.warn_zero_maps(out, words, where, self.aggregation)
        return out

    def _mode(self) -> str:
        if isinstance(self.layer, nn.Module) or self.selector is None:
            return "all"
        if self._frozen and self.selector.fitted:
            return "frozen"
        return "calibrate" if self.selection == "model" else "example"

    def _calibration_step(self, position_scores: Sequence[Tensor], rows: Tensor) -> None:
        assert self.selector is not None
        self.selector.update(*self.selector.layer_sums(position_scores, rows.float()))
        if self._calibrator.add(int(rows.sum())):
            self._freeze(
                f"the first {self._calibrator.seen} word tokens explained (auto-calibration)",
                "auto-calibrated",
            )


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
