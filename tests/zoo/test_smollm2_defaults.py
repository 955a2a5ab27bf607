"""The SmolLM2 defaults: the cached-lower-states training path equals the full model (tiny random
Llama), artifacts are named after the classifier's own linears, loading never trains; and the
shipped classifier on real weights where the extra is installed."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import pytest
import torch
import transformers as T
from tiny_models import family_configs

from captum_layer_saliency.zoo import _smollm2_build as B
from captum_layer_saliency.zoo import smollm2 as Z
from captum_layer_saliency.zoo._lora import add_lora, lora_state, merge_lora
from captum_layer_saliency.zoo.load import CorruptArtifactError, MissingArtifactError


@pytest.fixture(scope="module")
def tiny() -> T.LlamaForSequenceClassification:
    config = family_configs()["llama"]
    config.num_labels = 3
    config.pad_token_id = 0
    config.num_hidden_layers = 4
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return T.LlamaForSequenceClassification(config).eval()


def right_padded() -> tuple[torch.Tensor, torch.Tensor]:
    rows = [[5, 9, 13, 7, 22], [31, 4], [8, 8, 40]]
    ids = torch.tensor([r + [0] * (5 - len(r)) for r in rows])
    return ids, torch.tensor([len(r) for r in rows])


@pytest.mark.parametrize("split", [0, 2, 3])
def test_lower_states_then_upper_stack_equal_the_full_model(tiny, split: int) -> None:
    ids, lengths = right_padded()
    with torch.no_grad():
        expected = tiny(input_ids=ids, attention_mask=(ids != 0).long()).logits
        lower = B._run_blocks(tiny, tiny.model.embed_tokens(ids), 0, split)
        got = B._UpperStack(tiny, split)(lower, lengths)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_trained_factors_merge_into_the_classifiers_own_linears(tiny) -> None:
    """Factors saved under the block-list index are renamed to ``model.layers.<i>`` and merging
    them into a plain copy reproduces the adapted upper stack."""
    split = 2
    adapted = T.LlamaForSequenceClassification(tiny.config).eval()
    adapted.load_state_dict(tiny.state_dict())
    upper = B._UpperStack(adapted, split)
    add_lora(upper.blocks, B.LORA_TARGETS, rank=2, alpha=4.0)
    with torch.no_grad():
        for name, p in upper.blocks.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
    ids, lengths = right_padded()
    with torch.no_grad():
        expected = upper(B._run_blocks(adapted, adapted.model.embed_tokens(ids), 0, split), lengths)
    state = {B._rename(k, split): v for k, v in lora_state(upper.blocks).items()}
    assert all(".model.layers.2." in k or ".model.layers.3." in k for k in state)
    plain = T.LlamaForSequenceClassification(tiny.config).eval()
    plain.load_state_dict(tiny.state_dict())
    assert merge_lora(plain, state, 2, 4.0) == 2 * len(B.LORA_TARGETS)
    with torch.no_grad():
        got = plain(input_ids=ids, attention_mask=(ids != 0).long()).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_loading_never_trains_missing_and_corrupt_artifacts(tmp_path) -> None:
    with pytest.raises(MissingArtifactError, match="build-defaults --backbone smollm2"):
        Z.load_smollm2_default("sst2", artifacts_dir=tmp_path)
    (tmp_path / Z.SMOLLM2_MANIFEST).write_text(json.dumps({"entries": {}}))
    with pytest.raises(MissingArtifactError, match="no SmolLM2 sst2 entry"):
        Z.load_smollm2_default("sst2", artifacts_dir=tmp_path)
    entry = {"file": Z.smollm2_artifact_name("sst2"), "sha256": "0" * 64}
    (tmp_path / Z.SMOLLM2_MANIFEST).write_text(json.dumps({"entries": {"sst2": entry}}))
    with pytest.raises(MissingArtifactError, match="is missing"):
        Z.load_smollm2_default("sst2", artifacts_dir=tmp_path)
    (tmp_path / entry["file"]).write_bytes(b"not the trained file")
    with pytest.raises(CorruptArtifactError, match="sha256"):
        Z.load_smollm2_default("sst2", artifacts_dir=tmp_path)
    with pytest.raises(ValueError, match="no SmolLM2 default for task 'hatexplain'"):
        Z.load_smollm2_default("hatexplain", artifacts_dir=tmp_path)


def _shipped(task: str) -> bool:
    from captum_layer_saliency.models import backbones

    manifest = Z.PACKAGED_DIR / Z.SMOLLM2_MANIFEST
    return (
        backbones.smollm2_available()
        and manifest.is_file()
        and task in json.loads(manifest.read_text()).get("entries", {})
    )


#: Per task: two texts with their obvious labels, and the least evaluation accuracy of the
#: shipped build (BENCHMARKS.md section 9 gives each build's accuracy).
REAL = {
    "sst2": (
        ["a gripping , funny and moving film .", "a dull , lifeless mess ."],
        ["positive", "negative"],
        0.85,
    ),
    "ag_news": (
        [
            "Yankees beat Red Sox 5-3 as Rivera closes out the ninth inning at Fenway Park",
            "Oil prices rise as OPEC cuts output; stocks and the dollar fall on Wall Street",
        ],
        ["Sports", "Business"],
        0.85,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(REAL))
def test_load_default_smollm2_on_real_weights(task: str) -> None:
    if not _shipped(task):
        pytest.skip(f"the extra `smollm2` or the SmolLM2 {task} artifact is missing")
    from captum_layer_saliency.zoo.load import load_default

    texts, labels, least = REAL[task]
    clf = load_default(task, backbone="smollm2")
    assert clf.labels == Z.SMOLLM2_LABELS[task] and not clf.model.training
    assert clf.model.config.model_type == "llama" and clf.lm_head is not None
    assert clf.model.config._attn_implementation == "eager"
    assert clf.predict(texts) == labels
    entry = json.loads((Z.PACKAGED_DIR / Z.SMOLLM2_MANIFEST).read_text())["entries"][task]
    assert entry["bytes"] < 5e6 and entry["measurements"]["eval_accuracy"] >= least
    assert entry["config"] == asdict(Z.SmolLM2BuildConfig.for_task(task))
    # the stored selection: the family's score, 31 candidate layers, not the embeddings
    stored = clf.model.config.dls_layer_selection
    assert stored["score"] == "next_token_recovery" and len(stored["scores"]) == 31
    assert stored["layer"] != 0


def test_build_options_and_bad_backbone_inputs() -> None:
    import argparse

    from captum_layer_saliency.zoo import build
    from captum_layer_saliency.zoo.load import TASKS, load_default

    parser = argparse.ArgumentParser()
    build.add_build_arguments(parser)
    assert build.build_options(parser.parse_args([]))["tasks"] == list(TASKS)
    options = build.build_options(parser.parse_args(["--backbone", "smollm2"]))
    assert options["tasks"] == ["sst2", "ag_news"] and options["backbone"] == "smollm2"
    with pytest.raises(ValueError, match="no SmolLM2 default for task"):
        build.build_defaults(tasks=["hatexplain"], backbone="smollm2")
    with pytest.raises(ValueError, match="unknown backbone 'gpt'"):
        build.build_defaults(backbone="gpt")
    with pytest.raises(ValueError, match="unknown backbone 'gpt'"):
        load_default("sst2", backbone="gpt")


@pytest.mark.slow
@pytest.mark.skipif(
    not _shipped("sst2"), reason="the extra `smollm2` or the SmolLM2 SST-2 artifact is missing"
)
def test_smollm2_default_layer_gradients_equal_under_eager_and_sdpa() -> None:
    """The shipped model uses eager attention; SDPA (transformers' default) gives the same
    gradients at every layer, with right or left padding."""
    from captum_layer_saliency.attr import layer_gradients_and_outputs
    from captum_layer_saliency.models.classifier import TextClassifier
    from captum_layer_saliency.models.surgery import find_model_parts
    from captum_layer_saliency.zoo.load import load_default

    eager = load_default("sst2", backbone="smollm2")
    sdpa = copy.deepcopy(eager.model)
    sdpa.set_attn_implementation("sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    texts = ["a gripping , funny film .", "dull .", "not bad at all , and often moving ."]
    for side in ("right", "left"):
        eager.tokenizer.padding_side = side
        enc = eager.tokenizer(texts, padding=True, return_tensors="pt")
        grads = []
        for model in (eager.model, sdpa):
            forward = TextClassifier(model, eager.tokenizer).forward_func
            g, _ = layer_gradients_and_outputs(
                forward,
                find_model_parts(model).layers,
                enc["input_ids"],
                target=1,
                additional_forward_args=(enc["attention_mask"],),
            )
            grads.append(g)
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * float(a.abs().max()))
