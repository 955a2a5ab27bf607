"""The default-model artifact files: names, manifest, checks, and errors that say how to rebuild.

An artifact directory holds one fp16 safetensors file per artifact (the MLM head, one classifier
per task) and a ``manifest.json`` recording each file's sha256, its build configuration, the
encoder it was trained on and its measurements. Loading (:mod:`.load`) and building
(:mod:`.build`) read and check it through this module; only the build writes artifacts.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import Tensor

from captum_layer_saliency._options import DEFAULT_MODELS
from captum_layer_saliency._utils import atomic_write, resolve_cache_dir, sha256_file
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.models.pretrained import encoder_path

logger = logging.getLogger(__name__)

PACKAGED_DIR = Path(__file__).parent / "artifacts"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
HEAD = "mlm_head"
TASKS = DEFAULT_MODELS
#: The token budget of the default classifiers (and of their evaluation).
MAX_LENGTH = 128
BUILD_COMMAND = "captum-layer-saliency build-defaults"
BUILD_MODULE = "python -m captum_layer_saliency.zoo.build"


class ArtifactError(CaptumLayerSaliencyError, RuntimeError):
    """A default-model artifact is missing, corrupt or does not match its manifest.

    Loading never trains: the message names the file and says how to rebuild it.

    Args:
        problem: what is wrong, naming the file.
        path: the file (or directory) that is wrong, if known.
        fix: how to repair it (a sentence with the exact command), if known.

    Attributes:
        problem: as given.
        path: as given.
        fix: as given.
    """

    def __init__(self, problem: str, path: Path | None = None, fix: str | None = None) -> None:
        super().__init__(problem if fix is None else f"{problem}. {fix}")
        self.problem = problem
        self.path = path
        self.fix = fix


class MissingArtifactError(ArtifactError):
    """An artifact file, or its manifest entry, is missing."""


class CorruptArtifactError(ArtifactError):
    """An artifact's sha256 or configuration differs from its manifest, or it is unreadable."""


class StaleArtifactError(ArtifactError):
    """An artifact was built by another version: another manifest format or another encoder."""


# --------------------------------------------------------------------------- the encoder


@lru_cache(maxsize=1)
def encoder_sha256() -> str:
    """The sha256 of the installed encoder's weights (computed once per process).

    Returns:
        The hex digest of ``model.safetensors``.
    """
    return sha256_file(encoder_path() / "model.safetensors")


# --------------------------------------------------------------------------- how to rebuild


def rebuild_args(directory: Path, tasks: Sequence[str], fast: bool = False) -> str:
    """The build arguments that ensure the MLM head and ``tasks`` in ``directory``.

    Valid artifacts are kept, so these arguments rebuild only what is missing, corrupt or stale.

    Args:
        directory: the artifact directory.
        tasks: the classifiers to ensure (none: all of them).
        fast: the directory holds the tiny test configuration.

    Returns:
        The arguments, shell-quoted, for ``captum-layer-saliency build-defaults`` or
        ``python -m captum_layer_saliency.zoo.build``.
    """
    args = ["--fast"] if fast else []
    args += ["--cache-dir", shlex.quote(str(directory))]
    if tasks and list(tasks) != list(TASKS):
        args += ["--tasks", *[t for t in TASKS if t in tasks]]
    return " ".join(args)


def how_to_rebuild(directory: Path, manifest: dict[str, Any] | None, names: Sequence[str]) -> str:
    """A sentence with the exact command that repairs ``names`` in ``directory``.

    Args:
        directory: the artifact directory.
        manifest: its manifest (which tasks it holds, whether in the tiny test configuration).
        names: the artifacts that are wrong (``"mlm_head"`` and/or tasks).

    Returns:
        For the packaged artifacts: reinstall, or build a user copy (which
        :func:`~captum_layer_saliency.zoo.load.load_default` then uses); for a user cache: the
        command that rebuilds the wrong artifacts in place. A wrong head alone is rebuilt with
        the tasks the directory already holds (valid ones are kept), so no classifier is added.
    """
    if directory.resolve() == PACKAGED_DIR.resolve():
        args = rebuild_args(resolve_cache_dir(None), TASKS)
        return (
            "Reinstall captum-layer-saliency (pip install --force-reinstall "
            "captum-layer-saliency), or build a copy of the default models, which load_default "
            f"then uses (about 15 minutes on 2 CPU cores): `{BUILD_COMMAND} {args}` "
            f"(or `{BUILD_MODULE} {args}`)"
        )
    entries = (manifest or {}).get("entries", {})
    fast = any(isinstance(entries.get(n), dict) and entries[n].get("fast") for n in names)
    tasks = [t for t in TASKS if t in names] or [t for t in TASKS if t in entries]
    args = rebuild_args(directory, tasks, fast=fast)
    return f"Rebuild it with `{BUILD_COMMAND} {args}` (or `{BUILD_MODULE} {args}`)"


# --------------------------------------------------------------------------- the manifest


def load_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of an artifact directory, strictly.

    Args:
        directory: the artifact directory.

    Returns:
        The manifest, or ``None`` if the directory has no ``manifest.json``.

    Raises:
        CorruptArtifactError: the manifest is not readable JSON.
        StaleArtifactError: it was written by another version (another ``format_version``).
    """
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(
            f"{path} is not a readable manifest ({exc})",
            path,
            how_to_rebuild(directory, None, TASKS),
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise StaleArtifactError(
            f"{path} has format version {found!r}, this version reads {FORMAT_VERSION}",
            path,
            how_to_rebuild(directory, None, TASKS),
        )
    if not isinstance(manifest.get("entries"), dict):
        raise CorruptArtifactError(
            f"{path} has no 'entries' table", path, how_to_rebuild(directory, None, TASKS)
        )
    return manifest


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of an artifact directory, or ``None`` if it has none (or an unusable one).

    Args:
        directory: the artifact directory.

    Returns:
        The manifest; ``None`` (with a logged warning) where :func:`load_manifest` would raise.
    """
    try:
        return load_manifest(directory)
    except ArtifactError as exc:
        logger.warning("ignoring %s", exc.problem)
        return None


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomically write ``manifest`` into ``directory``.

    Args:
        directory: the artifact directory.
        manifest: the manifest.
    """
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------- one artifact


def _check_metadata(
    path: Path, name: str, entry: dict[str, Any], metadata: dict[str, str], fix: str
) -> None:
    """The file's own metadata must agree with the manifest's entry (name, LoRA, labels)."""

    def wrong(what: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"{path} does not match its manifest entry: {what}", path, fix)

    if metadata.get("name") != name:
        raise wrong(f"the file is {metadata.get('name')!r}, the entry {name!r}")
    if name == HEAD:
        return
    config = entry.get("config") or {}
    for key in ("lora_rank", "lora_alpha"):
        if not isinstance(config.get(key), (int, float)) or config[key] <= 0:
            raise wrong(f"its configuration has no positive {key}")
        if key not in metadata or float(metadata[key]) != float(config[key]):
            raise wrong(f"{key} {metadata.get(key)} in the file, {config[key]} in the manifest")
    try:
        labels = json.loads(metadata["labels"])
    except (KeyError, ValueError) as exc:
        raise wrong("the file records no labels") from exc
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise wrong(f"its labels {labels!r} are not a list of names")


def read_entry(
    directory: Path, manifest: dict[str, Any], name: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Load one artifact after checking it against the manifest.

    Args:
        directory: the artifact directory.
        manifest: its manifest.
        name: ``"mlm_head"`` or a task.

    Returns:
        ``(tensors, metadata)``: the artifact's tensors (as stored, fp16) and the file's
        metadata (``name``, and for a classifier ``lora_rank``, ``lora_alpha``, ``labels``).

    Raises:
        MissingArtifactError: the manifest has no entry ``name``, or its file is missing.
        CorruptArtifactError: the file's sha256 differs from the manifest's, it is not a readable
            safetensors file, or its metadata disagrees with the entry's configuration.
    """
    fix = how_to_rebuild(directory, manifest, [name])
    entry = manifest.get("entries", {}).get(name)
    if not isinstance(entry, dict) or not {"file", "sha256"} <= set(entry):
        raise MissingArtifactError(f"{directory / MANIFEST} has no entry {name!r}", None, fix)
    path = directory / entry["file"]
    if not path.is_file():
        raise MissingArtifactError(f"{path} is missing", path, fix)
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise CorruptArtifactError(
            f"{path} is corrupt: sha256 {actual[:12]}... but the manifest says "
            f"{str(entry['sha256'])[:12]}...",
            path,
            fix,
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptArtifactError(
            f"{path} is not a readable safetensors file ({exc})", path, fix
        ) from exc
    _check_metadata(path, name, entry, metadata, fix)
    return tensors, metadata


def verify_entry(directory: Path, manifest: dict[str, Any], name: str) -> dict[str, Tensor]:
    """Load one artifact after checking it against the manifest (see :func:`read_entry`).

    Args:
        directory: the artifact directory.
        manifest: its manifest.
        name: ``"mlm_head"`` or a task.

    Returns:
        The artifact's tensors (as stored, fp16).

    Raises:
        ArtifactError: as :func:`read_entry`.
    """
    return read_entry(directory, manifest, name)[0]


def check_encoder(directory: Path, manifest: dict[str, Any], name: str, strict: bool) -> None:
    """Check that ``name`` was trained on the installed all-MiniLM-L6-v2 checkpoint.

    The entry's own ``encoder_sha256`` is used, else the manifest's ``encoder.sha256`` (older
    manifests record one encoder for all entries).

    Args:
        directory: the artifact directory.
        manifest: its manifest.
        name: ``"mlm_head"`` or a task.
        strict: raise on a mismatch (a user cache); otherwise log a warning (the packaged
            artifacts, which the user cannot rebuild in place).

    Raises:
        StaleArtifactError: ``strict`` and the encoder differs.
    """
    entry = manifest.get("entries", {}).get(name) or {}
    expected = entry.get("encoder_sha256") or (manifest.get("encoder") or {}).get("sha256")
    if not expected or expected == encoder_sha256():
        return
    problem = (
        f"{directory / entry.get('file', MANIFEST)} was trained on another all-MiniLM-L6-v2 "
        f"checkpoint (sha256 {expected[:12]}..., installed {encoder_sha256()[:12]}...)"
    )
    fix = how_to_rebuild(directory, manifest, [name])
    if strict:
        raise StaleArtifactError(problem, directory / entry.get("file", MANIFEST), fix)
    logger.warning("%s; its predictions may be wrong. %s", problem, fix)
