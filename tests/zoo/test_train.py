"""The training helpers' batches: padding through transformers' collator."""

from __future__ import annotations

import torch

from captum_layer_saliency.zoo._train import pad, padded_batches
from captum_layer_saliency.zoo.load import encoder_tokenizer


def test_pad_right_pads_with_the_tokenizers_padding_id_by_hand() -> None:
    tokenizer = encoder_tokenizer()
    ids, mask = pad([[101, 5, 102], [101, 102]], tokenizer)
    pad_id = tokenizer.pad_token_id
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [[101, 5, 102], [101, 102, pad_id]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    batches = padded_batches([[101, 5, 6, 102], [101, 102], [101, 7, 102]], tokenizer, 2)
    assert [b for b, _, _ in batches] == [[1, 2], [0]]  # sorted by length
    assert batches[0][1].tolist() == [[101, 102, pad_id], [101, 7, 102]]
