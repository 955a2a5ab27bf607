"""What the CLI's commands share: the user-error type, the task and model loaders, the methods.

The commands call :func:`get_task` and :func:`load_model` through this module
(``common.load_model``), and read the method registry through
:mod:`captum_layer_saliency.compare.methods.registry`.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from captum_layer_saliency.cli.sources import check_source
from captum_layer_saliency.compare.methods import registry as method_registry
from captum_layer_saliency.data import tasks
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.heads import load_lm_head
from captum_layer_saliency.models.surgery import UnsupportedModelError
from captum_layer_saliency.zoo import load as zoo_load

__all__ = [
    "CLIError",
    "attach_lm_head",
    "check_methods",
    "get_task",
    "load_model",
    "pick_device",
    "print_summary",
    "split_list",
    "to_device",
]


class CLIError(CaptumLayerSaliencyError):
    """A user mistake: reported as one line, exit code 2."""


#: What transformers and torch raise for a model folder they refuse to load: a missing or
#: damaged file, a pickle that ``torch.load(weights_only=True)`` will not run, shapes that do
#: not fit the config, a config naming an unknown class.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    ImportError,
    pickle.UnpicklingError,
)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def get_task(name: str) -> Any:
    """The task spec called ``name``.

    Args:
        name: a task name (see ``list-tasks``).

    Returns:
        The :class:`~captum_layer_saliency.data.tasks.TaskSpec`.

    Raises:
        CLIError: an unknown task.
    """
    try:
        return tasks.get_task(name)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def load_model(model: str) -> TextClassifier:
    """A default classifier by name (``sst2``, ``ag_news``), or a Hugging Face path or id.

    A path is any directory written by ``save_pretrained`` holding a sequence classifier and
    its tokenizer; it has no LM head (DLS needs ``--lm-head``).

    Args:
        model: a default model's name, a local directory, or a Hugging Face id.

    Returns:
        The classifier, in eval mode, on the CPU.

    Raises:
        CLIError: the default model's artifacts are unusable, or the model cannot be loaded.
    """
    if model in zoo_load.TASKS:
        try:
            clf: TextClassifier = zoo_load.load_default(model)
        except zoo_load.ArtifactError as exc:
            raise CLIError(f"default model {model!r} unusable: {exc}") from None
        return clf
    try:
        check_source(model, "model")
        tokenizer = AutoTokenizer.from_pretrained(model)
        hf_model = AutoModelForSequenceClassification.from_pretrained(model).eval()
    except LOAD_ERRORS as exc:
        raise CLIError(f"cannot load model {model!r}: {first_line(exc)}") from None
    # the label names come from the config's id2label
    return TextClassifier(model=hf_model, tokenizer=tokenizer, name=Path(model).name or model)


def split_list(text: str | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` stays ``None``."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def check_methods(names: Sequence[str]) -> list[str]:
    """The canonical names of ``--methods`` (``all``: every registered method).

    Args:
        names: method names or aliases, or ``["all"]``.

    Returns:
        The canonical names, in order.

    Raises:
        CLIError: no names, or an unknown one.
    """
    if not names:
        raise CLIError("no methods given: pass --methods NAME[,NAME...] (see list-methods)")
    if list(names) == ["all"]:
        return list(method_registry.METHODS)
    try:
        return [method_registry.resolve_method_name(n) for n in names]
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def attach_lm_head(clf: TextClassifier, source: str) -> TextClassifier:
    """Give ``clf`` the LM head of ``source`` (a masked/causal LM path or id), checked.

    Args:
        clf: the classifier.
        source: the masked or causal LM of the classifier's backbone (a path or id).

    Returns:
        ``clf``, with its ``lm_head`` set.

    Raises:
        CLIError: the head cannot be loaded, or does not fit the model.
    """
    try:
        check_source(source, "LM head")
        clf.lm_head = load_lm_head(source, model=clf.model)
    except LOAD_ERRORS + (UnsupportedModelError,) as exc:
        raise CLIError(f"cannot load LM head {source!r}: {first_line(exc)}") from None
    return clf


def print_summary(out: Path) -> None:
    """Print a run's summary table and where its report and rows are."""
    print((out / "summary.md").read_text(encoding="utf-8"))
    print(f"report: {(out / 'report.html').resolve()}")
    print(f"rows:   {out.resolve()}")


def pick_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` must be available.

    Raises:
        CLIError: ``cuda`` was asked for and there is none.
    """
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for, but no CUDA device is available")
    return requested


def to_device(clf: TextClassifier, device: str) -> TextClassifier:
    """Move the model and its LM head (DLS decodes the model's hidden states with it)."""
    clf.model.to(device)
    if clf.lm_head is not None:
        clf.lm_head.to(device)
    return clf
