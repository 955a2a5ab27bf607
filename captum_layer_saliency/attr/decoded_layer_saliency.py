"""Decoded Layer Saliency (E. M. Hou & G. Castanon, ICML 2023) as a Captum layer attribution.

The public class, its options and its construction (:func:`checked_layers` refuses bad
options before anything is stored; :func:`for_model_parts` assembles what
:meth:`DecodedLayerSaliency.for_model` hands the constructor). The pieces live beside it, one
concept each: the aggregation and the mapping back to tokens with decoding
(:mod:`.decoding`), the layer methods (:mod:`.layer_methods`, on the :mod:`._upper_model`),
the layer choice (:mod:`.layer_selection`, with the coherence scores of :mod:`.coherence`).
The layer method a call runs, and the call's inputs, are this module's.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args
from captum._utils.typing import ModuleOrModuleList, TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.attr import layer_selection as cal
from captum_layer_saliency.attr.coherence import LayerCoherenceSelector, default_coherence_score
from captum_layer_saliency.attr.decoding import (
    AGGREGATIONS,
    DEFAULT_DECODE_CHUNK,
    MAPPINGS,
    PRIORS,
    SPECIAL_ROWS,
    candidate_mask,
    check_hidden_states,
    check_mapping_options,
    layer_maps,
    position_saliency,
)
from captum_layer_saliency.attr.layer_methods import LayerMethod, layer_method_attributions
from captum_layer_saliency.attr.layer_selection import (
    Batch,
    LayerChooser,
    LayerSelection,
    check_layers_in_model,
    model_layers,
    resolve_layers,
)
from captum_layer_saliency.errors import ModelOutputError
from captum_layer_saliency.models.classifier import classifier_forward, special_token_ids
from captum_layer_saliency.models.heads import check_head_compatible, load_lm_head
from captum_layer_saliency.models.inputs import (
    check_explainable,
    check_model_inputs,
    check_not_data_parallel,
    forward_args,
    logits_of,
)
from captum_layer_saliency.models.surgery import (
    ModelParts,
    UnsupportedModelError,
    find_model_parts,
)
from captum_layer_saliency.models.targets import (
    check_target_range,
    normalize_target,
    output_activation,
    prediction_weights,
)

__all__ = [
    "AGGREGATIONS",
    "MAPPINGS",
    "PRIORS",
    "SPECIAL_ROWS",
    "DecodedLayerSaliency",
    "position_saliency",
]


class DecodedLayerSaliency(LayerAttribution, GradientAttribution):
    r"""Decoded Layer Saliency: gradient saliency at hidden layers, decoded onto input tokens.

    For a layer with hidden states ``H`` (``B x n x K``) and ``G = dy_target/dH``:

    1. position saliency ``s_i = g(G_i, H_i)`` (``aggregation``), where the ``layer_method``
       decides which ``G`` and ``H`` it sees: by default integrated gradients at the layer
       (``G`` averaged on the path from a baseline state ``H0`` to ``H``, and ``H - H0``);
       ``layer_method="gradient"`` is the paper's gradient x activation;
    2. decoding ``A_ij = softmax(lm_head(H_i))[t_j] / count(t_j)``, where ``t`` are the input
       ids and ``count`` counts the real, non-special positions holding the same id; special
       tokens and padding are not candidates; optionally only the ``top_k`` largest entries of
       each row are kept, and rows renormalised (``normalize``);
    3. token saliency ``S_j = sum_i s_i A_ij`` (``mapping="decoded"``), or ``S_j = s_j``
       (``mapping="identity"``, where decoding serves only the choice of the layer).

    Padding contributes nothing and gets 0; special tokens get 0. With several candidate layers
    and a :class:`~captum_layer_saliency.LayerCoherenceSelector`, the selector picks the layer
    (or weights several) label-free, **once per model** by default (``selection="model"``): from
    a selection stored in the model's config (the default models carry theirs), from
    :meth:`calibrate` / :meth:`fit_selector` or ``calibration_texts``, or else, before the first
    :meth:`attribute` call, from the built-in unlabelled general-English texts, so the layer is
    the model's and never depends on the texts explained. With ``selection="example"`` each
    example's own coherence curve picks its layer (less faithful and slower: BENCHMARKS.md). Under
    a layer method other than the gradient, those choices are made from the layers' states
    first, and the method then runs at the chosen layers only. A layer whose gradient does not
    reach the input tokens (the last block under a [CLS]-only pooler) is detected from the
    gradients and never selected.

    Layers are named one way everywhere: index 0 is the embeddings, ``l`` is block ``l``
    (``layer_names``: ``"embeddings"``, ``"block 1"``...; ``layer_paths``: module paths),
    whether given as indices or as modules of ``find_model_parts(model).layers``, to
    :meth:`for_model` or to this constructor (whose model is found behind the forward: the
    module itself, ``classifier_forward``'s, a bound method's or a closure's). Any other module
    is named by its module path.

    **Called as Captum's layer methods are.** :meth:`attribute` takes the positional order of
    ``LayerIntegratedGradients.attribute`` (``inputs, baselines, target,
    additional_forward_args, n_steps, method, internal_batch_size, return_convergence_delta,
    attribute_to_layer_input``), ``target`` semantics, ``grad_kwargs`` and ``@log_usage``. It
    departs in two ways: it returns one score per *input token*, ``(B, n)``, not the layer's
    ``(B, n, K)`` attributions (the hidden dimension is aggregated, and the positions are mapped
    back to the input tokens); and ``target=None`` explains each example's **prediction**.
    The user's model is never changed: the steps run on an upper model (the blocks above the
    layer) or under hooks keyed to the calling thread, removed after the call.

    **The default departs from the paper.** The paper applies gradient x activation at the
    layer (``layer_method="gradient"``); the default here is integrated gradients at the layer
    with one step (the midpoint between the PAD baseline's state and ``H``), chosen on tuning
    data by a rule fixed in advance and confirmed on held-out data (BENCHMARKS.md).

    **Cost** per explained example, in full-pass equivalents (``last_cost_``;
    :class:`~captum_layer_saliency.models.passes.PassCounter` measures the same), with the layer
    chosen: the default, from the PAD baseline at block ``l`` of ``L``,
    ``1 + l/L + n_steps (L - l)/L`` forwards and ``n_steps (L - l)/L`` backwards (only the blocks
    above the layer run per step); ``layer_method="gradient"`` 1 forward + 1 backward. Choosing
    the layer per example runs every candidate layer, and decoding (``mapping`` other than
    ``"identity"``) adds the head's ``n x K x V`` per layer. Measured: BENCHMARKS.md.

    Source: E. M. Hou and G. Castanon, "Decoding Layer Saliency in Language Transformers",
    ICML 2023 (PMLR 202:13285-13308; the method); the layer methods follow Sundararajan et al.
    2017 (integrated gradients), Smilkov et al. 2017 (SmoothGrad) and Lundberg and Lee 2017
    (GradientSHAP), applied at the layer as Captum's ``LayerIntegratedGradients`` does.

    Examples::

        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> from captum_layer_saliency import DecodedLayerSaliency
        >>> from captum_layer_saliency.models.classifier import classifier_forward
        >>> _ = torch.manual_seed(0)
        >>> config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2,
        ...                     num_attention_heads=2, intermediate_size=16, pad_token_id=0)
        >>> model = BertForSequenceClassification(config).eval()
        >>> head = torch.nn.Linear(8, 30)  # the backbone's LM head: hidden -> vocabulary
        >>> dls = DecodedLayerSaliency(classifier_forward(model), model.bert.encoder.layer[0],
        ...                            head, special_token_ids=[0, 2, 3], pad_token_id=0)
        >>> ids = torch.tensor([[2, 7, 8, 9, 3]])  # [CLS] w w w [SEP]
        >>> dls.attribute(ids, target=1).shape
        torch.Size([1, 5])
        >>> # As LayerIntegratedGradients is called: inputs, baselines, target, ...
        >>> scores, delta = dls.attribute(ids, "pad", 1, n_steps=8,
        ...                               return_convergence_delta=True)
        >>> abs(scores[0, 0].item()), delta.shape  # [CLS] gets 0; Captum's delta at the layer
        (0.0, torch.Size([1]))
    """

    #: forward and backward passes per example of the last call, in full-pass equivalents.
    last_cost_: dict[str, float] | None

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: ModuleOrModuleList,
        lm_head: nn.Module,
        selector: LayerCoherenceSelector | None = None,
        *,
        aggregation: str = "grad_x_act",
        mapping: str = "identity",
        top_k: int | None = None,
        normalize: bool = False,
        special_rows: str = "include",
        prior: str = "none",
        special_token_ids: Sequence[int] | None = None,
        decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
        selection: str = "model",
        calibration_tokens: int = cal.DEFAULT_CALIBRATION_TOKENS,
        position_sample: float | None = cal.DEFAULT_POSITION_SAMPLE,
        device_ids: list[int] | None = None,
        layer_method: str | LayerMethod = "integrated_gradients",
        n_steps: int | None = None,
        layer_baseline: str | Tensor | None = None,
        pad_token_id: int | None = None,
        integration: str = "riemann_middle",
        noise: float = 0.1,
        internal_batch_size: int | None = None,
    ) -> None:
        r"""Build DLS on one layer or on candidate layers of a model.

        Args:
            forward_func (Callable): the model or a function ``f(inputs, *args) -> logits``.
            layer (torch.nn.Module or list[torch.nn.Module]): the layer, or the candidate
                layers from shallow to deep. Their outputs must be ``(B, n, K)`` hidden states.
            lm_head (torch.nn.Module): maps hidden states ``(..., K)`` to vocabulary logits
                ``(..., V)``; the pre-trained backbone's head
                (:func:`~captum_layer_saliency.load_lm_head`).
            selector (LayerCoherenceSelector, optional): picks among several layers. Without
                one, :meth:`attribute` returns one map per layer.
            aggregation (str, optional): ``"grad_x_act"``, ``"gradcam"`` or ``"grad_norm"``.
                Default: ``"grad_x_act"``
            mapping (str, optional): ``"decoded"``, ``"identity"`` or ``"hybrid"``. Default:
                ``"identity"``, chosen by the ablation in BENCHMARKS.md: on both default models
                the decoded mapping (as specified) loses to it at every layer, and its best
                repair (``special_rows="exclude"``, ``normalize=True``, ``prior="example"``)
                ties or beats it by a little at a higher cost.
            top_k (int, optional): ``tau``, the entries kept per row of ``A`` (all when None).
            normalize (bool, optional): rescale each row of ``A`` to sum to 1.
            special_rows (str, optional): ``"include"`` or ``"exclude"`` the special tokens'
                rows from the decoded spread. Default: ``"include"``
            prior (str, optional): ``"none"`` or ``"example"``: divide each column of ``A``
                by its mean over the example's real rows (frequency correction), before
                ``top_k`` and ``normalize``. Default: ``"none"``
            special_token_ids (Sequence[int], optional): ids that never receive saliency.
            decode_chunk_size (int, optional): rows decoded at once (memory vs speed).
            selection (str, optional): ``"model"`` (one layer per model, chosen label-free
                before or at the first explanation, then frozen) or ``"example"`` (each
                example's own coherence curve picks its layer). Default: ``"model"``
            calibration_tokens (int, optional): with ``selection="model"`` and an unfitted
                selector, the real (non-special) tokens calibration texts should hold (and,
                without a tokenizer, the first :meth:`attribute` calls score before the
                choice freezes). Default: 2000 (BENCHMARKS.md)
            position_sample (float, optional): with ``selection="example"`` and the
                ``self_recovery`` score, the fraction of each example's word positions whose
                decoding is scored (at least 4, evenly spaced); ``None`` scores all.
                Default: 0.25
            device_ids (list[int], optional): kept for Captum's signature; must be None, since
                DLS does not run through ``DataParallel`` (shard examples across processes).
            layer_method (str or LayerMethod, optional): the saliency method at the layer:
                ``"integrated_gradients"`` (the aggregation sees the path-averaged gradient
                and ``H - H0``), ``"gradient"`` (the paper's gradient x activation, 1 forward
                + 1 backward), ``"smoothgrad"`` or ``"gradient_shap"``. Only the blocks above
                the layer run per step. Maths and costs:
                :mod:`~captum_layer_saliency.attr.layer_methods`; the last call's passes are in
                ``last_cost_``. Default: ``"integrated_gradients"`` (see above)
            n_steps (int, optional): steps or samples. Default: 1 for integrated gradients
                (more steps scored alike: BENCHMARKS.md), 4 for the noise methods.
            layer_baseline (str, optional): ``"pad"`` (the layer's states for the input with
                real non-special tokens replaced by padding; needs the padding id and the ids
                as the input), ``"mask"`` (replaced by the tokenizer's mask token; needs
                :meth:`for_model` with a tokenizer that has one) or ``"zeros"``. Default:
                ``"pad"`` where possible, else ``"zeros"`` with a ``UserWarning`` that says why
                (no padding id known, or inputs that are not the ids); an explicit ``"pad"``
                raises instead.
            pad_token_id (int, optional): the tokenizer's padding id, for the PAD baseline
                and the default attention mask. Default: with :meth:`for_model`, the
                tokenizer's (else the model config's); unknown for this constructor.
            integration (str, optional): Captum's quadrature rule. Default: the midpoint rule
            noise (float, optional): noise std as a fraction of the hidden state's std.
            internal_batch_size (int, optional): at most this many rows per step forward.
        """
        check_not_data_parallel(forward_func, device_ids)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        layers = checked_layers(
            forward_func,
            layer,
            lm_head,
            aggregation=aggregation,
            mapping=mapping,
            special_rows=special_rows,
            prior=prior,
            top_k=top_k,
            selection=selection,
            position_sample=position_sample,
        )
        self.lm_head = lm_head
        self.selector = selector
        self.aggregation = aggregation
        self.mapping = mapping
        self.top_k = top_k
        self.normalize = normalize
        self.special_rows = special_rows
        self.prior = prior
        self.special_token_ids = list(special_token_ids or [])
        self.decode_chunk_size = decode_chunk_size
        self._init_layer_method(
            layer_method, n_steps, layer_baseline, integration, noise, internal_batch_size
        )
        self._pad_token_id: int | None = pad_token_id
        #: which layer to explain at: the choice, its calibration and its records
        #: (:class:`~captum_layer_saliency.attr.layer_selection.LayerChooser`).
        self.layer_selection = LayerChooser(
            layer if isinstance(layer, nn.Module) else layers,
            forward_func,
            lm_head,
            selector,
            lambda: self._checked_forward(None, True)[0],
            selection=selection,
            calibration_tokens=calibration_tokens,
            position_sample=position_sample,
            decode_chunk_size=decode_chunk_size,
            aggregation=aggregation,
            special_token_ids=self.special_token_ids,
        )
        self._mask_is_forward_arg = False
        # The model and its parts (:meth:`_model_parts`), found once per model.
        self._parts_of: tuple[nn.Module, ModelParts | None] | None = None
        # The module behind the forward, when it is one: checked for training/inference mode.
        self._module = forward_func if isinstance(forward_func, nn.Module) else None
        #: ``"softmax"`` or ``"sigmoid"`` (multi-label): what "the prediction" means.
        self.activation = output_activation(self._module)
        #: what each example was explained for in the last call: ``(B,)`` class indices, or
        #: ``(B, C)`` 0/1 label sets (a multi-label prediction, or the sets given).
        self.last_target_: Tensor | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether the scores multiply by the layer's activations (``grad_x_act``), as Captum's."""
        return self.aggregation == "grad_x_act"

    @property
    def candidate_layers(self) -> list[nn.Module]:
        """The candidate layers, shallow to deep (one for a single layer)."""
        return [self.layer] if isinstance(self.layer, nn.Module) else list(self.layer)

    # -- the layer choice: delegated to ``layer_selection`` ----------------------------------

    def calibrate(
        self, texts: Sequence[str] | None = None, tokenizer: Any = None, batch_size: int = 32
    ) -> LayerSelection:
        """Choose the layer label-free on unlabelled texts, with a progress bar, and freeze.

        Args:
            texts: plain strings from the task's domain (labels are never used), or ``None``
                for the built-in general-English texts (what a model without a stored
                selection is calibrated on before its first explanation); they should hold at
                least ``calibration_tokens`` word tokens (default 2,000, about 100 SST-2
                sentences): with fewer, a ``UserWarning`` says how many were given.
            tokenizer: the model's tokenizer (default: the one given to :meth:`for_model`).
            batch_size: texts per forward pass.

        Returns:
            The :class:`~captum_layer_saliency.attr.layer_selection.LayerSelection` (also in
            ``selection_``).

        Raises:
            ValueError: no texts, no tokenizer, or no selector.
        """
        return self.layer_selection.calibrate(texts, tokenizer, batch_size)

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
        return self.layer_selection.fit(batches, calibration)

    def store_selection(self) -> None:
        """Store the per-model choice in ``model.config``, where ``save_pretrained`` keeps it.

        Raises:
            ValueError: nothing chosen yet, or no Hugging Face model.
        """
        self.layer_selection.store()

    def layer_name(self, index: int) -> str:
        """``"block 5 (bert.encoder.layer.4)"`` for the layer of index ``index``."""
        return self.layer_selection.layer_name(index)

    @property
    def selection_(self) -> LayerSelection | None:
        """The per-model choice once made (layer, per-layer scores, calibration)."""
        return self.layer_selection.selection_

    @property
    def last_selected_(self) -> list[list[int]] | None:
        """Per-example selected layer indices in the last call."""
        return self.layer_selection.last_selected_

    @property
    def last_layer_scores_(self) -> Tensor | None:
        """Per-example coherence of each candidate layer in the last call ``(B, L)``."""
        return self.layer_selection.last_layer_scores_

    @property
    def unreachable_layers_(self) -> list[int] | None:
        """Layer indices whose gradient does not reach the input tokens (once checked)."""
        return self.layer_selection.unreachable_layers_

    @property
    def layer_indices(self) -> list[int]:
        """Each candidate's layer index (0 = embeddings, ``l`` = block ``l``)."""
        return self.layer_selection.layer_indices

    @property
    def layer_names(self) -> list[str]:
        """Each candidate's name (``"embeddings"``, ``"block 1"``, ...)."""
        return self.layer_selection.layer_names

    @property
    def layer_paths(self) -> list[str]:
        """Each candidate's module path in the model (``""`` when unknown)."""
        return self.layer_selection.layer_paths

    @property
    def selection(self) -> str:
        """``"model"`` or ``"example"`` (see the constructor)."""
        return self.layer_selection.selection

    @property
    def position_sample(self) -> float | None:
        """Per-example selection's sampled fraction of word positions (see the constructor)."""
        return self.layer_selection.position_sample

    @property
    def model(self) -> nn.Module | None:
        """The Hugging Face model, when built with :meth:`for_model`."""
        return self.layer_selection.model

    @model.setter
    def model(self, model: nn.Module | None) -> None:
        self.layer_selection.model = model

    @property
    def tokenizer(self) -> Any:
        """The tokenizer :meth:`calibrate` uses (set by :meth:`for_model`)."""
        return self.layer_selection.tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self.layer_selection.tokenizer = tokenizer

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        lm_head: nn.Module | str,
        tokenizer: Any = None,
        layers: Sequence[nn.Module | int] | nn.Module | int | None = None,
        selector: LayerCoherenceSelector | None | str = "default",
        *,
        calibration_texts: Sequence[str] | None = None,
        **options: Any,
    ) -> DecodedLayerSaliency:
        """Build DLS for a Hugging Face sequence classifier in one line.

        With the default ``selection="model"``, the layer is chosen once for the model: from the
        selection stored in ``model.config`` (the default models of :func:`load_default` carry
        theirs, so the first call already costs about one Input x Gradient), else by
        :meth:`calibrate` on ``calibration_texts``, else, before the first :meth:`attribute`
        call, on the built-in unlabelled general-English texts (with ``tokenizer``; never on
        the texts explained), then frozen. A choice made is logged once (logger
        ``captum_layer_saliency``, WARNING; a stored one at INFO) with the layer's name and
        the coherence curve.

        Args:
            model: a ``*ForSequenceClassification`` model (put it in eval mode).
            lm_head: the pre-trained backbone's head: a module, or a checkpoint name/path for
                :func:`~captum_layer_saliency.load_lm_head`. Checked against the model: a head
                of another vocabulary, hidden size or family raises ``HeadMismatchError``.
            tokenizer: its tokenizer; gives the special-token and padding ids, and tokenises
                ``calibration_texts``.
            layers: one layer index (0 = embeddings, ``l`` = block ``l``) or module, which gives
                a single map (a tensor); or a list of them as candidates; default: all layers.
            selector: a selector, ``None`` for one map per layer, or ``"default"`` for
                ``LayerCoherenceSelector()`` (the family's score: ``self_recovery``, or
                ``next_token_recovery`` for a causal LM; ``elbow`` rule).
            calibration_texts: unlabelled in-domain texts (plain strings) to choose the layer
                from at construction; they override a stored selection. They should hold at
                least ``calibration_tokens`` word tokens (default 2,000, about 100 SST-2
                sentences; BENCHMARKS.md). Fewer give a ``UserWarning`` with the count: the
                layer may differ from a full fit's. Without them (and without a stored
                selection), the layer is chosen on the built-in general-English texts before
                the first explanation.
            **options: passed to the constructor (``aggregation``, ``mapping``, ``selection``,
                ``calibration_tokens``, ``position_sample``, ...).

        Returns:
            A :class:`DecodedLayerSaliency` whose forward is
            ``f(input_ids, attention_mask) -> logits``; :meth:`attribute` passes
            ``attention_mask`` to it.

        Raises:
            ValueError: a layer index out of range, or ``calibration_texts`` without a
                tokenizer.
            HeadMismatchError: a head that does not fit the model.
        """
        forward, layer_arg, head, chosen_selector, chosen = for_model_parts(
            model, lm_head, tokenizer, layers, selector, options
        )
        dls = cls(forward, layer_arg, head, chosen_selector, **options)
        dls._mask_is_forward_arg = True
        dls.activation = output_activation(model)
        dls.layer_selection.attach(model, tokenizer, chosen, calibration_texts)
        dls._model_parts()
        return dls

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        baselines: str | Tensor | None = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int | None = None,
        method: str | None = None,
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        *,
        attention_mask: Tensor | None = None,
        token_ids: Tensor | None = None,
        grad_kwargs: dict[str, Any] | None = None,
        **model_inputs: Tensor,
    ) -> Any:
        r"""Token scores ``(B, n)`` explaining ``target`` (default: the prediction).

        The positional order is that of Captum's ``LayerIntegratedGradients.attribute``, so a
        Captum user's call runs unchanged with the class swapped for DLS.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): the model inputs, usually the token ids
                ``(B, n)``. Dimension 0 indexes the examples.
            baselines (str or Tensor, optional): where the path of integrated gradients (and
                GradientSHAP) at the layer starts: ``"pad"`` (the layer's states for the input
                with its real non-special tokens replaced by padding), ``"mask"`` (by the
                tokenizer's mask token), ``"zeros"``, baseline token ids shaped like the input,
                or a layer-state tensor broadcastable to the layer's ``(B, n, K)``. Default:
                the constructor's ``layer_baseline``
            target (int, tuple, Tensor or list, optional): the class to explain, with Captum's
                semantics (one int for all examples, or one per example); floats and indices
                outside the output raise ``ValueError``. ``None`` means **the prediction** of
                each example, taken in the same forward pass: the argmax class, or, for a
                multi-label head (``problem_type="multi_label_classification"``), the sum of
                the logits of every label whose sigmoid is over 0.5 (the top label's when none
                is). A ``(B, C)`` (or ``(1, C)``) 0/1 tensor is a **label set** per example,
                explained as the sum of its labels' logits, as the prediction of a
                multi-label head is (and as the registry methods take it). The explained
                target is stored in ``last_target_``: ``(B,)`` class indices, or ``(B, C)``
                0/1 label weights for a multi-label prediction or label sets.
                Default: None
            additional_forward_args (Any, optional): further positional arguments of the
                forward function. For models built with :meth:`for_model` it defaults to
                ``(attention_mask,)``.
            n_steps (int, optional): integration steps (noise samples for SmoothGrad and
                GradientSHAP). Default: the constructor's
            method (str, optional): Captum's integration rule (``"gausslegendre"``,
                ``"riemann_middle"``, ...). Default: the constructor's ``integration``
            internal_batch_size (int, optional): at most this many rows per step forward.
                Default: the constructor's
            return_convergence_delta (bool, optional): also return Captum's convergence delta
                at the layer, ``(B,)``: the sum of the layer attributions ``G * (H - H0)``
                over positions and hidden units minus ``F(H) - F(H0)`` for the explained
                target (integrated gradients, one layer). Default: False
            attribute_to_layer_input (bool, optional): use the layers' inputs instead of their
                outputs. Default: False
            attention_mask (Tensor, optional): ``(B, n)``, 0 at padding. Default:
                ``token_ids != pad_token_id`` when the padding id is known (``pad_token_id=``,
                :meth:`for_model`), else all ones.
            token_ids (Tensor, optional): ``(B, n)`` ids; needed only when ``inputs`` are not
                the ids (for example embeddings).
            grad_kwargs (dict, optional): passed to ``torch.autograd.grad``.
            **model_inputs (Tensor): the model's other inputs by their Hugging Face names, each
                ``(B, n, ...)``: ``token_type_ids=`` (a sentence pair's segments),
                ``position_ids=``... (models built with :meth:`for_model`). Segment ids and,
                under left padding, position ids are otherwise derived from the ids and mask.

        Returns:
            *Tensor* or *list[Tensor]* of **attributions**: detached ``(B, n)`` token scores.
            One tensor for one layer, or for several layers with a selector; a list with one
            tensor per layer for several layers without a selector. With
            ``return_convergence_delta=True``, ``(attributions, delta)``.

        Raises:
            ValueError: empty input, ids outside the head's vocabulary, a hidden size the head
                does not take, a float target or one out of range, a model input the model does
                not take, or a layer the forward never reaches.
            TypeError: the forward returns a tuple or another non-tensor.
            RuntimeError: called under ``torch.inference_mode()``.
        """
        for name, value in model_inputs.items():
            if not isinstance(value, Tensor):  # model inputs are tensors: an option DLS lacks
                raise TypeError(
                    f"DecodedLayerSaliency.attribute() got an unexpected keyword argument "
                    f"{name!r} (keywords other than its own are the model's tensor inputs)"
                )
        check_explainable(self.model if self.model is not None else self._module, "the model")
        self.layer_selection.choose_before_explaining()
        ids = token_ids_of(inputs, token_ids)
        mask = attention_mask_of(ids, attention_mask, self._pad_token_id)
        call_method, baseline = self._call_method(
            inputs,
            ids,
            mask,
            baselines,
            n_steps,
            method,
            internal_batch_size,
            return_convergence_delta,
        )
        additional_forward_args = forward_arguments(
            additional_forward_args, model_inputs, ids, mask, self.model, self._mask_is_forward_arg
        )
        targets = normalize_target(target, ids.shape[0], device=ids.device, label_sets=True)
        # The prediction, or label sets: the checked forward returns the explained scalar.
        summed = targets is None or targets.dim() == 2
        forward, predicted = self._checked_forward(targets, summed)

        words = candidate_mask(ids, mask, self.special_token_ids)
        mode, run_idx, first = self.layer_selection.plan(
            self._checked_forward(targets, summed)[0],
            (inputs, None if summed else targets, additional_forward_args),
            ids=ids,
            mask=mask,
            words=words,
            to_input=attribute_to_layer_input,
            costly=self.layer_method.name != "gradient" and self.mapping == "identity",
        )
        candidates = self.candidate_layers
        if return_convergence_delta and len(run_idx) != 1:
            raise ValueError(
                f"return_convergence_delta=True needs one layer, but this call attributes at "
                f"{len(run_idx)} (give one layer, or a selector with a stored selection)"
            )
        deltas: list[Tensor] | None = [] if return_convergence_delta else None
        grads, acts, hidden = self._layer_states(
            forward,
            [candidates[i] for i in run_idx],
            inputs,
            targets,
            additional_forward_args,
            predicted=predicted,
            explain_prediction=summed,
            ids=ids,
            mask=mask,
            to_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
            method=call_method,
            baseline=baseline,
            deltas=deltas,
        )
        check_hidden_states(hidden, ids, self.lm_head)
        if first is not None and self.last_cost_ is not None:  # the states that chose the layers
            self.last_cost_ = {k: v + first[2][k] for k, v in self.last_cost_.items()}
        maps, decoded = layer_maps(self, grads, acts, hidden, ids, mask, words, self.lm_head)
        chosen_first = first[:2] if first is not None else None
        out = self.layer_selection.finish(
            maps, grads, hidden, decoded, ids, mask, words, mode, run_idx, chosen_first
        )
        return (out, deltas[0].detach()) if deltas is not None else out

    # -- pieces --------------------------------------------------------------------------------

    def _model_parts(self) -> ModelParts | None:
        """The model's embeddings, blocks and head, found once per model (not per call).

        ``None`` without a model or for a family :func:`find_model_parts` does not know (the
        layer methods then look them up themselves, and say why no upper model runs).
        """
        model = self.model
        if model is None:
            return None
        found = self._parts_of
        if found is None or found[0] is not model:
            try:
                parts: ModelParts | None = find_model_parts(model)
            except UnsupportedModelError:
                parts = None
            found = self._parts_of = (model, parts)
        return found[1]

    def _checked_forward(
        self, targets: Tensor | None, explain_prediction: bool
    ) -> tuple[Callable[..., Tensor], list[Tensor]]:
        """The forward, checked, returning the prediction's logit with ``explain_prediction``.

        See :func:`checked_forward`.
        """
        return checked_forward(self.forward_func, self.activation, targets, explain_prediction)

    # -- the layer method ------------------------------------------------------------------------

    def _init_layer_method(
        self,
        layer_method: str | LayerMethod,
        n_steps: int | None,
        layer_baseline: str | Tensor | None,
        integration: str,
        noise: float,
        internal_batch_size: int | None,
    ) -> None:
        #: the default of ``attribute``'s ``baselines`` when it is not a layer method's own:
        #: ``"mask"``, or a layer state (deprecated: pass it to attribute).
        self._default_baselines: Tensor | str | None = None
        if isinstance(layer_baseline, Tensor):
            warnings.warn(
                "layer_baseline=<tensor> is deprecated: pass the layer state as "
                "attribute(inputs, baselines=<tensor>), as in Captum",
                DeprecationWarning,
                stacklevel=4,
            )
            self._default_baselines, layer_baseline = layer_baseline, "zeros"
        elif layer_baseline is not None and not isinstance(layer_baseline, str):
            raise TypeError(
                f"layer_baseline={layer_baseline!r}: pass 'pad', 'mask' or 'zeros' (a layer "
                "state or baseline token ids go to attribute(inputs, baselines=...))"
            )
        elif layer_baseline == "mask":
            # The mask token's states need the ids of each call: built per call, as
            # attribute(..., baselines="mask") builds them.
            self._default_baselines, layer_baseline = "mask", "pad"
        #: the :class:`~captum_layer_saliency.attr.layer_methods.LayerMethod` in use.
        self.layer_method = (
            layer_method
            if isinstance(layer_method, LayerMethod)
            else LayerMethod(
                layer_method,
                n_steps,
                layer_baseline or "pad",
                integration,
                noise,
                None,
                internal_batch_size,
            )
        )
        if not self.layer_method.needs_baseline and self._default_baselines == "mask":
            self._default_baselines = None  # as "pad" and "zeros": no baseline to set
        # The PAD baseline was the default's, not asked for: it may fall back to zeros.
        self._baseline_by_default = layer_baseline is None and not isinstance(
            layer_method, LayerMethod
        )
        #: forward and backward passes per example of the last call, in full-pass equivalents
        #: (``{"forwards": f, "backwards": b}``; a step that runs 1 block of 6 counts 1/6).
        self.last_cost_ = None

    def _method_for(self, inputs: Tensor | tuple[Tensor, ...], ids: Tensor) -> LayerMethod:
        """The layer method this call runs: the zero baseline where a default PAD one cannot be.

        Raises no error itself; warns (``UserWarning``) when it falls back.
        """
        method = self.layer_method
        if not (self._baseline_by_default and method.needs_baseline and method.baseline == "pad"):
            return method
        first = inputs if isinstance(inputs, Tensor) else (inputs[0] if inputs else None)
        if self._pad_token_id is None:
            why = (
                "the padding token id is unknown (pass pad_token_id=, or build it with "
                "DecodedLayerSaliency.for_model(model, head, tokenizer))"
            )
        elif first is not ids:
            why = "the inputs are not the token ids (e.g. embeddings)"
        else:
            return method
        warn_user(
            f"DLS's default layer method, integrated gradients at the layer, uses the PAD "
            f"baseline, but {why}: using the zero baseline instead (measured slightly less "
            "faithful, BENCHMARKS.md section 7). Pass layer_baseline='zeros' to choose it "
            "explicitly, or layer_method='gradient' for the paper's gradient x activation",
            UserWarning,
        )
        return dataclasses.replace(method, baseline="zeros")

    def _call_method(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        ids: Tensor,
        mask: Tensor,
        baselines: Any,
        n_steps: int | None,
        method: str | None,
        internal_batch_size: int | None,
        return_convergence_delta: bool,
    ) -> tuple[LayerMethod, Tensor | None]:
        """This call's layer method (the constructor's, with the call's options) and baseline.

        ``baselines``, as for :meth:`DecodedLayerSaliency.attribute`: ``None`` (the
        constructor's), ``"pad"``, ``"zeros"``, ``"mask"``, integer token ids shaped like the
        input, or a floating-point layer state. Returns the method and the explicit baseline
        tensor (token ids or a state; ``None`` for a named one).

        Raises:
            TypeError: ``baselines`` of another type.
            ValueError: an option the layer method does not take (the message names it).
        """
        base = self.layer_method
        name = base.name
        if baselines is None and self._default_baselines is not None:
            baselines = self._default_baselines
        if baselines is not None and not base.needs_baseline:
            raise ValueError(
                f"baselines: layer_method={name!r} takes no baseline (integrated_gradients and "
                "gradient_shap do)"
            )
        if method is not None and name != "integrated_gradients":
            raise ValueError(
                f"method={method!r} (the integration rule) applies to "
                f"layer_method='integrated_gradients', not {name!r}"
            )
        if return_convergence_delta and name != "integrated_gradients":
            raise ValueError(
                f"return_convergence_delta=True applies to layer_method='integrated_gradients', "
                f"not {name!r} (Captum's methods without a path have no convergence delta)"
            )
        chosen = self._method_for(inputs, ids) if baselines is None else base
        explicit: Tensor | None = None
        changes: dict[str, Any] = {}
        if isinstance(baselines, str):
            if baselines not in ("pad", "zeros", "mask"):
                raise ValueError(
                    f"baselines={baselines!r}: choose 'pad', 'mask', 'zeros', baseline token ids "
                    "shaped like the input or a layer-state tensor"
                )
            if baselines == "mask":
                explicit = self._mask_baseline(ids, mask)
            else:
                changes["baseline"] = baselines
        elif isinstance(baselines, Tensor):
            if baselines.is_floating_point():
                explicit = baselines
            elif baselines.shape[-1:] != ids.shape[-1:] or baselines.dim() != 2:
                raise ValueError(
                    f"baselines: token ids of shape {tuple(baselines.shape)} do not match the "
                    f"input's {tuple(ids.shape)}"
                )
            else:
                explicit = baselines.to(ids.device)
        elif baselines is not None:
            raise TypeError(
                f"baselines={baselines!r}: DLS takes 'pad', 'mask', 'zeros', baseline token ids "
                "shaped like the input or a layer-state tensor (the target is the third "
                "positional argument, as in Captum's LayerIntegratedGradients.attribute)"
            )
        if n_steps is not None:
            changes["n_steps"] = n_steps
        if method is not None:
            changes["integration"] = method
        if internal_batch_size is not None:
            changes["internal_batch_size"] = internal_batch_size
        return (dataclasses.replace(chosen, **changes) if changes else chosen), explicit

    def _mask_baseline(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The input's ids with every real non-special token replaced by the mask token."""
        mask_id = getattr(getattr(self, "tokenizer", None), "mask_token_id", None)
        if mask_id is None:
            raise ValueError(
                "baselines='mask' needs the tokenizer's mask token (build DLS with "
                "for_model(model, head, tokenizer) for a tokenizer that has one)"
            )
        words = candidate_mask(ids, mask, self.special_token_ids)
        return torch.where(words, torch.full_like(ids, int(mask_id)), ids)

    def _layer_states(
        self,
        forward: Callable[..., Tensor],
        layers: list[nn.Module],
        inputs: Tensor | tuple[Tensor, ...],
        targets: Tensor | None,
        additional_forward_args: Any,
        *,
        predicted: list[Tensor],
        explain_prediction: bool,
        ids: Tensor,
        mask: Tensor,
        to_input: bool,
        grad_kwargs: dict[str, Any] | None,
        method: LayerMethod | None = None,
        baseline: Tensor | None = None,
        deltas: list[Tensor] | None = None,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per layer, the gradient and activation the aggregation sees, and the hidden state.

        Sets ``last_cost_`` and ``last_target_``. ``forward`` is the checked forward (the
        explained scalar when ``explain_prediction``: the prediction's logit, or the summed
        logits of the ``(B, C)`` label sets in ``targets``); ``predicted`` fills on its first
        call: class indices, or label weights (a multi-label prediction, or the sets given),
        which the steps then explain as the weighted sum of the logits (as the gradient path
        does).
        """
        grads, acts, hidden, self.last_cost_ = layer_method_attributions(
            method if method is not None else self._method_for(inputs, ids),
            forward,
            self._checked_forward(targets, False)[0],
            layers,
            inputs,
            None if explain_prediction else targets,  # the forward returns the summed scalar
            additional_forward_args,
            resolve_target=lambda: predicted[0] if explain_prediction else targets,
            ids=ids,
            mask=mask,
            candidates=candidate_mask(ids, mask, self.special_token_ids),
            pad_token_id=self._pad_token_id,
            model=self.model,
            parts=self._model_parts(),
            to_input=to_input,
            grad_kwargs=grad_kwargs,
            baseline=baseline,
            deltas=deltas,
        )
        self.last_target_ = predicted[0] if predicted else targets
        return grads, acts, hidden


# -- construction: the checks and parts (for the constructor and for_model) -----------------


def checked_layers(
    forward_func: Any,
    layer: nn.Module | Sequence[nn.Module],
    lm_head: Any,
    *,
    aggregation: str,
    mapping: str,
    special_rows: str,
    prior: str,
    top_k: int | None,
    selection: str,
    position_sample: float | None,
) -> list[nn.Module]:
    """Check the constructor's options; return the candidate layers as a list.

    Args:
        forward_func: the model or forward function (a module's layers and head are checked
            against it).
        layer: one layer or the candidate layers.
        lm_head: the decoding head.
        aggregation: as given to the constructor.
        mapping: as given to the constructor.
        special_rows: as given to the constructor.
        prior: as given to the constructor.
        top_k: as given to the constructor.
        selection: as given to the constructor.
        position_sample: as given to the constructor.

    Returns:
        The candidate layers, shallow to deep.

    Raises:
        ValueError: an option outside its choices, or no layer.
        TypeError: a head or a layer that is not a module.
        HeadMismatchError: a head that does not fit the model.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose from {AGGREGATIONS}")
    check_mapping_options(mapping, special_rows, prior, top_k)
    if not isinstance(lm_head, nn.Module):
        raise TypeError(f"lm_head must be a torch.nn.Module, got {type(lm_head).__name__}")
    if selection not in cal.SELECTIONS:
        raise ValueError(f"selection must be one of {cal.SELECTIONS}, got {selection!r}")
    if position_sample is not None and not 0 < position_sample <= 1:
        raise ValueError(f"position_sample must lie in (0, 1] or be None, got {position_sample}")
    layers = [layer] if isinstance(layer, nn.Module) else list(layer)
    if not layers:
        raise ValueError("layer must be a module or a non-empty list of modules")
    if isinstance(forward_func, nn.Module):
        check_layers_in_model(layers, forward_func)
        check_head_compatible(lm_head, forward_func)
    return layers


def for_model_parts(
    model: nn.Module,
    lm_head: nn.Module | str,
    tokenizer: Any,
    layers: Any,
    selector: LayerCoherenceSelector | None | str,
    options: dict[str, Any],
) -> tuple[Callable[..., Tensor], Any, nn.Module, LayerCoherenceSelector | None, list[nn.Module]]:
    """What ``for_model`` passes to the constructor (see its docstring for the arguments).

    Sets ``special_token_ids`` (the tokenizer's) and ``pad_token_id`` (the tokenizer's, else the
    model config's) in ``options`` unless given.

    Returns:
        ``(forward, layer, head, selector, chosen)``: ``f(input_ids, attention_mask, ...)``, the
        module or list of modules for the constructor, the loaded head, the selector, and the
        chosen modules as a list.

    Raises:
        ValueError: a layer index out of range, or a selector string other than ``"default"``.
        HeadMismatchError: a head that does not fit the model.
    """
    check_not_data_parallel(model)
    head = load_lm_head(lm_head, model=model)
    modules, names, _, indices = model_layers(model)
    chosen = resolve_layers(layers, modules, names, indices)
    check_layers_in_model(chosen, model)
    if selector == "default":
        # The family's coherence score: next-token recovery for causal LMs (issue 24).
        score = default_coherence_score(model)
        selector = LayerCoherenceSelector(head, score=score) if len(chosen) > 1 else None
    elif isinstance(selector, str):
        raise ValueError("selector must be a LayerCoherenceSelector, None or 'default'")
    if tokenizer is not None and "special_token_ids" not in options:
        options["special_token_ids"] = special_token_ids(tokenizer)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    options.setdefault("pad_token_id", pad)
    single = isinstance(layers, (nn.Module, int))
    return (
        classifier_forward(model, tokenizer),
        chosen[0] if single else chosen,
        head,
        selector,
        chosen,
    )


# -- the inputs of a call -------------------------------------------------------------------


def token_ids_of(inputs: Tensor | tuple[Tensor, ...], token_ids: Tensor | None) -> Tensor:
    """The ``(B, n)`` token ids being explained.

    Args:
        inputs: the forward's inputs; the first is the ids unless ``token_ids`` is given.
        token_ids: the ids, when the inputs are something else (embeddings).

    Returns:
        ``(B, n)`` integer ids.

    Raises:
        ValueError: inputs that are not ids without ``token_ids``, ids that are not 2-D, or an
            empty batch.
    """
    if token_ids is None:
        first = inputs[0] if isinstance(inputs, tuple) else inputs
        if not isinstance(first, Tensor) or first.dtype.is_floating_point:
            raise ValueError(
                "inputs are not token ids: pass token_ids=(batch, seq) ids alongside them"
            )
        token_ids = first
    if token_ids.dim() != 2:
        raise ValueError(f"token ids must be (batch, seq), got shape {tuple(token_ids.shape)}")
    if token_ids.numel() == 0:
        raise ValueError(f"empty input: token ids of shape {tuple(token_ids.shape)}")
    return token_ids


def attention_mask_of(
    ids: Tensor, attention_mask: Tensor | None, pad_token_id: int | None
) -> Tensor:
    """The ``(B, n)`` attention mask: the given one (checked), else derived from the padding id.

    Args:
        ids: ``(B, n)`` token ids.
        attention_mask: ``(B, n)``, 0 at padding, or ``None``.
        pad_token_id: the padding id (then the default mask is ``ids != pad_token_id``), or
            ``None`` (then all ones).

    Returns:
        The mask, same shape as ``ids``.

    Raises:
        ValueError: a mask of another shape, or an example with no real token.
    """
    if attention_mask is None:
        if pad_token_id is not None:
            return (ids != pad_token_id).long()
        return torch.ones_like(ids)
    if attention_mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, the ids {tuple(ids.shape)}"
        )
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"example(s) {empty} have no real token (attention_mask all 0)")
    return attention_mask


def forward_arguments(
    additional_forward_args: Any,
    model_inputs: dict[str, Tensor],
    ids: Tensor,
    mask: Tensor,
    model: nn.Module | None,
    mask_is_forward_arg: bool,
) -> tuple[Any, ...] | None:
    """The forward's further positional arguments, Captum-formatted.

    Args:
        additional_forward_args: what the caller passed (or ``None``).
        model_inputs: the model's other inputs by their Hugging Face names
            (``token_type_ids=``...); only for a forward built by ``for_model``.
        ids: ``(B, n)`` token ids.
        mask: ``(B, n)`` attention mask.
        model: the Hugging Face model (checks the keyword inputs), or ``None``.
        mask_is_forward_arg: the forward is ``f(input_ids, attention_mask, ...)``
            (``for_model``): the mask (and the keyword inputs) are passed to it.

    Returns:
        The formatted arguments (``None`` when there are none).

    Raises:
        ValueError: keyword inputs without ``for_model``, both keyword inputs and
            ``additional_forward_args``, or a keyword input the model does not take.
    """
    if model_inputs:
        if not mask_is_forward_arg:
            raise ValueError(
                "model inputs by keyword (token_type_ids=...) need a model built with "
                "DecodedLayerSaliency.for_model; with your own forward, pass them through "
                "additional_forward_args"
            )
        if additional_forward_args is not None:
            raise ValueError("pass the model's inputs by keyword or additional_forward_args")
        additional_forward_args = forward_args(mask, check_model_inputs(model_inputs, ids, model))
    if additional_forward_args is None and mask_is_forward_arg:
        additional_forward_args = (mask,)
    formatted: tuple[Any, ...] | None = _format_additional_forward_args(additional_forward_args)
    return formatted


def checked_forward(
    user_forward: Callable[..., Any],
    activation: str,
    targets: Tensor | None,
    explain_prediction: bool,
) -> tuple[Callable[..., Tensor], list[Tensor]]:
    """Wrap the forward to check its output and the target before Captum indexes it.

    With ``explain_prediction`` the wrapper returns the explained scalar per example: the
    prediction's logit (the sum of the predicted labels' logits for a multi-label head), so the
    prediction comes from the very forward pass that is differentiated; or, when ``targets``
    are ``(B, C)`` label sets, the sum of each set's logits (the same scalar for a given set).

    Args:
        user_forward: the forward function (a tensor, or a Hugging Face output with ``logits``).
        activation: ``"softmax"`` or ``"sigmoid"`` (multi-label): what "the prediction" means.
        targets: ``(B,)`` normalised class indices, checked against the output's width,
            ``(B, C)`` 0/1 label sets (``normalize_target(..., label_sets=True)``), whose ``C``
            must be the output's width, or ``None``.
        explain_prediction: return the explained scalar (``target=None``, or label sets).

    Returns:
        ``(forward, predicted)``: the wrapped forward, and a list that each call with
        ``explain_prediction`` appends the explained target to: ``(B,)`` class indices, or
        ``(B, C)`` 0/1 label weights (a multi-label prediction, or the label sets given).

    Raises:
        ValueError: (when called) an output holding NaN or inf, a target out of range, or
            label sets of another width than the output.
        TypeError: (when called) an output that is not a tensor.
    """
    predicted: list[Tensor] = []
    label_sets = targets is not None and targets.dim() == 2

    def forward(*args: Any) -> Tensor:
        out = logits_of(user_forward(*args))
        if not torch.isfinite(out).all():
            rows = (~torch.isfinite(out.reshape(len(out), -1)).all(-1)).nonzero().flatten()
            raise ModelOutputError(
                f"the model's output holds NaN or inf for example(s) {rows.tolist()} of the "
                "batch; cannot attribute it"
            )
        if out.dim() == 2:
            if label_sets:
                assert targets is not None
                weights = _label_weights(targets, out)
            elif targets is not None:  # its length was checked; layer methods expand rows
                check_target_range(targets, out.shape[1])
            if explain_prediction:
                if not label_sets:
                    weights = prediction_weights(out, activation)
                    predicted.append(weights.argmax(-1) if activation == "softmax" else weights)
                else:
                    predicted.append(weights)
                return (out * weights.to(out)).sum(-1)
        return out

    return forward, predicted


def _label_weights(targets: Tensor, out: Tensor) -> Tensor:
    """``(rows, C)`` label-set weights for an output ``(rows, C)`` (step-major when expanded)."""
    if targets.shape[1] != out.shape[1]:
        raise ValueError(
            f"a label-set target has {targets.shape[1]} columns; the output has {out.shape[1]} "
            "classes"
        )
    if out.shape[0] != targets.shape[0] and out.shape[0] % targets.shape[0] == 0:
        return targets.repeat(out.shape[0] // targets.shape[0], 1)  # as Captum expands rows
    if out.shape[0] != targets.shape[0]:
        raise ValueError(f"{targets.shape[0]} label sets for an output of {out.shape[0]} rows")
    return targets
