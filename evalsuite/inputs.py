"""What to score: a folder of audio files (with optional text sidecars) or a manifest (JSONL / CSV).

Folder: every audio file below it, recursively; ``answer.wav`` takes its text channel from ``answer.txt`` when
that file exists. The item id is the path relative to the folder, without extension.

Manifest: one row per item with ``id``, ``audio``, ``text``, ``reference``, ``prompt`` (and optionally
``language``; other fields go to ``meta``). Relative audio paths are resolved against the manifest's folder.
Rows without audio are valid (text-only scorers can still score them).

Item ids are names, not paths: an id that is empty, holds a NUL or another control character, is not valid Unicode,
is longer than `MAX_ID_BYTES` in UTF-8, is absolute (``/x``, ``\\x``, ``C:x``, ``~x``) or has a ``..`` component is
refused for its item alone (`id_problem`, `refused_id`): the row keeps an error and a stand-in id, and the run goes
on. A ``/`` inside an id is fine (a folder's items are ``sub/name``). Audio paths may point anywhere: they are read,
never written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.audio import AUDIO_EXTENSIONS

FIELDS = ("id", "audio", "text", "reference", "prompt")
MANIFEST_SUFFIXES = (".jsonl", ".csv")
MAX_ID_BYTES = 200  # an id becomes a file name (responses/<id>.wav): well under the 255 bytes a name may have
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    of a JSONL file (a bad line is that row's problem, not the file's: bytes that are not UTF-8, and escapes of lone
    surrogates, which no UTF-8 output could hold, included). OSError propagates."""
    with Path(path).open("rb") as f:
        for line, raw_bytes in enumerate(f, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line, None, f"not valid UTF-8 ({e.reason} at byte {e.start})"
                continue
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                yield line, None, "holds an escaped lone surrogate (\\udXXX), not valid Unicode"
            except (ValueError, RecursionError) as e:
                yield line, None, " ".join(str(e).split())
            else:
                yield line, value, None


def id_problem(item_id: Any) -> str | None:
    """Why ``item_id`` cannot name an item (see the module docstring), or None when it can."""
    if not isinstance(item_id, str) or not item_id.strip():
        return "the item id is empty"
    try:
        size = len(item_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "the item id is not valid Unicode (a lone surrogate or an undecodable file name)"
    if _CONTROL.search(item_id):
        return "the item id holds a NUL or another control character"
    if size > MAX_ID_BYTES:
        return f"the item id is {size} bytes long, over the {MAX_ID_BYTES} an id may have"
    if item_id.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", item_id):
        return "the item id is an absolute path"
    if ".." in re.split(r"[/\\]", item_id):
        return "the item id climbs out of its folder ('..')"
    return None


def refused_id(item_id: Any, problem: str) -> tuple[str, str]:
    """A stand-in id (``refused-<digest>``, the same on every run, so resuming works) and the row's error for an id
    that `id_problem` refused; the error shows the id escaped and cut to 80 characters."""
    shown = ascii(item_id[:80] + ("…" if len(item_id) > 80 else "")) if isinstance(item_id, str) else ascii(item_id)
    digest = hashlib.sha256(repr(item_id).encode("utf-8", "backslashreplace")).hexdigest()[:12]
    return f"refused-{digest}", f"item id {shown} refused: {problem}"


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
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or not {"audio", "text"} & set(reader.fieldnames):
                    raise InputError(f"{path}: a CSV manifest needs a header with at least 'audio' or 'text'")
                for line, row in enumerate(reader, start=2):
                    items.append(_row_to_item(row, base, line))
        except (UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"{path}: cannot read the CSV manifest: {' '.join(str(e).split())}") from e
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
    for k, item in enumerate(items):
        problem = id_problem(item.id)
        if problem is not None:  # this item only: no audio read, no text scored, its row says why
            stand_in, error = refused_id(item.id, problem)
            items[k] = Item(id=stand_in, error=error)
    seen: dict[str, int] = {}
    for item in items:
        seen[item.id] = seen.get(item.id, 0) + 1
    duplicates = [k for k, n in seen.items() if n > 1]
    if duplicates:
        raise InputError(f"duplicate item ids in {path}: {', '.join(duplicates[:5])}")
    return items
