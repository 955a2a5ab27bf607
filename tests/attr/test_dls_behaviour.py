"""DecodedLayerSaliency on tiny random Hugging Face models: Captum conventions, batching,
hooks, model state, layer lists and the selector, and every bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_models import tiny_bert
from torch import nn

from captum_layer_saliency import (
    DecodedLayerSaliency,
    HeadMismatchError,
    LayerCoherenceSelector,
    find_model_parts,
    load_lm_head,
)
from captum_layer_saliency.attr.coherence import (
    COHERENCE_SCORES,
    layer_position_coherence,
    position_coherence,
)
from captum_layer_saliency.attr.decoding import candidate_mask, decode_layer, decode_top1

SPECIAL = [0, 1, 2]  # pad, [CLS], [SEP] in these tests


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, nn.Module]:
    return tiny_bert()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(
        [[1, 5, 6, 7, 5, 2, 0, 0], [1, 8, 9, 10, 11, 12, 13, 2], [1, 20, 2, 0, 0, 0, 0, 0]]
    )
    return ids, (ids != 0).long()


#: The default (integrated gradients at the layer) and the paper's gradient x activation.
LAYER_METHODS = ["integrated_gradients", "gradient"]


def all_hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def build(models: tuple[nn.Module, nn.Module], **options: object) -> DecodedLayerSaliency:
    clf, mlm = models
    options.setdefault("special_token_ids", SPECIAL)
    return DecodedLayerSaliency.for_model(clf, mlm, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("layer_method", LAYER_METHODS)
@pytest.mark.parametrize("aggregation", ["grad_x_act", "gradcam", "grad_norm"])
@pytest.mark.parametrize("mapping", ["decoded", "identity", "hybrid"])
def test_batched_equals_one_at_a_time(
    models, aggregation: str, mapping: str, layer_method: str
) -> None:
    dls = build(
        models,
        aggregation=aggregation,
        mapping=mapping,
        top_k=3,
        normalize=True,
        layer_method=layer_method,
    )
    ids, mask = batch()
    together = dls.attribute(ids, target=1, attention_mask=mask)
    assert isinstance(together, torch.Tensor)
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        alone = dls.attribute(ids[b : b + 1, :n], target=1, attention_mask=mask[b : b + 1, :n])
        torch.testing.assert_close(together[b : b + 1, :n], alone, rtol=1e-4, atol=1e-6)
        assert together[b, n:].eq(0).all()


def test_online_selection_is_per_example(models) -> None:
    dls = build(models, selection="example")
    ids, mask = batch()
    together = dls.attribute(ids, attention_mask=mask)
    picks = dls.last_selected_
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        alone = dls.attribute(ids[b : b + 1, :n], attention_mask=mask[b : b + 1, :n])
        assert dls.last_selected_ == [picks[b]]  # type: ignore[index]
        torch.testing.assert_close(together[b : b + 1, :n], alone, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("score", sorted(COHERENCE_SCORES))
def test_online_scores_decode_only_what_they_need_and_agree_with_full_decoding(
    models, score: str
) -> None:
    """The argmax-only path of self_recovery gives the full decoding's scores and picks."""
    clf, mlm = models
    ids, mask = batch()
    head = load_lm_head(mlm)
    candidates = candidate_mask(ids, mask, SPECIAL)
    with torch.no_grad():
        hidden = clf.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    full = decode_layer(hidden, ids, mask, candidates, head, chunk_size=5)
    fast = layer_position_coherence(hidden, ids, mask, candidates, head, score, chunk_size=5)
    torch.testing.assert_close(fast, position_coherence(full, ids, score))
    torch.testing.assert_close(decode_top1(hidden, ids, head, chunk_size=3), full.top1)
    # Online, identity mapping (no decoding for the maps) and decoded mapping (the maps' own
    # decoding reused) select the same layers from the same scores.
    selector = LayerCoherenceSelector(score=score)
    per_example = {"selection": "example", "position_sample": None}
    identity = build(models, selector=selector, mapping="identity", **per_example)
    identity.attribute(ids, attention_mask=mask)
    decoded = build(
        models, selector=LayerCoherenceSelector(score=score), mapping="decoded", **per_example
    )
    decoded.attribute(ids, attention_mask=mask)
    assert identity.last_selected_ == decoded.last_selected_
    assert identity.last_layer_scores_ is not None and decoded.last_layer_scores_ is not None
    torch.testing.assert_close(identity.last_layer_scores_, decoded.last_layer_scores_)


def test_argmax_only_decoding_still_checks_the_head(models) -> None:
    clf, _ = models
    ids, _ = batch()
    hidden = torch.zeros(*ids.shape, 16)
    with pytest.raises(HeadMismatchError, match="outside the LM head's vocabulary of 10"):
        decode_top1(hidden, ids, load_lm_head(nn.Linear(16, 10)))
    with pytest.raises(HeadMismatchError, match="hidden size 8"):
        decode_top1(hidden, ids, load_lm_head(nn.Linear(8, 60)))


def test_output_is_detached_and_specials_get_zero(models) -> None:
    ids, mask = batch()
    out = build(models).attribute(ids, target=0, attention_mask=mask)
    assert not out.requires_grad and out.shape == ids.shape
    assert out[torch.isin(ids, torch.tensor(SPECIAL))].eq(0).all()


def test_one_layer_gives_a_tensor_a_list_without_selector_gives_a_list(models) -> None:
    clf, _ = models
    ids, mask = batch()
    one = build(models, layers=clf.bert.encoder.layer[0]).attribute(
        ids, target=0, attention_mask=mask
    )
    assert isinstance(one, torch.Tensor)
    many = build(models, selector=None).attribute(ids, target=0, attention_mask=mask)
    assert isinstance(many, list) and len(many) == 3  # embeddings + 2 blocks
    torch.testing.assert_close(many[1], one)


def test_fixed_selector_equals_that_layer_and_runs_only_it(models) -> None:
    ids, mask = batch()
    per_layer = build(models, selector=None).attribute(ids, target=0, attention_mask=mask)
    sel = LayerCoherenceSelector(rule="fixed", layer=2)
    dls = build(models, selector=sel)
    dls.fit_selector([(ids, mask)])
    assert sel.fitted and sel.selected_ == [2] and sel.scores_ is not None
    assert sel.scores_.shape == (3,)
    calls: list[int] = []
    clf, _ = models
    hooks = [
        layer.register_forward_hook(lambda *a, i=i: calls.append(i))
        for i, layer in enumerate(dls.candidate_layers)
    ]
    try:
        out = dls.attribute(ids, target=0, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(out, per_layer[2])
    assert dls.last_selected_ == [[2]] * 3


def test_weighted_selector_fuses_layers(models) -> None:
    ids, mask = batch()
    per_layer = build(models, selector=None, mapping="decoded").attribute(
        ids, target=0, attention_mask=mask
    )
    sel = LayerCoherenceSelector(rule="weighted", theta=0.0, score="own_prob")
    dls = build(models, selector=sel, mapping="decoded")
    dls.fit_selector([{"input_ids": ids, "attention_mask": mask}])
    assert sel.weights_ is not None
    torch.testing.assert_close(sel.weights_.sum(), torch.tensor(1.0))
    pairs = zip(sel.selected_, sel.weights_.tolist(), strict=True)
    # Each layer's map is scaled to unit L1 norm per example before weighting.
    expected = sum(w * per_layer[i] / per_layer[i].abs().sum(-1, keepdim=True) for i, w in pairs)
    torch.testing.assert_close(dls.attribute(ids, target=0, attention_mask=mask), expected)


@pytest.mark.parametrize("layer_method", LAYER_METHODS)
def test_hooks_removed_after_success_and_after_an_exception(models, layer_method: str) -> None:
    clf, _ = models
    ids, mask = batch()
    before = all_hooks(clf)
    dls = build(models, layer_method=layer_method)
    dls.attribute(ids, target=0, attention_mask=mask)
    assert all_hooks(clf) == before
    with pytest.raises(ValueError, match="out of range"):
        dls.attribute(ids, target=7, attention_mask=mask)
    assert all_hooks(clf) == before


@pytest.mark.parametrize("layer_method", LAYER_METHODS)
def test_model_weights_grads_and_mode_left_as_found(models, layer_method: str) -> None:
    clf, _ = models
    ids, mask = batch()
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    for training in (False, True):
        clf.train(training)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build(models, layer_method=layer_method).attribute(ids, target=0, attention_mask=mask)
        # Training mode runs dropout: the maps are random, and the user is told so.
        assert any("training mode" in str(w.message) for w in caught) is training
        assert clf.training is training
        assert all(p.grad is None for p in clf.parameters())
        assert all(torch.equal(state[k], v) for k, v in clf.state_dict().items())
    clf.eval()


def test_frozen_model_still_attributes(models) -> None:
    clf, _ = models
    ids, mask = batch()
    flags = [p.requires_grad for p in clf.parameters()]
    for p in clf.parameters():
        p.requires_grad_(False)
    try:
        out = build(models, mapping="decoded").attribute(ids, target=0, attention_mask=mask)
        assert out.abs().sum() > 0
    finally:
        for p, f in zip(clf.parameters(), flags, strict=False):
            p.requires_grad_(f)


def test_layer_indices_and_names(models) -> None:
    dls = build(models, layers=[0, -1])
    # One scheme: index 0 = embeddings, l = block l (module paths count blocks from 0).
    assert dls.layer_indices == [0, 2]
    assert dls.layer_names == ["embeddings", "block 2"]
    assert dls.layer_paths == ["bert.embeddings", "bert.encoder.layer.1"]
    assert dls.layer_name(2) == "block 2 (bert.encoder.layer.1)"
    assert find_model_parts(models[0]).layer_names == ["embeddings", "block 1", "block 2"]
    with pytest.raises(ValueError, match="out of range"):
        build(models, layers=[5])
    with pytest.raises(ValueError, match="out of range"):
        build(models, layers=3)


def test_int_layer_is_one_module_and_returns_a_tensor(models) -> None:
    clf, _ = models
    ids, mask = batch()
    by_index = build(models, layers=1)
    assert by_index.selector is None and by_index.layer_names == ["block 1"]
    out = by_index.attribute(ids, target=0, attention_mask=mask)
    assert isinstance(out, torch.Tensor) and out.shape == ids.shape
    by_module = build(models, layers=clf.bert.encoder.layer[0])
    torch.testing.assert_close(out, by_module.attribute(ids, target=0, attention_mask=mask))
    torch.testing.assert_close(
        build(models, layers=-1).attribute(ids, target=0, attention_mask=mask),
        build(models, layers=2).attribute(ids, target=0, attention_mask=mask),
    )


# -- bad input -------------------------------------------------------------------------------


def test_hidden_size_mismatch_names_both_sizes(models) -> None:
    clf, _ = models
    import transformers as T

    other = T.BertForMaskedLM(
        T.BertConfig(vocab_size=60, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(HeadMismatchError, match=r"hidden size 8.*hidden size is 16"):
        DecodedLayerSaliency.for_model(clf, other)
    # An explicit module of the wrong size is refused at construction when the forward is the
    # model, and caught on the first decoded batch when it is a plain function.
    with pytest.raises(HeadMismatchError, match="hidden size 8.*16"):
        DecodedLayerSaliency(clf, clf.bert.embeddings, load_lm_head(nn.Linear(8, 60)))
    ids, mask = batch()
    dls = DecodedLayerSaliency(
        lambda i, m: clf(input_ids=i, attention_mask=m).logits,
        clf.bert.embeddings,
        load_lm_head(nn.Linear(8, 60)),
        mapping="decoded",
    )
    with pytest.raises(ValueError, match="hidden size 8.*16"):
        dls.attribute(ids, target=0, additional_forward_args=(mask,), attention_mask=mask)


def test_vocabulary_mismatch_is_rejected(models) -> None:
    clf, _ = models
    small_head = load_lm_head(nn.Linear(16, 10))
    with pytest.raises(HeadMismatchError, match="vocabulary of 10"):
        load_lm_head(small_head, model=clf)
    with pytest.raises(HeadMismatchError, match="vocabulary of 10"):
        DecodedLayerSaliency(clf, clf.bert.embeddings, small_head)
    dls = DecodedLayerSaliency(
        lambda i, m: clf(input_ids=i, attention_mask=m).logits,
        clf.bert.embeddings,
        small_head,
        mapping="decoded",
    )
    ids, mask = batch()
    with pytest.raises(ValueError, match="outside the LM head's vocabulary"):
        dls.attribute(ids, target=0, additional_forward_args=(mask,), attention_mask=mask)


@pytest.mark.parametrize("target", [3, -1, [0, 1, 5], torch.tensor([9])])
def test_bad_target(models, target: object) -> None:
    ids, mask = batch()
    with pytest.raises(ValueError, match="out of range"):
        build(models).attribute(ids, target=target, attention_mask=mask)  # type: ignore[arg-type]


def test_target_length_mismatch(models) -> None:
    ids, mask = batch()
    with pytest.raises(ValueError, match="2 entries for a batch of 3"):
        build(models).attribute(ids, target=[0, 1], attention_mask=mask)


def test_empty_input_and_all_padding(models) -> None:
    dls = build(models)
    with pytest.raises(ValueError, match="empty input"):
        dls.attribute(torch.zeros(1, 0, dtype=torch.long), target=0)
    ids = torch.tensor([[1, 5, 2], [0, 0, 0]])
    with pytest.raises(ValueError, match="no real token"):
        dls.attribute(ids, target=0, attention_mask=(ids != 0).long())


def test_layer_not_in_model(models) -> None:
    clf, mlm = models
    with pytest.raises(ValueError, match="not a submodule"):
        DecodedLayerSaliency.for_model(clf, mlm, layers=[mlm.bert.encoder.layer[0]])
    with pytest.raises(ValueError, match="not a submodule"):
        DecodedLayerSaliency(clf, [nn.Linear(2, 2)], load_lm_head(mlm))
    # A plain function forward cannot be checked up front: the error comes from the run.
    forward = DecodedLayerSaliency.for_model(clf, mlm).forward_func
    dls = DecodedLayerSaliency(forward, [mlm.bert.embeddings], load_lm_head(mlm))
    ids, mask = batch()
    with pytest.raises(ValueError, match="never run"):
        dls.attribute(ids, target=0, additional_forward_args=(mask,), attention_mask=mask)


def test_bad_options() -> None:
    clf, mlm = tiny_bert()
    for kwargs, match in [
        ({"aggregation": "mean"}, "aggregation"),
        ({"mapping": "spread"}, "mapping"),
        ({"top_k": 0}, "top_k"),
        ({"special_rows": "drop"}, "special_rows"),
    ]:
        with pytest.raises(ValueError, match=match):
            DecodedLayerSaliency.for_model(clf, mlm, **kwargs)
    with pytest.raises(ValueError, match="score"):
        LayerCoherenceSelector(score="beauty")
    with pytest.raises(ValueError, match="fixed"):
        LayerCoherenceSelector(rule="fixed")


def test_float_inputs_need_token_ids(models) -> None:
    clf, mlm = models
    emb_forward = lambda embeds, mask: clf(inputs_embeds=embeds, attention_mask=mask).logits  # noqa: E731
    dls = DecodedLayerSaliency(emb_forward, clf.bert.encoder.layer[0], load_lm_head(mlm))
    ids, mask = batch()
    embeds = clf.bert.embeddings.word_embeddings(ids).detach()
    with pytest.raises(ValueError, match="token_ids"):
        dls.attribute(embeds, target=0, additional_forward_args=(mask,), attention_mask=mask)
    out = dls.attribute(
        embeds, target=0, additional_forward_args=(mask,), attention_mask=mask, token_ids=ids
    )
    assert out.shape == ids.shape


def test_nan_logits_are_reported() -> None:
    clf, mlm = tiny_bert()
    with torch.no_grad():
        clf.classifier.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        DecodedLayerSaliency.for_model(clf, mlm).attribute(torch.tensor([[1, 5, 2]]), target=0)


def test_visualize_text_takes_the_output(models) -> None:
    from captum.attr import visualization as viz

    ids, mask = batch()
    dls = build(models)
    scores = dls.attribute(ids[:1], attention_mask=mask[:1])[0]
    record = viz.VisualizationDataRecord(
        scores / scores.abs().max(),
        0.9,
        "pos",
        "pos",
        "pos",
        float(scores.sum()),
        [f"t{i}" for i in ids[0].tolist()],
        0.0,
    )
    html = viz.visualize_text([record], legend=False)
    assert "t5" in html.data


@pytest.mark.parametrize(
    ("scores", "rule", "theta", "expected"),
    [
        ([0.76, 0.79, 0.78, 0.70, 0.65, 0.67, 0.57], "elbow", 0.0, [5]),  # steepest fall 5 -> 6
        ([0.77, 0.81, 0.80, 0.78, 0.77, 0.74, 0.70], "elbow", 0.0, [5]),
        ([0.1, 0.2, 0.3], "elbow", 0.0, [2]),  # never falls: the last layer
        ([0.76, 0.79, 0.78, 0.70, 0.65, 0.67, 0.57], "deepest", 0.8, [5]),
        ([0.76, 0.79, 0.78, 0.70, 0.65, 0.67, 0.57], "deepest", 0.9, [2]),
        ([0.76, 0.79, 0.78, 0.70, 0.65, 0.67, 0.57], "argmax", 0.0, [1]),
    ],
)
def test_selection_rules_by_hand(scores, rule, theta, expected) -> None:
    picked, weights = LayerCoherenceSelector(rule=rule, theta=theta).select(torch.tensor(scores))
    assert picked == expected and weights.tolist() == [1.0]
