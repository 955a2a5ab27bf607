"""The default models: a fast build, atomic writes, bad artifacts, and the shipped classifiers."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from captum_layer_saliency._utils import LOCK_FILE, atomic_write, sha256_file
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.zoo import build
from captum_layer_saliency.zoo import load as defaults
from captum_layer_saliency.zoo.build import build_defaults
from captum_layer_saliency.zoo.load import (
    ArtifactError,
    load_default,
    load_pretrained_encoder,
    read_manifest,
    verify_entry,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HATEXPLAIN_MIN_ACCURACY = 0.55


@pytest.fixture
def user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty user cache, so that the packaged artifacts are the ones loaded."""
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path / "empty-cache"))
    return tmp_path / "empty-cache"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_fast_build_writes_verified_artifacts(fast_cache: Path) -> None:
    manifest = read_manifest(fast_cache)
    assert manifest is not None
    assert set(manifest["entries"]) == {"mlm_head", "sst2", "ag_news", "hatexplain"}
    for name, entry in manifest["entries"].items():
        assert entry["fast"] is True
        assert entry["encoder_sha256"] == manifest["encoder"]["sha256"]
        assert sha256_file(fast_cache / entry["file"]) == entry["sha256"]
        assert verify_entry(fast_cache, manifest, name)
    assert 0.0 <= manifest["entries"]["sst2"]["metrics"]["accuracy"] <= 1.0
    assert {"masked_top1", "kept_top1", "unigram_masked_top1"} <= set(
        manifest["entries"]["mlm_head"]["metrics"]
    )
    assert len(manifest["coherence"]["pretrained"]["all"]) == 7  # embeddings + 6 layers
    assert not [p for p in fast_cache.iterdir() if p.name.endswith(".tmp")]


def test_valid_artifacts_are_not_rebuilt(fast_cache: Path) -> None:
    def artifacts() -> dict[str, int]:  # the lock file records each build's pid: not an artifact
        return {p.name: p.stat().st_mtime_ns for p in fast_cache.iterdir() if p.name != LOCK_FILE}

    before = artifacts()
    assert build_defaults(fast=True, cache_dir=fast_cache)["built"] == []
    assert build.main(["--fast", "--cache-dir", str(fast_cache)]) == 0
    assert artifacts() == before


def test_load_from_user_cache(fast_cache: Path) -> None:
    clf = load_default("ag_news", cache_dir=fast_cache)
    assert isinstance(clf, TextClassifier)
    assert clf.labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert type(clf.model).__name__ == "BertForSequenceClassification"
    assert not clf.model.training
    assert clf.lm_head is not None
    logits = clf.lm_head(torch.zeros(2, 3, 384))
    assert logits.shape == (2, 3, 30522)


def test_atomic_write_interrupted_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old complete content")

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"half of the new")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_bytes() == b"old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.safetensors", interrupted)
    assert not (tmp_path / "new.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_artifacts_are_byte_reproducible(tmp_path: Path) -> None:
    """The same tensors and metadata give the same bytes (safetensors alone does not)."""
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    metadata = {"name": "x", "format_version": "1", "lora_rank": "16", "labels": '["a", "é"]'}
    digests = set()
    for i in range(5):
        build.save_fp16(tmp_path / f"{i}.safetensors", tensors, metadata)
        digests.add(sha256_file(tmp_path / f"{i}.safetensors"))
    assert len(digests) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "0.safetensors"), framework="pt") as f:
        assert f.metadata() == metadata
        assert torch.equal(f.get_tensor("b"), tensors["b"].half())


def test_build_interrupted_mid_save_leaves_no_half_file(
    fast_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _copy(fast_cache, tmp_path / "cache")
    old = (cache / "sst2.safetensors").read_bytes()
    old_manifest = (cache / "manifest.json").read_text()

    def crash(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("simulated: disk full")

    monkeypatch.setattr(build, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        build_defaults(tasks=["sst2"], force=True, fast=True, cache_dir=cache)
    assert (cache / "sst2.safetensors").read_bytes() == old
    assert (cache / "manifest.json").read_text() == old_manifest
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_unreadable_safetensors_is_reported(fast_cache: Path, tmp_path: Path) -> None:
    cache = _copy(fast_cache, tmp_path / "cache")
    (cache / "mlm_head.safetensors").write_bytes(b"not a safetensors file")
    manifest = read_manifest(cache)
    assert manifest is not None
    manifest["entries"]["mlm_head"]["sha256"] = sha256_file(cache / "mlm_head.safetensors")
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        verify_entry(cache, manifest, "mlm_head")


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="sst2, ag_news, hatexplain"):
        load_default("imdb")
    with pytest.raises(ValueError, match="unknown task"):
        build_defaults(tasks=["imdb"], fast=True)


def test_packaged_artifacts_are_small_verified_and_meet_targets() -> None:
    manifest = read_manifest(defaults.PACKAGED_DIR)
    assert manifest is not None, "run the build command in docs/default_models.md"
    total = 0
    for name in ("mlm_head", "sst2", "ag_news", "hatexplain"):
        entry = manifest["entries"][name]
        assert entry["fast"] is False
        verify_entry(defaults.PACKAGED_DIR, manifest, name)
        assert entry["bytes"] < 2 * 1024 * 1024
        total += entry["bytes"]
    assert total <= 6 * 1024 * 1024
    assert manifest["entries"]["sst2"]["metrics"]["accuracy"] >= 0.85
    assert manifest["entries"]["ag_news"]["metrics"]["accuracy"] >= 0.85
    # Three classes, trained on 1,922 posts; majority class (normal) is 0.41 of test.
    assert manifest["entries"]["hatexplain"]["metrics"]["accuracy"] >= HATEXPLAIN_MIN_ACCURACY
    assert set(manifest["coherence"]) >= {"pretrained", "sst2", "ag_news", "hatexplain"}


def test_adding_a_classifier_measures_only_its_own_coherence(
    fast_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache built before a task existed gains it without re-measuring the other curves."""
    cache = _copy(fast_cache, tmp_path / "cache")
    manifest = read_manifest(cache)
    assert manifest is not None
    before = json.loads(json.dumps(manifest["coherence"]))
    del manifest["entries"]["hatexplain"]
    del manifest["coherence"]["hatexplain"]
    (cache / defaults.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    measured = []
    original = build.layer_coherence

    def counting(model: torch.nn.Module, *args: object) -> dict[str, list[float]]:
        measured.append(type(model).__name__)
        return original(model, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(build, "layer_coherence", counting)
    report = build_defaults(tasks=["hatexplain"], fast=True, cache_dir=cache)
    assert report["built"] == ["hatexplain"]
    assert measured == ["BertForSequenceClassification"]
    after = report["coherence"]
    for name in ("pretrained", "sst2", "ag_news"):
        assert after[name] == before[name]
    assert after["hatexplain"] == before["hatexplain"]  # same seed, same tiny build


@pytest.mark.usefixtures("user_cache")
def test_default_sst2_classifies_real_reviews() -> None:
    start = time.perf_counter()
    clf = load_default("sst2")
    assert time.perf_counter() - start < 10
    reviews = [
        "a wonderful , moving film with brilliant performances - one of the best of the year .",
        "a dull , tedious mess : boring , badly acted and painfully unfunny .",
    ]
    assert clf.predict(reviews) == ["positive", "negative"]


@pytest.mark.usefixtures("user_cache")
def test_default_ag_news_classifies_a_sports_headline() -> None:
    clf = load_default("ag_news")
    headline = (
        "Federer beats Hewitt to win US Open title Roger Federer won his first US Open "
        "title on Sunday, beating Lleyton Hewitt in straight sets at Flushing Meadows."
    )
    assert clf.predict(headline) == ["Sports"]


@pytest.mark.usefixtures("user_cache")
def test_default_hatexplain_tells_a_friendly_post_from_an_insult() -> None:
    clf = load_default("hatexplain")
    assert clf.labels == ["hatespeech", "normal", "offensive"]
    assert clf.name == "minilm-hatexplain"
    posts = ["i had a lovely day at the park with my family", "shut up you stupid bitch"]
    assert clf.predict(posts) == ["normal", "offensive"]


@pytest.mark.usefixtures("user_cache")
def test_pretrained_encoder_head_decodes_visible_tokens() -> None:
    model, tokenizer = load_pretrained_encoder()
    assert type(model).__name__ == "BertForMaskedLM"
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    enc = tokenizer("the movie was a charming and often affecting journey", return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**enc).last_hidden_state
        top1 = model.cls(hidden).argmax(-1)[0, 1:-1]
    agree = (top1 == enc["input_ids"][0, 1:-1]).float().mean().item()
    assert agree >= 0.5
