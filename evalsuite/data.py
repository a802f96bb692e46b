"""A benchmark's data: rows from a local file or folder or the Hugging Face Hub, mapped to items, audio decoded.

Where rows come from (`load_rows`), first match wins:

1. ``--data PATH`` (the ``data`` argument): a ``.jsonl`` / ``.csv`` / ``.parquet`` file; a folder of such files
   (sorted; in the Hub's layout ``<subset>/<split>-00000-of-00001.parquet`` only the files of the definition's
   split(s) are read, and a ``<subset>`` sub-folder is entered when the folder holds several subsets); or a folder
   written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose split(s) are picked).
2. ``source.local``, relative to the definition's folder, when it exists.
3. ``source.hf``: ``datasets.load_dataset(hf, subset, split=split)``, which needs the Hub (or its cache).

``source.split`` names one split; ``source.splits`` (a list) loads several and concatenates them in that order
(VoiceBench's ``mmsu`` keeps one split per domain). Rows then remember their split (meta ``split``), and default
item ids are ``<split>-<index within the split>``.

Audio cells come in the forms the Hub's ``Audio`` feature writes and reads: ``{"bytes": ..., "path": ...}``
(parquet), ``{"array": ..., "sampling_rate": ...}`` (decoded), or a path string (JSONL/CSV manifests, relative to
the data file's folder). `item_audio` decodes any of them into a validated `rewards.audio.Audio`.

Whole-input problems (no such file, an unreachable Hub, duplicate ids) are `DataError`s, one line for the CLI; a
problem with one row (a malformed JSONL line, a missing mapped field, undecodable audio) stays with that item.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalsuite.inputs import id_problem, jsonl_lines, refused_id
from rewards.audio import (
    Audio,
    AudioError,
    AudioLimits,
    check_sample_rate,
    decode_audio,
    finish_audio,
    load_audio,
    to_mono,
)
from rewards.base import one_line

DATA_SUFFIXES = (".jsonl", ".csv", ".parquet")
ROW_ERROR = "__error__"  # a row that could not be read carries its reason under this key
ROW_SPLIT = "__split__"  # rows of a multi-split source carry their split under this key
TEXT_FIELDS = ("prompt", "reference", "style")
_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")  # the Hub's shard names: test-00000-of-00001
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")
_LAYOUT_HINT = (
    "a folder in the Hub's layout (e.g. {subset}/{split}-00000-of-00001.parquet), one .parquet/.jsonl/.csv file, "
    "or a folder written by datasets' save_to_disk"
)


class DataError(ValueError):
    """The data as a whole cannot be used (a usage error for one CLI line, not a per-item problem)."""


# -- where rows come from ------------------------------------------------------------------------------------------


def source_splits(source: Mapping[str, Any]) -> list[str]:
    """The split(s) a definition reads: ``splits`` (a list) or ``split`` (one name); empty when it names none."""
    splits = source.get("splits")
    if splits:
        if isinstance(splits, str):
            return [splits]
        return [str(s) for s in splits]
    split = source.get("split")
    return [str(split)] if split else []


def split_label(source: Mapping[str, Any]) -> str:
    """The prefix of default item ids: the split's name when the source names one split, else ``item``."""
    splits = source_splits(source)
    return splits[0] if len(splits) == 1 else "item"


def data_dir(source: Mapping[str, Any], *, data: Path | None, base_dir: Path) -> Path:
    """The folder that relative audio paths in the rows are resolved against (the data file's folder)."""
    if data is not None:
        path = Path(data).expanduser()
        return path if path.is_dir() else path.parent
    local = source.get("local")
    if local:
        path = (base_dir / str(local)).resolve()
        return path if path.is_dir() else path.parent
    return base_dir


def load_rows(
    source: Mapping[str, Any], *, data: Path | None, base_dir: Path, limit: int | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Raw rows of a benchmark and a short description of where they came from.

    Args:
        source: the definition's ``source`` mapping (``hf``, ``subset``, ``split`` / ``splits``, ``local``).
        data: ``--data``, overriding the definition's source.
        base_dir: the definition's folder (``source.local`` is relative to it).
        limit: read at most this many rows (the first ones, in order).

    Raises:
        DataError: nothing to read, an unreadable file, or the Hub cannot be reached.
    """
    splits = source_splits(source)
    subset = source.get("subset")
    if data is not None:
        path = Path(data).expanduser()
        if not path.exists():
            raise DataError(f"--data {path} does not exist")
        rows = read_local(path, splits=splits, subset=subset, limit=limit)
        where = str(path)
    elif source.get("local") and (base_dir / str(source["local"])).exists():
        path = (base_dir / str(source["local"])).resolve()
        rows = read_local(path, splits=splits, subset=subset, limit=limit)
        where = str(path)
    elif source.get("hf"):
        rows = _load_hub(str(source["hf"]), subset, splits, limit)
        where = f"hf:{source['hf']}" + (f"/{subset}" if subset else "") + (f"[{','.join(splits)}]" if splits else "")
    else:
        local = source.get("local")
        hint = f" (its local copy {base_dir / str(local)} does not exist)" if local else ""
        raise DataError(f"the definition names no data source{hint}; pass --data PATH")
    return rows, where


def read_local(
    path: Path, *, splits: Sequence[str] = (), subset: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows of a local file, folder of files, or ``save_to_disk`` folder (see the module docstring)."""
    if path.is_file():
        return list(_take(_read_file(path), limit))
    if not path.is_dir():
        raise DataError(f"{path} is neither a file nor a folder")
    if any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS):
        return _read_saved(path, splits, limit)
    if subset and (path / subset).is_dir():
        path = path / subset  # the dataset's root: enter the subset's folder
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if not files:
        raise DataError(f"no {'/'.join(DATA_SUFFIXES)} files under {path}; expected {_hint(subset, splits)}")
    if not splits:
        return list(_take(_chain(_read_file(f) for f in files), limit))
    by_split = {split: [f for f in files if _file_split(f, path) == split] for split in splits}
    found = sorted({s for s in (_file_split(f, path) for f in files) if s})
    if not any(by_split.values()):
        if found:
            raise DataError(f"{path} holds no files of split {', '.join(splits)} (it has: {', '.join(found)})")
        return list(_take(_chain(_read_file(f) for f in files), limit))  # unnamed shards of one split
    missing = [s for s, fs in by_split.items() if not fs]
    if missing:
        raise DataError(f"{path} holds no files of split {', '.join(missing)} (it has: {', '.join(found)})")
    return list(_take(_chain(_tagged(_chain(_read_file(f) for f in by_split[s]), s, len(splits)) for s in splits),
                      limit))


def _hint(subset: str | None, splits: Sequence[str]) -> str:
    return _LAYOUT_HINT.format(subset=subset or "<subset>", split=(splits[0] if splits else "<split>"))


def _file_split(path: Path, root: Path) -> str | None:
    """The split a data file belongs to: ``<split>-0000x-of-0000y.*``, ``<split>.*``, or a ``<split>/`` folder."""
    match = _SHARD.match(path.stem)
    if match:
        return match.group("split")
    relative = path.relative_to(root)
    if len(relative.parts) > 1:
        return relative.parts[0]  # the Hub's parquet-converter layout: <split>/0000.parquet
    return None


def _take(rows: Iterator[dict[str, Any]], limit: int | None) -> Iterator[dict[str, Any]]:
    for k, row in enumerate(rows):
        if limit is not None and k >= limit:
            return
        yield row


def _chain(parts: Iterator[Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from part


def _tagged(rows: Iterator[dict[str, Any]], split: str, n_splits: int) -> Iterator[dict[str, Any]]:
    for row in rows:
        if n_splits > 1:
            row[ROW_SPLIT] = split
        yield row


def _read_file(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DataError(f"{path}: unsupported data file (expected {', '.join(DATA_SUFFIXES)})")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    try:
        for line, row, error in jsonl_lines(path):
            if error is not None:
                yield {ROW_ERROR: f"{path.name} line {line} is not JSON: {error}"}
            else:
                yield row if isinstance(row, dict) else {ROW_ERROR: f"{path.name} line {line} is not a JSON object"}
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {one_line(e)}") from e


def _read_csv(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                yield {k: (v if v != "" else None) for k, v in row.items() if k is not None}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {one_line(e)}") from e


def _read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(f"reading {path.name} needs pyarrow (pip install pyarrow)") from e
    try:
        parquet = pq.ParquetFile(str(path))
        for batch in parquet.iter_batches(batch_size=64):  # small batches: rows can hold whole audio files
            yield from batch.to_pylist()
    except OSError as e:  # pyarrow's ArrowInvalid and ArrowIOError are OSErrors
        raise DataError(f"cannot read {path}: {one_line(e)}") from e


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise DataError("this needs the `datasets` package (pip install datasets)") from e
    return datasets


def _dataset_rows(dataset, limit: int | None) -> Iterator[dict[str, Any]]:
    """Rows of a `datasets.Dataset` without decoding audio (decoding needs extra packages and is done later)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    table = dataset.with_format("arrow")
    for start in range(0, n, 64):
        yield from table[start:min(n, start + 64)].to_pylist()


def _read_saved(path: Path, splits: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    datasets = _datasets()
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, pyarrow errors for damaged folders
        raise DataError(f"cannot load the save_to_disk folder {path}: {one_line(e)}") from e
    if isinstance(loaded, datasets.DatasetDict):
        available = list(loaded)
        wanted = list(splits) or (available if len(available) == 1 else [])
        if not wanted:
            raise DataError(f"{path} holds splits {', '.join(available)}; the definition names none")
        missing = [s for s in wanted if s not in loaded]
        if missing:
            raise DataError(f"{path} holds no split {', '.join(missing)} (it has: {', '.join(available)})")
        parts = (_tagged(_dataset_rows(loaded[s], limit), s, len(wanted)) for s in wanted)
        return list(_take(_chain(parts), limit))
    return list(_dataset_rows(loaded, limit))


def _load_hub(hf: str, subset: str | None, splits: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    datasets = _datasets()
    what = hf + (f" ({subset})" if subset else "")
    rows: list[dict[str, Any]] = []
    for split in splits or [None]:
        try:
            dataset = datasets.load_dataset(hf, subset, split=split)
        except Exception as e:  # offline: ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, ...
            raise DataError(
                f"cannot load {what}{f' split {split}' if split else ''} from the Hugging Face Hub "
                f"({one_line(e)}); download it where you have internet access and pass the copy with --data: "
                + _hint(subset, splits)
            ) from e
        if isinstance(dataset, datasets.DatasetDict):
            raise DataError(f"{what} has splits {', '.join(dataset)}; the definition must name one (source.split)")
        left = None if limit is None else limit - len(rows)
        rows.extend(_tagged(_dataset_rows(dataset, left), split, len(splits)))
        if limit is not None and len(rows) >= limit:
            break
    return rows


# -- items ---------------------------------------------------------------------------------------------------------


@dataclass
class BenchItem:
    """One benchmark item before its audio is decoded.

    Attributes:
        id: unique within the benchmark.
        audio: the raw audio cell (``{"array", "sampling_rate"}``, ``{"bytes", "path"}``, or a path, made absolute)
            or None when the definition maps no audio.
        prompt: the question as text (also what a text-only model is given).
        reference: the reference answer, if any.
        style: the target style/emotion, if any (also ``meta["style"]``).
        meta: the other mapped columns (``fields.meta``), e.g. ``choices``, ``instruction_id_list``, ``split``.
        error: why the row cannot be used (a missing mapped field, an unreadable line); None when it can.
        history: the dialogue's earlier turns (``fields.history``), oldest first, each ``{"role", "text",
            "audio"}`` with the audio cell as for ``audio`` (paths made absolute), not yet decoded.
    """

    id: str
    audio: Any = None
    prompt: str | None = None
    reference: str | None = None
    style: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a cell (numpy scalars and arrays become Python numbers and lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _resolve_audio(cell: Any, base: Path) -> Any:
    """Audio paths relative to the data file's folder become absolute; other cell forms pass through."""
    if isinstance(cell, (str, Path)):
        path = Path(cell).expanduser()
        return path if path.is_absolute() else base / path
    if isinstance(cell, Mapping) and cell.get("array") is None and cell.get("bytes") is None and cell.get("path"):
        return {**cell, "path": str(_resolve_audio(cell["path"], base))}
    return cell


OPTIONAL_FIELDS = frozenset({"reference", "style"})  # an item may have none (a style request has no reference)
ROLES = ("user", "assistant")


def history_turns(cell: Any, base: Path) -> tuple[list[dict[str, Any]], str | None]:
    """A history cell as a list of ``{"role", "text", "audio"}`` turns (audio paths made absolute), or the reason
    it cannot be one. ``None``, ``[]`` and an empty string are no turns; a string is read as JSON (CSV cells)."""
    import json

    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return [], None
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except ValueError as e:
            return [], f"history is a string but not JSON ({one_line(e)})"
    if isinstance(cell, np.ndarray):
        cell = cell.tolist()
    if not isinstance(cell, (list, tuple)):
        return [], f"history must be a list of turns, got {type(cell).__name__}"
    turns = []
    for k, raw in enumerate(cell, 1):
        if not isinstance(raw, Mapping):
            return [], f"history turn {k} is not a mapping ({type(raw).__name__})"
        role = raw.get("role")
        if role not in ROLES:
            return [], f"history turn {k}: role must be 'user' or 'assistant', got {role!r}"
        text = raw.get("text")
        if text is not None and not isinstance(text, str):
            return [], f"history turn {k}: text must be a string, got {type(text).__name__}"
        text = _text(text)
        audio = raw.get("audio")
        if isinstance(audio, Mapping) and all(audio.get(key) is None for key in ("array", "bytes", "path")):
            audio = None  # parquet writes an absent struct as all-null fields
        if text is None and audio is None:
            return [], f"history turn {k} ({role}) has neither text nor audio"
        turns.append({"role": role, "text": text, "audio": None if audio is None else _resolve_audio(audio, base)})
    return turns, None


def _mapped(row: Mapping[str, Any], fields: Mapping[str, Any], name: str, problems: list[str]) -> Any:
    """The value of the column that ``fields[name]`` maps, or None. A row without that column is a problem; an
    empty value is one too, except for the optional fields (reference, style), which are then None."""
    col = fields.get(name)
    if not col:
        return None
    value = row.get(col)
    if value is None or (isinstance(value, str) and not value.strip()):
        if col not in row:
            problems.append(f"no '{col}' (fields.{name})")
        elif name not in OPTIONAL_FIELDS:
            problems.append(f"empty '{col}' (fields.{name})")
        return None
    return value


def to_items(
    rows: Sequence[Mapping[str, Any]],
    fields: Mapping[str, Any],
    *,
    split_name: str,
    data_dir: Path,
    with_audio: bool = True,
) -> list[BenchItem]:
    """Map raw rows to items with the definition's ``fields``.

    ``fields`` maps ``id``, ``audio``, ``prompt``, ``reference``, ``style`` and ``history`` (earlier turns, see
    `history_turns`) to a column (None: not used) and ``meta`` to a list of columns copied into ``meta`` when a row
    has them. A row that lacks a mapped column (or
    holds an empty value there) becomes an item with an error; the other items are unaffected. Without an id
    column, ids are ``<split_name>-<row index>`` (4 digits), or ``<split>-<index within split>`` for rows of a
    multi-split source. ``with_audio=False`` ignores the audio column (rescoring existing outputs needs no audio).
    An id that `evalsuite.inputs.id_problem` refuses gives an item with an error and a stand-in id.

    Raises:
        DataError: two items share an id.
    """
    items: list[BenchItem] = []
    per_split: dict[str, int] = {}
    for index, row in enumerate(rows):
        split = row.get(ROW_SPLIT)
        if split is not None:
            default_id = f"{split}-{per_split.get(split, 0):04d}"
            per_split[split] = per_split.get(split, 0) + 1
        else:
            default_id = f"{split_name}-{index:04d}"
        if ROW_ERROR in row:
            items.append(BenchItem(id=default_id, error=str(row[ROW_ERROR])))
            continue
        problems: list[str] = []
        item_id = _text(_mapped(row, fields, "id", problems)) or default_id
        refused = id_problem(item_id)
        if refused is not None:  # an id that is no file name (../x, /abs, NUL, > 200 bytes) fails its item alone
            stand_in, error = refused_id(item_id, refused)
            items.append(BenchItem(id=stand_in, error=f"row {index}: {error}"))
            continue
        audio = None
        if with_audio:
            audio = _mapped(row, fields, "audio", problems)
            if audio is not None:
                audio = _resolve_audio(audio, data_dir)
        texts = {name: _text(_plain(_mapped(row, fields, name, problems))) for name in TEXT_FIELDS}
        history: list[dict[str, Any]] = []
        if fields.get("history"):
            # a row without the column has no earlier turns (JSONL rows of single-turn items leave it out)
            history, problem = history_turns(row.get(fields["history"]), data_dir)
            if problem:
                problems.append(problem)
        meta = {str(col): _plain(row[col]) for col in fields.get("meta") or [] if col in row and row[col] is not None}
        if split is not None:
            meta.setdefault("split", split)
        if texts["style"] is not None:
            meta["style"] = texts["style"]
        error = f"row {index}: " + "; ".join(problems) if problems else None
        items.append(BenchItem(id=item_id, audio=audio, meta=meta, error=error, history=history, **texts))
    seen: dict[str, int] = {}
    for item in items:
        seen[item.id] = seen.get(item.id, 0) + 1
    duplicates = [k for k, n in seen.items() if n > 1]
    if duplicates:
        raise DataError(f"duplicate item ids: {', '.join(duplicates[:5])}" + (" ..." if len(duplicates) > 5 else ""))
    return items


# -- audio ---------------------------------------------------------------------------------------------------------


def _decode_bytes(data: bytes, name: str, target_sr: int | None, limits: AudioLimits) -> Audio:
    return decode_audio(lambda: io.BytesIO(data), name or "the audio bytes", target_sr, limits)


def _from_array(array: Any, sample_rate: Any, target_sr: int | None, limits: AudioLimits) -> Audio:
    if sample_rate is None:
        raise AudioError("unreadable", "an audio array without a sampling_rate")
    try:
        # a numpy array keeps its dtype (int16 PCM is scaled by to_mono); lists from JSON are sample values
        data = array if isinstance(array, np.ndarray) else np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise AudioError("unreadable", f"the audio array is not numeric: {one_line(e)}") from e
    if data.ndim == 2 and data.shape[0] < data.shape[1]:
        data = data.T  # (channels, frames), as torchcodec decodes, to (frames, channels)
    return finish_audio(to_mono(data), check_sample_rate(sample_rate, limits), target_sr, limits)


def decode_audio_cell(
    cell: Any, sample_rate: int | None = None, limits: AudioLimits = AudioLimits()
) -> Audio:
    """Decode any audio cell form into validated mono float32, resampled to ``sample_rate`` when given.

    Raises:
        AudioError: the cell is empty, its file is missing, its bytes cannot be decoded, or it fails `validate`.
    """
    if cell is None:
        raise AudioError("missing", "the item has no audio")
    if isinstance(cell, (str, Path)):
        return load_audio(cell, sample_rate, limits)
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(cell), "", sample_rate, limits)
    if isinstance(cell, Mapping):
        if cell.get("array") is not None:
            return _from_array(cell["array"], cell.get("sampling_rate"), sample_rate, limits)
        if cell.get("bytes") is not None:
            return _decode_bytes(bytes(cell["bytes"]), Path(str(cell.get("path") or "")).name, sample_rate, limits)
        if cell.get("path"):
            return load_audio(cell["path"], sample_rate, limits)
        raise AudioError("missing", "the audio cell has neither array, bytes nor path")
    raise AudioError("unreadable", f"unsupported audio cell of type {type(cell).__name__}")


def item_audio(item: BenchItem, sample_rate: int | None, limits: AudioLimits = AudioLimits()) -> Audio:
    """The item's prompt audio, decoded, validated and resampled to ``sample_rate`` (None: keep its rate)."""
    if item.audio is None:
        raise AudioError("missing", f"item {item.id} has no audio")
    return decode_audio_cell(item.audio, sample_rate, limits)


def item_history(item: BenchItem, sample_rate: int | None, limits: AudioLimits = AudioLimits()
                 ) -> list[Audio | None]:
    """The decoded audio of each earlier turn (None for a text-only turn), resampled to ``sample_rate``.

    Raises:
        AudioError: a turn's audio is missing, undecodable or unusable; the message names the turn.
    """
    out: list[Audio | None] = []
    for k, turn in enumerate(item.history, 1):
        if turn.get("audio") is None:
            out.append(None)
            continue
        try:
            out.append(decode_audio_cell(turn["audio"], sample_rate, limits))
        except AudioError as e:
            raise AudioError(e.kind, f"history turn {k} ({turn['role']}): {e.args[0]}") from e
    return out


# -- VoiceBench's own output files ---------------------------------------------------------------------------------


def read_voicebench_outputs(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a VoiceBench output file, for rescoring what its users already have.

    VoiceBench's ``main.py`` writes ``<model>-<subset>-<split>-<modality>.jsonl``: one JSON object per line, the
    dataset row without its ``audio`` column (``prompt``; ``reference`` where the subset has one; ``id`` for
    ``bbh``; ``key``, ``instruction_id_list``, ``kwargs`` for ``ifeval``; ...) plus ``response``, the model's text.
    Its ``api_judge.py`` copies the file with ``score``, a list of the GPT judge's raw answers, added. Rows are in
    dataset order, so `to_items` gives them the same default ids as the dataset's rows.

    A line that is not a JSON object, or has no string ``response``, becomes a row with an error (see `ROW_ERROR`);
    a line holding a one-element list around the object (as VoiceBench's ifeval reader tolerates) is unwrapped.

    Raises:
        DataError: the file cannot be read or holds no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    rows: list[dict[str, Any]] = []
    try:
        for line, row, error in jsonl_lines(path):
            if error is not None:
                rows.append({ROW_ERROR: f"{path.name} line {line} is not JSON: {error}"})
                continue
            if isinstance(row, list) and len(row) == 1:
                row = row[0]
            if not isinstance(row, dict):
                rows.append({ROW_ERROR: f"{path.name} line {line} is not a JSON object"})
            elif not isinstance(row.get("response"), str):
                rows.append({ROW_ERROR: f"{path.name} line {line} has no 'response' text"})
            else:
                rows.append(row)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {one_line(e)}") from e
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows
