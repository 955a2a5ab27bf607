"""Locally Aggregated Feature Attribution (Zhang, Wang, Jiang and Song, NAACL 2022) for Captum.

LAFA smooths a gradient attribution over *similar reference texts* instead of an artificial
baseline input. By default it follows the paper (``docs/lafa.md`` sets it beside this project's
first variant, which remains available through the options):

1. **Base saliency** (Eq. 3): a registry method at the embeddings, reduced per token by the sum
   of squares over the hidden dimension (``reduction="squared_l2"``); SmoothGrad by default
   (the paper's base for SST), ``saliency``, ``input_x_gradient`` or ``integrated_gradients``,
   or any :class:`~captum_layer_saliency.models.classifier.TokenAttributor`.
2. **Neighbours** (Eq. 4): reference texts encoded by a hidden layer of the **same classifier**
   (:class:`~captum_layer_saliency.attr.layer_index.LayerIndex`), the ``k`` nearest by L2 distance
   among those within the cut-off ``epsilon`` (a quantile of the pairwise distances), optionally
   only texts the classifier puts in the explained class (``same_class``). An input is never its
   own neighbour. This project's first variant, the ``k`` nearest by cosine in an external
   sentence encoder, is used when ``index`` is a
   :class:`~captum_layer_saliency.attr.neighbours.NeighbourIndex`.
3. **Aggregation** (Eqs. 6-7, ``aggregation="paper"``): ``M(x)_t + lambda * E(w_t)``, ``E`` the
   average over the neighbours of their token saliencies weighted by a kernel on the word
   (layer-0) embeddings, each neighbour's sum divided by its length
   (:func:`~captum_layer_saliency.attr.lafa_aggregation.paper_aggregate`); or the first
   variant's normalised weighted mean (``aggregation="weighted_mean"``).

With ``k = 0`` (or ``lam = 0`` under the paper's aggregation) the result is the base method's,
exactly. Padding and special tokens get 0 and are never matched. The neighbours are explained
towards the same class as their input; their base scores are cached per (text, class) for the
explainer's lifetime (every base here is deterministic for a given text and class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_layer_saliency.attr._lafa_label_sets import lafa_label_sets
from captum_layer_saliency.attr._lafa_scores import NeighbourScores
from captum_layer_saliency.attr._upper_model import layer_outputs
from captum_layer_saliency.attr.attributor import _ONE_AT_A_TIME
from captum_layer_saliency.attr.decoded_layer_saliency import attention_mask_of
from captum_layer_saliency.attr.lafa_aggregation import local_aggregate, paper_aggregate
from captum_layer_saliency.attr.lafa_setup import (
    BUILD_DEFAULTS,
    DEFAULTS,
    TOKEN_REPRS,
    LAFAConfig,
    base_method,
    neighbour_index,
)
from captum_layer_saliency.attr.layer_index import LayerIndex, layer_vectors
from captum_layer_saliency.attr.neighbours import NeighbourIndex
from captum_layer_saliency.models.classifier import (
    TextClassifier,
    TokenAttributor,
    classifier_forward,
    special_mask,
)
from captum_layer_saliency.models.classifier import special_token_ids as tokenizer_special_ids
from captum_layer_saliency.models.inputs import (
    check_explainable,
    check_model_inputs,
    forward_args,
    logits_of,
)
from captum_layer_saliency.models.surgery import embedding_layer, find_model_parts
from captum_layer_saliency.models.targets import (
    normalize_target,
    output_activation,
    predicted_target,
)

__all__ = ["DEFAULTS", "LAFA", "TOKEN_REPRS", "LAFAConfig"]


class LAFA(GradientAttribution):
    r"""Locally Aggregated Feature Attribution: a base saliency smoothed over similar texts.

    See the module docstring for the algorithm. Build it in one line with :meth:`for_model`
    (or :meth:`for_classifier`); the comparison harness's ``get_method("lafa", clf)`` also finds
    a default model's reference corpus (:mod:`captum_layer_saliency.compare.methods.lafa`).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        base: TokenAttributor,
        index: Any,
        *,
        encoder: Any = None,
        k: int = DEFAULTS["k"],
        epsilon: float | None = DEFAULTS["epsilon"],
        same_class: bool = DEFAULTS["same_class"],
        aggregation: str = DEFAULTS["aggregation"],
        lam: float = DEFAULTS["lam"],
        kernel: str = DEFAULTS["kernel"],
        sigma: float = DEFAULTS["sigma"],
        min_similarity: float | None = DEFAULTS["min_similarity"],
        top_matches: int = DEFAULTS["top_matches"],
        token_repr: str = DEFAULTS["token_repr"],
        repr_layer: nn.Module | None = None,
        special_token_ids: Sequence[int] | None = None,
        max_length: int = 128,
    ) -> None:
        r"""Check the options and assemble the explainer from its parts.

        Args:
            model (torch.nn.Module): a Hugging Face ``*ForSequenceClassification`` model
                (eval mode); its forward is ``f(input_ids, attention_mask) -> logits``.
            tokenizer: its tokenizer (turns the neighbours' texts into ids, and the inputs' ids
                into texts when :meth:`attribute` gets no ``texts``).
            base (TokenAttributor): the base saliency,
                ``attribute(input_ids, attention_mask, target) -> (B, n)``.
            index (LayerIndex or NeighbourIndex): the reference texts, in a hidden layer of
                ``model`` (the paper) or under an external sentence ``encoder`` (first variant).
            encoder (Callable, optional): the sentence encoder of a ``NeighbourIndex``.
            k (int, optional): the most neighbours per input (more than the corpus holds is
                fine: all of it); 0 gives the base. Default: 10
            epsilon (float or None, optional): the cut-off, as a quantile of the index's
                pairwise L2 distances (``LayerIndex`` only); None: no cut-off. Default: 0.39
            same_class (bool, optional): only neighbours the model puts in the explained
                class (``LayerIndex`` only). Default: True
            aggregation (str, optional): ``"paper"`` or ``"weighted_mean"``. Default: "paper"
            lam (float, optional): lambda of ``"paper"``; 0 gives the base. Default: 0.44
            kernel (str, optional): ``"indicator"`` or ``"exp"`` (``"paper"`` only).
                Default: "indicator"
            sigma (float, optional): the width of the ``"exp"`` kernel and of
                ``"weighted_mean"``. Default: 0.1
            min_similarity (float, optional): the least cosine between two tokens that counts;
                default 0.999 for ``"paper"`` (the same word), 0.5 for ``"weighted_mean"``.
            top_matches (int, optional): tokens of each neighbour matched per input token
                (``"weighted_mean"`` only). Default: 1
            token_repr (str, optional): the token representation of ``"weighted_mean"``:
                ``"embedding"`` or ``"contextual"`` (``repr_layer``'s output). ``"paper"``
                always compares word embeddings. Default: "embedding"
            repr_layer (torch.nn.Module, optional): the layer for ``token_repr="contextual"``.
            special_token_ids (Sequence[int], optional): ids that get 0 and are never matched;
                default: the tokenizer's special tokens.
            max_length (int, optional): neighbour texts are truncated to this many tokens.

        Raises:
            ValueError: an option out of range, an unknown name, an index of the wrong kind, or
                a ``NeighbourIndex`` without its encoder.
        """
        GradientAttribution.__init__(self, classifier_forward(model, tokenizer))
        #: Every setting (:class:`~captum_layer_saliency.attr.lafa_setup.LAFAConfig`);
        #: ``for_classifier`` fills in what the explainer was built from.
        self.config = LAFAConfig(
            k=k,
            epsilon=epsilon,
            same_class=same_class,
            aggregation=aggregation,
            lam=lam,
            kernel=kernel,
            sigma=sigma,
            min_similarity=min_similarity,
            top_matches=top_matches,
            token_repr=token_repr,
            base="custom",
        )
        min_similarity = self.config.resolved_min_similarity
        if not callable(getattr(base, "attribute", None)):
            raise ValueError("base must have attribute(input_ids, attention_mask, target)")
        if not isinstance(index, (LayerIndex, NeighbourIndex)):
            raise ValueError(
                f"index must be a LayerIndex or a NeighbourIndex, got {type(index).__name__}"
            )
        if isinstance(index, NeighbourIndex):
            if encoder is None:
                raise ValueError("a NeighbourIndex needs the sentence encoder it was built with")
            index.check_encoder(encoder)
        if aggregation == "weighted_mean" and token_repr == "contextual" and repr_layer is None:
            raise ValueError("token_repr='contextual' needs repr_layer=<a hidden layer module>")
        self.model, self.tokenizer, self.base, self.index = model, tokenizer, base, index
        self.encoder = encoder
        self.k, self.epsilon, self.same_class = k, epsilon, same_class
        self.aggregation, self.lam, self.kernel = aggregation, lam, kernel
        self.sigma, self.min_similarity, self.top_matches = sigma, min_similarity, top_matches
        self.token_repr, self.repr_layer = token_repr, repr_layer
        self.word_embeddings = embedding_layer(model, "word_embeddings")
        if special_token_ids is None:
            special_token_ids = tokenizer_special_ids(tokenizer)
        self.special_token_ids = list(special_token_ids)
        self.max_length = max_length
        self.pad_token_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self._neighbour_scores = NeighbourScores(base, tokenizer, max_length, self.pad_token_id)
        #: the class each example was explained for in the last call ``(B,)``.
        self.last_target_: Tensor | None = None
        #: the neighbour texts of each example in the last call.
        self.last_neighbours_: list[list[str]] | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether the base multiplies by the inputs (Captum's flag; False for the defaults)."""
        return bool(getattr(self.base, "multiplies_by_inputs", False))

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        tokenizer: Any,
        reference_texts: Sequence[str] | None = None,
        *,
        max_length: int = 128,
        **options: Any,
    ) -> LAFA:
        """Build LAFA for a Hugging Face sequence classifier in one line.

        By default the paper's algorithm: a SmoothGrad base, neighbours in the model's layer 2,
        ``M + lambda * E``. The same as :meth:`for_classifier` on
        ``TextClassifier(model, tokenizer, max_length=max_length)``. For a task's default
        reference corpus pass ``captum_layer_saliency.data.corpora.default_corpus("sst2")``.

        Args:
            model: a ``*ForSequenceClassification`` model in eval mode.
            tokenizer: its tokenizer.
            reference_texts: the unlabelled reference corpus (or pass ``index=``).
            max_length: the token budget of neighbour texts.
            **options: see :meth:`for_classifier` and the constructor.

        Returns:
            The explainer.

        Raises:
            ValueError: no reference corpus, or a bad option.
        """
        clf = TextClassifier(model=model, tokenizer=tokenizer, max_length=max_length)
        return cls.for_classifier(clf, reference_texts, **options)

    @classmethod
    def for_classifier(
        cls,
        clf: TextClassifier,
        reference_texts: Sequence[str] | None = None,
        *,
        base: str | TokenAttributor = BUILD_DEFAULTS["base"],
        reduction: str = BUILD_DEFAULTS["reduction"],
        n_samples: int = BUILD_DEFAULTS["n_samples"],
        noise: float = BUILD_DEFAULTS["noise"],
        neighbours: str = BUILD_DEFAULTS["neighbours"],
        layer: int = BUILD_DEFAULTS["layer"],
        pooling: str = BUILD_DEFAULTS["pooling"],
        index: LayerIndex | NeighbourIndex | None = None,
        encoder: Any = None,
        cache_dir: str | None = None,
        seed: int = 0,
        progress: bool = True,
        **options: Any,
    ) -> LAFA:
        """Build LAFA for a :class:`~captum_layer_saliency.models.classifier.TextClassifier`.

        Args:
            clf: the classifier bundle.
            reference_texts: unlabelled reference texts (ignored when ``index`` is given).
            base: a name of :data:`~captum_layer_saliency.attr.lafa_setup.BASES`, or any token
                attributor.
            reduction: the base's hidden-dimension reduction
                (:func:`~captum_layer_saliency.attr.lafa_setup.base_method`).
            n_samples: SmoothGrad's samples.
            noise: SmoothGrad's relative noise.
            neighbours: ``"layer"`` (the paper) or ``"encoder"`` (all-MiniLM-L6-v2 cosine).
            layer: the hidden layer of the index (0 = embeddings, ``L`` = block ``L``).
            pooling: ``"mean"`` or ``"cls"``
                (:data:`~captum_layer_saliency.attr.layer_index.POOLINGS`).
            index: a prebuilt :class:`~captum_layer_saliency.attr.layer_index.LayerIndex` (then
                ``layer`` and ``pooling`` are the index's) or
                :class:`~captum_layer_saliency.attr.neighbours.NeighbourIndex` (with its
                ``encoder``), instead of building one.
            encoder: the sentence encoder for ``neighbours="encoder"`` (default
                all-MiniLM-L6-v2).
            cache_dir: the cache root for built indexes.
            seed: the base's seed.
            progress: show a progress bar while building an index.
            **options: LAFA's own options (``k``, ``epsilon``, ``same_class``, ``lam``,
                ``aggregation``, ``kernel``...; see the constructor).

        Returns:
            The explainer.

        Raises:
            ValueError: neither ``reference_texts`` nor ``index``, or a bad option.
        """
        if options.get("token_repr") == "contextual":
            options.setdefault("repr_layer", find_model_parts(clf.model).layers[-1])
        if index is None:
            if reference_texts is None:
                raise ValueError(
                    f"LAFA needs a reference corpus for {clf.name!r}: pass reference_texts= "
                    "(e.g. captum_layer_saliency.data.corpora.default_corpus('sst2')) or index="
                )
            index, encoder = neighbour_index(
                clf,
                reference_texts,
                neighbours=neighbours,
                layer=layer,
                pooling=pooling,
                encoder=encoder,
                cache_dir=cache_dir,
                progress=progress,
            )
        name = base if isinstance(base, str) else "custom"
        if isinstance(base, str):
            base = base_method(
                clf, base, reduction=reduction, n_samples=n_samples, noise=noise, seed=seed
            )
        explainer = cls(
            clf.model,
            clf.tokenizer,
            base,
            index,
            encoder=encoder,
            max_length=clf.max_length,
            **options,
        )
        if isinstance(index, LayerIndex):  # a prebuilt index's own layer and pooling
            layer = index.layer if index.layer is not None else layer
            pooling = index.pooling
        explainer.config = replace(
            explainer.config,
            base=name,
            reduction=reduction,
            n_samples=n_samples,
            noise=noise,
            neighbours="layer" if isinstance(index, LayerIndex) else "encoder",
            layer=layer,
            pooling=pooling,
        )
        return explainer

    @property
    def is_base(self) -> bool:
        """True when the options reduce LAFA to its base method.

        That is ``k = 0``, or ``lam = 0`` under the paper's aggregation.
        """
        return self.k == 0 or (self.aggregation == "paper" and self.lam == 0)

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        attention_mask: Tensor | None = None,
        texts: Sequence[str] | None = None,
        **model_inputs: Tensor,
    ) -> Tensor:
        r"""Score every token of a batch: its base saliency smoothed over its neighbours.

        Args:
            inputs (Tensor): token ids ``(B, n)``.
            target (int, list or Tensor, optional): the class to explain, one for all examples
                or one per example, or ``(B, C)`` 0/1 label sets. ``None`` means **the
                prediction** of each example (the argmax class, or, for a multi-label head, the
                labels whose sigmoid is over 0.5, the top one where none is, explained as the sum
                of their logits as DLS does); it is stored in ``last_target_``. The neighbours
                are explained towards the same target as their input (a label set's first label
                stands for it in the same-class filter). Default: None
            additional_forward_args (Any, optional): ``None`` or ``(attention_mask,)``.
            attention_mask (Tensor, optional): ``(B, n)``, 0 at padding; every example needs a
                real token. Default: the ids that are not the tokenizer's pad id.
            texts (Sequence[str], optional): the inputs' texts (to keep an input from being its
                own neighbour, and for a sentence encoder). Default: the ids decoded.
            **model_inputs (Tensor): the model's other inputs for the explained rows, by their
                Hugging Face names (``token_type_ids=``...), each ``(B, n, ...)``; passed to the
                base method. The neighbours (single texts) get the inputs derived from their
                own ids and mask.

        Returns:
            *Tensor* of **attributions**: detached float ``(B, n)`` token scores, 0 on padding
            and special tokens; unsigned (a sum of squares) with the default base. The
            neighbours' texts are stored in ``last_neighbours_``.

        Raises:
            ValueError: inputs that are not ``(B, n)`` ids, a mask or texts that do not match
                them, an example without a real token, other forward arguments, a model input
                the model does not take, or a float target or one out of range.
            RuntimeError: called under ``torch.inference_mode()``.
        """
        # One call at a time across threads, as the base methods (Captum's hooks on the model
        # would reach this call's own forwards in another thread).
        with _ONE_AT_A_TIME:
            return self._attribute(
                inputs, target, additional_forward_args, attention_mask, texts, model_inputs
            )

    def _attribute(
        self,
        inputs: Tensor,
        target: TargetType,
        additional_forward_args: Any,
        attention_mask: Tensor | None,
        texts: Sequence[str] | None,
        model_inputs: dict[str, Tensor],
    ) -> Tensor:
        check_explainable(self.model, "the model")
        ids = inputs
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point:
            raise ValueError("inputs must be (batch, seq) integer token ids")
        if ids.numel() == 0:
            raise ValueError(f"empty input: token ids of shape {tuple(ids.shape)}")
        mask = self._mask(ids, attention_mask, additional_forward_args)
        batch = ids.shape[0]
        extra = check_model_inputs(model_inputs, ids, self.model)
        target_t = self._targets(ids, mask, target, extra)
        if target_t.dim() == 2:  # label sets (a multi-label prediction): one call per set
            return lafa_label_sets(self, ids, mask, target_t, texts, extra)
        valid = mask.bool() & ~special_mask(ids, self.special_token_ids)
        scores = torch.where(valid, self.base.attribute(ids, mask, target_t, **extra).float(), 0.0)
        if self.is_base:
            self.last_neighbours_ = [[] for _ in range(batch)]
            return scores.detach()
        if texts is None:
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        texts = list(texts)
        if len(texts) != batch:
            raise ValueError(f"got {len(texts)} texts for {batch} inputs")
        neighbours = self._neighbours(ids, mask, target_t, texts)
        # A local first: another thread's call may set last_neighbours_ meanwhile.
        neighbour_texts = [[self.index.texts[i] for i in row] for row in neighbours]
        self.last_neighbours_ = neighbour_texts
        nb_ids, nb_scores = self._neighbour_scores(neighbour_texts, target_t, ids.device)
        nb_valid = (nb_ids != self.pad_token_id) & ~special_mask(nb_ids, self.special_token_ids)
        nb_valid &= nb_scores.isfinite()
        nb_scores = torch.where(nb_valid, nb_scores, 0.0)
        if self.aggregation == "paper":
            with torch.no_grad():
                words, nb_words = self.word_embeddings(ids), self.word_embeddings(nb_ids)
            out = paper_aggregate(
                *(scores, words, valid, nb_scores, nb_words, nb_valid),
                lam=self.lam,
                kernel=self.kernel,
                sigma=self.sigma,
                min_similarity=self.min_similarity,
            )
        else:
            nb_real = (nb_ids != self.pad_token_id).long()
            reprs, nb_reprs = self._reprs(ids, mask, extra), self._reprs(nb_ids, nb_real)
            out = local_aggregate(
                *(scores, reprs, valid, nb_scores, nb_reprs, nb_valid),
                sigma=self.sigma,
                top_matches=self.top_matches,
                min_similarity=self.min_similarity,
            )
        return out.detach()

    # -- pieces --------------------------------------------------------------------------------

    def _neighbours(
        self, ids: Tensor, mask: Tensor, target: Tensor, texts: list[str]
    ) -> list[list[int]]:
        """Each input's neighbours (corpus indices, nearest first; up to ``k``)."""
        if isinstance(self.index, LayerIndex):
            queries, _ = layer_vectors(self.model, ids, mask, self.index.layer, self.index.pooling)
            radius = float("inf") if self.epsilon is None else self.index.cutoff(self.epsilon)
            return self.index.search(
                queries,
                self.k,
                radius=radius,
                classes=target if self.same_class else None,
                exclude_texts=texts,
            )
        # At most the corpus (less the input's own copies, which search skips).
        k = min(self.k, len(self.index) - 1)
        if k <= 0:
            return [[] for _ in texts]
        found, _ = self.index.search(texts, k, encoder=self.encoder)
        rows: list[list[int]] = found.tolist()
        return rows

    def _mask(self, ids: Tensor, attention_mask: Tensor | None, extra: Any) -> Tensor:
        if extra is not None:
            extra = extra if isinstance(extra, tuple) else (extra,)
            if len(extra) != 1 or not isinstance(extra[0], Tensor):
                raise ValueError(
                    "LAFA's forward is f(input_ids, attention_mask): additional_forward_args "
                    "may only be (attention_mask,), since the neighbours get their own masks"
                )
            if attention_mask is not None and not torch.equal(extra[0], attention_mask):
                raise ValueError("additional_forward_args and attention_mask disagree")
            attention_mask = extra[0]
        return attention_mask_of(ids, attention_mask, self.pad_token_id)

    @torch.no_grad()
    def _targets(
        self, ids: Tensor, mask: Tensor, target: TargetType, extra: dict[str, Tensor]
    ) -> Tensor:
        """The checked target; the prediction where ``target`` is None.

        The prediction is a class, or a label set of a multi-label head
        (:func:`~captum_layer_saliency.models.targets.predicted_target`).
        """
        logits = logits_of(self.forward_func(ids, *forward_args(mask, extra)))
        n = logits.shape[-1]
        checked = normalize_target(target, ids.shape[0], n, device=ids.device, label_sets=True)
        result = (
            predicted_target(logits, output_activation(self.model)) if checked is None else checked
        )
        self.last_target_ = result.detach()
        return result

    @torch.no_grad()
    def _reprs(self, ids: Tensor, mask: Tensor, extra: dict[str, Tensor] | None = None) -> Tensor:
        """Token representations for ``weighted_mean``: ``(..., n, d)`` for ``(..., n)`` ids."""
        if self.token_repr == "embedding":
            reprs: Tensor = self.word_embeddings(ids)
            return reprs
        assert self.repr_layer is not None
        flat_ids, flat_mask = ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, ids.shape[-1])
        args = forward_args(flat_mask.long(), extra)
        (states,) = layer_outputs(self.forward_func, [self.repr_layer], flat_ids, args)
        if states.shape[:2] != flat_ids.shape:
            raise ValueError("repr_layer did not return (batch, seq, hidden) states")
        return states.reshape(*ids.shape, -1)
