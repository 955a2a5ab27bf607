"""The per-model layer choice of :class:`~captum_layer_saliency.DecodedLayerSaliency`.

A mixin, so that the explainer's own module keeps to the attribution maths; the pieces it
uses (stored selections, the calibration budget, reachability, warnings) are in
:mod:`._calibration`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_layer_saliency.attr import _calibration as cal
from captum_layer_saliency.attr.coherence import (
    LayerCoherenceSelector,
    layer_position_coherence,
    position_coherence,
)
from captum_layer_saliency.attr.decoding import candidate_mask
from captum_layer_saliency.models.capture import layer_gradients_and_outputs
from captum_layer_saliency.models.classifier import model_device
from captum_layer_saliency.models.heads import default_layers
from captum_layer_saliency.models.surgery import find_model_parts

Batch = Mapping[str, Tensor] | tuple[Tensor, Tensor]


def model_layers(model: nn.Module) -> tuple[list[nn.Module], list[str], list[str], list[int]]:
    """A Hugging Face model's candidate layers, with their one naming scheme.

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


class SelectionMixin:
    """Per-model (default) or per-example layer selection, calibration and its records."""

    # Set by DecodedLayerSaliency.
    selector: LayerCoherenceSelector | None
    layer: Any
    lm_head: nn.Module
    forward_func: Callable[..., Any]
    special_token_ids: list[int]
    model: nn.Module | None
    last_selected_: list[list[int]] | None
    last_layer_scores_: Tensor | None
    decode_chunk_size: int
    aggregation: str
    _checked_forward: Callable[..., Any]

    def _init_selection(
        self,
        layers: Sequence[nn.Module],
        forward_func: Any,
        selection: str,
        calibrator: cal.Calibrator,
        position_sample: float | None,
    ) -> None:
        #: ``"model"`` or ``"example"`` (see the constructor).
        self.selection = selection
        self.position_sample = position_sample
        self._calibrator = calibrator
        #: each candidate's layer index (0 = embeddings, ``l`` = block ``l`` for
        #: :meth:`for_model`; the position in ``layer`` otherwise).
        self.layer_indices: list[int] = list(range(len(layers)))
        #: each candidate's name (``"embeddings"``, ``"block 1"``, ...).
        self.layer_names: list[str] = [f"layer {i}" for i in range(len(layers))]
        paths = (
            {id(m): n for n, m in forward_func.named_modules()}
            if isinstance(forward_func, nn.Module)
            else {}
        )
        #: each candidate's module path in the model ("" when unknown).
        self.layer_paths: list[str] = [paths.get(id(m), "") for m in layers]
        #: the tokenizer :meth:`calibrate` uses (set by :meth:`for_model`).
        self.tokenizer: Any = None
        #: the per-model choice once made (layer, per-layer scores, calibration).
        self.selection_: cal.LayerSelection | None = None
        #: layer indices whose gradient does not reach the input tokens (once checked).
        self.unreachable_layers_: list[int] | None = None
        self._frozen = self.selector is not None and self.selector.fitted

    # -- public ------------------------------------------------------------------------------

    def layer_name(self, index: int) -> str:
        """``"block 5 (bert.encoder.layer.4)"`` for the layer of index ``index``."""
        k = self.layer_indices.index(index)
        path = self.layer_paths[k]
        return f"{self.layer_names[k]} ({path})" if path else self.layer_names[k]

    def fit_selector(
        self, batches: Iterable[Batch], calibration: str = ""
    ) -> LayerCoherenceSelector:
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
        self, texts: Sequence[str], tokenizer: Any = None, batch_size: int = 32
    ) -> cal.LayerSelection:
        """Choose the layer label-free on unlabelled texts, with a progress bar, and freeze.

        Args:
            texts: plain strings from the task's domain (labels are never used); a few hundred
                short sentences are plenty (``calibration_tokens`` real tokens suffice).
            tokenizer: the model's tokenizer (default: the one given to :meth:`for_model`).
            batch_size: texts per forward pass.

        Returns:
            The :class:`~captum_layer_saliency.attr._calibration.LayerSelection` (also in
            ``selection_``).

        Raises:
            ValueError: no texts, no tokenizer, or no selector.
        """
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is None:
            raise ValueError("calibrate() needs the model's tokenizer (tokenizer=...)")
        texts = [t for t in texts if isinstance(t, str) and t.strip()]
        if not texts:
            raise ValueError("calibrate() got no non-empty texts")
        device = model_device(self.model) if self.model is not None else torch.device("cpu")
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", 512)
        starts = range(0, len(texts), batch_size)

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            for i in tqdm(starts, desc="DLS layer calibration", unit="batch"):
                enc = tok(
                    list(texts[i : i + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=min(int(limit), 512),
                    return_tensors="pt",
                )
                yield enc["input_ids"].to(device), enc["attention_mask"].to(device)

        self.fit_selector(batches(), calibration="pending")
        assert self.selection_ is not None
        self.selection_.calibration = (
            f"{len(texts)} unlabelled texts ({self.selection_.n_positions} word tokens) given "
            "to calibrate"
        )
        cal.log_selection(self.selection_, "calibrated")
        return self.selection_

    def store_selection(self) -> None:
        """Store the per-model choice in ``model.config`` (``save_pretrained`` keeps it), so
        :meth:`for_model` on the saved model skips calibration.

        Raises:
            ValueError: nothing chosen yet, or no Hugging Face model.
        """
        if self.selection_ is None or self.model is None:
            raise ValueError("no per-model selection to store yet (calibrate first)")
        cal.store_selection(self.model, self.selection_)

    # -- internal ----------------------------------------------------------------------------

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
        rows = candidates.float()
        per_example = torch.stack(
            [(scores * rows).sum(-1) / rows.sum(-1).clamp_min(1) for scores in position_scores],
            dim=1,
        )  # (B, L)
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

    def _attach_model(
        self,
        model: nn.Module,
        tokenizer: Any,
        chosen: Sequence[nn.Module],
        calibration_texts: Sequence[str] | None,
    ) -> None:
        """Name the candidates in the model's scheme, then choose the layer (for_model)."""
        modules, names, paths, indices = model_layers(model)
        where = {id(m): k for k, m in enumerate(modules)}
        known = [where.get(id(m)) for m in chosen]
        self.layer_indices = [indices[k] if k is not None else -1 for k in known]
        self.layer_names = [names[k] if k is not None else "layer" for k in known]
        self.layer_paths = [paths[k] if k is not None else "" for k in known]
        self.model = model
        self.tokenizer = tokenizer
        if calibration_texts is not None:
            self.calibrate(calibration_texts)
        else:
            self._use_stored_selection(model)

    def _choose(
        self,
        maps: list[Tensor],
        position_scores: list[Tensor] | None,
        rows: Tensor,
        mode: str,
        run_idx: list[int],
        words: Tensor,
    ) -> Tensor:
        """One map per example from the candidates' maps: the frozen layer, a calibration
        step (then its current choice), or each example's own choice; warns on empty maps."""
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

    def _use_stored_selection(self, model: nn.Module) -> None:
        stored = cal.stored_selection(model)
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
        forward, _ = self._checked_forward(None, True)
        grads, _ = layer_gradients_and_outputs(forward, _as_list(self.layer), ids, None, (mask,))
        self._note_reach(grads, candidate_mask(ids, mask, self.special_token_ids))

    def _note_reach(self, grads: Sequence[Tensor], words: Tensor) -> None:
        if self.unreachable_layers_ is not None or self.selector is None:
            return
        out = cal.unreachable_candidates(grads, words)
        self.unreachable_layers_ = [self.layer_indices[k] for k in out]
        self.selector.exclude(out)

    def _calibration_step(self, position_scores: Sequence[Tensor], rows: Tensor) -> None:
        assert self.selector is not None
        self.selector.update(*self.selector.layer_sums(position_scores, rows.float()))
        if self._calibrator.add(int(rows.sum())):
            self._freeze(
                f"the first {self._calibrator.seen} word tokens explained (auto-calibration)",
                "auto-calibrated",
            )

    def _freeze(self, calibration: str, how: str) -> None:
        selector = self.selector
        assert selector is not None and selector.scores_ is not None and selector.selected_
        self._frozen = True
        head = self.lm_head
        self.selection_ = cal.LayerSelection(
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
            cal.log_selection(self.selection_, how)
        cal.warn_degenerate_head(selector, self.layer_names)


def check_layers_in_model(layers: Sequence[nn.Module], model: nn.Module) -> None:
    """Raise when a layer is not a module, or not a submodule of ``model``."""
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
    """The modules meant by ``layers``: an index (0 = embeddings, ``l`` = block ``l``; negative
    counts from the last block), a module, a list of either, or ``None`` (all of them).

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


def _as_list(layer: Any) -> list[nn.Module]:
    return [layer] if isinstance(layer, nn.Module) else list(layer)


def _pair(batch: Batch) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        return batch["input_ids"], batch["attention_mask"]
    return batch[0], batch[1]


def _fuse(maps: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum of per-layer maps ``(B, L, n)``.

    Gradient scales differ by orders of magnitude across layers, so with several layers each
    map is first scaled to unit L1 norm per example; otherwise the largest layer would decide.
    """
    if maps.shape[1] > 1:
        maps = maps / maps.abs().sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.einsum("l,bln->bn", weights.to(maps), maps)
