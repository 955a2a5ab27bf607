"""Model surgery: find a Hugging Face model's embeddings, blocks, final norm and LM head.

One small table per family says where things live; anything not in the table fails loudly with
the model's type in the message, rather than guessing and decoding the wrong tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from captum_layer_saliency.errors import CaptumLayerSaliencyError

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "ModelParts",
    "UnsupportedModelError",
    "embedding_layer",
    "find_model_parts",
    "get_submodule",
    "layer_names",
    "model_family",
]


class UnsupportedModelError(CaptumLayerSaliencyError, ValueError):
    """The model's family is not known to :mod:`captum_layer_saliency.models.surgery`."""


@dataclass(frozen=True)
class FamilySpec:
    """Where one model family keeps its parts, relative to ``model.base_model``.

    Attributes:
        embeddings: path of the module whose output is the layer-0 hidden state.
        blocks: path of the ``ModuleList`` of transformer blocks.
        final_norm: path of the norm applied after the last block in pre-norm models
            (the logit-lens convention applies it before the LM head), or ``None``.
        head: the pre-trained head kind: ``"masked"`` or ``"causal"``.
        head_paths: paths, relative to the LM model, of the modules that make up the LM head,
            applied in order to a hidden state.
        shared_blocks: the blocks are one module applied repeatedly (ALBERT), so a forward hook
            cannot tell the layers apart.
    """

    embeddings: str
    blocks: str
    final_norm: str | None
    head: str
    head_paths: tuple[str, ...]
    shared_blocks: bool = False


_BERT_LIKE = FamilySpec("embeddings", "encoder.layer", None, "masked", ("cls",))
_ROBERTA_LIKE = FamilySpec("embeddings", "encoder.layer", None, "masked", ("lm_head",))

FAMILIES: dict[str, FamilySpec] = {
    "bert": _BERT_LIKE,
    "roberta": _ROBERTA_LIKE,
    "xlm-roberta": _ROBERTA_LIKE,
    "camembert": _ROBERTA_LIKE,
    "deberta-v2": _BERT_LIKE,
    "deberta": _BERT_LIKE,
    "electra": FamilySpec(
        "embeddings",
        "encoder.layer",
        None,
        "masked",
        ("generator_predictions", "generator_lm_head"),
    ),
    "distilbert": FamilySpec(
        "embeddings",
        "transformer.layer",
        None,
        "masked",
        ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
    ),
    "albert": FamilySpec(
        "embeddings", "encoder.albert_layer_groups", None, "masked", ("predictions",), True
    ),
    # GPT-2 adds token and position embeddings inside the model; the dropout after the sum is
    # the first module whose output is the layer-0 hidden state.
    "gpt2": FamilySpec("drop", "h", "ln_f", "causal", ("transformer.ln_f", "lm_head")),
    "llama": FamilySpec("embed_tokens", "layers", "norm", "causal", ("model.norm", "lm_head")),
    "mistral": FamilySpec("embed_tokens", "layers", "norm", "causal", ("model.norm", "lm_head")),
    "qwen2": FamilySpec("embed_tokens", "layers", "norm", "causal", ("model.norm", "lm_head")),
}


def model_family(model: nn.Module) -> str:
    """The ``config.model_type`` of a Hugging Face model.

    Raises:
        UnsupportedModelError: the model has no Hugging Face config.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no Hugging Face config.model_type; pass the layers "
            "and the LM head explicitly"
        )
    return model_type


def family_spec(model_type: str) -> FamilySpec:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model family {model_type!r} is not supported; known families: "
            f"{sorted(FAMILIES)}. Pass the layers and the LM head module explicitly."
        ) from None


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule(path)`` with an error that names the model and the path."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise UnsupportedModelError(
            f"{type(root).__name__} has no submodule {path!r}; its children are "
            f"{[name for name, _ in root.named_children()]}"
        ) from None


@dataclass
class ModelParts:
    """The parts of a transformer that layer saliency needs.

    Attributes:
        family: ``config.model_type``.
        embeddings: the module whose output is the layer-0 hidden state.
        blocks: the transformer blocks, first to last.
        final_norm: the norm pre-norm families apply after the last block, else ``None``.
    """

    family: str
    embeddings: nn.Module
    blocks: list[nn.Module]
    final_norm: nn.Module | None
    #: module paths of :attr:`layers` inside the model (``"bert.encoder.layer.4"``).
    layer_paths: list[str] = field(default_factory=list)

    @property
    def layers(self) -> list[nn.Module]:
        """Every candidate layer: the embeddings (layer 0), then each block (1..L)."""
        return [self.embeddings, *self.blocks]

    @property
    def layer_names(self) -> list[str]:
        """The one naming scheme of the library: ``"embeddings"`` (index 0), ``"block l"``."""
        return layer_names(len(self.blocks))


def layer_names(n_blocks: int) -> list[str]:
    """``["embeddings", "block 1", ..., "block n"]``: the layers' names, by index.

    Index 0 is the embeddings' output, index ``l`` the output of block ``l`` (counted from 1,
    unlike module paths).
    """
    return ["embeddings"] + [f"block {i}" for i in range(1, n_blocks + 1)]


def find_model_parts(model: nn.Module) -> ModelParts:
    """Find the embeddings, blocks and final norm of a Hugging Face model.

    Args:
        model: a Hugging Face model of a known family, with or without a task head.

    Returns:
        The model's :class:`ModelParts`.

    Raises:
        UnsupportedModelError: the family is unknown, a part is missing, or the blocks are shared
            across layers (ALBERT), so hooks cannot tell the layers apart.
    """
    family = model_family(model)
    spec = family_spec(family)
    if spec.shared_blocks:
        raise UnsupportedModelError(
            f"{family} applies one shared block at every layer, so forward hooks cannot tell "
            "the layers apart; layer attribution is not supported for this family (its LM "
            "head can still be loaded)"
        )
    base: Any = getattr(model, "base_model", model)
    blocks = get_submodule(base, spec.blocks)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise UnsupportedModelError(f"{family}: {spec.blocks!r} is not a non-empty ModuleList")
    final_norm = get_submodule(base, spec.final_norm) if spec.final_norm else None
    embeddings = get_submodule(base, spec.embeddings)
    paths = {id(m): name for name, m in model.named_modules()}
    layer_paths = [paths.get(id(m), "") for m in [embeddings, *blocks]]
    return ModelParts(family, embeddings, list(blocks), final_norm, layer_paths)


def embedding_layer(model: nn.Module, layer: str = "embeddings") -> nn.Module:
    """The module whose output the gradient methods attribute to.

    Args:
        model: a Hugging Face model.
        layer: ``"embeddings"`` for the whole embeddings module (Thermostat's choice; DLS's
            layer 0) or ``"word_embeddings"`` for the token embedding table alone.

    Returns:
        The embeddings found by :func:`find_model_parts`, or ``model.get_input_embeddings()``
        for ``"word_embeddings"`` and unknown families.

    Raises:
        ValueError: an unknown ``layer``, or a model without input embeddings.
    """
    if layer not in ("embeddings", "word_embeddings"):
        raise ValueError(f"layer must be 'embeddings' or 'word_embeddings', got {layer!r}")
    if layer == "embeddings":
        try:
            return find_model_parts(model).embeddings
        except UnsupportedModelError:
            pass  # fall back to the input embeddings, which every HF model exposes
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        raise ValueError(f"cannot find the input embeddings of {type(model).__name__}")
    module: nn.Module = get()
    return module
