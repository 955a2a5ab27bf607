"""Read a user's texts from CSV, TSV, JSON Lines or plain text, for ``explain`` and ``compare``.

The format follows the file's suffix: ``.csv`` (comma-separated, a header row), ``.tsv`` /
``.tab`` (tab-separated, a header row), ``.jsonl`` / ``.ndjson`` / ``.json`` (one JSON object
per line, see :mod:`captum_layer_saliency.data.jsonl`) and ``.txt`` (one text per line, column
``text``). CSV and TSV values are strings; :func:`label_indices` turns labels given as names
(``positive``) or as digits (``1``) into class indices for a model.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captum_layer_saliency.data.jsonl import DataFileError, load_jsonl

__all__ = ["TABLE_SUFFIXES", "label_indices", "read_table", "text_column"]

#: The suffixes :func:`read_table` knows, and their formats.
TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".txt": "txt",
}


def read_table(path: str | os.PathLike[str], limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of a CSV, TSV, JSON Lines or text file, as dicts, in file order.

    Args:
        path: the file; its suffix picks the format (see :data:`TABLE_SUFFIXES`).
        limit: keep only the first ``limit`` rows.

    Returns:
        The rows (CSV/TSV: column name -> string; JSON Lines: the objects; text: ``{"text"}``).
        Blank lines are skipped.

    Raises:
        DataFileError: an unknown suffix, a missing or unreadable file, a CSV/TSV without a
            header, with a column named twice or with ragged rows, a line that is not a JSON
            object. A quoted CSV/TSV cell keeps its newlines; cells have no size limit.
    """
    file = Path(path).expanduser()
    kind = TABLE_SUFFIXES.get(file.suffix.lower())
    if kind is None:
        raise DataFileError(
            f"{str(file)!r}: unknown file type {file.suffix or '(no suffix)'!r}; use one of "
            f"{', '.join(sorted(TABLE_SUFFIXES))}"
        )
    if kind == "jsonl":
        return load_jsonl(file, limit=limit)
    try:
        if kind == "txt":
            content = file.read_text(encoding="utf-8-sig")
            rows = [{"text": line} for line in content.splitlines() if line.strip()]
            return rows[:limit] if limit is not None else rows
        # csv reads the open file itself, so a quoted cell keeps its newlines.
        with open(file, encoding="utf-8-sig", newline="") as handle:
            return _read_csv(file, handle, "," if kind == "csv" else "\t", limit)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataFileError(f"cannot read data file {str(file)!r}: {reason}") from None
    except csv.Error as exc:
        raise DataFileError(f"{file}: not a valid {kind.upper()} file: {exc}") from None


def _read_csv(file: Path, handle: Any, delimiter: str, limit: int | None) -> list[dict[str, Any]]:
    """The rows of an open CSV/TSV file (see :func:`read_table`)."""
    # A long text is a long cell: lift csv's 131,072-character default limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(handle, delimiter=delimiter)
    if not reader.fieldnames:
        raise DataFileError(f"{file}: empty, or no header row naming the columns")
    seen: set[str] = set()
    for name in reader.fieldnames:
        if name in seen:
            raise DataFileError(f"{file}: the header names column {name!r} twice")
        seen.add(name)
    rows: list[dict[str, Any]] = []
    for row in reader:
        if limit is not None and len(rows) >= limit:
            break
        if None in row or any(v is None for v in row.values()):
            raise DataFileError(
                f"{file}: line {reader.line_num} has {len(row) - 1 + len(row.get(None) or [])} "
                f"fields where the header names {len(reader.fieldnames)} (quote fields that "
                "hold the separator)"
            )
        if not any(str(v).strip() for v in row.values()):
            continue
        rows.append(dict(row))
    return rows


def text_column(rows: Sequence[dict[str, Any]], column: str, path: object) -> list[str]:
    """The strings of ``column`` in every row.

    Raises:
        DataFileError: a row without the column, or whose value is not a non-empty string.
    """
    texts = []
    for i, row in enumerate(rows):
        if column not in row:
            raise DataFileError(
                f"{path}: row {i + 1} has no column {column!r}; it has {sorted(row)} "
                "(choose with --text-column)"
            )
        value = row[column]
        if not isinstance(value, str) or not value.strip():
            raise DataFileError(f"{path}: row {i + 1}: {column!r} is empty or not a string")
        texts.append(value)
    return texts


def label_indices(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Copies of ``rows`` whose ``label`` (and ``idx``) are integers.

    A label may be an int, a string of digits (``"1"``) or a class name of the model (``labels``,
    matched ignoring case); ``idx`` may be an int or a string of digits.

    Args:
        rows: the rows (e.g. from :func:`read_table`).
        labels: the model's class names, indexed like its logits.

    Returns:
        New dicts; rows without a ``label`` are copied unchanged (the comparison reports them).

    Raises:
        DataFileError: a label that is neither an index nor one of the names.
    """
    by_name = {str(name).strip().lower(): i for i, name in enumerate(labels)}
    out = []
    for i, row in enumerate(rows):
        row = dict(row)
        label = row.get("label")
        if isinstance(label, str):
            key = label.strip().lower()
            if key in by_name:
                row["label"] = by_name[key]
            elif key.lstrip("-").isdigit():
                row["label"] = int(key)
            else:
                names = ", ".join(repr(str(n)) for n in labels) or "(the model names none)"
                raise DataFileError(
                    f"row {i + 1}: label {label!r} is neither a class index nor one of the "
                    f"model's labels: {names}"
                )
        idx = row.get("idx")
        if isinstance(idx, str) and idx.strip().lstrip("-").isdigit():
            row["idx"] = int(idx)
        out.append(row)
    return out
