"""Where the CLI's models come from: local directories, or the Hugging Face hub when reachable.

Two things go wrong without these checks: a path that does not exist is taken for a hub repo id
("Repo id must be in the form..."), and without ``HF_HUB_OFFLINE`` an unreachable hub costs about
a minute of retries before the libraries fall back on their cache. :func:`prepare_hub` checks once,
in about a second, whether the hub answers, and sets ``HF_HUB_OFFLINE=1`` when it does not.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

#: Seconds to wait for the hub's TCP handshake before calling it unreachable.
HUB_TIMEOUT_S = 1.5
_OFF = ("", "0", "false", "False", "no")


def hub_is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(
        os.environ.get(k, "0") not in _OFF for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """A TCP handshake with the hub's endpoint (``HF_ENDPOINT``), within ``timeout`` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # A thread bounds the name lookup too, which the socket timeout does not cover.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def prepare_hub(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Go offline at once when the hub does not answer; return whether it is usable.

    Sets ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` (and the already-imported libraries'
    flags) when the hub is unreachable, so loading falls back on local files and the cache
    without a minute of retries.
    """
    if hub_is_offline():
        return False
    if hub_reachable(timeout):
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
        datasets_config.HF_DATASETS_OFFLINE = True  # type: ignore[attr-defined]
    return False


def looks_like_path(source: str) -> bool:
    """A name written as a file-system path (``./x``, ``/x``, ``~/x``, ``a/b/c``), not a repo id."""
    if source.startswith((".", "/", "~")) or "\\" in source:
        return True
    return source.count("/") > 1


def check_source(source: str, what: str) -> None:
    """Refuse a missing local path, or a hub id while the hub is unreachable, in one line.

    Args:
        source: a directory, or a hub repo id (``name`` or ``org/name``).
        what: ``"model"`` or ``"LM head"``, for the message.

    Raises:
        FileNotFoundError: a path that does not exist, or a repo id that is neither a local
            directory nor reachable (the hub is offline and it is not cached is left to the
            loader, which then says so).
    """
    if Path(source).expanduser().exists():
        return
    if looks_like_path(source):
        raise FileNotFoundError(
            f"{what} {source!r}: no such file or directory (a local {what} is a directory "
            "written by save_pretrained)"
        )
