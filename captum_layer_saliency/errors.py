"""The package's one base exception, and the errors that belong to no single floor.

Every error a user's input, files or model can cause derives from :class:`CaptumLayerSaliencyError`
(most also from :class:`ValueError`, so ``except ValueError`` keeps working); the command line
catches the base and prints one ``error:`` line with exit code 2. A traceback is a bug.

Examples::

    from captum_layer_saliency.errors import CaptumLayerSaliencyError

    try:
        explain(clf, texts, method="ixg")
    except CaptumLayerSaliencyError as exc:
        print(f"error: {exc}")
"""

from __future__ import annotations

__all__ = ["CaptumLayerSaliencyError", "ModelOutputError", "OutputDirError", "OutputLockedError"]


class CaptumLayerSaliencyError(Exception):
    """The base of every error the package raises for a user's input, files or model."""


class ModelOutputError(CaptumLayerSaliencyError, ValueError):
    """The model (or its LM head) gave NaN/inf values, or an output that holds no logits."""


class OutputDirError(CaptumLayerSaliencyError, ValueError):
    """An output directory that cannot be created or written to."""


class OutputLockedError(CaptumLayerSaliencyError, RuntimeError):
    """Another process is writing into the same output directory."""
