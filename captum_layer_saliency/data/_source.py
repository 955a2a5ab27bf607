"""Where datasets come from: the Hugging Face hub first, then a local directory.

The local directory is the ``data_dir`` argument, else the folder named by the environment
variable ``CAPTUM_LAYER_SALIENCY_DATA`` (a folder with the datasets). Loaders raise
:class:`DataUnavailableError` with what to do when neither source works.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from captum_layer_saliency.errors import CaptumLayerSaliencyError

DATA_DIR_ENV = "CAPTUM_LAYER_SALIENCY_DATA"

logger = logging.getLogger(__name__)
T = TypeVar("T")


class DataUnavailableError(CaptumLayerSaliencyError, RuntimeError):
    """Neither the hub nor a local copy could provide a dataset."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local data directory to fall back on, or ``None`` if there is none.

    Raises:
        DataUnavailableError: ``data_dir`` was given explicitly but is not a directory.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataUnavailableError(f"data directory {str(path)!r} does not exist")
        return path
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataUnavailableError(f"${DATA_DIR_ENV}={env!r} is not a directory")
        return path
    return None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False") or (
        os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0", "false", "False")
    )


def hub_then_local(
    name: str,
    from_hub: Callable[[], T],
    from_local: Callable[[], T | None],
    hint: str,
) -> T:
    """Try ``from_hub()``; on any failure try ``from_local()``; else raise a helpful error.

    Args:
        name: the dataset's name, for messages.
        from_hub: loads from the hub (skipped when ``HF_HUB_OFFLINE`` is set).
        from_local: loads from a local copy, or returns ``None`` when there is none.
        hint: what the user can do, appended to the error.
    """
    hub_error: BaseException | None = None
    if not hub_offline():
        try:
            return from_hub()
        except Exception as exc:  # the hub fails in many ways offline; all mean "fall back"
            hub_error = exc
            logger.info("loading %s from the hub failed (%s); using a local copy", name, exc)
    local = from_local()
    if local is not None:
        return local
    reason = f" (hub error: {type(hub_error).__name__}: {hub_error})" if hub_error else ""
    raise DataUnavailableError(
        f"could not load {name} from the hub or a local copy{reason}. {hint}"
    )
