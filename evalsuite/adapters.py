"""Model adapters: how `wavalign eval` gets a spoken dialogue model's answers.

An adapter takes a batch of `Request` (one benchmark item: the spoken question, its text, a system prompt) and
returns one `Response` per request, in order: the model's text channel and/or its speech. A request the model
cannot answer gets ``Response(error="...")``; the run records it and goes on.

Multi-turn items: ``Request.history`` holds the dialogue's earlier turns (`Turn`: role ``user``/``assistant``,
text and/or mono float32 audio at ``sample_rate``), oldest first; the request's own audio/text is the last user
turn, the one to answer. The contract: an adapter gives the model every earlier turn (as audio where the model
hears audio, else as text or a transcript) or answers that item with ``Response(error=...)`` saying why; it never
answers as if the dialogue began with the last question. Built-in adapters: the cascade transcribes spoken turns
and puts the dialogue through the LLM's chat template (`evalsuite.cascade.dialogue_messages`); the speech-in models
(`evalsuite.speech_lm`) put the turns into their native chat template with their audio parts; ``policy`` passes
them to the policy's prompt; the responses adapters read answers that exist already, so there is nothing to pass.
A user's own adapter that ignores ``history`` is its own business, but should say so in its ``info()``.

Built in: ``responses:DIR`` / ``responses:FILE.jsonl`` (outputs that exist already), ``cascade`` (offline baseline:
whisper tiny.en → SmolLM2-135M-Instruct → Piper), ``policy`` (an align policy or checkpoint, `align.adapter`), the
speech-in, text-out models on transformers' native classes (``qwen2-audio``, ``voxtral``, ``qwen3-omni-thinker``,
`evalsuite.speech_lm`), and a user's own class as ``"package.module:Class"``.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Turn:
    """One earlier turn of a dialogue: what the user or the assistant said, as text and/or audio (mono float32)."""

    role: str  # "user" | "assistant"
    text: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ("user", "assistant"):
            raise ValueError(f"a turn's role is 'user' or 'assistant', got {self.role!r}")
        if self.text is None and self.audio is None:
            raise ValueError(f"a {self.role} turn needs text or audio")


@dataclass(frozen=True)
class Request:
    """One benchmark item as the model sees it.

    Attributes:
        id: the item id (unique within the benchmark).
        audio: the spoken question, mono float32 in [-1, 1], or None for text-only items.
        sample_rate: rate of ``audio`` in Hz.
        text: the question's text (what the audio says, or the whole prompt of a text item).
        system_prompt: an instruction from the benchmark definition, or None.
        meta: the item's other fields (target style, choices, task id...).
        history: the dialogue's earlier turns, oldest first (the request itself is the last user turn). An adapter
            passes them to its model or answers ``Response(error=...)`` for the item: it never drops them silently.
    """

    id: str
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    text: str | None = None
    system_prompt: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[Turn, ...] = ()


@dataclass
class Response:
    """What the model answered: its text channel and/or its speech (mono float32), or why it could not."""

    text: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelAdapter(Protocol):
    """Batch of requests in, one response per request out (same order).

    An adapter may also say ``speaks = True``: every answer of this model should carry speech. An answer without
    audio is then the model's failure for the speech scorers (an error in its row), where for a text-only or
    unknown model it is a text-only answer the speech scorers do not apply to.
    """

    name: str  # the model's name in results and leaderboards

    def respond(self, requests: Sequence[Request]) -> list[Response]: ...

    def info(self) -> dict[str, Any]: ...  # settings recorded in results.json (model ids, decoding, seeds)


def request_audio(request: Request, sample_rate: int) -> np.ndarray:
    """The request's spoken question as validated mono float32 at ``sample_rate`` (`AudioError` when unusable)."""
    from rewards.audio import AudioError, at_rate, to_mono, validate

    if not request.sample_rate:
        raise AudioError("unreadable", f"invalid sample rate {request.sample_rate!r}")
    audio = at_rate(to_mono(request.audio), request.sample_rate, sample_rate)
    validate(audio, sample_rate)
    return audio


class AdapterError(ValueError):
    """A model spec that cannot be used (unknown name, missing folder, a class that does not fit the protocol)."""


# Built-in models by name, imported only when used. The spoken dialogue families live in align/ (each is also a
# trainable policy); evalsuite never imports align itself, only these strings.
BUILTIN = {
    "cascade": "evalsuite.cascade:CascadeAdapter",
    "policy": "align.adapter:PolicyAdapter",  # any align policy or checkpoint
    "qwen2.5-omni": "align.omni:OmniEvalAdapter",
    "moshi": "align.moshi:MoshiEvalAdapter",
    "interleaved": "align.interleaved.native:NativeEvalAdapter",
    # speech in, text out (transformers' native classes)
    "qwen2-audio": "evalsuite.speech_lm:Qwen2AudioAdapter",
    "voxtral": "evalsuite.speech_lm:VoxtralAdapter",
    "qwen3-omni-thinker": "evalsuite.speech_lm:Qwen3OmniThinkerAdapter",
}
RESPONSE_KEYS = ("response", "text", "answer", "output")  # where a responses file keeps the text answer


class ResponsesFolder:
    """Existing outputs in a folder: ``<id>.wav`` (or .flac/.ogg/.mp3) and/or ``<id>.txt`` per item."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise AdapterError(f"responses folder {self.path} does not exist")
        self.name = name or self.path.name

    def info(self) -> dict[str, Any]:
        return {"adapter": "responses", "path": str(self.path)}

    def respond(self, requests: Sequence[Request]) -> list[Response]:
        import soundfile as sf

        from rewards.audio import AUDIO_EXTENSIONS, to_mono

        out = []
        for request in requests:
            stem = self.path / safe_name(request.id)
            text_file = stem.with_suffix(".txt")
            audio_file = next((f for f in (stem.with_suffix(e) for e in AUDIO_EXTENSIONS) if f.is_file()), None)
            if audio_file is None and not text_file.is_file():
                out.append(Response(error=f"no response file for '{request.id}' in {self.path} "
                                          f"(expected {stem.name}.txt and/or {stem.name}.wav)"))
                continue
            response = Response(meta={"source": str(audio_file or text_file)})
            try:
                if text_file.is_file():
                    response.text = text_file.read_text(encoding="utf-8").strip()
                if audio_file is not None:
                    data, rate = sf.read(str(audio_file), dtype="float32", always_2d=True)
                    response.audio, response.sample_rate = to_mono(data), rate
            except Exception as e:  # noqa: BLE001 - a corrupt file is this item's problem
                response = Response(text=response.text, error=f"cannot read response of '{request.id}': {e}")
            out.append(response)
        return out


class ResponsesFile:
    """Existing text outputs in a JSONL file, one object per item with the answer under ``response`` (VoiceBench's
    output files), ``text``, ``answer`` or ``output``; optionally ``audio`` (a path relative to the file).

    When the rows also carry the items' own fields (``prompt``, ``reference``...), `wavalign eval` can score the
    file without the benchmark's data (`item_rows`): the rows are the items, row k answers item k, and a row's own
    ``id`` is its item's id. Against the benchmark's data (`bind`), rows are matched by id when both sides have ids
    (every row an ``id``, and the items ids of their own), else by position (VoiceBench writes its outputs in dataset
    order); `matched_by` says which.
    """

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise AdapterError(f"responses file {self.path} does not exist")
        self.name = name or self.path.stem
        from evalsuite.inputs import jsonl_lines

        self.rows: list[dict[str, Any] | None] = [row if isinstance(row, dict) else None
                                                  for _, row, _ in jsonl_lines(self.path)]
        if not self.rows:
            raise AdapterError(f"responses file {self.path} has no rows")
        self.by_id = {str(r["id"]): r for r in self.rows if r is not None and r.get("id") is not None}
        self._position: dict[str, int] = {}
        # until `bind` knows the items: by id when any row has one
        self._by_position = not self.by_id
        self.matched_by = "position" if self._by_position else "id"

    def info(self) -> dict[str, Any]:
        return {"adapter": "responses", "path": str(self.path), "rows": len(self.rows)}

    def item_rows(self) -> list[dict[str, Any]] | None:
        """The rows as benchmark data when they carry the items' prompts (else None: the benchmark's data is needed)."""
        good = [r for r in self.rows if r is not None]
        if len(good) == len(self.rows) and all("prompt" in r for r in good):
            return good
        return None

    @property
    def has_ids(self) -> bool:
        """Every row is an object with an ``id``."""
        return all(r is not None and r.get("id") is not None for r in self.rows)

    def bind(self, item_ids: Sequence[str], *, items_have_ids: bool, rows_are_items: bool = False) -> str:
        """Decide how rows answer the benchmark's items (ids in benchmark order) and return it: ``id`` or
        ``position``.

        Args:
            items_have_ids: the items' ids come from their data (not generated ``<split>-<index>``).
            rows_are_items: the items were made from these rows (`item_rows`), in order.
        """
        self._position = {item_id: k for k, item_id in enumerate(item_ids)}
        if rows_are_items:  # item k is row k; its id is the row's own when the row has one
            self.matched_by = "id" if self.has_ids else "position"
            self._by_position = True
        else:
            # a file keyed by the generated ids (e.g. written from an earlier run) is matched by them too
            keyed = bool(item_ids) and all(i in self.by_id for i in item_ids)
            self.matched_by = "id" if self.has_ids and (items_have_ids or keyed) else "position"
            self._by_position = self.matched_by == "position"
        return self.matched_by

    def _row(self, item_id: str) -> tuple[dict[str, Any] | None, str | None]:
        if not self._by_position:
            row = self.by_id.get(item_id)
            return (row, None) if row is not None else (None, f"no row with id '{item_id}' in {self.path.name}")
        k = self._position.get(item_id)
        if k is None or k >= len(self.rows):
            return None, f"{self.path.name} has {len(self.rows)} rows, none for item '{item_id}'"
        if self.rows[k] is None:
            return None, f"{self.path.name} line {k + 1} is not a JSON object"
        return self.rows[k], None

    def respond(self, requests: Sequence[Request]) -> list[Response]:
        out = []
        for request in requests:
            row, error = self._row(request.id)
            if row is None:
                out.append(Response(error=error))
                continue
            key = next((k for k in RESPONSE_KEYS if k in row), None)
            text = row.get(key) if key else None
            audio_path = row.get("audio") if isinstance(row.get("audio"), str) else None
            if text is None and audio_path is None:
                out.append(Response(error=f"row for '{request.id}' has no {'/'.join(RESPONSE_KEYS)} or audio"))
                continue
            response = Response(text=None if text is None else str(text))
            if audio_path:
                import soundfile as sf

                from rewards.audio import to_mono

                path = Path(audio_path) if Path(audio_path).is_absolute() else self.path.parent / audio_path
                try:
                    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
                    response.audio, response.sample_rate = to_mono(data), rate
                except Exception as e:  # noqa: BLE001
                    response.error = f"cannot read response audio {path}: {e}"
            out.append(response)
        return out


def safe_name(item_id: str) -> str:
    """A file name for an item id (ids may contain path separators)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._") or "item"


def build_adapter(spec: str, options: Mapping[str, Any] | None = None, name: str | None = None) -> ModelAdapter:
    """``responses:PATH``, a built-in name (``cascade``) or ``package.module:Class`` → an adapter instance."""
    options = dict(options or {})
    if spec.startswith("responses:"):
        path = Path(spec.split(":", 1)[1]).expanduser()
        if options:
            raise AdapterError(f"responses adapters take no options, got {sorted(options)}")
        if not path.exists():
            raise AdapterError(f"responses:{path}: {path} does not exist")
        if path.is_dir():
            return ResponsesFolder(path, name)
        if path.suffix.lower() == ".jsonl":
            return ResponsesFile(path, name)
        raise AdapterError(f"responses:{path}: expected a folder of <id>.wav/<id>.txt or a .jsonl file")
    target = BUILTIN.get(spec)
    if target is None:
        if ":" not in spec:
            close = difflib.get_close_matches(spec, BUILTIN, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise AdapterError(f"unknown model '{spec}'{hint} (built in: {', '.join(BUILTIN)}; or responses:DIR, "
                               "responses:FILE.jsonl, or your own 'package.module:Class')")
        target = spec
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise AdapterError(f"cannot import model adapter '{target}': {e}") from e
    try:
        adapter = cls(**options)
    except TypeError as e:
        raise AdapterError(f"{target} does not take these options ({', '.join(options) or 'none'}): {e}") from e
    if not callable(getattr(adapter, "respond", None)):
        raise AdapterError(f"{target} has no respond(requests) method (see evalsuite.adapters.ModelAdapter)")
    if name:
        adapter.name = name
    elif not getattr(adapter, "name", None):
        adapter.name = class_name
    return adapter
