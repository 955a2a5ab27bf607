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


def _relevance_by_hand(clf, twin, layer: int, ids, mask, target):  # type: ignore[no-untyped-def]
    """gradient x activation at ``layer`` of ``twin`` (its backward: AttnLRP's), summed over the
    hidden size: the layer's state made a leaf by a hook, the target logits' gradient taken."""
    from captum_layer_saliency.models.classifier import classifier_forward
    from captum_layer_saliency.models.surgery import find_model_parts

    saved = {}

    def leaf(module, args, out):  # type: ignore[no-untyped-def]
        state = (out[0] if isinstance(out, tuple) else out).detach().requires_grad_()
        saved["state"] = state
        return (state, *out[1:]) if isinstance(out, tuple) else state

    handle = find_model_parts(twin).layers[layer].register_forward_hook(leaf)
    try:
        logits = classifier_forward(twin, clf.tokenizer)(ids, mask)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[torch.arange(len(target)), target].sum(), saved["state"])
    return (grad * saved["state"]).sum(-1).detach()


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_dls_lrp_is_gradient_x_activation_at_the_layer_through_attnlrps_backward(
    family: str, tiny_tokenizer: T.BertTokenizer
) -> None:
    from captum_layer_saliency.compare.methods.ours import ExplainerAttributor
    from captum_layer_saliency.models.passes import PassCounter

    clf = family_classifier(family, tiny_tokenizer)
    clf.lm_head = nn.Linear(clf.model.config.hidden_size, clf.model.config.vocab_size)
    model = clf.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    enc = clf.encode(["the movie was good", "bad"])
    ids, mask, target = enc["input_ids"], enc["attention_mask"], torch.tensor([1, 0])
    real = mask.bool() & ~clf.special_mask(ids)
    for layer in (0, 1):
        method = get_method("dls_lrp", clf, layer=layer)
        assert isinstance(method, ExplainerAttributor) and method.copy is not model
        with PassCounter(model) as counter:  # the copy's passes are booked to the model
            scores = method.attribute(ids, mask, target)
        assert counter.per_example(2) == {"forwards": 1.0, "backwards": 1.0}
        hand = _relevance_by_hand(clf, method.copy, layer, ids, mask, target)
        torch.testing.assert_close(scores[real], hand[real], rtol=1e-4, atol=1e-6)
        assert (scores[~real] == 0).all()
        # Not the plain backward: dls_gradient at the same layer differs.
        plain = get_method("dls_gradient", clf, layer=layer).attribute(ids, mask, target)
        assert not torch.allclose(scores.float(), plain.float(), atol=1e-4)
        # Batched equals one at a time.
        n = int(mask[1].sum())
        one = method.attribute(ids[1:, :n], mask[1:, :n], target[1:])
        torch.testing.assert_close(one, scores[1:, :n], rtol=1e-4, atol=1e-6)
    if family == "llama":  # no position embeddings: at the word embeddings it is AttnLRP
        at_embeddings = get_method("dls_lrp", clf, layer=0).attribute(ids, mask, target)
        attnlrp = get_method("attnlrp", clf).attribute(ids, mask, target)
        torch.testing.assert_close(at_embeddings, attnlrp, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert method_passes("dls_lrp", 10) == method_passes("dls_gradient", 10)
    assert resolve_method_name("dls_attnlrp") == "dls_lrp"
