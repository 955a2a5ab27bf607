"""The exact semantics of DLS, checked against values worked out by hand (see ToyClassifier)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import ToyClassifier, toy_head

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.decoded_layer_saliency import position_saliency
from captum_layer_saliency.attr.decoding import sparsify_rows, token_counts

IDS = torch.tensor([[0, 1, 2, 1]])  # [CLS] a b a
SPECIAL = [0]


def make(**options: object) -> DecodedLayerSaliency:
    # The specification's decoded mapping and the paper's gradient x activation at the layer are
    # what these hand computations check (the default layer method's: test_layer_methods.py).
    options.setdefault("mapping", "decoded")
    options.setdefault("layer_method", "gradient")
    model = ToyClassifier()
    return DecodedLayerSaliency(model, model.emb, toy_head(), special_token_ids=SPECIAL, **options)


def test_grad_x_act_decoded_matches_hand_computation() -> None:
    # G_i = W_0 / 4 = (1/4, 1/2); s = (3/4, 1/4, 1/2, 1/4).
    # Rows of A (columns [CLS], a, b, a; "a" appears twice so its mass is halved):
    #   [CLS] -> P = (1, 3, 3, 1)/8 -> (0, 3/16, 3/8, 3/16)
    #   a     -> P = (1, 3, 1, 1)/6 -> (0, 1/4, 1/6, 1/4)
    #   b     -> P = (1, 1, 3, 1)/6 -> (0, 1/12, 1/2, 1/12)
    # S_a = 3/4*3/16 + 1/4*1/4 + 1/2*1/12 + 1/4*1/4 = 59/192, S_b = 59/96.
    out = make().attribute(IDS, target=0)
    expected = torch.tensor([[0.0, 59 / 192, 59 / 96, 59 / 192]])
    torch.testing.assert_close(out, expected)


def test_special_rows_excluded() -> None:
    out = make(special_rows="exclude").attribute(IDS, target=0)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1 / 6, 1 / 3, 1 / 6]]))


def test_identity_mapping_is_position_saliency_without_specials() -> None:
    out = make(mapping="identity").attribute(IDS, target=0)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.25, 0.5, 0.25]]))


def test_grad_norm_hand_computation() -> None:
    # ||G_i|| = sqrt(5)/4 everywhere; S_j = sqrt(5)/4 * (column sum of A).
    out = make(aggregation="grad_norm").attribute(IDS, target=0)
    col_a = 3 / 16 + 1 / 4 + 1 / 12 + 1 / 4
    col_b = 3 / 8 + 1 / 6 + 1 / 2 + 1 / 6
    s = math.sqrt(5) / 4
    torch.testing.assert_close(out, torch.tensor([[0.0, s * col_a, s * col_b, s * col_a]]))


def test_gradcam_hand_computation_with_relu() -> None:
    # Target 1: W_1 = (-1, 0), G_i = (-1/4, 0); alpha = (-1/4, 0);
    # s_i = ReLU(-h_i0 / 4) = 0 everywhere, so the map is zero; grad_x_act is not.
    model = make(aggregation="gradcam")
    torch.testing.assert_close(model.attribute(IDS, target=1), torch.zeros(1, 4))
    # Target 0: alpha = (1/4, 1/2), s = ReLU(alpha . h) = (3/4, 1/4, 1/2, 1/4) as grad_x_act.
    torch.testing.assert_close(
        make(aggregation="gradcam", mapping="identity").attribute(IDS, target=0),
        torch.tensor([[0.0, 0.25, 0.5, 0.25]]),
    )
    assert make().attribute(IDS, target=1).abs().sum() > 0


def test_gradcam_alpha_averages_real_positions_only() -> None:
    grad = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 0.0]]])
    act = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # alpha = mean(1, 3) = 2 over the two real positions; padding gets 0.
    out = position_saliency(grad, act, mask, "gradcam")
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0, 0.0]]))


def test_top_k_and_normalisation() -> None:
    # top_k=1: each row keeps its largest entry: [CLS] -> b (3/8), a -> a (1/4, first of the
    # tie between the two a columns), b -> b (1/2).
    out = make(top_k=1).attribute(IDS, target=0)
    expected = torch.tensor(
        [[0.0, 1 / 4 * 1 / 4 + 1 / 4 * 1 / 4, 3 / 4 * 3 / 8 + 1 / 2 * 1 / 2, 0]]
    )
    torch.testing.assert_close(out, expected)
    # normalize with top_k=1: each row becomes a one-hot on its kept column.
    out = make(top_k=1, normalize=True).attribute(IDS, target=0)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.5, 1.25, 0.0]]))


def test_padding_contributes_nothing_and_gets_zero() -> None:
    ids = torch.tensor([[0, 1, 2, 1, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    dls = make()
    padded = dls.attribute(ids, target=0, additional_forward_args=(mask,), attention_mask=mask)
    plain = dls.attribute(IDS, target=0)
    torch.testing.assert_close(padded[:, :4], plain)
    assert padded[0, 4:].eq(0).all()


def test_token_counts_and_sparsify_helpers() -> None:
    ids = torch.tensor([[5, 7, 5, 5, 9]])
    cand = torch.tensor([[True, True, True, False, True]])
    assert token_counts(ids, cand).tolist() == [[2, 1, 2, 2, 1]]
    rows = torch.tensor([[[0.125, 0.5, 0.25, 0.125]]])
    assert sparsify_rows(rows, 2, False).tolist() == [[[0.0, 0.5, 0.25, 0.0]]]
    torch.testing.assert_close(sparsify_rows(rows, None, True), rows)
    with pytest.raises(ValueError):
        sparsify_rows(rows, 0, False)


def test_target_none_explains_the_predicted_class() -> None:
    dls = make()
    out = dls.attribute(IDS)
    # logits: class 0 = mean(h) . (1, 2) > 0 > class 1, so the prediction is 0.
    assert dls.last_target_ is not None and dls.last_target_.tolist() == [0]
    torch.testing.assert_close(out, dls.attribute(IDS, target=0))


def test_hybrid_mapping_keeps_word_rows_and_decodes_special_rows() -> None:
    # Words keep their own saliency (1/4, 1/2, 1/4); [CLS] (s = 3/4) spreads its row
    # (0, 3/16, 3/8, 3/16) over the words.
    out = make(mapping="hybrid").attribute(IDS, target=0)
    expected = torch.tensor([[0.0, 0.25 + 9 / 64, 0.5 + 9 / 32, 0.25 + 9 / 64]])
    torch.testing.assert_close(out, expected)


def test_example_prior_divides_columns_by_their_mean() -> None:
    # Column means over the 4 real rows: a = (3/16 + 1/4 + 1/12 + 1/4) / 4 = 37/192,
    # b = (3/8 + 1/6 + 1/2 + 1/6) / 4 = 29/96; S_j = sum_i s_i A_ij / mean_j.
    plain = make().attribute(IDS, target=0)
    corrected = make(prior="example").attribute(IDS, target=0)
    expected = plain / torch.tensor([[1.0, 37 / 192, 29 / 96, 37 / 192]])
    torch.testing.assert_close(corrected, expected)
    with pytest.raises(ValueError, match="prior"):
        make(prior="unigram")
