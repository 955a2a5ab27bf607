"""DLS called as Captum's ``LayerIntegratedGradients`` is: the same positional order and options,
the convergence delta with Captum's meaning at the layer, and one-line errors naming what DLS
cannot honour."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from tiny_models import ToyClassifier, toy_head
from torch import Tensor

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.surgery import find_model_parts

IDS = torch.tensor([[0, 1, 2, 1]])  # [CLS] a b a


def toy(**options: object) -> DecodedLayerSaliency:
    model = ToyClassifier().eval()
    dls = DecodedLayerSaliency(model, model.emb, toy_head(), special_token_ids=[0], **options)
    dls._pad_token_id = 3  # "c", embedding (1, 1)
    return dls


def test_convergence_delta_by_hand_on_a_linear_model() -> None:
    # The toy's logits are linear in the layer, so integrated gradients is exact: delta = 0.
    # Zero baseline: sum of G * H = (1/4, 1/2) . (3, 2) = 7/4 = logit_0(x) - logit_0(0).
    out, delta = toy(layer_baseline="zeros").attribute(
        IDS, target=0, n_steps=3, return_convergence_delta=True
    )
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.25, 0.5, 0.25]]))
    torch.testing.assert_close(delta, torch.zeros(1))
    # A layer state H0 = (1, 1) everywhere: attributions sum to (1/4, 1/2) . (-1, -2) = -5/4,
    # and F(H) - F(H0) = 7/4 - 3 = -5/4 too.
    _, delta = toy().attribute(IDS, torch.ones(1, 4, 2), 0, return_convergence_delta=True)
    torch.testing.assert_close(delta, torch.zeros(1))


def _tiny(clf: TextClassifier, layer: int, **options: object) -> DecodedLayerSaliency:
    return DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layers=layer, selector=None, **options
    )


def _pad(clf: TextClassifier, ids: Tensor, mask: Tensor) -> Tensor:
    special = clf.special_mask(ids)
    return torch.where(mask.bool() & ~special, torch.full_like(ids, 0), ids)


@pytest.mark.parametrize("layer", [0, 1])
def test_a_layer_integrated_gradients_call_runs_unchanged_with_dls(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor], layer: int
) -> None:
    clf = tiny_classifier
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    ref = _pad(clf, ids, mask)
    module = find_model_parts(clf.model).layers[layer]
    lig = LayerIntegratedGradients(clf.forward_func, module)
    dls = _tiny(clf, layer)
    # Captum's call, positional and keyword, the class swapped.
    expected, expected_delta = lig.attribute(
        ids, ref, target, (mask,), 8, "gausslegendre", None, True
    )
    got, delta = dls.attribute(ids, ref, target, (mask,), 8, "gausslegendre", None, True)
    words = mask.bool() & ~clf.special_mask(ids)
    torch.testing.assert_close(got, torch.where(words, expected.sum(-1), 0.0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(delta, expected_delta.to(delta), atol=1e-5, rtol=1e-4)
    keyword = dls.attribute(
        inputs=ids,
        baselines=ref,
        target=target,
        additional_forward_args=(mask,),
        n_steps=8,
        method="gausslegendre",
        internal_batch_size=5,
        return_convergence_delta=True,
    )
    torch.testing.assert_close(keyword[0], got, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(keyword[1], delta, atol=1e-6, rtol=1e-5)
    # More steps: a smaller delta, as in Captum.
    _, coarse = dls.attribute(ids, ref, target, (mask,), 1, return_convergence_delta=True)
    assert delta.abs().sum() <= coarse.abs().sum()


def test_named_baselines(tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]) -> None:
    clf = tiny_classifier
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    dls = _tiny(clf, 1)
    pad = dls.attribute(ids, "pad", attention_mask=mask)
    torch.testing.assert_close(pad, dls.attribute(ids, attention_mask=mask))
    torch.testing.assert_close(pad, dls.attribute(ids, _pad(clf, ids, mask), attention_mask=mask))
    zeros = dls.attribute(ids, "zeros", attention_mask=mask)
    state = dls.attribute(ids, torch.zeros(16), attention_mask=mask)
    torch.testing.assert_close(zeros, state)
    masked = dls.attribute(ids, "mask", attention_mask=mask)
    special = clf.special_mask(ids)
    as_ids = torch.where(
        mask.bool() & ~special, torch.full_like(ids, clf.tokenizer.mask_token_id), ids
    )
    torch.testing.assert_close(masked, dls.attribute(ids, as_ids, attention_mask=mask))
    assert not torch.allclose(masked, zeros)
    # The constructor's layer_baseline names the same baselines as the call's.
    by_default = _tiny(clf, 1, layer_baseline="mask")
    torch.testing.assert_close(by_default.attribute(ids, attention_mask=mask), masked)
    torch.testing.assert_close(by_default.attribute(ids, "pad", attention_mask=mask), pad)
    # No baseline to set for the gradient, as for "pad" and "zeros": the same maps.
    plain = _tiny(clf, 1, layer_method="gradient").attribute(ids, attention_mask=mask)
    masked_gradient = _tiny(clf, 1, layer_method="gradient", layer_baseline="mask")
    torch.testing.assert_close(masked_gradient.attribute(ids, attention_mask=mask), plain)
    with pytest.raises(ValueError, match="unknown layer_baseline 'ones'"):
        _tiny(clf, 1, layer_baseline="ones")


def test_what_dls_cannot_honour_is_named(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    clf = tiny_classifier
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    dls = _tiny(clf, 1)
    with pytest.raises(TypeError, match=r"baselines=1.*third positional"):
        dls.attribute(ids, 1, attention_mask=mask)
    with pytest.raises(ValueError, match="baselines='ones'"):
        dls.attribute(ids, "ones", attention_mask=mask)
    with pytest.raises(ValueError, match="baselines: token ids of shape"):
        dls.attribute(ids, ids[:, :3], attention_mask=mask)
    with pytest.raises(ValueError, match="baselines: a layer state"):
        dls.attribute(ids, torch.zeros(3, 5), attention_mask=mask)
    gradient = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layers=1, selector=None, layer_method="gradient"
    )
    with pytest.raises(ValueError, match="baselines: layer_method='gradient'"):
        gradient.attribute(ids, "zeros", attention_mask=mask)
    with pytest.raises(ValueError, match="n_steps"):
        gradient.attribute(ids, n_steps=4, attention_mask=mask)
    with pytest.raises(ValueError, match="method='gausslegendre'"):
        gradient.attribute(ids, method="gausslegendre", attention_mask=mask)
    with pytest.raises(ValueError, match="return_convergence_delta"):
        gradient.attribute(ids, return_convergence_delta=True, attention_mask=mask)
    several = DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layers=[1, 2], selector=None
    )
    with pytest.raises(ValueError, match="return_convergence_delta=True needs one layer"):
        several.attribute(ids, return_convergence_delta=True, attention_mask=mask)
    with pytest.raises(ValueError, match="unknown integration"):
        dls.attribute(ids, method="simpson", attention_mask=mask)
    # Another Captum method's option is named, never blamed on the model.
    for option in ({"multiply_by_inputs": True}, {"nt_type": "smoothgrad"}, {"stdevs": 0.1}):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(option))}'"):
            dls.attribute(ids, attention_mask=mask, **option)  # type: ignore[arg-type]


def test_a_layer_state_in_the_old_keyword_still_works_with_a_deprecation_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dls = toy(layer_baseline=torch.ones(1, 4, 2))
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    torch.testing.assert_close(
        dls.attribute(IDS, target=0), toy().attribute(IDS, torch.ones(1, 4, 2), 0)
    )
