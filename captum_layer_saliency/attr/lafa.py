"""Locally Aggregated Feature Attribution (Zhang, Wang, Jiang and Song, 2022) as a Captum method.

LAFA smooths a gradient attribution over *similar reference texts* instead of an artificial
baseline input. As this project defines it (``method.md``, section 2):

1. **Neighbours.** The ``k`` reference texts nearest to the input under a sentence encoder
   (default: mean-pooled all-MiniLM-L6-v2), by cosine similarity
   (:class:`~captum_layer_saliency.neighbours.NeighbourIndex`); the input's own text is never its
   own neighbour.
2. **Base attributions.** A gradient attribution towards the explained class (at the
   embeddings: Saliency by default, Input×Gradient or Integrated Gradients) for the input and
   its ``k`` neighbours, in one batched forward/backward (the neighbours padded together with
   the input batch).
3. **Local aggregation.** Input token ``i``'s score is a kernel-weighted average of its own
   attribution ``a_i`` and the attributions of its best-matching tokens in each neighbour::

       S_i = (a_i + sum_{j, t in M_ij} w_jt a_jt) / (1 + sum_{j, t in M_ij} w_jt),
       w_jt = exp((cos(e_i, e_jt) - 1) / sigma)

   where ``e`` are the classifier's token representations (the word embeddings of the token
   ids, or a contextual layer's hidden states), and ``M_ij`` holds the ``top_matches`` tokens
   of neighbour ``j`` most similar to token ``i`` whose cosine is at least ``min_similarity``.
   This is ``exp(cos / sigma)`` weighting with the own token's weight ``exp(1 / sigma)``,
   divided through by ``exp(1 / sigma)`` for numerical range.

With ``k = 0`` the score is the base attribution, exactly. Padding and special tokens get 0 and
are never matched. Each example's result depends only on that example (batching changes only
the floating-point rounding of the padded forward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ..baselines import (
    GRADIENT,
    ExplainerAttributor,
    MethodSpec,
    TokenAttributor,
    embedding_layer,
    get_method,
    pad_baseline,
    register_method,
)
from ..hf import TextClassifier, classifier_forward, special_mask
from ..hf import special_token_ids as tokenizer_special_ids
from ..neighbours import (
    DEFAULT_CORPUS_SIZE,
    DEFAULT_ENCODER_NAME,
    Encoder,
    NeighbourIndex,
    cached_index,
    default_corpus,
    default_encoder,
    default_task_of,
)
from ..surgery import find_model_parts

__all__ = [
    "BASES",
    "DEFAULTS",
    "LAFA",
    "TOKEN_REPRS",
    "lafa_factory",
    "local_aggregate",
    "register_lafa",
]

#: Base gradient methods, each at the embeddings with the registry's default options.
BASES = ("input_x_gradient", "saliency", "integrated_gradients")
#: Token representations for the kernel: the word embeddings of the token ids, or the hidden
#: states of a contextual layer (one extra no-grad forward of the input and its neighbours).
TOKEN_REPRS = ("embedding", "contextual")
#: The defaults, chosen by the ablation in ``benchmarks/ablation_lafa.py`` (``docs/lafa.md``).
#: On SST-2 no setting made the smoothed scores more faithful than their base; this one (the
#: cheapest that matched its base) loses nothing, and Saliency beat Input×Gradient as the base
#: at every k tried. ``top_matches`` and ``min_similarity`` were not ablated.
DEFAULTS: dict[str, Any] = {
    "k": 3,
    "sigma": 0.1,
    "token_repr": "contextual",
    "base": "saliency",
    "top_matches": 1,
    "min_similarity": 0.5,
}
#: Integrated Gradients' settings when LAFA runs it itself (the registry's defaults).
IG_STEPS, IG_METHOD = 25, "gausslegendre"


def local_aggregate(
    scores: Tensor,
    reprs: Tensor,
    valid: Tensor,
    nb_scores: Tensor,
    nb_reprs: Tensor,
    nb_valid: Tensor,
    *,
    sigma: float,
    top_matches: int = 1,
    min_similarity: float = 0.5,
) -> Tensor:
    """LAFA's aggregation of neighbour attributions onto the input's tokens.

    Args:
        scores: the input's base attributions ``a`` ``(B, n)``.
        reprs: the input's token representations ``(B, n, d)``.
        valid: ``(B, n)`` True on the tokens that get a score (real, not special).
        nb_scores: the neighbours' attributions ``(B, k, m)``.
        nb_reprs: their token representations ``(B, k, m, d)``.
        nb_valid: ``(B, k, m)`` True on the neighbour tokens that may be matched.
        sigma: the kernel width (``w = exp((cos - 1) / sigma)``).
        top_matches: the most-similar tokens of each neighbour used per input token.
        min_similarity: matches with a lower cosine are dropped.

    Returns:
        ``(B, n)`` aggregated scores, 0 where ``valid`` is False.
    """
    own = scores.float()
    if nb_scores.shape[1] == 0 or nb_scores.shape[2] == 0:
        return own * valid
    e = nn.functional.normalize(reprs.float(), dim=-1)
    f = nn.functional.normalize(nb_reprs.float(), dim=-1)
    cos = torch.einsum("bnd,bkmd->bknm", e, f)
    cos = cos.masked_fill(~nb_valid[:, :, None, :], -math.inf)
    best, where = cos.topk(min(top_matches, cos.shape[-1]), dim=-1)  # (B, k, n, t)
    matched = nb_scores.float()[:, :, None, :].expand_as(cos).gather(-1, where)
    keep = best >= min_similarity  # also drops the -inf of unmatched (padding) positions
    weight = torch.where(keep, torch.exp((best.clamp(max=1.0) - 1) / sigma), 0.0)
    numerator = own + (weight * torch.where(keep, matched, 0.0)).sum((1, 3))
    denominator = 1 + weight.sum((1, 3))
    return numerator / denominator * valid


class LAFA(GradientAttribution):
    r"""Locally Aggregated Feature Attribution: gradients smoothed over similar reference texts.

    See the module docstring for the algorithm. The forward must be
    ``f(input_ids, attention_mask) -> logits``; LAFA builds the mask of the neighbours' rows
    itself, so it takes no other forward arguments.
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        embedding_layer: nn.Module,
        encoder: Encoder,
        index: NeighbourIndex,
        *,
        tokenizer: Any = None,
        k: int = DEFAULTS["k"],
        sigma: float = DEFAULTS["sigma"],
        token_repr: str = DEFAULTS["token_repr"],
        base: str | TokenAttributor = DEFAULTS["base"],
        top_matches: int = DEFAULTS["top_matches"],
        min_similarity: float = DEFAULTS["min_similarity"],
        word_embeddings: nn.Module | None = None,
        repr_layer: nn.Module | None = None,
        special_token_ids: Sequence[int] | None = None,
        max_length: int = 128,
    ) -> None:
        r"""
        Args:
            forward_func (Callable): ``f(input_ids, attention_mask) -> logits``.
            embedding_layer (torch.nn.Module): the module whose output the base gradient
                method attributes to (the embeddings), when ``base`` is a name.
            encoder (Callable): the sentence encoder, ``list[str] -> (N, d)``
                (:class:`~captum_layer_saliency.neighbours.SentenceEncoder` or any callable).
            index (NeighbourIndex): the reference corpus, embedded with the same encoder.
            tokenizer (optional): turns the neighbours' texts into ids (and the inputs' ids
                into texts when :meth:`attribute` gets no ``texts``). Required when ``k > 0``.
            k (int, optional): neighbours per input; 0 gives the base method. Default: 3
            sigma (float, optional): the kernel width. Default: 0.1
            token_repr (str, optional): ``"embedding"`` (the word embeddings of the token ids)
                or ``"contextual"`` (``repr_layer``'s hidden states; :meth:`for_model` uses the
                last block). Default: ``"contextual"``
            base (str or TokenAttributor, optional): ``"input_x_gradient"``, ``"saliency"``
                (the gradient's L2 norm) or ``"integrated_gradients"`` (25 Gauss-Legendre
                steps from the PAD baseline), all at ``embedding_layer`` and as in
                :mod:`captum_layer_saliency.baselines`; or any attributor with
                ``attribute(input_ids, attention_mask, target) -> (B, n)``.
                Default: ``"saliency"``
            top_matches (int, optional): tokens of each neighbour matched per input token.
                Default: 1
            min_similarity (float, optional): the least cosine for a match. Default: 0.5
            word_embeddings (torch.nn.Module, optional): the token-id embedding table for
                ``token_repr="embedding"``; default ``embedding_layer`` itself if it is an
                ``nn.Embedding``, else its ``word_embeddings`` attribute.
            repr_layer (torch.nn.Module, optional): the layer whose output is the contextual
                representation (required for ``token_repr="contextual"``).
            special_token_ids (Sequence[int], optional): ids that get 0 and are never matched;
                default: the tokenizer's special tokens.
            max_length (int, optional): neighbour texts are truncated to this many tokens.

        Raises:
            ValueError: an option out of range, a missing tokenizer or layer, or an encoder
                whose dimension differs from the index's.
        """
        GradientAttribution.__init__(self, forward_func)
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        if token_repr not in TOKEN_REPRS:
            raise ValueError(f"unknown token_repr {token_repr!r}; choose from {TOKEN_REPRS}")
        if isinstance(base, str) and base not in BASES:
            raise ValueError(f"unknown base {base!r}; choose from {BASES} or pass an attributor")
        if not isinstance(base, str) and not callable(getattr(base, "attribute", None)):
            raise ValueError("base must be a method name or have attribute(ids, mask, target)")
        if not isinstance(top_matches, int) or top_matches < 1:
            raise ValueError(f"top_matches must be a positive int, got {top_matches!r}")
        if not -1 <= min_similarity <= 1:
            raise ValueError(f"min_similarity must lie in [-1, 1], got {min_similarity!r}")
        if k > 0 and tokenizer is None:
            raise ValueError("a tokenizer is needed to turn the neighbours' texts into ids")
        if not isinstance(index, NeighbourIndex):
            raise ValueError(f"index must be a NeighbourIndex, got {type(index).__name__}")
        index.check_encoder(encoder)
        if k > len(index):
            raise ValueError(f"k={k} neighbours asked of a corpus of {len(index)} texts")
        if k > 0 and token_repr == "contextual" and repr_layer is None:
            raise ValueError("token_repr='contextual' needs repr_layer=<a hidden layer module>")
        if token_repr == "embedding":
            word_embeddings = word_embeddings or _word_embeddings(embedding_layer)
        self.embedding_layer = embedding_layer
        self.encoder = encoder
        self.index = index
        self.tokenizer = tokenizer
        self.k, self.sigma, self.token_repr, self.base = k, sigma, token_repr, base
        self.top_matches, self.min_similarity = top_matches, min_similarity
        self.word_embeddings: nn.Module | None = word_embeddings
        self.repr_layer: nn.Module | None = repr_layer
        if special_token_ids is None and tokenizer is not None:
            special_token_ids = tokenizer_special_ids(tokenizer)
        self.special_token_ids = list(special_token_ids or [])
        self.max_length = max_length
        self.pad_token_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        #: the class each example was explained for in the last call ``(B,)``.
        self.last_target_: Tensor | None = None
        #: the neighbour texts of each example in the last call.
        self.last_neighbours_: list[list[str]] | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.base == "input_x_gradient"

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        tokenizer: Any,
        reference_texts: Sequence[str] | None = None,
        *,
        encoder: Encoder | None = None,
        task: str | None = None,
        index: NeighbourIndex | None = None,
        base: str | TokenAttributor = DEFAULTS["base"],
        corpus_size: int | None = DEFAULT_CORPUS_SIZE,
        cache_dir: str | None = None,
        max_length: int = 128,
        **options: Any,
    ) -> LAFA:
        """Build LAFA for a Hugging Face sequence classifier in one line.

        The reference corpus is, in order of precedence: ``index``; ``reference_texts``
        (embedded once and cached, see :func:`~captum_layer_saliency.neighbours.cached_index`);
        the default corpus of ``task`` (:func:`~captum_layer_saliency.neighbours.default_corpus`).
        A named ``base`` is the registry's method (:func:`~captum_layer_saliency.baselines.
        get_method`), so LAFA with ``k=0`` is that method.

        Args:
            model: a ``*ForSequenceClassification`` model in eval mode.
            tokenizer: its tokenizer.
            reference_texts: unlabelled reference texts.
            encoder: the sentence encoder (default: mean-pooled all-MiniLM-L6-v2).
            task: ``"sst2"`` or ``"ag_news"``, for the default corpus.
            index: a prebuilt index (made with ``encoder``).
            base: a base method name (see :data:`BASES`) or an attributor.
            corpus_size: the most texts of a task's default corpus.
            cache_dir: the cache root for built indexes.
            max_length: the token budget of neighbour texts.
            **options: passed to the constructor (``k``, ``sigma``, ``token_repr``...).

        Returns:
            The explainer; :meth:`attribute` takes the ids and ``attention_mask``.

        Raises:
            ValueError: no reference corpus given, an empty one, or an index without its encoder.
        """
        if encoder is None and index is not None and index.encoder_name != DEFAULT_ENCODER_NAME:
            raise ValueError(
                f"the index was built with the encoder {index.encoder_name!r}: pass it as encoder="
            )
        encoder = encoder if encoder is not None else default_encoder()
        if index is None:
            if reference_texts is None:
                if task is None:
                    raise ValueError(
                        "LAFA needs a reference corpus: pass reference_texts=, index= or task="
                    )
                reference_texts = default_corpus(task, corpus_size)
            index = cached_index(reference_texts, encoder, cache_dir=cache_dir)
        layer = embedding_layer(model, "embeddings")
        if isinstance(base, str):
            if base not in BASES:
                raise ValueError(f"unknown base {base!r}; choose from {BASES}")
            clf = TextClassifier(model=model, tokenizer=tokenizer, max_length=max_length)
            base = get_method(base, clf)
        if options.get("token_repr", DEFAULTS["token_repr"]) == "contextual":
            options.setdefault("repr_layer", find_model_parts(model).layers[-1])
        return cls(
            classifier_forward(model),
            layer,
            encoder,
            index,
            tokenizer=tokenizer,
            base=base,
            word_embeddings=embedding_layer(model, "word_embeddings"),
            max_length=max_length,
            **options,
        )

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        attention_mask: Tensor | None = None,
        texts: Sequence[str] | None = None,
    ) -> Tensor:
        r"""
        Args:
            inputs (Tensor): token ids ``(B, n)``.
            target (int, list or Tensor, optional): the class to explain, one for all examples
                or one per example. ``None`` means **the predicted class** of each example (the
                argmax of the logits); it is stored in ``last_target_``. The neighbours are
                explained towards the same class as their input. Default: None
            additional_forward_args (Any, optional): ``None`` or ``(attention_mask,)``.
            attention_mask (Tensor, optional): ``(B, n)``, 0 at padding. Default: the ids that
                are not the tokenizer's pad id.
            texts (Sequence[str], optional): the inputs' texts, to find their neighbours.
                Default: the ids decoded with the tokenizer (special tokens skipped).

        Returns:
            *Tensor* of **attributions**: detached float ``(B, n)`` token scores, 0 on padding
            and special tokens. The neighbours' texts are stored in ``last_neighbours_``.

        Raises:
            ValueError: inputs that are not ``(B, n)`` ids, a mask or texts that do not match
                them, other forward arguments, or a target out of range.
        """
        ids = inputs
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point:
            raise ValueError("inputs must be (batch, seq) integer token ids")
        if ids.numel() == 0:
            raise ValueError(f"empty input: token ids of shape {tuple(ids.shape)}")
        mask = self._mask(ids, attention_mask, additional_forward_args)
        batch = ids.shape[0]
        target_t = self._targets(ids, mask, target)
        valid = mask.bool() & ~special_mask(ids, self.special_token_ids)
        if self.k == 0:
            self.last_neighbours_ = [[] for _ in range(batch)]
            return self._base(ids, mask, target_t, valid).detach()

        if texts is None:
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        texts = list(texts)
        if len(texts) != batch:
            raise ValueError(f"got {len(texts)} texts for {batch} inputs")
        found, _ = self.index.search(texts, self.k, encoder=self.encoder)
        neighbours = [[self.index.texts[i] for i in row] for row in found.tolist()]
        self.last_neighbours_ = neighbours
        enc = self.tokenizer(
            [t for row in neighbours for t in row],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        nb_ids = enc["input_ids"].to(ids.device)
        nb_mask = enc["attention_mask"].to(ids.device)
        width = max(ids.shape[1], nb_ids.shape[1])
        all_ids = torch.cat([self._pad(ids, width), self._pad(nb_ids, width)])
        all_mask = torch.cat([_pad_to(mask, width, 0), _pad_to(nb_mask, width, 0)])
        all_valid = all_mask.bool() & ~special_mask(all_ids, self.special_token_ids)
        all_target = torch.cat([target_t, target_t.repeat_interleave(self.k)])

        scores = self._base(all_ids, all_mask, all_target, all_valid)  # one forward/backward
        reprs = self._reprs(all_ids, all_mask)
        n, k = ids.shape[1], self.k
        return local_aggregate(
            scores[:batch, :n],
            reprs[:batch, :n],
            valid,
            scores[batch:].reshape(batch, k, width),
            reprs[batch:].reshape(batch, k, width, -1),
            all_valid[batch:].reshape(batch, k, width),
            sigma=self.sigma,
            top_matches=self.top_matches,
            min_similarity=self.min_similarity,
        ).detach()

    # -- pieces --------------------------------------------------------------------------------

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
        if attention_mask is None:
            return (ids != self.pad_token_id).long()
        if attention_mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, the ids "
                f"{tuple(ids.shape)}"
            )
        return attention_mask

    @torch.no_grad()
    def _targets(self, ids: Tensor, mask: Tensor, target: TargetType) -> Tensor:
        """One class per example; the predicted class where ``target`` is None."""
        if target is None:
            out = self.forward_func(ids, mask)
            out = out.logits if hasattr(out, "logits") else out
            result = out.argmax(-1)
        else:
            result = torch.as_tensor(target, device=ids.device).long().reshape(-1)
            if result.numel() == 1:
                result = result.expand(ids.shape[0])
            if result.shape[0] != ids.shape[0]:
                raise ValueError(
                    f"target has {result.shape[0]} entries for a batch of {ids.shape[0]}"
                )
        self.last_target_ = result.detach()
        return result

    def _base(self, ids: Tensor, mask: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """The base attributions ``(B, n)``, 0 where not ``valid``."""
        if not isinstance(self.base, str):
            scores = self.base.attribute(ids, mask, target)
            return torch.where(valid, scores.float(), 0.0)
        from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

        with torch.enable_grad():
            if self.base == "integrated_gradients":
                special = special_mask(ids, self.special_token_ids)
                attr = LayerIntegratedGradients(self.forward_func, self.embedding_layer).attribute(
                    ids,
                    baselines=pad_baseline(ids, mask, special, self.pad_token_id),
                    target=target,
                    additional_forward_args=(mask,),
                    n_steps=IG_STEPS,
                    method=IG_METHOD,
                )
            else:
                attr = LayerGradientXActivation(
                    self.forward_func,
                    self.embedding_layer,
                    multiply_by_inputs=self.base == "input_x_gradient",
                ).attribute(ids, target=target, additional_forward_args=(mask,))
        scores = attr.norm(dim=-1) if self.base == "saliency" else attr.sum(-1)
        return torch.where(valid, scores.float(), 0.0)

    @torch.no_grad()
    def _reprs(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Token representations ``(B, n, d)`` for the kernel."""
        if self.token_repr == "embedding":
            assert self.word_embeddings is not None
            reprs: Tensor = self.word_embeddings(ids)
            return reprs
        assert self.repr_layer is not None
        captured: list[Tensor] = []

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)

        handle = self.repr_layer.register_forward_hook(hook)
        try:
            self.forward_func(ids, mask)
        finally:
            handle.remove()
        if not captured or captured[0].shape[:2] != ids.shape:
            raise ValueError("repr_layer did not return (batch, seq, hidden) states")
        return captured[0]

    def _pad(self, ids: Tensor, width: int) -> Tensor:
        return _pad_to(ids, width, self.pad_token_id)


def _pad_to(x: Tensor, width: int, value: int) -> Tensor:
    """Right-pad ``(B, n)`` to ``(B, width)`` with ``value``."""
    return nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _word_embeddings(layer: nn.Module) -> nn.Module:
    if isinstance(layer, nn.Embedding):
        return layer
    table = getattr(layer, "word_embeddings", None)
    if isinstance(table, nn.Module):
        return table
    raise ValueError(
        "cannot find the word embeddings in embedding_layer; pass word_embeddings=<nn.Embedding>"
    )


# --------------------------------------------------------------------------------------------
# The comparison harness


def lafa_factory(
    clf: TextClassifier,
    *,
    seed: int = 0,
    k: int = DEFAULTS["k"],
    sigma: float = DEFAULTS["sigma"],
    token_repr: str = DEFAULTS["token_repr"],
    base: str = DEFAULTS["base"],
    top_matches: int = DEFAULTS["top_matches"],
    min_similarity: float = DEFAULTS["min_similarity"],
    task: str | None = None,
    reference_texts: Sequence[str] | None = None,
    index: NeighbourIndex | None = None,
    encoder: Encoder | None = None,
    corpus_size: int | None = DEFAULT_CORPUS_SIZE,
) -> TokenAttributor:
    """LAFA for the comparison harness (registry name ``lafa``).

    Args:
        clf: the classifier bundle.
        seed: recorded for reports; LAFA is deterministic.
        k, sigma, token_repr, base, top_matches, min_similarity: see :class:`LAFA`.
        task: the task whose training texts are the reference corpus; default: read from a
            default classifier's name (``minilm-sst2``, ``minilm-ag_news``).
        reference_texts: a reference corpus instead of the task's.
        index: a prebuilt index instead of either.
        encoder: the sentence encoder (default: mean-pooled all-MiniLM-L6-v2).
        corpus_size: the most texts of the task's default corpus.

    Returns:
        The attributor.

    Raises:
        ValueError: no reference corpus can be found for ``clf``.
    """
    if index is None and reference_texts is None:
        task = task or default_task_of(clf)
        if task is None:
            raise ValueError(
                f"lafa needs a reference corpus for {clf.name!r}: pass task='sst2'|'ag_news', "
                "reference_texts= or index="
            )
    explainer = LAFA.for_model(
        clf.model,
        clf.tokenizer,
        reference_texts,
        encoder=encoder,
        task=task,
        index=index,
        base=base,
        corpus_size=corpus_size,
        max_length=clf.max_length,
        k=k,
        sigma=sigma,
        token_repr=token_repr,
        top_matches=top_matches,
        min_similarity=min_similarity,
    )
    return ExplainerAttributor(
        clf,
        explainer,
        seed=seed,
        k=k,
        sigma=sigma,
        token_repr=token_repr,
        base=base,
        top_matches=top_matches,
        min_similarity=min_similarity,
        corpus=len(explainer.index),
    )


LAFA_NOTES = (
    "Needs a reference corpus (default: the task's training texts, embedded once with "
    "all-MiniLM-L6-v2 and cached); each example costs 1 + k rows of forward and backward."
)


def register_lafa() -> None:
    """Register (or re-register) ``lafa`` in the baselines registry with its full signature."""
    register_method(
        MethodSpec(
            "lafa",
            "LAFA: gradient saliency smoothed over k similar reference texts",
            lafa_factory,
            GRADIENT,
            LAFA_NOTES,
        )
    )
