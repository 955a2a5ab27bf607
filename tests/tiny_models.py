"""Small models for the core tests: a hand-set toy whose saliency can be worked out on paper,
and tiny random Hugging Face models of each family."""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import transformers as T
from torch import Tensor, nn

from captum_layer_saliency.models.classifier import TextClassifier

TINY = dict(
    vocab_size=60,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=64,
)


class ToyClassifier(nn.Module):
    """``logits = W mean_i(E[t_i])`` over the real positions; every quantity is hand-computable.

    Vocabulary: 0 = [CLS] (special), 1 = "a", 2 = "b", 3 = "c". Embeddings ``e0 = (1, 1)``,
    ``e1 = (1, 0)``, ``e2 = (0, 1)``, ``e3 = (1, 1)``; ``W = [[1, 2], [-1, 0]]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(4, 2)
        self.cls = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.emb.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
            self.cls.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        hidden = self.emb(ids)
        m = torch.ones_like(ids) if mask is None else mask
        pooled = (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return self.cls(pooled)


def toy_head() -> nn.Linear:
    """Logits ``(0, ln3 * h0, ln3 * h1, 0)``: ``e1`` decodes to ``(1, 3, 1, 1) / 6``."""
    head = nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        head.weight.copy_(
            torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [0.0, math.log(3)], [0.0, 0.0]])
        )
    return head


def tiny_bert(num_labels: int = 3, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A tiny random BERT classifier and a BERT masked-LM sharing its config (eval mode)."""
    torch.manual_seed(seed)
    config = T.BertConfig(**TINY, num_labels=num_labels)
    clf = T.BertForSequenceClassification(config).eval()
    mlm = T.BertForMaskedLM(config).eval()
    # Tie the head to the classifier's embeddings so decoding is coherent at the bottom layers.
    mlm.bert.load_state_dict(clf.bert.state_dict(), strict=False)
    return clf, mlm


def family_configs() -> dict[str, T.PretrainedConfig]:
    """A tiny config of every family whose LM head ``load_lm_head`` resolves."""
    small = {k: v for k, v in TINY.items()}
    return {
        "bert": T.BertConfig(**small),
        "roberta": T.RobertaConfig(**small),
        "distilbert": T.DistilBertConfig(
            vocab_size=60, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64
        ),
        "albert": T.AlbertConfig(embedding_size=8, **small),
        "electra": T.ElectraConfig(embedding_size=16, **small),
        "deberta-v2": T.DebertaV2Config(**small),
        "gpt2": T.GPT2Config(
            vocab_size=60,
            n_embd=16,
            n_layer=2,
            n_head=2,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "llama": T.LlamaConfig(
            vocab_size=60,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
    }


CAUSAL = {"gpt2", "llama"}


def nan_output_copy(clf: TextClassifier) -> TextClassifier:
    """A copy of a BERT ``clf`` whose logits are NaN (its classifier's bias is NaN)."""
    model = copy.deepcopy(clf.model)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    return dataclasses.replace(clf, model=model, name="nan")


def family_classifier(
    family: str, tokenizer: T.PreTrainedTokenizerBase, **extra: int
) -> TextClassifier:
    """A seeded tiny random two-class classifier of ``family`` (eval mode) with ``tokenizer``.

    ``extra`` sets further config fields (e.g. ``num_key_value_heads=1``).
    """
    config = family_configs()[family]
    for key, value in {
        "num_labels": 2,
        "pad_token_id": 0,
        "initializer_range": 0.5,
        **extra,
    }.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = T.AutoModelForSequenceClassification.from_config(config).eval()
    return TextClassifier(model=model, tokenizer=tokenizer, labels=["a", "b"], max_length=16)
