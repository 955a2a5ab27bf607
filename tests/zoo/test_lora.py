"""LoRA through peft: adapted forward, saved factors, and the merge of the shipped classifiers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_layer_saliency.zoo._lora import add_lora, lora_state, merge_lora
from captum_layer_saliency.zoo.load import (
    TASKS,
    apply_classifier,
    classifier_from_artifacts,
    classifier_model,
    resolve_artifacts,
    verify_entry,
)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_the_adapted_forward_and_the_saved_factors_by_hand() -> None:
    model = _tiny()
    base = [layer.weight.detach().clone() for layer in (model[0], model[2])]
    assert add_lora(model, ("0",), rank=2, alpha=4.0) == ["0"]
    state = lora_state(model)
    assert sorted(state) == ["lora_A.0", "lora_B.0"]
    assert state["lora_A.0"].shape == (2, 3) and not state["lora_B.0"].any()  # B = 0 at start
    a, b = torch.ones(2, 3), torch.arange(8.0).reshape(4, 2)
    with torch.no_grad():
        model[0].lora_A["default"].weight.copy_(a)
        model[0].lora_B["default"].weight.copy_(b)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    hidden = x @ base[0].T + model[0].base_layer.bias + 2.0 * (x @ a.T @ b.T)  # alpha / rank = 2
    want = torch.relu(hidden) @ base[1].T + model[2].bias
    assert torch.allclose(model(x), want, atol=1e-5)
    assert [p.requires_grad for p in model.parameters()].count(True) == 2  # only A and B

    plain = _tiny()
    assert merge_lora(plain, lora_state(model), rank=2, alpha=4.0) == 1
    assert type(plain[0]) is nn.Linear and "peft_config" not in vars(plain)
    assert torch.equal(plain[0].weight, base[0] + (b @ a) * 2.0)
    assert torch.allclose(plain(x), want, atol=1e-5)
    assert all(p.requires_grad for p in plain.parameters())  # as found


def test_a_factor_for_a_missing_or_non_linear_module_is_refused() -> None:
    with pytest.raises(KeyError, match="not an nn.Linear"):
        merge_lora(_tiny(), {"lora_A.1": torch.ones(1, 4), "lora_B.1": torch.ones(4, 1)}, 1, 1.0)
    with pytest.raises(AttributeError):
        merge_lora(_tiny(), {"lora_A.7": torch.ones(1, 3), "lora_B.7": torch.ones(4, 1)}, 1, 1.0)


@pytest.mark.parametrize("task", TASKS)
def test_a_shipped_classifier_merges_bit_for_bit_as_by_hand(task: str) -> None:
    """peft's merge gives the weights (and so the logits) of ``W + alpha / rank * B @ A``."""
    directory, manifest = resolve_artifacts([task])
    config = manifest["entries"][task]["config"]
    tensors = verify_entry(directory, manifest, task)
    shipped = classifier_from_artifacts(task, directory, manifest)
    labels = [shipped.config.id2label[i] for i in range(shipped.config.num_labels)]
    fresh = classifier_model(labels)
    base = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    rank, alpha = int(config["lora_rank"]), config["lora_alpha"]
    merged = apply_classifier(fresh, tensors, rank, alpha)
    names = [key[len("lora_A.") :] for key in tensors if key.startswith("lora_A.")]
    assert names
    for name in names:
        a, b = tensors[f"lora_A.{name}"].float(), tensors[f"lora_B.{name}"].float()
        want = base[f"{name}.weight"] + (b @ a) * (alpha / rank)
        assert type(merged.get_submodule(name)) is nn.Linear
        assert torch.equal(merged.get_submodule(name).weight, want), name
    assert sorted(merged.state_dict()) == sorted(shipped.state_dict())
