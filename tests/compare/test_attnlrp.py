"""AttnLRP: each rule by hand, conservation where the rules promise it, every family of the
attention interface batched equal to one at a time, the user's model as found, and a clear
error for a family it cannot modify."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from tiny_models import family_classifier, family_configs
from torch import nn

from captum_layer_saliency.compare.methods.attnlrp import (
    AttnLRPAttributor,
    IdentityRule,
    UniformGatedMLP,
    _apply_rules,
    identity_rule,
)
from captum_layer_saliency.compare.methods.registry import get_method, resolve_method_name
from captum_layer_saliency.compare.plan import method_passes
from captum_layer_saliency.models.surgery import UnsupportedModelError


def test_the_identity_rule_by_hand() -> None:
    x = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    g = torch.tensor([1.0, 3.0, -2.0])
    gelu = nn.GELU()
    out = identity_rule(gelu, x)
    torch.testing.assert_close(out, gelu(x))  # the forward is unchanged
    (grad,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(grad, g * gelu(x.detach()) / x.detach())
    (plain,) = torch.autograd.grad(gelu(x), x, g)
    assert not torch.allclose(grad, plain)


def test_the_rules_conserve_relevance_through_a_bias_free_mlp() -> None:
    # Linear -> GELU -> Linear without biases: with the identity rule, x . dy/dx sums to y
    # exactly (every step passes its relevance on); plain Input x Gradient does not.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8, bias=False), nn.GELU(), nn.Linear(8, 1, bias=False))
    x = torch.randn(3, 4, requires_grad=True)
    plain_y = net(x)
    (plain,) = torch.autograd.grad(plain_y.sum(), x)
    assert _apply_rules(net) == 1 and isinstance(net[1], IdentityRule)
    y = net(x)
    torch.testing.assert_close(y, plain_y)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close((x * grad).sum(-1), y.detach().squeeze(-1))
    assert not torch.allclose((x * plain).sum(-1), y.detach().squeeze(-1), atol=1e-3)


def test_the_gated_mlp_halves_the_product_and_conserves_relevance() -> None:
    config = family_configs()["llama"]
    torch.manual_seed(0)
    mlp = T.models.llama.modeling_llama.LlamaMLP(config)
    for p in mlp.parameters():
        nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 16, requires_grad=True)
    rule = UniformGatedMLP(mlp)
    out = rule(x)
    torch.testing.assert_close(out, mlp(x))
    (grad,) = torch.autograd.grad(out.sum(), x)
    # Every projection is bias-free (Llama's default): the relevance is conserved.
    torch.testing.assert_close((x * grad).sum(-1), out.detach().sum(-1), rtol=1e-4, atol=1e-5)
    # By hand: d/dx of down(act(gate x) * up x) / 2 with act's gradient f(z)/z.
    with torch.no_grad():
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        act = mlp.act_fn(gate)
        g_product = torch.ones(2, 16) @ mlp.down_proj.weight / 2
        expected = (g_product * up * act / gate) @ mlp.gate_proj.weight + (
            g_product * act
        ) @ mlp.up_proj.weight
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("family", "extra", "rules"),
    [
        ("bert", {}, {"IdentityRule"}),
        ("roberta", {}, {"IdentityRule"}),
        ("distilbert", {}, {"IdentityRule"}),
        ("electra", {}, {"IdentityRule"}),
        ("gpt2", {}, {"IdentityRule"}),
        ("llama", {}, {"UniformGatedMLP", "IdentityRule"}),
        ("llama", {"num_key_value_heads": 1}, {"UniformGatedMLP", "IdentityRule"}),
    ],
)
def test_every_family_of_the_attention_interface_batched_equals_one_at_a_time(
    family: str, extra: dict[str, int], rules: set[str], tiny_tokenizer: T.BertTokenizer
) -> None:
    clf = family_classifier(family, tiny_tokenizer, **extra)
    model = clf.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    kinds = [type(m).__name__ for m in model.modules()]
    enc = clf.encode(["the movie was good", "bad"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        logits = clf.forward_func(ids, mask)
    lrp = get_method("attnlrp", clf)
    assert isinstance(lrp, AttnLRPAttributor)
    assert rules <= {type(m).__name__ for m in lrp.lrp_model.modules()}
    scores = lrp.attribute(ids, mask, torch.tensor([1, 0]))
    assert torch.isfinite(scores).all() and scores.abs().sum() > 0
    for row in range(2):
        n = int(mask[row].sum())
        one = lrp.attribute(
            ids[row : row + 1, :n], mask[row : row + 1, :n], torch.tensor([1 - row])
        )
        torch.testing.assert_close(one, scores[row : row + 1, :n], atol=1e-5, rtol=1e-4)
    # The rules matter: not Input x Gradient, not GIM.
    ixg = get_method("input_x_gradient", clf).attribute(ids, mask, torch.tensor([1, 0]))
    gim = get_method("gim", clf).attribute(ids, mask, torch.tensor([1, 0]))
    assert not torch.allclose(scores.float(), ixg.float(), atol=1e-4)
    assert not torch.allclose(scores.float(), gim.float(), atol=1e-4)
    # The user's model as found: weights, modules, no hook, the same logits.
    assert [type(m).__name__ for m in model.modules()] == kinds
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(clf.forward_func(ids, mask), logits)


def test_the_registry_names_its_cost_and_a_family_it_cannot_modify_is_a_clear_error(
    tiny_tokenizer: T.BertTokenizer,
) -> None:
    assert method_passes("attnlrp", 10) == 1
    assert resolve_method_name("attn_lrp") == "attnlrp"
    with pytest.raises(UnsupportedModelError, match="attnlrp needs a model whose attention"):
        get_method("attnlrp", family_classifier("deberta-v2", tiny_tokenizer))


@pytest.mark.parametrize(
    ("method", "backwards"), [("attnlrp", 1.0), ("gim", 1.0), ("decompx", 0.0)]
)
def test_methods_on_their_own_copy_book_their_passes(
    method: str, backwards: float, tiny_tokenizer: T.BertTokenizer
) -> None:
    # A pass counter hooks the user's model, which these methods never run: they book theirs.
    from captum_layer_saliency.models.passes import PassCounter

    clf = family_classifier("bert", tiny_tokenizer)
    enc = clf.encode(["the movie was good", "bad", "fun"])
    explainer = get_method(method, clf)
    with PassCounter(clf.model) as counter:
        explainer.attribute(enc["input_ids"], enc["attention_mask"], torch.tensor([1, 0, 1]))
    assert counter.per_example(3) == {"forwards": 1.0, "backwards": backwards}
