"""Decoded Layer Saliency (Hou & Castanon, ICML 2023) as a Captum layer attribution.

The public class and its options. The pieces live beside it, one job each: the aggregation
(:mod:`._aggregation`), the layer methods (:mod:`._layer_methods`, :mod:`._layer_attributions`,
:mod:`._layer_runner`, :mod:`._layer_method_mixin`), decoding (:mod:`.decoding`), the mapping
back to tokens (:mod:`._mapping`), the layer choice (:mod:`._selection`, :mod:`._calibration`,
:mod:`.coherence`, :mod:`._layers`) and the inputs (:mod:`._dls_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from captum._utils.typing import ModuleOrModuleList, TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_layer_saliency.attr import _calibration as cal
from captum_layer_saliency.attr._aggregation import AGGREGATIONS, position_saliency
from captum_layer_saliency.attr._dls_inputs import (
    attention_mask_of,
    check_hidden_states,
    checked_forward,
    forward_arguments,
    token_ids_of,
)
from captum_layer_saliency.attr._dls_setup import checked_layers, for_model_parts
from captum_layer_saliency.attr._layer_method_mixin import LayerMethodMixin
from captum_layer_saliency.attr._layer_methods import LayerMethod
from captum_layer_saliency.attr._mapping import (
    MAPPINGS,
    PRIORS,
    SPECIAL_ROWS,
    layer_maps,
)
from captum_layer_saliency.attr._selection import SelectionMixin
from captum_layer_saliency.attr.coherence import LayerCoherenceSelector
from captum_layer_saliency.attr.decoding import DEFAULT_DECODE_CHUNK, candidate_mask
from captum_layer_saliency.models.inputs import check_explainable, check_not_data_parallel
from captum_layer_saliency.models.targets import normalize_target, output_activation

__all__ = [
    "AGGREGATIONS",
    "MAPPINGS",
    "PRIORS",
    "SPECIAL_ROWS",
    "DecodedLayerSaliency",
    "position_saliency",
]


class DecodedLayerSaliency(SelectionMixin, LayerMethodMixin, LayerAttribution, GradientAttribution):
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
    :meth:`calibrate` / :meth:`fit_selector`, or else on the first :meth:`attribute` calls until
    ``calibration_tokens`` real tokens were scored, after which it is frozen. With
    ``selection="example"`` each example's own coherence curve picks its layer (less faithful,
    and under the default layer method 1.7x Input x Gradient's seconds, about 2.3x the
    per-model layer's: BENCHMARKS.md section 6). Under a layer method other than the gradient,
    those choices are made from the layers' states first, and the method then runs at the
    chosen layers only. A layer whose gradient does not reach the input tokens (the last block
    under a [CLS]-only pooler) is detected from the gradients and never selected.

    Layers are named one way everywhere: index 0 is the embeddings, ``l`` is block ``l``
    (``layer_names``: ``"embeddings"``, ``"block 1"``...; ``layer_paths``: module paths),
    whether given as indices or as modules of ``find_model_parts(model).layers``, to
    :meth:`for_model` or to this constructor (whose model is found behind the forward: the
    module itself, ``classifier_forward``'s, a bound method's or a closure's). Any other module
    is named by its module path.

    **Where DLS departs from Captum's layer attributions.** :meth:`attribute` returns one
    score per *input token*, ``(B, n)``, not the layer's ``(B, n, K)`` attributions (the
    hidden dimension is aggregated, and the positions are mapped back to the input tokens);
    and ``target=None`` explains each example's **prediction** (Captum requires a target for
    a multi-class output). The rest follows Captum: ``target`` semantics,
    ``additional_forward_args``, ``attribute_to_layer_input``, ``grad_kwargs``, and
    ``@log_usage``.

    **The default departs from the paper.** The paper applies gradient x activation at the
    layer; the default here is integrated gradients at the layer with one step (the midpoint
    between the PAD baseline's state and ``H``), chosen on tuning data by a rule fixed in advance
    and confirmed on data never used to choose (BENCHMARKS.md sections 6-7; comprehensiveness,
    paired 95 % CIs). Tuning, over gradient x activation: SST-2 dev +0.019 [+0.008, +0.031],
    AG News held-out rows 0-199 +0.065 [+0.051, +0.080]. Confirmation, against Integrated
    Gradients with 25 steps at the embeddings: -0.007 [-0.012, -0.003] on the 1,821 SST-2 test
    sentences and +0.035 [+0.028, +0.041] on 1,000 AG News held-out texts, at 1.01-1.04x the
    seconds of Input x Gradient and 1/26-1/36 of IG-25's. ``layer_method="gradient"`` is the
    paper's.

    **Cost** per explained example, in full-pass equivalents (``last_cost_``;
    :class:`~captum_layer_saliency.models.passes.PassCounter` measures the same),
    with the layer chosen: the default, from the PAD baseline at block ``l`` of ``L``,
    ``1 + l/L + n_steps (L - l)/L`` forwards and ``n_steps (L - l)/L`` backwards (at block 5 of
    6 with 1 step: 2 forwards + 0.17 backwards; only the blocks above the layer run per step);
    ``layer_method="gradient"`` 1 forward + 1 backward. Choosing the layer on the first calls
    (no stored selection) or per example runs every candidate layer, and decoding (``mapping``
    other than ``"identity"``) adds the head's ``n x K x V`` per layer. Measured against
    Captum's baselines: BENCHMARKS.md sections 1, 3, 6 and 7.

    Source: J. Hou and L. Castanon, "Decoding Layer Saliency in Language Transformers",
    ICML 2023 (the method); the layer methods follow Sundararajan et al. 2017 (integrated
    gradients), Smilkov et al. 2017 (SmoothGrad) and Lundberg and Lee 2017 (GradientSHAP),
    applied at the layer as Captum's ``LayerIntegratedGradients`` does.
    """

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
        layer_baseline: str | None = None,
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
                ties or beats it by a little at about 2.4x the cost.
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
                selector, the real (non-special) tokens the first :meth:`attribute` calls
                score before the choice freezes. Default: 2000 (measured in BENCHMARKS.md)
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
                :mod:`~captum_layer_saliency.attr._layer_methods`; the last call's passes are in
                ``last_cost_``. Default: ``"integrated_gradients"`` (see above)
            n_steps (int, optional): steps or samples. Default: 1 for integrated gradients
                (1, 2, 4 and 8 steps score within 0.005 of each other on tuning data, 0.002
                on the confirmation sets), 4 for the noise methods.
            layer_baseline (str, optional): ``"pad"`` (the layer's states for the input with
                real non-special tokens replaced by padding; needs the padding id and the ids
                as the input) or ``"zeros"``. Default: ``"pad"`` where possible, else
                ``"zeros"`` with a ``UserWarning`` that says why (no padding id known, or
                inputs that are not the ids); an explicit ``"pad"`` raises instead.
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
        self._init_selection(
            layers, forward_func, selection, cal.Calibrator(calibration_tokens), position_sample
        )
        self._mask_is_forward_arg = False
        #: the Hugging Face model, when built with :meth:`for_model`.
        self.model: nn.Module | None = None
        # The module behind the forward, when it is one: checked for training/inference mode.
        self._module = forward_func if isinstance(forward_func, nn.Module) else None
        #: ``"softmax"`` or ``"sigmoid"`` (multi-label): what "the prediction" means.
        self.activation = output_activation(self._module)
        #: per-example coherence of each candidate layer in the last call ``(B, L)``.
        self.last_layer_scores_: Tensor | None = None
        #: per-example selected candidate indices in the last call.
        self.last_selected_: list[list[int]] | None = None
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
        :meth:`calibrate` on ``calibration_texts``, else on the first :meth:`attribute` calls
        (``calibration_tokens`` real tokens), then frozen. The choice is logged once (logger
        ``captum_layer_saliency``, INFO) with the layer's name and the coherence curve.

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
                sentences: what the automatic calibration collects; BENCHMARKS.md measured
                1,500 SST-2 tokens to give the full-fit layer in 100 % of resamples). Fewer
                give a ``UserWarning`` with the count: the layer may differ from a full fit's.
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
        dls._attach_model(model, tokenizer, chosen, calibration_texts)
        return dls

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        attention_mask: Tensor | None = None,
        token_ids: Tensor | None = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
        **model_inputs: Tensor,
    ) -> Tensor | list[Tensor]:
        r"""Token scores ``(B, n)`` explaining ``target`` (default: the prediction).

        Args:
            inputs (Tensor or tuple[Tensor, ...]): the model inputs, usually the token ids
                ``(B, n)``. Dimension 0 indexes the examples.
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
            attention_mask (Tensor, optional): ``(B, n)``, 0 at padding. Default:
                ``token_ids != pad_token_id`` when the padding id is known (``pad_token_id=``,
                :meth:`for_model`), else all ones.
            token_ids (Tensor, optional): ``(B, n)`` ids; needed only when ``inputs`` are not
                the ids (for example embeddings).
            attribute_to_layer_input (bool, optional): use the layers' inputs instead of their
                outputs. Default: False
            grad_kwargs (dict, optional): passed to ``torch.autograd.grad``.
            **model_inputs (Tensor): the model's other inputs by their Hugging Face names, each
                ``(B, n, ...)``: ``token_type_ids=`` (a sentence pair's segments),
                ``position_ids=``... (models built with :meth:`for_model`). Segment ids and,
                under left padding, position ids are otherwise derived from the ids and mask.

        Returns:
            *Tensor* or *list[Tensor]* of **attributions**: detached ``(B, n)`` token scores.
            One tensor for one layer, or for several layers with a selector; a list with one
            tensor per layer for several layers without a selector.

        Raises:
            ValueError: empty input, ids outside the head's vocabulary, a hidden size the head
                does not take, a float target or one out of range, a model input the model does
                not take, or a layer the forward never reaches.
            TypeError: the forward returns a tuple or another non-tensor.
            RuntimeError: called under ``torch.inference_mode()``.
        """
        check_explainable(self.model or self._module, "the model")
        ids = token_ids_of(inputs, token_ids)
        mask = attention_mask_of(ids, attention_mask, self._pad_token_id)
        additional_forward_args = forward_arguments(
            additional_forward_args, model_inputs, ids, mask, self.model, self._mask_is_forward_arg
        )
        targets = normalize_target(target, ids.shape[0], device=ids.device, label_sets=True)
        # The prediction, or label sets: the checked forward returns the explained scalar.
        summed = targets is None or targets.dim() == 2
        forward, predicted = self._checked_forward(targets, summed)

        words = candidate_mask(ids, mask, self.special_token_ids)
        mode, run_idx, first = self._plan(
            self._checked_forward(targets, summed)[0],
            (inputs, None if summed else targets, additional_forward_args),
            ids=ids,
            mask=mask,
            words=words,
            to_input=attribute_to_layer_input,
            costly=self.layer_method.name != "gradient" and self.mapping == "identity",
        )
        candidates = self.candidate_layers
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
        )
        check_hidden_states(hidden, ids, self.lm_head)
        if first is not None and self.last_cost_ is not None:  # the states that chose the layers
            self.last_cost_ = {k: v + first[2][k] for k, v in self.last_cost_.items()}
        maps, decoded = layer_maps(self, grads, acts, hidden, ids, mask, words, self.lm_head)
        chosen_first = first[:2] if first is not None else None
        return self._finish(
            maps, grads, hidden, decoded, ids, mask, words, mode, run_idx, chosen_first
        )

    # -- pieces --------------------------------------------------------------------------------

    def _checked_forward(
        self, targets: Tensor | None, explain_prediction: bool
    ) -> tuple[Callable[..., Tensor], list[Tensor]]:
        """The forward, checked, returning the prediction's logit with ``explain_prediction``.

        See :func:`~captum_layer_saliency.attr._dls_inputs.checked_forward`.
        """
        return checked_forward(self.forward_func, self.activation, targets, explain_prediction)
