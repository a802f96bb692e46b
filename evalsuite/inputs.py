"""What to score: a folder of audio files (with optional text sidecars) or a manifest (JSONL / CSV).

Folder: every audio file below it, recursively; ``answer.wav`` takes its text channel from ``answer.txt`` when
that file exists. The item id is the path relative to the folder, without extension.

Manifest: one row per item with ``id``, ``audio``, ``text``, ``reference``, ``prompt`` (and optionally
``language``; other fields go to ``meta``). Relative audio paths are resolved against the manifest's folder.
Rows without audio are valid (text-only scorers can still score them).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.audio import AUDIO_EXTENSIONS

FIELDS = ("id", "audio", "text", "reference", "prompt")
MANIFEST_SUFFIXES = (".jsonl", ".csv")


class InputError(ValueError):
    """The input as a whole cannot be used (a usage error, not a per-item problem)."""


@dataclass(frozen=True)
class Item:
    """One row to score, before its audio is loaded."""

    id: str
    audio_path: Path | None = None
    text: str | None = None
    prompt: str | None = None
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a problem with the row itself (e.g. a manifest line that is not JSON)


def jsonl_lines(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, parsed value, None)`` or ``(line number, None, why it is not JSON)`` for each non-blank line
    of a JSONL file (a bad line is that row's problem, not the file's). OSError/UnicodeDecodeError propagate."""
    with Path(path).open(encoding="utf-8") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw), None
            except ValueError as e:
                yield line, None, " ".join(str(e).split())


def scan_folder(root: Path) -> list[Item]:
    """Audio files under ``root`` (sorted), each with its ``.txt`` sidecar as the text channel."""
    items = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS):
        sidecar = path.with_suffix(".txt")
        text, error = None, None
        if sidecar.is_file():
            try:
                text = sidecar.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                error = f"cannot read text sidecar {sidecar.name}: {e}"
        item_id = path.relative_to(root).with_suffix("").as_posix()
        items.append(Item(id=item_id, audio_path=path, text=text, error=error))
    return items


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _row_to_item(row: dict[str, Any], base: Path, line: int) -> Item:
    audio = _clean(row.get("audio"))
    audio_path = None
    if audio is not None:
        audio_path = Path(audio).expanduser()
        if not audio_path.is_absolute():
            audio_path = base / audio_path
    item_id = _clean(row.get("id")) or (audio_path.stem if audio_path else f"row{line}")
    meta = {k: v for k, v in row.items() if k not in FIELDS and v not in (None, "")}
    return Item(
        id=item_id,
        audio_path=audio_path,
        text=_clean(row.get("text")),
        prompt=_clean(row.get("prompt")),
        reference=_clean(row.get("reference")),
        meta=meta,
    )


def read_manifest(path: Path) -> list[Item]:
    """Rows of a JSONL or CSV manifest; a malformed JSONL line becomes an item with an error, not a crash."""
    base = path.parent
    items: list[Item] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"audio", "text"} & set(reader.fieldnames):
                raise InputError(f"{path}: a CSV manifest needs a header with at least 'audio' or 'text'")
            for line, row in enumerate(reader, start=2):
                items.append(_row_to_item(row, base, line))
    else:
        for line, row, error in jsonl_lines(path):
            if error is not None or not isinstance(row, dict):
                why = error or "not a JSON object"
                items.append(Item(id=f"line{line}", error=f"manifest line {line} is not a JSON object: {why}"))
                continue
            items.append(_row_to_item(row, base, line))
    return items


def load_items(path: str | Path) -> list[Item]:
    """Items from a folder or a manifest file; ids must be unique."""
    path = Path(path)
    if path.is_dir():
        items = scan_folder(path)
        if not items:
            raise InputError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {path}")
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        items = read_manifest(path)
        if not items:
            raise InputError(f"manifest {path} has no rows")
    elif path.exists():
        raise InputError(f"{path} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    else:
        raise InputError(f"{path} does not exist")
    seen: dict[str, int] = {}
    for item in items:
        seen[item.id] = seen.get(item.id, 0) + 1
    duplicates = [k for k, n in seen.items() if n > 1]
    if duplicates:
        raise InputError(f"duplicate item ids in {path}: {', '.join(duplicates[:5])}")
    return items
