"""Small utilities every floor may use: cache, file writes, hashing, seeding, warnings.

The warnings (:func:`warn_user`) point at the user's code, not at this package's.

Nothing here imports the rest of the package.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import captum
import numpy as np
import torch

from captum_layer_saliency._options import CACHE_ENV
from captum_layer_saliency._options import DEFAULT_CACHE_DIR as _DEFAULT_CACHE_DIR

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "atomic_write",
    "resolve_cache_dir",
    "seed_everything",
    "seeded",
    "sha256_file",
    "sha256_texts",
    "text_key",
    "user_stacklevel",
    "warn_user",
]

DEFAULT_CACHE_DIR = Path(_DEFAULT_CACHE_DIR)


def resolve_cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The user cache directory: ``path``, else ``$CAPTUM_LAYER_SALIENCY_CACHE``, else the default.

    Args:
        path: an explicit directory.

    Returns:
        The (not necessarily existing) directory.
    """
    chosen = path if path is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` so that readers see either the old file or the complete new one.

    ``write`` fills a temporary file in the same directory, which is then renamed over ``path``
    with :func:`os.replace` (atomic on POSIX and Windows). If ``write`` fails or is interrupted
    (``KeyboardInterrupt`` included), the temporary file is removed and ``path`` is untouched.

    Args:
        path: the destination.
        write: called with the temporary path; must write the whole content there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; give the artifact the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators with ``seed``.

    NumPy takes seeds below ``2**32``, so it gets ``seed % 2**32``.

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, for code that takes one explicitly.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch (CPU and a CUDA ``device``) and NumPy's global generator, restoring both on exit.

    Captum draws from both: torch for LIME/KernelSHAP samples and Shapley permutations, NumPy for
    GradientSHAP's interpolation points.
    """
    devices = [device] if device is not None and device.type == "cuda" else []
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def sha256_texts(texts: Sequence[str]) -> str:
    """Hex sha256 of a list of texts, in order (a cache key for a corpus)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def text_key(text: str) -> str:
    """The key under which two texts count as the same text: case-folded, whitespace removed.

    A text that went through a tokenizer and back (``"it 's"`` -> ``"it's"``, lower-cased)
    keeps its key, so an input decoded from token ids still matches its corpus copy.
    """
    return re.sub(r"\s+", "", text).casefold()


#: Frames a warning is never attributed to: this package, the libraries it calls the user's code
#: through or that call it (Captum's ``log_usage`` wrapper, torch's module call) and the
#: standard library's wrappers.
_LIBRARY_PREFIXES = tuple(
    os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep
    for module in (sys.modules[__name__], captum, torch)
)
_WRAPPER_FILES = {os.path.abspath(m.__file__ or "") for m in (contextlib, functools)}


def _is_library(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    path = os.path.abspath(filename)
    return path.startswith(_LIBRARY_PREFIXES) or path in _WRAPPER_FILES


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the caller point at the user's code.

    Counts, from the function that calls this one, the frames of this package (and of Captum,
    torch and the standard library's wrappers) up to the first frame of anyone else's code, so
    the level is right however deep the call (an explainer called directly, through ``explain``
    or through Captum's wrapper). Where every frame is ours (the command line), the outermost of
    ours.

    Returns:
        The level to pass to ``warnings.warn`` from the caller's own frame.
    """
    frame = sys._getframe(1)  # the function that will call warnings.warn: level 1
    level, last_ours = 1, 1
    while frame is not None:
        if not _is_library(frame.f_code.co_filename):
            return level
        if frame.f_code.co_filename.startswith(_LIBRARY_PREFIXES[0]):
            last_ours = level
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return last_ours


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the user's call into the package.

    Every user-facing warning of the package goes through here, so its file and line are the
    user's (see :func:`user_stacklevel`), whatever path led to it.

    Args:
        message: the warning's text.
        category: its class. Default: ``UserWarning``.
    """
    warnings.warn(message, category, stacklevel=user_stacklevel())
