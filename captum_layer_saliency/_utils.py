"""Small utilities every floor may use: cache, file writes, hashing, seeding, warnings.

The warnings (:func:`warn_user`) point at the user's code, not at this package's.

The one writing rule of every file the package writes: an append is one ``write`` per batch,
flushed and fsync-ed (:func:`append_durably`); every rewrite goes to a temporary file in the same
directory, fsync-ed, then renamed over the old one (:func:`atomic_write`); a resume cuts only a
torn last line (:func:`truncate_torn_tail`); and an output directory is written by one process
at a time (:func:`lock_directory`).

Nothing here imports the rest of the package but :mod:`captum_layer_saliency.errors`.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from captum_layer_saliency.errors import OutputDirError, OutputLockedError

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "LOCK_FILE",
    "append_durably",
    "atomic_write",
    "lock_directory",
    "resolve_cache_dir",
    "seed_everything",
    "seeded",
    "sha256_file",
    "sha256_texts",
    "text_key",
    "truncate_torn_tail",
    "user_stacklevel",
    "warn_user",
    "writable_directory",
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
    # The temporary file keeps the suffix, so writers that read it (matplotlib) pick the format.
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
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


def append_durably(path: Path, lines: Sequence[str]) -> None:
    """Append ``lines`` (each without its newline) to ``path`` in one write, then fsync.

    After a crash the file ends either with all of ``lines`` or with a torn last line, which
    :func:`truncate_torn_tail` cuts on resume; the lines before are on disk.

    Args:
        path: the file (created, with its directory, if missing).
        lines: the lines to add.
    """
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def truncate_torn_tail(path: Path) -> bool:
    """Cut a last line without its newline (a write cut short) off ``path``, in place.

    Only the torn bytes go (an ``os.truncate`` at the last newline, then fsync): the complete lines
    are never rewritten, so an interruption here loses nothing.

    Args:
        path: a line-oriented file (missing: nothing to do).

    Returns:
        Whether a torn tail was cut.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size == 0:
        return False
    with open(path, "r+b") as f:
        keep = size
        block = 1 << 16
        while keep > 0:
            start = max(0, keep - block)
            f.seek(start)
            chunk = f.read(keep - start)
            if keep == size and chunk.endswith(b"\n"):
                return False
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


def writable_directory(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove that files can be created in it, before any work.

    Args:
        path: the directory (``~`` expanded).
        what: what it is, for the message (``"output directory"``, ``"--cache-dir"``).

    Returns:
        The directory.

    Raises:
        OutputDirError: it cannot be created (a file is in the way, no permission) or written.
    """
    directory = Path(path).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputDirError(f"cannot write to {what} {str(directory)!r}: {reason}") from None
    return directory


#: The lock file :func:`lock_directory` holds in an output directory.
LOCK_FILE = ".lock"


@contextmanager
def lock_directory(directory: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` for the ``with`` block (``fcntl.flock``).

    The lock is on the file ``directory/name``, which records the holder's pid; the kernel drops
    it when the process ends, however it ends (a SIGKILL included), so no stale lock is left.
    Once held, the temporary files a killed holder left behind (:func:`atomic_write`'s
    ``.NAME.*.tmp*``, in the directory and below) are removed: no one else can be writing them.

    Args:
        directory: the output directory (created if missing).
        name: the lock file's name (sharded runs take one per rank).

    Raises:
        OutputLockedError: another process holds it (the message names its pid).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise OutputLockedError(
                f"{str(directory)!r} is in use by another process (pid {holder}): wait for it to "
                "finish, or choose another output directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        if name == LOCK_FILE:  # the whole directory's holder (a shard's holds only its own)
            for stale in directory.rglob(".*.tmp*"):
                stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
