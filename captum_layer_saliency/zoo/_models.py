"""The transformers models the default-model artifacts apply to, and applying them.

Both the loader (:mod:`.load`) and the build (:mod:`.build`) make their models here: a
``BertForSequenceClassification`` or ``BertForMaskedLM`` on the bundled all-MiniLM-L6-v2 encoder,
and the MLM head whose decoder is tied to the encoder's word embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from captum_layer_saliency.models.pretrained import encoder_path, quiet_transformers
from captum_layer_saliency.zoo._lora import merge_lora
from captum_layer_saliency.zoo._manifest import ArtifactError

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, BertForSequenceClassification
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead


def encoder_tokenizer() -> Any:
    """The bundled encoder's tokenizer.

    Returns:
        A Hugging Face tokenizer.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(encoder_path()))


def classifier_model(labels: Sequence[str]) -> BertForSequenceClassification:
    """A ``BertForSequenceClassification`` on the pre-trained encoder (classifier untrained).

    Args:
        labels: the class names, in class-id order.

    Returns:
        The model, with ``id2label``/``label2id`` set from ``labels``.
    """
    from transformers import BertForSequenceClassification

    with quiet_transformers():
        model = BertForSequenceClassification.from_pretrained(
            str(encoder_path()),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
    return model


def masked_lm_model() -> BertForMaskedLM:
    """A ``BertForMaskedLM`` on the pre-trained encoder (its head still untrained).

    Returns:
        The model.
    """
    from transformers import BertForMaskedLM

    with quiet_transformers():
        return BertForMaskedLM.from_pretrained(str(encoder_path()))


def new_mlm_head(word_embeddings: Tensor) -> BertOnlyMLMHead:
    """An untrained ``BertOnlyMLMHead`` whose decoder is tied to ``word_embeddings``.

    Args:
        word_embeddings: the encoder's (frozen) input embedding matrix ``(V, K)``.

    Returns:
        The head; only its transform and its bias are meant to be trained.

    Raises:
        TypeError: ``word_embeddings`` is not an ``nn.Parameter``.
    """
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

    if not isinstance(word_embeddings, nn.Parameter):
        raise TypeError("word_embeddings must be the encoder's embedding nn.Parameter")
    config = BertConfig.from_pretrained(str(encoder_path()))
    head = BertOnlyMLMHead(config)
    predictions = head.predictions
    predictions.decoder.weight = word_embeddings
    # BERT's output bias lives in `predictions.bias`; the decoder must use that one parameter
    predictions.decoder.bias = predictions.bias
    nn.init.normal_(predictions.transform.dense.weight, std=config.initializer_range)
    nn.init.zeros_(predictions.transform.dense.bias)
    nn.init.zeros_(predictions.bias)
    return head


def head_trainable(head: nn.Module) -> dict[str, nn.Parameter]:
    """The head's trained parameters by name (the tied decoder weight excluded).

    Args:
        head: an MLM head from :func:`new_mlm_head`.

    Returns:
        Its transform's parameters and its output bias.
    """
    return {n: p for n, p in head.named_parameters(remove_duplicate=False) if "decoder" not in n}


def load_head(tensors: dict[str, Tensor], word_embeddings: Tensor) -> BertOnlyMLMHead:
    """Rebuild the trained head from its stored tensors, tied to ``word_embeddings``.

    Args:
        tensors: the head artifact's tensors.
        word_embeddings: the encoder's word embedding matrix.

    Returns:
        The head in eval mode, with gradients off.

    Raises:
        ArtifactError: the artifact lacks some of the head's parameters.
    """
    head = new_mlm_head(word_embeddings)
    trainable = head_trainable(head)
    missing = sorted(set(trainable) - set(tensors))
    if missing:
        raise ArtifactError(f"the MLM head artifact lacks {missing}")
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(tensors[name].to(param.dtype))
    for p in head.parameters():
        p.requires_grad_(False)
    return head.eval()


def apply_classifier(
    model: BertForSequenceClassification, tensors: dict[str, Tensor], rank: int, alpha: float
) -> BertForSequenceClassification:
    """Merge a classifier artifact into a fresh ``BertForSequenceClassification``.

    Args:
        model: built by :func:`classifier_model` with the task's labels.
        tensors: the artifact's tensors (``lora_A.*``, ``lora_B.*``, ``full.*``).
        rank: LoRA rank.
        alpha: LoRA ``alpha`` (the update is scaled by ``alpha / rank``).

    Returns:
        ``model``, updated in place, in eval mode.

    Raises:
        ArtifactError: the artifact does not fit the model.
    """
    full = {k[len("full.") :]: v for k, v in tensors.items() if k.startswith("full.")}
    try:
        merged = merge_lora(model, tensors, rank, alpha)
        _, unexpected = model.load_state_dict(full, strict=False)
    except (KeyError, ValueError, RuntimeError, AttributeError) as exc:
        raise ArtifactError(f"classifier artifact does not fit the model: {exc}") from exc
    if unexpected or merged == 0:
        raise ArtifactError(
            f"classifier artifact does not fit the model (unexpected {unexpected}, "
            f"{merged} LoRA layers)"
        )
    return model.eval()
