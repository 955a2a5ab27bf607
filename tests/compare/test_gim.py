"""GIM: each backward modification by hand, the method with them off is Input×Gradient from the
PAD baseline, every family through transformers' attention interface, batching, the model left
as found, and a clear error for a family it cannot modify."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from tiny_models import family_classifier
from torch import nn

from captum_layer_saliency.attr import layer_gradients_and_outputs
from captum_layer_saliency.compare.methods.gim import (
    FrozenLayerNorm,
    FrozenRMSNorm,
    GIMAttributor,
    scale_grad,
    temperature_softmax,
)
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.compare.plan import method_passes
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.surgery import UnsupportedModelError

OFF = {"temperature": 1.0, "q_scale": 1.0, "k_scale": 1.0, "v_scale": 1.0, "freeze_norms": False}


def test_softmax_backward_at_a_temperature_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 0.0]], requires_grad=True)
    g = torch.tensor([[1.0, 0.0, -1.0]])
    out = temperature_softmax(x, 2.0)
    torch.testing.assert_close(out, torch.softmax(x, -1))  # the forward is unchanged
    (grad,) = torch.autograd.grad(out, x, g)
    s = torch.softmax(x.detach() / 2, -1)  # softmax's Jacobian, taken at x / 2
    expected = s * (g - (g * s).sum(-1, keepdim=True))
    torch.testing.assert_close(grad, expected)
    (plain,) = torch.autograd.grad(temperature_softmax(x, 1.0), x, g)
    (torch_grad,) = torch.autograd.grad(torch.softmax(x, -1), x, g)
    torch.testing.assert_close(plain, torch_grad)


def test_scale_grad_scales_only_the_gradient() -> None:
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x.detach())
    (grad,) = torch.autograd.grad((y * torch.tensor([4.0, 8.0])).sum(), x)
    torch.testing.assert_close(grad, torch.tensor([1.0, 2.0]))


def test_frozen_norms_keep_the_forward_and_detach_their_statistics() -> None:
    torch.manual_seed(0)
    norm = nn.LayerNorm(5).eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1, 1)
    frozen = FrozenLayerNorm(5, norm.eps)
    frozen.weight, frozen.bias = norm.weight, norm.bias
    x = torch.randn(2, 5, requires_grad=True)
    torch.testing.assert_close(frozen(x), norm(x))
    g = torch.randn(2, 5)
    (grad,) = torch.autograd.grad(frozen(x), x, g)
    std = (x.detach().var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    wg = norm.weight.detach() * g  # the centring stays in the graph, the deviation does not
    torch.testing.assert_close(grad, (wg - wg.mean(-1, keepdim=True)) / std)

    weight = nn.Parameter(torch.tensor([1.0, 2.0, 0.5]))
    rms_norm = FrozenRMSNorm(weight, 1e-6)
    y = torch.tensor([[3.0, -4.0, 0.0]], requires_grad=True)
    rms = ((9 + 16) / 3 + 1e-6) ** 0.5
    torch.testing.assert_close(rms_norm(y), weight.detach() * y.detach() / rms)
    (grad,) = torch.autograd.grad(rms_norm(y).sum(), y)
    torch.testing.assert_close(grad, (weight.detach() / rms).expand(1, 3))


def test_with_its_modifications_off_gim_is_input_x_gradient_from_the_pad_baseline(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    clf = tiny_classifier
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    scores = GIMAttributor(clf, **OFF).attribute(ids, mask, target)
    words = clf.model.get_input_embeddings()
    (grad,), (emb,) = layer_gradients_and_outputs(clf.forward_func, [words], ids, target, (mask,))
    special = clf.special_mask(ids)
    base = torch.where(mask.bool() & ~special, torch.full_like(ids, 0), ids)
    with torch.no_grad():
        expected = (grad * (emb - words(base))).sum(-1)
    expected = expected.masked_fill(~(mask.bool() & ~special), 0.0)
    torch.testing.assert_close(scores.float(), expected, atol=1e-5, rtol=1e-4)
    gim = get_method("gim", clf).attribute(ids, mask, target)
    assert not torch.allclose(gim.float(), expected, atol=1e-3)  # the modifications matter
    assert method_passes("gim", 10) == 1


@pytest.mark.parametrize(
    ("family", "extra"),
    [
        ("bert", {}),
        ("roberta", {}),
        ("distilbert", {}),
        ("electra", {}),
        ("gpt2", {}),
        ("llama", {}),
        ("llama", {"num_key_value_heads": 1}),  # grouped-query attention
    ],
)
def test_every_family_of_the_attention_interface_batched_equals_one_at_a_time(
    family: str, extra: dict[str, int], tiny_tokenizer: T.BertTokenizer
) -> None:
    clf = family_classifier(family, tiny_tokenizer, **extra)
    model = clf.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    kinds = [type(m).__name__ for m in model.modules()]
    implementation = model.config._attn_implementation
    enc = clf.encode(["the movie was good", "bad"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        logits = clf.forward_func(ids, mask)
    gim = get_method("gim", clf)
    scores = gim.attribute(ids, mask, torch.tensor([1, 0]))
    assert torch.isfinite(scores).all() and scores.abs().sum() > 0
    for row in range(2):
        n = int(mask[row].sum())
        one = gim.attribute(
            ids[row : row + 1, :n], mask[row : row + 1, :n], torch.tensor([1 - row])
        )
        torch.testing.assert_close(one, scores[row : row + 1, :n], atol=1e-5, rtol=1e-4)
    # The user's model as found: weights, modules, attention, no hook, the same logits.
    assert model.config._attn_implementation == implementation
    assert [type(m).__name__ for m in model.modules()] == kinds
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(clf.forward_func(ids, mask), logits)


def test_a_family_outside_the_attention_interface_is_a_clear_error(
    tiny_tokenizer: T.BertTokenizer,
) -> None:
    clf = family_classifier("deberta-v2", tiny_tokenizer)
    with pytest.raises(UnsupportedModelError, match="attention interface"):
        get_method("gim", clf)
    with pytest.raises(ValueError, match="temperature must be positive"):
        GIMAttributor(family_classifier("bert", tiny_tokenizer), temperature=0.0)
