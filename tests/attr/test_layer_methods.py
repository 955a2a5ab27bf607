"""DLS's layer methods (``layer_method=``): hand-computed cases, completeness at the layer, the
upper-part-only path against the generic hook path, pass counts, and clean-up."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers as T
from tiny_models import ToyClassifier, family_configs, toy_head

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.layer_methods import LayerMethod, layer_method_attributions
from captum_layer_saliency.compare.methods.registry import PassCounter
from captum_layer_saliency.models.classifier import TextClassifier, classifier_forward
from captum_layer_saliency.models.surgery import find_model_parts

IDS = torch.tensor([[0, 1, 2, 1]])  # [CLS] a b a


def toy(**options: object) -> DecodedLayerSaliency:
    model = ToyClassifier()
    dls = DecodedLayerSaliency(model, model.emb, toy_head(), special_token_ids=[0], **options)
    dls._pad_token_id = 3  # "c", embedding (1, 1)
    return dls


# -- hand-computed cases (the toy's logits are linear in the layer, so every method is exact) --


@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_ig_zero_baseline_on_a_linear_model_is_grad_x_act(n_steps: int) -> None:
    # G_i = W_0 / 4 = (1/4, 1/2) everywhere; H - 0 = H: s = (., 1/4, 1/2, 1/4).
    out = toy(layer_method="integrated_gradients", n_steps=n_steps, layer_baseline="zeros")
    expected = torch.tensor([[0.0, 0.25, 0.5, 0.25]])
    torch.testing.assert_close(out.attribute(IDS, target=0), expected)
    torch.testing.assert_close(toy(layer_method="gradient").attribute(IDS, target=0), expected)


def test_the_default_is_one_step_of_ig_from_the_pad_baseline() -> None:
    dls = toy()
    assert dls.layer_method == LayerMethod("integrated_gradients", None, "pad")
    assert dls.layer_method.steps == 1
    # The pad hand computation below; one midpoint step is exact on a linear model.
    out = dls.attribute(IDS, target=0)
    torch.testing.assert_close(out, torch.tensor([[0.0, -0.5, -0.25, -0.5]]))
    explicit = toy(layer_method="integrated_gradients", n_steps=1, layer_baseline="pad")
    torch.testing.assert_close(out, explicit.attribute(IDS, target=0))


def test_ig_pad_baseline_hand_computation_and_completeness() -> None:
    # H0 replaces a, b by c = (1, 1): H - H0 = (0, -1) at a, (-1, 0) at b; G = (1/4, 1/2):
    # s_a = -1/2, s_b = -1/4. Sum -5/4 = f(x) - f(pad x) = (3/4 + 2/2) - 3.
    dls = toy(layer_method="integrated_gradients", n_steps=3)
    out = dls.attribute(IDS, target=0)
    torch.testing.assert_close(out, torch.tensor([[0.0, -0.5, -0.25, -0.5]]))
    model = ToyClassifier()
    with torch.no_grad():
        diff = model(IDS)[0, 0] - model(torch.tensor([[0, 3, 3, 3]]))[0, 0]
    torch.testing.assert_close(out.sum(), diff)


def test_smoothgrad_on_a_linear_model_is_grad_x_act() -> None:
    torch.manual_seed(0)
    out = toy(layer_method="smoothgrad", n_steps=5, noise=1.0).attribute(IDS, target=0)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.25, 0.5, 0.25]]))


def test_gradient_shap_on_a_linear_model_is_ig() -> None:
    torch.manual_seed(0)
    out = toy(layer_method="gradient_shap", n_steps=3).attribute(IDS, target=0)
    torch.testing.assert_close(out, torch.tensor([[0.0, -0.5, -0.25, -0.5]]))


# -- a real (tiny, random) BERT --------------------------------------------------------------


def _inputs(clf: TextClassifier) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = clf.encode(["the movie was very good", "boring .", "i think it was fun !"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    return ids, mask, mask.bool() & ~clf.special_mask(ids)


@pytest.mark.parametrize(
    ("layer_index", "baseline"),
    # From a zero state, the next block's LayerNorm divides by ~sqrt(eps) near the start of the
    # path, so 48 quadrature nodes do not integrate it; at the last block the head is smooth.
    [(0, "pad"), (1, "pad"), (2, "pad"), (2, "zeros")],
)
def test_ig_completeness_at_the_layer(
    tiny_classifier: TextClassifier, layer_index: int, baseline: str
) -> None:
    clf = tiny_classifier
    ids, mask, cand = _inputs(clf)
    layer = find_model_parts(clf.model).layers[layer_index]
    fwd = clf.forward_func
    method = LayerMethod(
        "integrated_gradients", n_steps=48, baseline=baseline, integration="gausslegendre"
    )
    target = torch.tensor([1, 0, 1])
    grads, acts, hidden, _ = layer_method_attributions(
        method,
        fwd,
        fwd,
        [layer],
        ids,
        target,
        (mask,),
        resolve_target=lambda: target,
        ids=ids,
        mask=mask,
        candidates=cand,
        pad_token_id=0,
        model=clf.model,
    )
    total = (grads[0] * acts[0]).sum((1, 2))
    base_state = torch.zeros_like(hidden[0]) if baseline == "zeros" else None
    with torch.no_grad():
        if base_state is None:
            base_logits = fwd(torch.where(cand, torch.zeros_like(ids), ids), mask)
        else:
            handle = layer.register_forward_hook(lambda m, a, o: base_state)
            try:
                base_logits = fwd(ids, mask)
            finally:
                handle.remove()
        logits = fwd(ids, mask)
    rows = torch.arange(3)
    expected = logits[rows, target] - base_logits[rows, target]
    torch.testing.assert_close(total, expected, atol=2e-4, rtol=2e-3)


def _family_model(family: str) -> torch.nn.Module:
    config = family_configs()[family]
    config.num_labels = 2
    config.pad_token_id = 0
    config.initializer_range = 0.5
    torch.manual_seed(0)
    return T.AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "gpt2", "llama"])
@pytest.mark.parametrize("name", ["integrated_gradients", "gradient_shap", "smoothgrad"])
def test_upper_only_path_equals_generic_path(family: str, name: str) -> None:
    model = _family_model(family)
    fwd = classifier_forward(model)
    ids = torch.tensor([[5, 10, 11, 12, 13, 6], [5, 20, 21, 6, 0, 0]])
    mask = (ids != 0).long()
    cand = mask.bool() & ~torch.isin(ids, torch.tensor([0, 5, 6]))
    for layer in find_model_parts(model).layers:
        results = []
        for upper in (True, False):
            torch.manual_seed(0)  # the same noise for both paths (Captum draws
            np.random.seed(0)  # GradientSHAP's interpolation points with NumPy)
            method = LayerMethod(name, n_steps=3, upper_only=upper)
            grads, acts, _, _ = layer_method_attributions(
                method,
                fwd,
                fwd,
                [layer],
                ids,
                1,
                (mask,),
                resolve_target=lambda: 1,
                ids=ids,
                mask=mask,
                candidates=cand,
                pad_token_id=0,
                model=model,
            )
            results.append((grads[0] * acts[0]).sum(-1))
        assert results[0].abs().max() > 1e-4  # not trivially equal
        torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


def _deep_model(family: str, blocks: int = 4) -> torch.nn.Module:
    config = family_configs()[family]
    for name in ("num_hidden_layers", "n_layer", "n_layers"):
        if hasattr(config, name):
            setattr(config, name, blocks)
    config.num_labels = 2
    config.pad_token_id = 0
    config.initializer_range = 0.5
    torch.manual_seed(0)
    return T.AutoModelForSequenceClassification.from_config(config).eval()


def _attribute(
    model: torch.nn.Module, layer: torch.nn.Module, method: LayerMethod, target: object
) -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
    """Per-position scores, the reported cost and PassCounter's, per example."""
    fwd = classifier_forward(model)
    ids = torch.tensor([[5, 10, 11, 12, 13, 6], [5, 20, 21, 6, 0, 0]])
    mask = (ids != 0).long()
    cand = mask.bool() & ~torch.isin(ids, torch.tensor([0, 5, 6]))
    with torch.no_grad():
        predicted = fwd(ids, mask).argmax(-1)
    with PassCounter(model) as counter:
        grads, acts, _, cost = layer_method_attributions(
            method,
            fwd,
            fwd,
            [layer],
            ids,
            target,  # type: ignore[arg-type]
            (mask,),
            resolve_target=lambda: predicted if target is None else target,
            ids=ids,
            mask=mask,
            candidates=cand,
            pad_token_id=0,
            model=model,
        )
    return (grads[0] * acts[0]).sum(-1), cost, counter.per_example(2)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "gpt2", "llama"])
@pytest.mark.parametrize("steps", [1, 3])
def test_a_named_class_stops_the_first_forward_at_a_low_layer_with_the_same_maps(
    family: str, steps: int
) -> None:
    # Block 1 of 4 from the PAD baseline: with the class given, the input's forward stops at
    # the layer (1/4) and each step runs the whole network forward, 3/4 of it backward:
    # 1/4 + 1/4 + steps forwards against 1 + 1/4 + 3/4 steps; the same maps either way.
    model = _deep_model(family)
    layer = find_model_parts(model).layers[1]
    method = LayerMethod("integrated_gradients", n_steps=steps)
    with torch.no_grad():
        fwd = classifier_forward(model)
        ids = torch.tensor([[5, 10, 11, 12, 13, 6], [5, 20, 21, 6, 0, 0]])
        predicted = fwd(ids, (ids != 0).long()).argmax(-1)
    stopped, cost, counted = _attribute(model, layer, method, predicted)
    full, full_cost, full_counted = _attribute(model, layer, method, None)
    assert stopped.abs().max() > 1e-4
    torch.testing.assert_close(stopped, full, atol=1e-5, rtol=1e-4)
    assert cost == pytest.approx({"forwards": 0.5 + steps, "backwards": 0.75 * steps})
    assert counted == pytest.approx(cost)
    assert full_cost == pytest.approx({"forwards": 1.25 + 0.75 * steps, "backwards": 0.75 * steps})
    assert full_counted == pytest.approx(full_cost)
    assert model.training is False and not any(
        m._forward_hooks or m._forward_pre_hooks for m in model.modules()
    )


def test_the_first_forward_stops_only_where_that_is_cheaper() -> None:
    ig = LayerMethod("integrated_gradients")
    assert ig.stops_first_forward([2], 30, True)  # SmolLM2's block 2: 2/30 + 1 < 1 + 28/30
    assert not ig.stops_first_forward([2], 30, False)  # the prediction needs the whole forward
    assert not ig.stops_first_forward([5], 6, True)  # MiniLM's block 5: 5/6 + 1 > 1 + 1/6
    assert not ig.stops_first_forward([3], 6, True)  # the midpoint: 1/2 + 1 = 1 + 1/2
    assert not LayerMethod("integrated_gradients", upper_only=True).stops_first_forward(
        [0], 6, True
    )
    assert not LayerMethod("gradient").stops_first_forward([0], 6, True)
    assert ig.cost(2, 30, target_given=True) == pytest.approx(
        {"forwards": 2 / 30 + 2 / 30 + 1, "backwards": 28 / 30}
    )
    assert ig.cost(2, 30) == pytest.approx({"forwards": 1 + 2 / 30 + 28 / 30, "backwards": 28 / 30})


def _dls(clf: TextClassifier, layer: int, **options: object) -> DecodedLayerSaliency:
    return DecodedLayerSaliency.for_model(
        clf.model,
        clf.lm_head,
        clf.tokenizer,
        layers=find_model_parts(clf.model).layers[layer],
        selector=None,
        **options,
    )


def test_ig_batched_equals_one_at_a_time(tiny_classifier: TextClassifier) -> None:
    ids, mask, _ = _inputs(tiny_classifier)
    dls = _dls(tiny_classifier, 1, layer_method="integrated_gradients", n_steps=3)
    batched = dls.attribute(ids, attention_mask=mask)
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        one = dls.attribute(ids[i : i + 1, :n], attention_mask=mask[i : i + 1, :n])
        torch.testing.assert_close(batched[i : i + 1, :n], one, atol=1e-6, rtol=1e-4)


def test_internal_batch_size_does_not_change_the_result(tiny_classifier: TextClassifier) -> None:
    ids, mask, _ = _inputs(tiny_classifier)
    whole = _dls(tiny_classifier, 1, layer_method="integrated_gradients", n_steps=4)
    chunked = _dls(
        tiny_classifier, 1, layer_method="integrated_gradients", n_steps=4, internal_batch_size=4
    )
    torch.testing.assert_close(
        whole.attribute(ids, attention_mask=mask), chunked.attribute(ids, attention_mask=mask)
    )


@pytest.mark.parametrize(
    ("name", "baseline", "steps"),
    [
        ("integrated_gradients", "pad", 2),
        ("integrated_gradients", "zeros", 4),
        ("smoothgrad", "pad", 3),
    ],
)
def test_pass_counts_match_the_documented_cost(
    tiny_classifier: TextClassifier, name: str, baseline: str, steps: int
) -> None:
    # The tiny BERT has 2 blocks; at block 1 each step runs half the network.
    ids, mask, _ = _inputs(tiny_classifier)
    dls = _dls(tiny_classifier, 1, layer_method=name, layer_baseline=baseline, n_steps=steps)
    with PassCounter(tiny_classifier.model) as counter:
        dls.attribute(ids, attention_mask=mask)
    per = counter.per_example(ids.shape[0])
    expected_f = (
        1 + steps / 2 + (0.5 if name == "integrated_gradients" and baseline == "pad" else 0)
    )
    assert per == pytest.approx({"forwards": expected_f, "backwards": steps / 2})
    assert dls.last_cost_ == pytest.approx(per)
    plain = _dls(tiny_classifier, 1, layer_method="gradient")
    with PassCounter(tiny_classifier.model) as counter:
        plain.attribute(ids, attention_mask=mask)
    assert counter.per_example(ids.shape[0]) == {"forwards": 1.0, "backwards": 1.0}
    assert plain.last_cost_ == {"forwards": 1.0, "backwards": 1.0}


def test_the_default_costs_what_its_docstring_says(tiny_classifier: TextClassifier) -> None:
    # At block 1 of 2, from the PAD baseline, 1 step: 1 + 1/2 + 1/2 forwards, 1/2 backward.
    ids, mask, _ = _inputs(tiny_classifier)
    dls = _dls(tiny_classifier, 1)
    with PassCounter(tiny_classifier.model) as counter:
        dls.attribute(ids, attention_mask=mask)
    assert counter.per_example(ids.shape[0]) == pytest.approx({"forwards": 2.0, "backwards": 0.5})
    assert dls.last_cost_ == pytest.approx({"forwards": 2.0, "backwards": 0.5})


def test_two_threads_counting_on_one_model_each_count_only_their_own_passes(
    tiny_classifier: TextClassifier,
) -> None:
    """Each thread's counter books its own thread's passes, forward hooks and reported ones
    alike (they were process-wide: one thread's passes reached the other's counter)."""
    import threading

    ids, mask, _ = _inputs(tiny_classifier)
    dls = _dls(tiny_classifier, 1)
    with PassCounter(tiny_classifier.model) as alone:
        dls.attribute(ids, attention_mask=mask)
    expected = alone.per_example(ids.shape[0])
    barrier = threading.Barrier(2)
    counts: dict[str, dict[str, float]] = {}
    errors: list[BaseException] = []

    def count(name: str, calls: int) -> None:
        try:
            with PassCounter(tiny_classifier.model) as counter:
                barrier.wait()
                for _ in range(calls):
                    dls.attribute(ids, attention_mask=mask)
                barrier.wait()  # both threads are done before either counter closes
            counts[name] = counter.per_example(ids.shape[0] * calls)
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=count, args=(n, c)) for n, c in (("a", 1), ("b", 3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert counts["a"] == pytest.approx(expected) and counts["b"] == pytest.approx(expected)


def test_explains_the_prediction_of_the_input_not_of_each_step(
    tiny_classifier: TextClassifier,
) -> None:
    ids, mask, _ = _inputs(tiny_classifier)
    dls = _dls(tiny_classifier, 1, layer_method="integrated_gradients", n_steps=3)
    with torch.no_grad():
        predicted = tiny_classifier.forward_func(ids, mask).argmax(-1)
    explained = dls.attribute(ids, attention_mask=mask)
    assert torch.equal(dls.last_target_, predicted)
    assert explained.abs().sum() > 0
    torch.testing.assert_close(explained, dls.attribute(ids, target=predicted, attention_mask=mask))
    assert not torch.allclose(
        explained, dls.attribute(ids, target=1 - predicted, attention_mask=mask)
    )


def test_model_restored_after_an_error_in_a_step(tiny_classifier: TextClassifier) -> None:
    model = tiny_classifier.model
    ids, mask, _ = _inputs(tiny_classifier)
    dls = _dls(tiny_classifier, 1, layer_method="integrated_gradients", n_steps=2)

    def fail_on_steps(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if output.shape[0] > ids.shape[0]:
            raise RuntimeError("boom")

    def hooks() -> list[tuple[int, ...]]:
        # transformers may have installed its own output-capturing hooks: compare, not empty.
        return [(*m._forward_hooks, *m._forward_pre_hooks) for m in model.modules()]

    before = hooks()
    handle = model.classifier.register_forward_hook(fail_on_steps)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            dls.attribute(ids, attention_mask=mask)
    finally:
        handle.remove()
    assert all("forward" not in module.__dict__ for module in model.modules())
    assert hooks() == before
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    # And it still works afterwards.
    dls.attribute(ids, attention_mask=mask)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layer_method": "lrp"}, "unknown layer_method"),
        ({"layer_method": "integrated_gradients", "n_steps": 0}, "n_steps"),
        ({"layer_method": "gradient", "n_steps": 3}, "n_steps"),
        ({"layer_method": "integrated_gradients", "layer_baseline": "mean"}, "layer_baseline"),
        ({"layer_method": "integrated_gradients", "integration": "simpson"}, "integration"),
        ({"layer_method": "smoothgrad", "noise": -1.0}, "noise"),
        ({"layer_method": "smoothgrad", "internal_batch_size": 0}, "internal_batch_size"),
        ({"integration": "riemann_trapezoid"}, "n_steps >= 2"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        toy(**options)


def test_pad_baseline_without_a_pad_id_is_refused() -> None:
    model = ToyClassifier()
    dls = DecodedLayerSaliency(
        model,
        model.emb,
        toy_head(),
        layer_method="integrated_gradients",
        layer_baseline="pad",
        special_token_ids=[0],
    )
    with pytest.raises(ValueError, match="padding token id: pass pad_token_id="):
        dls.attribute(IDS, target=0)


def test_the_default_without_a_pad_id_uses_zeros_and_says_so() -> None:
    model = ToyClassifier().eval()
    bare = DecodedLayerSaliency(model, model.emb, toy_head(), special_token_ids=[0])
    with pytest.warns(UserWarning, match="padding token id is unknown.*zero baseline"):
        out = bare.attribute(IDS, target=0)
    zeros = DecodedLayerSaliency(
        model, model.emb, toy_head(), layer_baseline="zeros", special_token_ids=[0]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(out, zeros.attribute(IDS, target=0))
        # pad_token_id= gives the PAD baseline, without a warning.
        padded = DecodedLayerSaliency(
            model, model.emb, toy_head(), pad_token_id=3, special_token_ids=[0]
        )
        torch.testing.assert_close(
            padded.attribute(IDS, target=0), torch.tensor([[0.0, -0.5, -0.25, -0.5]])
        )
    assert bare.layer_method.baseline == "pad"  # the next call tries PAD again


def test_upper_only_required_but_impossible_is_refused() -> None:
    model = ToyClassifier()
    method = LayerMethod("integrated_gradients", baseline="zeros", upper_only=True)
    dls = DecodedLayerSaliency(
        model, model.emb, toy_head(), layer_method=method, special_token_ids=[0]
    )
    with pytest.raises(ValueError, match="upper_only=True"):
        dls.attribute(IDS, target=0)


def test_registry_method_dls_ig(tiny_classifier: TextClassifier) -> None:
    from captum_layer_saliency.compare.methods.registry import get_method

    ids, mask, cand = _inputs(tiny_classifier)
    method = get_method("dls_ig", tiny_classifier, layer=1, n_steps=3)
    with torch.no_grad():
        target = tiny_classifier.forward_func(ids, mask).argmax(-1)
    scores = method.attribute(ids, mask, target)
    assert scores.shape == ids.shape and torch.isfinite(scores).all()
    assert (scores[~cand] == 0).all() and scores[cand].abs().sum() > 0
    assert method.explainer.layer_method.name == "integrated_gradients"


def test_registry_names_the_default_and_the_papers_method(tiny_classifier: TextClassifier) -> None:
    from captum_layer_saliency.compare.methods.registry import get_method

    def method_of(name: str) -> LayerMethod:
        return get_method(name, tiny_classifier, layer=1).explainer.layer_method

    assert method_of("dls") == LayerMethod("integrated_gradients", None, "pad")
    assert method_of("dls").steps == 1
    assert method_of("dls_gradient").name == "gradient"
    assert method_of("dls_grad_x_act").name == "gradient"
    assert method_of("dls_ig") == LayerMethod("integrated_gradients", 2, "pad")


def test_pad_baseline_with_embedding_inputs_is_refused(tiny_classifier: TextClassifier) -> None:
    ids, mask, _ = _inputs(tiny_classifier)
    model = tiny_classifier.model
    embeds = model.get_input_embeddings()(ids).detach()

    def forward(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits

    layer = find_model_parts(model).blocks[0]
    dls = DecodedLayerSaliency(
        forward,
        layer,
        tiny_classifier.lm_head,
        layer_method="integrated_gradients",
        layer_baseline="pad",
        pad_token_id=0,
    )
    with pytest.raises(ValueError, match="token ids as the"):
        dls.attribute(embeds, additional_forward_args=(mask,), attention_mask=mask, token_ids=ids)
    default = DecodedLayerSaliency(forward, layer, tiny_classifier.lm_head, pad_token_id=0)
    with pytest.warns(UserWarning, match="inputs are not the token ids.*zero baseline"):
        fallback = default.attribute(
            embeds, additional_forward_args=(mask,), attention_mask=mask, token_ids=ids
        )
    zeros = DecodedLayerSaliency(
        forward,
        layer,
        tiny_classifier.lm_head,
        layer_method="integrated_gradients",
        layer_baseline="zeros",
    )
    out = zeros.attribute(
        embeds, additional_forward_args=(mask,), attention_mask=mask, token_ids=ids
    )
    assert out.shape == ids.shape and torch.isfinite(out).all()
    torch.testing.assert_close(fallback, out)
