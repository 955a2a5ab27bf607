"""Results on disk: the JSONL rows of a comparison and the ``run.json`` that describes it.

A comparison directory holds:

* ``run.json`` -- the configuration that produced the rows (task, model, methods, metrics, seed,
  limit, batch size, method options). A rerun into the same directory must have the same
  configuration, otherwise its rows would silently mix two experiments; see
  :func:`check_or_write_config`.
* ``rows.jsonl`` (one process) or ``rows.rank{r}.jsonl`` (one file per rank of a sharded run):
  one JSON object per (example, method), appended as soon as it is computed. Every row is flushed
  and ``fsync``-ed, so an interrupted run loses at most the row being written; a torn last line is
  detected, reported and cut off by :func:`read_rows` on the next run.

Rows are identified by their key ``(index, method)``: the runner never writes a key twice, and the
readers keep the first copy of a key if one ever appears twice (for example after copying shard
files by hand).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from captum_layer_saliency._utils import atomic_write, warn_user, writable_directory
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.errors import OutputDirError as OutputDirError  # re-exported

ROWS_FILE = "rows.jsonl"
CONFIG_FILE = "run.json"
_SHARD_RE = re.compile(r"^rows\.rank(\d+)\.jsonl$")

#: Fields of ``run.json`` that must match for a rerun to resume into a directory. Anything else
#: recorded there (versions, labels, timestamps) is informational.
CONFIG_KEYS = (
    "task",
    "model",
    "methods",
    "metrics",
    "seed",
    "limit",
    "batch_size",
    "method_options",
    "max_length",
)

Row = dict[str, Any]
RowKey = tuple[int, str]


class ConfigMismatchError(CaptumLayerSaliencyError, ValueError):
    """A rerun's configuration differs from the one recorded in the output directory."""


class CorruptResultsError(CaptumLayerSaliencyError, ValueError):
    """A results file is damaged somewhere other than its last line."""


def check_writable(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` if needed and prove that files can be created in it.

    Called before any slow work, so that a run never computes rows it cannot store.

    Args:
        out_dir: the directory.

    Returns:
        It, as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
        OutputDirError: it cannot be created (a file is in the way, no permission) or written.
    """
    return writable_directory(Path(out_dir), "output directory")


def row_key(row: Mapping[str, Any]) -> RowKey:
    """The identity of a row: ``(example index, method name)``."""
    return int(row["index"]), str(row["method"])


def rows_path(out_dir: str | os.PathLike[str], rank: int | None = None) -> Path:
    """The rows file of a run (``rank=None``) or of one rank of a sharded run."""
    name = ROWS_FILE if rank is None else f"rows.rank{int(rank)}.jsonl"
    return Path(out_dir) / name


def rows_files(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Every rows file in ``out_dir``: ``rows.jsonl`` first, then the shard files by rank."""
    out = Path(out_dir)
    shards = sorted(
        (int(m.group(1)), p)
        for p in out.glob("rows.rank*.jsonl")
        if (m := _SHARD_RE.match(p.name)) is not None
    )
    main = [out / ROWS_FILE] if (out / ROWS_FILE).is_file() else []
    return main + [p for _, p in shards]


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities by ``None``: strict JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def dumps_row(row: Mapping[str, Any]) -> str:
    """One row as a single line of strict JSON (no NaN), without the newline."""
    return json.dumps(_json_safe(dict(row)), ensure_ascii=False, allow_nan=False)


class RowWriter:
    """Appends rows to a JSONL file, durably: each row is flushed and fsync-ed before returning.

    Use as a context manager::

        with RowWriter(path) as w:
            w.write(row)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open ``path`` for appending (its directory is created)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row and make it durable."""
        # One write call per line, then flush + fsync: after a crash the file ends either with a
        # complete row or with a torn line that read_rows repairs.
        self._fh.write(dumps_row(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> RowWriter:
        """Return the writer itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the file, also after an exception."""
        self.close()


def read_rows(path: str | os.PathLike[str], *, repair: bool = False) -> list[Row]:
    """Read a JSONL rows file, tolerating a torn last line.

    A last line that is not complete JSON (what an interrupted write leaves) is dropped with a
    warning; with ``repair=True`` it is also cut off the file, so that appending continues on a
    clean line. A damaged line anywhere else means the file was edited or mangled, and is an error.

    Args:
        path: the file; a missing file reads as no rows.
        repair: truncate the file after its last good row when the last line is damaged.

    Returns:
        The rows in file order.

    Raises:
        CorruptResultsError: a line other than the last is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    rows: list[Row] = []
    good_end = 0  # byte offset just past the last good line
    pos = 0
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        is_last = i == len(lines) - 1
        if is_last and raw == b"":
            break  # the file ends with a newline, as it should
        line_end = pos + len(raw) + (0 if is_last else 1)
        try:
            if not raw.strip():
                raise ValueError("empty line")
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            row_key(obj)
        except (ValueError, KeyError, TypeError) as exc:
            if not is_last and not (i == len(lines) - 2 and lines[-1] == b""):
                raise CorruptResultsError(
                    f"{path}: line {i + 1} is not a valid result row ({exc}); only a damaged "
                    "last line can be repaired automatically. Fix or remove that line."
                ) from None
            warn_user(
                f"{path}: dropping a damaged last line ({len(raw)} bytes), probably left by an "
                "interrupted run; its row will be recomputed"
            )
            if repair:
                with path.open("r+b") as fh:
                    fh.truncate(good_end)
                    fh.flush()
                    os.fsync(fh.fileno())
            return rows
        if is_last:
            # Complete JSON but no newline: keep the row, and add the newline when repairing so
            # that the next append does not glue two rows together.
            rows.append(obj)
            if repair:
                with path.open("ab") as fh:
                    fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            return rows
        rows.append(obj)
        pos = good_end = line_end
    return rows


def dedupe(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Keep the first row of every ``(index, method)`` key, in order."""
    seen: set[RowKey] = set()
    out: list[Mapping[str, Any]] = []
    for row in rows:
        key = row_key(row)
        if key in seen:
            continue
        seen.add(key)
        out.append(row)
    return out


def iter_all_rows(out_dir: str | os.PathLike[str], *, repair: bool = False) -> Iterator[Row]:
    """The rows of every rows file in ``out_dir`` (main file, then shards), duplicates included."""
    for path in rows_files(out_dir):
        yield from read_rows(path, repair=repair)


def load_rows(out_dir: str | os.PathLike[str]) -> list[Row]:
    """All distinct rows of a comparison directory, sorted by ``(index, method)``.

    Sorting makes everything computed from the rows independent of the order they were written
    in (length-sorted batches, shards, resumed runs).
    """
    rows = list(iter_all_rows(out_dir))
    unique = [dict(r) for r in dedupe(rows)]
    if len(unique) != len(rows):
        warn_user(f"{out_dir}: ignored {len(rows) - len(unique)} duplicate row(s)")
    return sorted(unique, key=row_key)


def merge_shards(out_dir: str | os.PathLike[str]) -> Path:
    """Fold the ``rows.rank{r}.jsonl`` files of a sharded run into ``rows.jsonl``.

    The merged file is written to a temporary name and renamed into place, so an interruption
    leaves either the old files or the new one; the shard files are removed only afterwards.

    Args:
        out_dir: the comparison directory.

    Returns:
        The path of ``rows.jsonl``.
    """
    out = Path(out_dir)
    shard_files = [p for p in rows_files(out) if p.name != ROWS_FILE]
    target = out / ROWS_FILE
    if not shard_files:
        return target
    rows = load_rows(out)
    text = "".join(dumps_row(row) + "\n" for row in rows)
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    for p in shard_files:
        p.unlink()
    return target


def read_config(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recorded ``run.json`` of a directory, or ``None`` if there is none."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        return dict(json.load(fh))


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so tuples compare equal to lists and keys are strings, exactly as
    # they will be read back; methods and metrics are sets, their order is irrelevant.
    out = json.loads(json.dumps({k: config.get(k) for k in CONFIG_KEYS}, sort_keys=True))
    for key in ("methods", "metrics"):
        if isinstance(out.get(key), list):
            out[key] = sorted(out[key])
    return dict(out)


def check_or_write_config(out_dir: str | os.PathLike[str], config: Mapping[str, Any]) -> None:
    """Record ``config`` in ``out_dir/run.json``, or check that it matches the recorded one.

    Args:
        out_dir: the comparison directory (created if needed).
        config: at least the :data:`CONFIG_KEYS`; other entries are stored but not compared.

    Raises:
        ConfigMismatchError: ``run.json`` exists and differs in one of :data:`CONFIG_KEYS`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorded = read_config(out)
    if recorded is not None:
        old, new = _normalise(recorded), _normalise(config)
        diffs = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in CONFIG_KEYS if old[k] != new[k]]
        if diffs:
            raise ConfigMismatchError(
                f"{out} holds results of a different configuration ({'; '.join(diffs)}); "
                "resuming would mix two experiments. Use another --out directory, or delete "
                "this one to start over."
            )
        return
    _write_config(out, dict(config))


def _write_config(out: Path, config: dict[str, Any]) -> None:
    # Atomic (a temporary file renamed into place): ranks of a sharded run may race to write it.
    text = json.dumps(_json_safe(config), indent=2, sort_keys=True) + "\n"
    atomic_write(out / CONFIG_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def record_run_info(out_dir: str | os.PathLike[str], key: str, name: str, value: Any) -> None:
    """Set ``run.json[key][name] = value``: what a run learned, e.g. each DLS method's layer.

    What is recorded this way is not part of the run's configuration, so a resumed run is not
    compared on it.

    Args:
        out_dir: the comparison directory.
        key: the section of ``run.json`` (e.g. ``"layer_selection"``).
        name: the entry in that section (e.g. the method).
        value: what to record (made JSON-safe).
    """
    out = Path(out_dir)
    recorded = read_config(out) or {}
    recorded.setdefault(key, {})[name] = value
    _write_config(out, recorded)
