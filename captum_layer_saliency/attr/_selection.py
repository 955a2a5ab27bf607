"""The per-model layer choice of :class:`~captum_layer_saliency.DecodedLayerSaliency`.

A mixin, so that the explainer's own module keeps to its public surface: how the choice is made
(:meth:`~SelectionMixin.fit_selector`, :meth:`~SelectionMixin.calibrate`, a stored selection),
frozen and stored. The per-call part (which layers run, how a map is picked) is in
:mod:`._layer_choice`; the pieces it uses (stored selections, the calibration budget,
reachability, warnings) are in :mod:`._calibration`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_layer_saliency.attr import _calibration as cal
from captum_layer_saliency.attr._layer_choice import LayerChoiceMixin
from captum_layer_saliency.attr._layers import name_layers, owner_model
from captum_layer_saliency.attr.coherence import (
    LayerCoherenceSelector,
)
from captum_layer_saliency.attr.decoding import candidate_mask
from captum_layer_saliency.models.capture import layer_gradients_and_outputs
from captum_layer_saliency.models.classifier import model_device

Batch = Mapping[str, Tensor] | tuple[Tensor, Tensor]

# One layer choice at a time: two threads' first calls choose once, on the same texts.
_CHOOSING = threading.Lock()


class SelectionMixin(LayerChoiceMixin):
    """Per-model (default) or per-example layer selection, calibration and its records."""

    # Set by DecodedLayerSaliency (and declared by LayerChoiceMixin: selector, layer, ...).
    forward_func: Callable[..., Any]
    special_token_ids: list[int]
    model: nn.Module | None
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
        indices, names, paths = name_layers(layers, owner_model(forward_func))
        #: each candidate's layer index (0 = embeddings, ``l`` = block ``l``; the position in
        #: ``layer`` when some candidate is neither the embeddings nor a block).
        self.layer_indices: list[int] = indices
        #: each candidate's name (``"embeddings"``, ``"block 1"``, ...; another module's path).
        self.layer_names: list[str] = names
        #: each candidate's module path in the model ("" when unknown).
        self.layer_paths: list[str] = paths
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
        return cal.name_with_path(self.layer_names[k], self.layer_paths[k])

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
        self, texts: Sequence[str] | None = None, tokenizer: Any = None, batch_size: int = 32
    ) -> cal.LayerSelection:
        """Choose the layer label-free on unlabelled texts, with a progress bar, and freeze.

        Args:
            texts: plain strings from the task's domain (labels are never used), or ``None``
                for the built-in general-English texts (what a model without a stored
                selection is calibrated on before its first explanation); they should
                hold at least ``calibration_tokens`` word tokens (default 2,000, about 100
                SST-2 sentences, the budget of the automatic calibration): with fewer, a
                ``UserWarning`` says how many were given, since the choice may then differ
                from a full fit's (BENCHMARKS.md).
            tokenizer: the model's tokenizer (default: the one given to :meth:`for_model`).
            batch_size: texts per forward pass.

        Returns:
            The :class:`~captum_layer_saliency.attr._calibration.LayerSelection` (also in
            ``selection_``).

        Raises:
            ValueError: no texts, no tokenizer, or no selector.
        """
        if texts is None:
            return self._calibrate_on(
                cal.builtin_calibration_texts(),
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
    ) -> cal.LayerSelection:
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is None:
            raise ValueError("calibrate() needs the model's tokenizer (tokenizer=...)")
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
        self.selection_.calibration = f"{source} ({self.selection_.n_positions} word tokens)"
        cal.warn_small_calibration(self.selection_.n_positions, len(texts), self._calibrator.budget)
        cal.log_selection(self.selection_, "calibrated")
        return self.selection_

    def store_selection(self) -> None:
        """Store the per-model choice in ``model.config``, where ``save_pretrained`` keeps it.

        :meth:`for_model` on the saved model then skips calibration.

        Raises:
            ValueError: nothing chosen yet, or no Hugging Face model.
        """
        if self.selection_ is None or self.model is None:
            raise ValueError("no per-model selection to store yet (calibrate first)")
        cal.store_selection(self.model, self.selection_)

    # -- internal ----------------------------------------------------------------------------

    def _choose_before_explaining(self) -> None:
        """Choose the model's layer on the fixed calibration set, once, before explaining.

        The layer is a property of the model, never of the batch: a model without a stored
        selection gets its layer from the built-in general-English texts
        (:func:`~captum_layer_saliency.attr._calibration.builtin_calibration_texts`) before
        its first explanation, whatever texts that explanation is for. One thread chooses;
        the others wait for its choice. Without a tokenizer (the bare constructor) the texts
        cannot be encoded: the first calls calibrate on what they explain, as before (call
        :meth:`calibrate` or :meth:`fit_selector` to avoid it).
        """
        if self._mode() != "calibrate" or self.tokenizer is None:
            return
        with _CHOOSING:
            if self._mode() != "calibrate":
                return  # another thread chose meanwhile
            self.calibrate(None)

    def _attach_model(
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


def _as_list(layer: Any) -> list[nn.Module]:
    return [layer] if isinstance(layer, nn.Module) else list(layer)


def _pair(batch: Batch) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        return batch["input_ids"], batch["attention_mask"]
    return batch[0], batch[1]
