"""How a Hugging Face classifier is called: its inputs beyond the ids and mask, and its output.

Every method and metric of this package calls the model through one function,
``f(input_ids, attention_mask, *extra) -> logits`` (:class:`ClassifierForward`). It passes the
model's other inputs as follows:

* **Derived inputs**, computed from the ids and the mask of each call, so that they stay right
  however a method or metric rebuilds its inputs (tokens deleted and re-packed, rows cropped to
  one example, LAFA's neighbours, Captum's expanded batches):

  - ``token_type_ids`` (segment ids of a sentence pair), for a model that takes them and a
    tokenizer that makes them: 0 up to and including the first separator, 1 after it, 0 on
    padding -- the ids BERT-style tokenizers give a pair (:meth:`TextClassifier.encode` checks
    that they agree);
  - ``position_ids`` from the attention mask (``cumsum(mask) - 1``) when a row is left-padded
    and the family uses absolute positions it does not derive itself (BERT, DistilBERT, ALBERT,
    ELECTRA, GPT-2...; RoBERTa-style models derive them from the ids; rotary models such as
    Llama get them too, as in Hugging Face's own generation code).

* **Explicit inputs**: any keyword the model's forward takes, passed by its Hugging Face name
  (``token_type_ids=``, ``position_ids=``...) to DLS, LAFA or a registry method; they travel as
  Captum ``additional_forward_args`` (:func:`forward_args`), so Captum expands and slices them
  with the batch, and they override the derived ones.

The module also holds the checks on how a model is explained: a forward returning a tuple,
sequences longer than the model's positions, training mode, ``torch.inference_mode()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency._utils import warn_user
from captum_layer_saliency.errors import ModelOutputError
from captum_layer_saliency.models.targets import output_activation

__all__ = [
    "ClassifierForward",
    "InputNames",
    "check_explainable",
    "check_model_inputs",
    "check_sequence_length",
    "forward_args",
    "logits_of",
    "position_ids_from_mask",
    "segment_ids",
    "special_mask",
]

#: Families whose embeddings derive position ids from the input ids (padding-aware) themselves;
#: passing ``cumsum(mask) - 1`` would drop their ``padding_idx + 1`` offset.
SELF_POSITIONED = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "roberta-prelayernorm",
        "data2vec-text",
        "longformer",
        "mpnet",
        "ibert",
    }
)


#: Encoder families whose classification head reads the first position ([CLS], <s>): left
#: padding puts a pad there, so they must be padded on the right.
FIRST_TOKEN_POOLING = frozenset(
    {
        "bert",
        "albert",
        "electra",
        "distilbert",
        "deberta",
        "deberta-v2",
        "mpnet",
        "megatron-bert",
        "ernie",
        "roformer",
        "mobilebert",
        "squeezebert",
        "convbert",
    }
    | SELF_POSITIONED
)


@dataclass(frozen=True)
class InputNames:
    """The names of the tensors that follow it in ``additional_forward_args``.

    Not a tensor, so Captum passes it through unchanged while it expands or slices the tensors.
    """

    names: tuple[str, ...]


def special_mask(input_ids: Tensor, special_ids: Sequence[int] | Tensor | None) -> Tensor:
    """Boolean mask of the positions that hold a special token id."""
    if special_ids is None or len(special_ids) == 0:
        return torch.zeros_like(input_ids, dtype=torch.bool)
    ids = torch.as_tensor(list(special_ids), device=input_ids.device, dtype=input_ids.dtype)
    return torch.isin(input_ids, ids)


def forward_args(
    attention_mask: Tensor, model_inputs: Mapping[str, Tensor] | None = None
) -> tuple[Any, ...]:
    """The ``additional_forward_args`` that give a :class:`ClassifierForward` its inputs.

    Args:
        attention_mask: ``(batch, seq)``.
        model_inputs: other inputs of the model by name, each ``(batch, seq, ...)``.

    Returns:
        ``(attention_mask,)``, or ``(attention_mask, InputNames(names), *tensors)``.
    """
    if not model_inputs:
        return (attention_mask,)
    names = tuple(model_inputs)
    return (attention_mask, InputNames(names), *(model_inputs[n] for n in names))


def _explicit(extra: tuple[Any, ...]) -> dict[str, Any]:
    if not extra:
        return {}
    head, *values = extra
    if not isinstance(head, InputNames) or len(values) != len(head.names):
        raise TypeError(
            "a classifier forward takes (input_ids, attention_mask) and, optionally, "
            "InputNames(names) followed by one tensor per name; use forward_args(mask, inputs) or "
            "pass the model's other inputs by keyword (token_type_ids=...)"
        )
    return dict(zip(head.names, values, strict=True))


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``cumsum(mask) - 1``, clamped at 0: each real token's position among the real tokens.

    Args:
        attention_mask: ``(batch, seq)``.

    Returns:
        ``(batch, seq)`` long position ids (0 on leading padding).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def segment_ids(input_ids: Tensor, attention_mask: Tensor | None, sep_token_id: int) -> Tensor:
    """Segment ids of (possibly paired) BERT-style encodings: 1 after the first separator.

    Args:
        input_ids: ``(batch, seq)``.
        attention_mask: ``(batch, seq)`` or ``None``.
        sep_token_id: the separator's id.

    Returns:
        ``(batch, seq)`` long, 0 up to and including the first separator, 1 after it, 0 on
        padding.
    """
    is_sep = (input_ids == sep_token_id).long()
    before = is_sep.cumsum(-1) - is_sep  # separators strictly before each position
    seg = (before > 0).long()
    return seg * attention_mask.long() if attention_mask is not None else seg


def logits_of(out: Any) -> Tensor:
    """The logits of a model's output: ``out.logits``, or a tensor.

    Raises:
        TypeError: a tuple, list or other non-tensor output, with what to do.
    """
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)):
        kinds = ", ".join(type(o).__name__ for o in out)
        raise TypeError(
            f"the forward function returned a {type(out).__name__} ({kinds}), not a tensor of "
            "logits: return only the logits, e.g. `lambda ids, mask: model(ids, mask)[0]`, or "
            "a Hugging Face output with .logits"
        )
    raise TypeError(
        f"the forward function returned a {type(out).__name__}, not a (batch, classes) tensor "
        "of logits"
    )


def _accepted(model: nn.Module) -> tuple[set[str], bool]:
    """The named parameters of the model's forward, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return set(), True
    named = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params.values())


class ClassifierForward:
    """``f(input_ids, attention_mask=None, *extra, **model_inputs) -> logits`` for an HF model.

    Args:
        model: a ``*ForSequenceClassification`` model.
        sep_token_id: the tokenizer's separator id, when its encodings carry segment ids (see
            :func:`segment_ids`); ``None`` derives none.
    """

    def __init__(self, model: nn.Module, sep_token_id: int | None = None) -> None:
        """Read what the model's forward takes and how it positions its tokens."""
        # A torch.compile'd model runs eagerly through its own modules (the same weights): the
        # layer hooks every layer method needs do not all fire inside compiled code.
        self.model = _uncompiled(model)
        self.input_names, self.takes_kwargs = _accepted(model)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        self.derives_positions = (
            "position_ids" in self.input_names and model_type not in SELF_POSITIONED
        )
        self.sep_token_id = sep_token_id if "token_type_ids" in self.input_names else None
        #: the head reads the first position: inputs must be padded on the right.
        self.pools_first_token = model_type in FIRST_TOKEN_POOLING
        #: the longest input the position embeddings take (``None``: no fixed table, e.g. rotary).
        self.max_tokens = _max_tokens(getattr(model, "config", None))
        #: the number of token ids the input embeddings take (``None``: unknown).
        self.vocab_size = _vocab_size(model)
        #: ``"softmax"``, or ``"sigmoid"`` for a multi-label head: read by the metrics.
        self.activation = output_activation(model)

    def derived(self, input_ids: Tensor, attention_mask: Tensor | None) -> dict[str, Tensor]:
        """The inputs derived from the ids and mask (see the module docstring)."""
        extra: dict[str, Tensor] = {}
        if self.sep_token_id is not None:
            extra["token_type_ids"] = segment_ids(input_ids, attention_mask, self.sep_token_id)
        if (
            self.derives_positions
            and attention_mask is not None
            and attention_mask.shape[-1] > 0
            and bool((attention_mask[:, 0] == 0).any())
        ):
            extra["position_ids"] = position_ids_from_mask(attention_mask)
        return extra

    def underivable(
        self, input_ids: Tensor, attention_mask: Tensor, inputs: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """The inputs of an encoding that this forward would not derive identically itself.

        The harness and ``explain`` pass these by keyword to every method and metric, so an input
        that cannot be derived (segment ids of a tokenizer with another convention, a custom
        input) reaches the model however the ids are perturbed, and the usual case (segment ids
        that follow [SEP]) passes nothing extra.

        Args:
            input_ids: ``(batch, seq)``.
            attention_mask: ``(batch, seq)``.
            inputs: the encoding's other tensors by name (``token_type_ids``...).

        Returns:
            The subset of ``inputs`` to pass explicitly.
        """
        derived = self.derived(input_ids, attention_mask)
        return {
            name: value
            for name, value in inputs.items()
            if name not in derived or not torch.equal(derived[name], value)
        }

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *extra: Any, **kw: Any
    ) -> Tensor:
        """The model's logits ``(batch, classes)`` for ``(batch, seq)`` ids.

        Args:
            input_ids: ``(batch, seq)``.
            attention_mask: ``(batch, seq)`` or ``None``.
            *extra: ``InputNames(names)`` then one tensor per name (:func:`forward_args`).
            **kw: the model's other inputs by name; they override the derived ones.

        Returns:
            The logits.

        Raises:
            ValueError: an input longer than the model's positions, or a left-padded batch for
                a model that classifies from its first position.
            TypeError: a model output without logits.
        """
        check_sequence_length(input_ids.shape[-1], self.max_tokens)
        check_token_ids(input_ids, self.vocab_size)
        check_attention_mask(attention_mask)
        if (
            self.pools_first_token
            and attention_mask is not None
            and attention_mask.shape[-1] > 0
            and bool((attention_mask[:, 0] == 0).any())
        ):
            raise ValueError(
                f"{type(self.model).__name__} classifies from its first position ([CLS]), but "
                "this batch is left-padded, so a padding token sits there: pad on the right "
                "(tokenizer.padding_side = 'right'; TextClassifier.encode does)"
            )
        inputs = {**self.derived(input_ids, attention_mask), **_explicit(extra), **kw}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
            logits = out[0]  # a Hugging Face model with return_dict=False: logits come first
        else:
            logits = logits_of(out)
        if logits.dim() != 2 or logits.shape[0] != input_ids.shape[0]:
            kinds = ", ".join(
                f"{type(o).__name__}{tuple(o.shape) if isinstance(o, Tensor) else ''}"
                for o in (out if isinstance(out, tuple) else (out,))
            )
            raise ModelOutputError(
                f"{type(self.model).__name__} returned {kinds}: its logits must come first, "
                f"shaped (batch, classes) = ({input_ids.shape[0]}, n), not "
                f"{tuple(logits.shape)}; return a Hugging Face output with .logits, or the "
                "logits first"
            )
        return logits


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (``_orig_mod``), else ``model`` itself."""
    inner = model._modules.get("_orig_mod") if isinstance(model, nn.Module) else None
    return inner if inner is not None else model


def _vocab_size(model: nn.Module) -> int | None:
    """The rows of the model's input embedding table, when it has one."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        embedding = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        return None
    rows = getattr(embedding, "num_embeddings", None)
    return int(rows) if isinstance(rows, int) else None


def check_token_ids(input_ids: Tensor, vocab_size: int | None) -> None:
    """Refuse token ids outside ``[0, vocab_size)``, naming the first one and the size.

    Raises:
        ValueError: an id below 0 or at/over ``vocab_size``; ids that are not integers.
    """
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got a {input_ids.dtype} tensor")
    if vocab_size is None or input_ids.numel() == 0:
        return
    outside = (input_ids < 0) | (input_ids >= vocab_size)
    if bool(outside.any()):
        bad = int(input_ids[outside].flatten()[0])
        raise ValueError(
            f"token id {bad} is outside the model's vocabulary of {vocab_size} ids (0.."
            f"{vocab_size - 1}): were the ids made by another tokenizer?"
        )


def check_attention_mask(attention_mask: Tensor | None) -> None:
    """Refuse an attention mask with values other than 0 and 1.

    A fractional mask (``mask * 0.5``) would change every score without a word.

    Raises:
        ValueError: a value other than 0 or 1.
    """
    if attention_mask is None or attention_mask.numel() == 0:
        return
    if attention_mask.dtype == torch.bool:
        return
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        odd = attention_mask[(attention_mask != 0) & (attention_mask != 1)].flatten()[0]
        raise ValueError(
            f"attention_mask must hold only 0 (padding) and 1 (tokens), found {odd.item()!r}"
        )


def _max_tokens(config: Any) -> int | None:
    """The number of positions of a learned/sinusoidal position table, from the config."""
    if config is None or getattr(config, "rope_theta", None) is not None:
        return None
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "model_type", None) in ("deberta", "deberta-v2") and not getattr(
        config, "position_biased_input", True
    ):
        return None  # relative positions only
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(n, int) or n <= 0:
        return None
    if getattr(config, "model_type", None) in SELF_POSITIONED:
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1  # positions start after padding_idx
    return n


def check_model_inputs(
    model_inputs: Mapping[str, Any], input_ids: Tensor, model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Check the model's other inputs passed by keyword: names the model takes, batch shape.

    Args:
        model_inputs: the keyword inputs (``token_type_ids=``...).
        input_ids: ``(batch, seq)`` ids they go with.
        model: the model, when known: every name must be a parameter of its forward.

    Returns:
        The inputs as a dict (tensors on the ids' device).

    Raises:
        ValueError: a name the model does not take, ``input_ids``/``attention_mask`` passed
            twice, or a tensor whose first two dimensions are not the ids'.
        TypeError: a value that is not a tensor.
    """
    out: dict[str, Tensor] = {}
    if model is not None:
        names, _ = _accepted(model)
        unknown = sorted(set(model_inputs) - names)
        if unknown:
            takes = ", ".join(sorted(names - {"input_ids", "attention_mask", "labels"}))
            raise ValueError(
                f"{type(model).__name__}.forward takes no input named {unknown[0]!r}; its other "
                f"inputs are: {takes}"
            )
    for name, value in model_inputs.items():
        if name in ("input_ids", "attention_mask", "inputs_embeds", "labels"):
            raise ValueError(f"{name} is not a free model input here; pass it as its own argument")
        if not isinstance(value, Tensor):
            raise TypeError(f"model input {name} must be a tensor, got {type(value).__name__}")
        if value.dim() < 2 or tuple(value.shape[:2]) != tuple(input_ids.shape):
            raise ValueError(
                f"model input {name} has shape {tuple(value.shape)}; it must start with the "
                f"ids' shape {tuple(input_ids.shape)} (batch, seq)"
            )
        out[name] = value.to(input_ids.device)
    return out


def check_sequence_length(n_tokens: int, max_positions: int | None, where: str = "") -> None:
    """Refuse a sequence longer than the model's position embeddings, before the model runs.

    Raises:
        ValueError: naming both lengths and the truncation option.
    """
    if max_positions is not None and n_tokens > max_positions:
        raise ValueError(
            f"{where}an input of {n_tokens} tokens is longer than the model's {max_positions} "
            f"positions (max_position_embeddings): encode with max_length <= {max_positions} "
            "and truncation='truncate' to cut the texts"
        )


def check_explainable(model: Any, what: str = "the model") -> None:
    """Refuse ``torch.inference_mode()``; warn about a model in training mode.

    Gradient methods need autograd; inference tensors cannot be recorded by it. A model in
    training mode runs dropout, so every map comes out different.

    Raises:
        RuntimeError: under ``torch.inference_mode()``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "explaining under torch.inference_mode() is impossible: attributions need autograd. "
            "Call the explainer outside the inference_mode() block (torch.no_grad() around it is "
            "fine; the explainer enables gradients itself)"
        )
    if isinstance(model, nn.Module) and model.training:
        warn_user(
            f"{what} is in training mode: dropout makes every map random. Call model.eval() "
            "before explaining it",
            UserWarning,
        )


def check_not_data_parallel(model: Any, device_ids: Any = None) -> None:
    """Refuse ``DataParallel``/``DistributedDataParallel`` wrappers, saying what works instead.

    The explainers hook layers of the model and differentiate one forward; a replicating
    wrapper runs copies of the layers on other devices, where the hooks do not see them.

    Raises:
        ValueError: a wrapped model, or ``device_ids`` (kept only for Captum's signature).
    """
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    if isinstance(model, wrappers):
        raise ValueError(
            f"the model is wrapped in {type(model).__name__}, which the explainers cannot hook: "
            "pass the bare model (`model.module`, on one device). To use several GPUs, run one "
            "process per GPU, each on its share of the examples: `torchrun --nproc_per_node N "
            "-m captum_layer_saliency compare ...` (docs/scaling.md)"
        )
    if device_ids is not None:
        raise ValueError(
            "device_ids is accepted only for Captum's signature and must be None: the "
            "explainers run on the model's own device (for several GPUs, one process per GPU "
            "under torchrun)"
        )
