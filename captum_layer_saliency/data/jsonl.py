"""Bring your own data: a JSON Lines file of examples for ``compare --data-file``.

One JSON object per line with ``text`` (a string) and ``label`` (the class index), optionally
``idx`` (a unique integer id; default the line's position among the examples) and ``words`` +
``rationale`` (whitespace words of ``text`` and one 0/1 per word) for the plausibility metrics.
Blank lines are skipped. This module only parses: the comparison runner checks the fields of
every row before any work (one place for those rules).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from captum_layer_saliency.errors import CaptumLayerSaliencyError


class DataFileError(CaptumLayerSaliencyError, ValueError):
    """A data file that cannot be read or parsed."""


def load_jsonl(path: str | os.PathLike[str], limit: int | None = None) -> list[dict[str, Any]]:
    """Read the examples of a JSON Lines file.

    Args:
        path: the file.
        limit: keep only the first ``limit`` examples.

    Returns:
        The examples, as dicts, in file order.

    Raises:
        DataFileError: the file is missing or unreadable, or a line is not a JSON object.
    """
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataFileError(f"cannot read data file {str(file)!r}: {reason}") from None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataFileError(f"{file}: line {number} is not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise DataFileError(
                f"{file}: line {number} is a JSON {type(row).__name__}, not an object with "
                "'text' and 'label'"
            )
        rows.append(row)
    return rows
