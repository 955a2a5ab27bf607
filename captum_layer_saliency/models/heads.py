"""LM heads: load the pre-trained language-model head of a Hugging Face family, and check it.

:func:`load_lm_head` resolves the head (with the final norm for pre-norm families) and refuses a
checkpoint whose head weights are missing; :func:`check_head_compatible` refuses a head of
another family, vocabulary or hidden size. :func:`default_layers` lists the layers a head can
decode (the embeddings and every block).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.errors import CaptumLayerSaliencyError, ModelOutputError
from captum_layer_saliency.models.surgery import (
    UnsupportedModelError,
    family_spec,
    find_model_parts,
    model_family,
)

__all__ = [
    "HeadMismatchError",
    "LMHead",
    "check_head_compatible",
    "default_layers",
    "head_from_model",
    "load_lm_head",
]


class HeadMismatchError(CaptumLayerSaliencyError, ValueError):
    """An LM head that cannot decode the classifier's hidden states or token ids."""


def _first_in_features(module: nn.Module) -> int | None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            return sub.in_features
        if isinstance(sub, nn.LayerNorm) and len(sub.normalized_shape) == 1:
            return int(sub.normalized_shape[0])
        weight = getattr(sub, "weight", None)
        # RMSNorm-style modules (Llama) have a 1-D weight of the hidden size.
        if isinstance(weight, Tensor) and weight.dim() == 1 and not list(sub.children()):
            return int(weight.shape[0])
    return None


def _last_out_features(module: nn.Module) -> int | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


class LMHead(nn.Module):
    """A language-model head: hidden states ``(..., K)`` to vocabulary logits ``(..., V)``.

    It applies its parts in order (for pre-norm families: the final norm, then the unembedding)
    and knows its ``hidden_size`` and ``vocab_size`` so that mismatches fail early.

    Args:
        *parts: modules applied in order.
        hidden_size: ``K``; inferred from the first linear or norm when not given.
        vocab_size: ``V``; inferred from the last linear when not given.
        family: the Hugging Face family it came from, if any.
        source: where it was loaded from, for messages.
    """

    def __init__(
        self,
        *parts: nn.Module,
        hidden_size: int | None = None,
        vocab_size: int | None = None,
        family: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if not parts:
            raise ValueError("an LMHead needs at least one module")
        self.parts = nn.Sequential(*parts)
        self.hidden_size = hidden_size or _first_in_features(self.parts)
        self.vocab_size = vocab_size or _last_out_features(self.parts)
        self.family = family
        self.source = source

    def forward(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits ``(..., V)`` of hidden states ``(..., hidden_size)``."""
        return self.parts(hidden)

    def extra_repr(self) -> str:
        """The head's sizes, family and source, for ``repr``."""
        return (
            f"hidden_size={self.hidden_size}, vocab_size={self.vocab_size}, "
            f"family={self.family!r}, source={self.source!r}"
        )


def _config_dim(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def check_head_compatible(head: nn.Module, model: nn.Module) -> None:
    """Raise :class:`HeadMismatchError` when ``head`` cannot decode ``model``'s hidden states.

    Compares the head's family (when it came from a Hugging Face LM model) with the model's
    ``config.model_type``, the head's hidden size with the model's (``hidden_size``/``dim``/
    ``n_embd``) and the head's vocabulary with the model's ``vocab_size``. A head of unknown
    size passes here and is checked again on the first decoded batch.

    Raises:
        HeadMismatchError: another family, hidden size or vocabulary.
        ModelOutputError: a weight of the head is NaN or infinite (it would decode to garbage
            without a word); the message names the parameter.
    """
    for name, param in head.named_parameters():
        if not bool(torch.isfinite(param.detach()).all()):
            raise ModelOutputError(
                f"the LM head's parameter {name!r} holds NaN or inf values: it cannot decode "
                "hidden states; reload the head"
            )
    config = getattr(model, "config", None)
    if config is None:
        return
    head_family = getattr(head, "family", None)
    model_family_name = getattr(config, "model_type", None)
    if head_family and isinstance(model_family_name, str) and head_family != model_family_name:
        raise HeadMismatchError(
            f"the LM head comes from a {head_family!r} model but the classifier is a "
            f"{model_family_name!r} model: the head must come from the classifier's pre-trained "
            "backbone (their hidden states and vocabularies do not correspond)"
        )
    model_hidden = _config_dim(config, "hidden_size", "dim", "n_embd", "d_model")
    model_vocab = _config_dim(config, "vocab_size")
    head_hidden = getattr(head, "hidden_size", None) or _first_in_features(head)
    head_vocab = getattr(head, "vocab_size", None) or _last_out_features(head)
    if model_hidden and head_hidden and model_hidden != head_hidden:
        raise HeadMismatchError(
            f"the LM head takes hidden size {head_hidden} but the model's hidden size is "
            f"{model_hidden}: the head must come from the classifier's pre-trained backbone"
        )
    if model_vocab and head_vocab and model_vocab != head_vocab:
        raise HeadMismatchError(
            f"the LM head has a vocabulary of {head_vocab} but the model's is {model_vocab}: "
            "the head must come from the classifier's pre-trained backbone"
        )


def head_from_model(lm_model: nn.Module, source: str | None = None) -> LMHead:
    """Take the LM head (with the final norm where the family needs one) out of an LM model.

    Raises:
        UnsupportedModelError: unknown family, or the model carries no LM head (for example a
            ``*ForSequenceClassification``).
    """
    family = model_family(lm_model)
    spec = family_spec(family)
    try:
        parts = [lm_model.get_submodule(path) for path in spec.head_paths]
    except AttributeError:
        raise UnsupportedModelError(
            f"{type(lm_model).__name__} carries no {spec.head} language-model head "
            f"(looked for {list(spec.head_paths)}). A fine-tuned classifier has none: pass the "
            "pre-trained checkpoint of its backbone (e.g. 'bert-base-uncased') or a head module"
        ) from None
    config = lm_model.config
    return LMHead(
        *parts,
        hidden_size=_config_dim(config, "hidden_size", "dim", "n_embd"),
        vocab_size=_config_dim(config, "vocab_size"),
        family=family,
        source=source or getattr(config, "_name_or_path", None),
    )


def _load_lm_model(name_or_path: str, **kwargs: Any) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    spec = family_spec(config.model_type)
    auto = AutoModelForMaskedLM if spec.head == "masked" else AutoModelForCausalLM
    loaded: Any = auto.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    model, info = loaded
    head_prefixes = tuple(p + "." for p in spec.head_paths) + spec.head_paths
    missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(head_prefixes))
    if missing:
        raise HeadMismatchError(
            f"{name_or_path!r} has no pre-trained {spec.head} LM head: {len(missing)} head "
            f"weight(s) are missing from the checkpoint (e.g. {missing[:3]}), so transformers "
            "would initialise them at random. Use a checkpoint that ships its head (the "
            "pre-trained backbone, not a fine-tuned classifier) or pass a head module"
        )
    model.eval()
    return model


def load_lm_head(
    source: str | os.PathLike[str] | nn.Module,
    *,
    model: nn.Module | None = None,
    **from_pretrained_kwargs: Any,
) -> LMHead:
    """Resolve a pre-trained language-model head.

    Args:
        source: a Hugging Face checkpoint name or local path (loaded with
            ``AutoModelForMaskedLM`` or ``AutoModelForCausalLM``), a Hugging Face LM model
            (``BertForMaskedLM``, ``GPT2LMHeadModel``, ...), or any module mapping hidden
            states to vocabulary logits, which is accepted as it is.
        model: the classifier the head will decode; when given, the hidden size and the
            vocabulary are checked against it.
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``revision``,
            ``local_files_only``, ...).

    Returns:
        An :class:`LMHead` in eval mode. For pre-norm families (GPT-2, Llama) it applies the
        model's final norm before the unembedding (the logit-lens convention).

    Raises:
        HeadMismatchError: the checkpoint has no trained head, or the head does not fit
            ``model``.
        ModelOutputError: a weight of the head is NaN or infinite.
        TypeError: ``source`` is ``None``.
        UnsupportedModelError: the family is unknown and no explicit module was given.
    """
    if source is None:
        raise TypeError(
            "lm_head is None: give the pre-trained backbone's LM head (a module, or a checkpoint "
            "name/path for load_lm_head), e.g. DecodedLayerSaliency.for_model(model, "
            "'bert-base-uncased', tokenizer)"
        )
    if isinstance(source, LMHead):
        head = source
    elif isinstance(source, nn.Module):
        is_hf_lm = getattr(source, "config", None) is not None and hasattr(source, "base_model")
        head = head_from_model(source) if is_hf_lm else LMHead(source, source="module")
    else:
        name = os.fspath(source)
        head = head_from_model(_load_lm_model(name, **from_pretrained_kwargs), source=name)
    if model is not None:
        check_head_compatible(head, model)
    return head.eval()


def default_layers(model: nn.Module) -> list[nn.Module]:
    """The candidate layers of a Hugging Face model: embeddings, then every block.

    The embeddings are left out when their output size differs from the blocks' (ELECTRA with a
    projection), since no head can decode both.
    """
    parts = find_model_parts(model)
    config = getattr(model, "config", None)
    embedding_size = _config_dim(config, "embedding_size") if config else None
    hidden_size = _config_dim(config, "hidden_size") if config else None
    if embedding_size and hidden_size and embedding_size != hidden_size:
        return list(parts.blocks)
    return parts.layers
