"""A static HTML listening report of eval, score and align runs: ``wavalign report RUN_DIR... -o report.html``.

One self-contained page (no server, no network, no JavaScript library) that puts a player beside every transcript,
text channel and score, so that a number like "ASR-WER 53%" can be heard. It reads only what the runs wrote:

- **eval runs** (``wavalign eval``): ``samples.jsonl``, ``results.json``, ``run.json`` and ``responses/*.wav``;
- **score runs** (``wavalign score``): ``scores.jsonl`` and ``summary.json`` (the text channel is read back from the
  scored folder or manifest when it is still there);
- **align runs** (``wavalign align``): ``log.csv`` (or ``log.jsonl``), ``config.json`` and ``rollouts/``.

Two or more eval or score runs of one benchmark are compared: rows are aligned by item id, each run's answer and
player sit side by side, each metric shows its per-item delta against the first run, and the items are ranked by
how much the runs differ (each metric's spread across runs over its range across all items, averaged over the
metrics), which is what one listens to first.

Audio is linked relative to the report by default; ``embed=True`` inlines it as base64 WAV (one portable file) and
warns above ``EMBED_WARN_BYTES``. Bad input never breaks the page: a missing or unreadable audio file, a NaN, a
non-number where a score belongs, a very long text and a line of a JSONL file that is not JSON each show as a
marked cell or a warning. Every text that comes from a model or a data file goes through Jinja2's autoescaping.

**Rollouts of align runs** (the layout ``align`` writes every ``report_every`` steps; the report shows whatever is
there)::

    RUN/rollouts/step-000010.jsonl       one JSON object per rollout of step 10
    RUN/rollouts/step-000010/<file>.wav  its speech (16-bit mono WAV or Opus), named by the line's "audio"

Each line: ``step`` (int), ``prompt_id`` (str; groups the rollouts of one prompt), ``prompt`` (str), ``rollout``
(int, index within the group), ``text`` (the text channel), ``audio`` (path relative to ``rollouts/``, or null),
``transcript`` (the ASR transcript, or null), ``reward`` (float or null: a failed reward), ``components`` (name →
float or null, the composite reward's parts), ``advantage`` (float or null), ``error`` (str or null).
"""

from __future__ import annotations

import base64
import csv
import difflib
import json
import math
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalsuite.results import write_atomic

REPORT_HTML = "report.html"
EMBED_WARN_BYTES = 25 * 2**20  # above this much inlined audio --embed warns: browsers get slow with huge pages
LONG_TEXT = 2000  # characters of a text shown in full; longer ones are cut and marked
DIFF_WORDS = 400  # words of each side a diff compares (difflib is quadratic on long inputs)
HISTOGRAM_BINS = 12
CATEGORY_KEYS = ("category", "task", "split", "domain", "style")  # meta keys read as an item's category
TOP_DIFFERENT = 10


class ReportError(ValueError):
    """A problem the user can fix: a folder that is no run, nothing to report."""


# --- the data the page is built from ---------------------------------------------------------------------------


@dataclass
class Text:
    """A text as shown: cut at ``LONG_TEXT`` characters, with its full length when it was cut."""

    shown: str
    length: int

    @property
    def cut(self) -> bool:
        return self.length > len(self.shown)


@dataclass
class Audio:
    """A player: ``src`` is the URL (relative to the report, or a data: URI); ``problem`` when there is none."""

    path: str | None  # as the run recorded it
    src: str | None = None
    seconds: float | None = None
    problem: str | None = None


@dataclass
class Value:
    """One score cell. ``mark``: None (a number), ``error``, ``na`` (not applicable), ``nan``, ``bad`` or
    ``absent`` (the scorer did not run on this item); ``note`` is the error, the reason or the raw value."""

    value: float | None
    mark: str | None = None
    note: str | None = None

    @property
    def text(self) -> str:
        if self.mark is None and self.value is not None:
            return _fmt(self.value)
        return {"error": "error", "na": "n/a", "nan": "NaN", "bad": "not a number", "absent": ""}.get(
            self.mark or "", "")


@dataclass(frozen=True)
class Column:
    """A per-item score column: ``key`` is the samples.jsonl / scores.jsonl column."""

    key: str
    label: str
    higher_is_better: bool = True


@dataclass
class ItemRow:
    """One item of one run."""

    id: str
    category: str | None
    prompt: Text | None
    prompt_audio: Audio | None
    history: list[tuple[str, Text]]
    reference: Text | None
    text: Text | None  # the model's text channel
    audio: Audio | None  # the spoken answer
    transcript: Text | None  # the ASR transcript of the spoken answer
    diff: list[tuple[str, str]] | None  # word diff text channel → transcript: (same|missing|extra, word)
    values: dict[str, Value]  # column key → cell
    details: list[tuple[str, Text]]  # every other metric of every scorer
    errors: list[str]

    @property
    def failed(self) -> bool:
        """An error, or an answer's audio that does not play (a missing or unreadable file)."""
        return bool(self.errors) or bool(self.audio is not None and self.audio.problem)


@dataclass
class SummaryRow:
    name: str
    value: float | None
    stderr: float | None
    n: int | None
    n_failed: int | None
    n_not_applicable: int | None = None
    higher_is_better: bool | None = None
    primary: bool = False
    column: str | None = None


@dataclass
class Histogram:
    """Bars in a 0..``width`` × 0..``height`` box; ``bars``: (x, y, w, h, count, low, high)."""

    label: str
    n: int
    low: float
    high: float
    bars: list[tuple[float, float, float, float, int, float, float]]
    width: int = 240
    height: int = 80


@dataclass
class Chart:
    """Lines in a 0..``width`` × 0..``height`` plot area; ``lines``: (name, colour, [polyline point strings],
    [(x, y) of lone points])."""

    title: str
    lines: list[tuple[str, str, list[str], list[tuple[str, str]]]]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    width: int = 320
    height: int = 160


@dataclass
class Rollout:
    prompt_id: str
    prompt: Text | None
    rollout: int | None
    text: Text | None
    audio: Audio | None
    transcript: Text | None
    diff: list[tuple[str, str]] | None
    reward: Value
    components: dict[str, Value]
    advantage: Value
    error: str | None


@dataclass
class RolloutStep:
    step: int
    groups: list[tuple[str, Text | None, list[Rollout]]]  # (prompt id, prompt, rollouts)
    components: list[str]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One run folder, read."""

    kind: str  # eval | score | align
    path: Path
    name: str  # the model (eval), else the folder's name
    benchmark: str | None
    columns: list[Column] = field(default_factory=list)
    items: list[ItemRow] = field(default_factory=list)
    summary: list[SummaryRow] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)
    settings: list[tuple[str, str]] = field(default_factory=list)  # what makes the numbers reproducible
    charts: list[Chart] = field(default_factory=list)
    last_step: list[tuple[str, str]] = field(default_factory=list)  # align: the last log row
    rollouts: list[RolloutStep] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    results: Path | None = None  # results.json, for the leaderboard


@dataclass
class AlignedItem:
    """One item id across the runs of a comparison: ``rows[k]`` is run k's row (None: run k lacks the item)."""

    id: str
    rows: list[ItemRow | None]
    deltas: dict[str, list[float | None]]  # column → run k's value minus run 0's (None where either is missing)
    spread: dict[str, float | None]  # column → max − min over the runs that have a value
    difference: float | None  # the ranking key: mean over columns of spread / that column's range
    position: int = 0  # 1-based row in the comparison, the page's anchor

    @property
    def first(self) -> ItemRow:
        return next(r for r in self.rows if r is not None)

    @property
    def failed(self) -> bool:
        return any(r is not None and r.failed for r in self.rows)


@dataclass
class Comparison:
    """The runs of one benchmark (one run or several), items aligned by id."""

    benchmark: str | None
    runs: list[Run]
    columns: list[Column]
    items: list[AlignedItem]
    categories: list[str]

    @property
    def compared(self) -> bool:
        return len(self.runs) > 1

    def most_different(self, n: int = TOP_DIFFERENT) -> list[AlignedItem]:
        ranked = [a for a in self.items if a.difference]
        return sorted(ranked, key=lambda a: -a.difference)[:n]


@dataclass
class Report:
    comparisons: list[Comparison]
    align_runs: list[Run]
    leaderboard: dict[str, Any] | None
    warnings: list[str]
    embedded_bytes: int = 0


# --- small helpers ---------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    if x == 0 or (1e-3 <= abs(x) < 1e5):
        return f"{x:.4g}" if abs(x) < 1000 else f"{x:.1f}"
    return f"{x:.3g}"


def _text(value: Any) -> Text | None:
    if value is None:
        return None
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return Text(s[:LONG_TEXT], len(s))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _cell(row: Mapping[str, Any], key: str) -> Value:
    """The score cell of ``key`` (``<prefix>.value`` or ``<prefix>.<metric>``) in a row."""
    prefix = key.partition(".")[0]
    if row.get(f"{prefix}.not_applicable"):
        return Value(None, "na", str(row[f"{prefix}.not_applicable"]))
    if key not in row:
        return Value(None, "absent", "the scorer did not run on this item")
    raw = row[key]
    if raw is None:
        error = row.get(f"{prefix}.error")
        return Value(None, "error", str(error)) if error else Value(None, "absent", "no value")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return Value(None, "bad", str(raw)[:200])
    if not math.isfinite(raw):
        return Value(None, "nan", str(raw))
    return Value(float(raw))


def read_jsonl(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """Every line of a JSONL file that is a JSON object; the others become warnings, not a broken report."""
    rows = []
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                warnings.append(f"{path}: line {line_no} is not JSON (skipped)")
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                warnings.append(f"{path}: line {line_no} is not a JSON object (skipped)")
    return rows


def _read_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        warnings.append(f"{path}: unreadable ({e})")
        return None
    return data if isinstance(data, dict) else None


_WORD = re.compile(r"[\w']+", re.UNICODE)


def _norm(word: str) -> str:
    return "".join(_WORD.findall(word.lower()))


def word_diff(text: str | None, transcript: str | None) -> list[tuple[str, str]] | None:
    """Word-level diff from the text channel to the ASR transcript: ``(same|missing|extra, word)`` in order.

    Words compare case- and punctuation-insensitively ("Paris," = "paris"); ``missing`` words are in the text
    channel but were not heard, ``extra`` ones were heard but are not in the text. Only the first ``DIFF_WORDS``
    words of each side are compared. None when either side is missing."""
    if text is None or transcript is None:
        return None
    a, b = text.split()[:DIFF_WORDS], transcript.split()[:DIFF_WORDS]
    matcher = difflib.SequenceMatcher(None, [_norm(w) for w in a], [_norm(w) for w in b], autojunk=False)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out += [("same", w) for w in b[j1:j2]]
            continue
        out += [("missing", w) for w in a[i1:i2]]
        out += [("extra", w) for w in b[j1:j2]]
    return out


# --- audio -----------------------------------------------------------------------------------------------------


class _AudioLinker:
    """Turns recorded audio paths into players: a link relative to the report, or inlined bytes."""

    def __init__(self, report_dir: Path, embed: bool):
        self.report_dir = report_dir.resolve()
        self.embed = embed
        self.embedded_bytes = 0

    def audio(self, recorded: Any, *bases: Path) -> Audio | None:
        if recorded is None or recorded == "":
            return None
        recorded = str(recorded)
        if recorded == "<embedded>":
            return Audio(recorded, problem="embedded in the data file: no file to play")
        path = Path(recorded)
        candidates = [path] if path.is_absolute() else [base / path for base in bases] + [Path.cwd() / path]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            return Audio(recorded, problem=f"missing: {recorded}")
        import soundfile as sf

        try:
            seconds = float(sf.info(str(found)).duration)
        except Exception as e:  # noqa: BLE001 - any decoder failure is this cell's problem, not the page's
            return Audio(recorded, problem=f"unreadable: {type(e).__name__}: {str(e)[:200]}")
        if self.embed:
            data = found.read_bytes()
            self.embedded_bytes += len(data)
            mime = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg",
                    ".mp3": "audio/mpeg"}.get(found.suffix.lower(), "audio/wav")
            return Audio(recorded, f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", seconds)
        rel = os.path.relpath(found.resolve(), self.report_dir)
        return Audio(recorded, urllib.parse.quote(Path(rel).as_posix()), seconds)


# --- eval and score runs ---------------------------------------------------------------------------------------


def _category(row: Mapping[str, Any]) -> str | None:
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    for key in CATEGORY_KEYS:
        value = meta.get(key, row.get(key) if key == "style" else None)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _prefixes(row: Mapping[str, Any], base: Iterable[str]) -> list[str]:
    base = set(base)
    out = []
    for key in row:
        if key in base or "." not in key:
            continue
        prefix = key.partition(".")[0]
        if prefix not in ("response", "audio") and prefix not in out:
            out.append(prefix)
    return out


def _details(row: Mapping[str, Any], prefixes: Sequence[str], shown: set[str]) -> list[tuple[str, Text]]:
    out = []
    for key, value in row.items():
        prefix, _, metric = key.partition(".")
        if prefix not in prefixes or key in shown or key == "asr.transcript" or metric in ("value", "error",
                                                                                          "not_applicable"):
            continue
        if value is None or metric == "words":  # word timings: long and not for reading
            continue
        text = _text(_fmt(value) if _number(value) is not None else value)
        if text is not None:
            out.append((key, text))
    return out


def _errors(row: Mapping[str, Any], prefixes: Sequence[str], audios: Sequence[Audio | None]) -> list[str]:
    """The row's errors, in its own words; an audio file's problem the player cell already shows is not repeated
    (a score run's ``audio.error`` is that problem seen when scoring)."""
    errors = []
    if row.get("response.error"):
        errors.append(f"response: {row['response.error']}")
    if row.get("audio.error") and not any(a is not None and a.problem for a in audios):
        errors.append(f"audio: {row['audio.error']}")
    for prefix in prefixes:
        if row.get(f"{prefix}.error"):
            errors.append(f"{prefix}: {row[f'{prefix}.error']}")
        value = row.get(f"{prefix}.value")
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{prefix}: value is {value}")
    return errors


def _item_row(row: Mapping[str, Any], k: int, columns: Sequence[Column], prefixes: Sequence[str],
              linker: _AudioLinker, run_dir: Path, *, text_key: str, audio_key: str, prompt_audio: Any,
              extra_text: Mapping[str, Any] | None = None) -> ItemRow:
    extra_text = extra_text or {}
    rid = row.get("id")
    rid = str(rid) if rid not in (None, "") else f"row {k + 1}"
    prompt_player = linker.audio(prompt_audio, run_dir) if prompt_audio else None
    answer = linker.audio(row.get(audio_key), run_dir)
    text = row.get(text_key, extra_text.get("text"))
    transcript = row.get("asr.transcript") if isinstance(row.get("asr.transcript"), str) else None
    history = []
    for turn in row.get("history") or []:
        if isinstance(turn, dict):
            history.append((str(turn.get("role", "?")), _text(turn.get("text") or "") or Text("", 0)))
    shown = {c.key for c in columns}
    return ItemRow(
        id=rid, category=_category(row),
        prompt=_text(row.get("prompt", extra_text.get("prompt"))), prompt_audio=prompt_player, history=history,
        reference=_text(row.get("reference", extra_text.get("reference"))),
        text=_text(text), audio=answer, transcript=_text(transcript),
        diff=word_diff(text if isinstance(text, str) else None, transcript),
        values={c.key: _cell(row, c.key) for c in columns},
        details=_details(row, prefixes, shown),
        errors=_errors(row, prefixes, [prompt_player, answer]),
    )


def _eval_columns(results: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]],
                  prefixes: Sequence[str]) -> list[Column]:
    """The benchmark's metric columns (named by their metric), then every other scorer's value."""
    columns: list[Column] = []
    seen: set[str] = set()
    for name, metric in ((results or {}).get("metrics") or {}).items():
        key = metric.get("column") if isinstance(metric, dict) else None
        if not key or metric.get("mean_of") or key in seen or not any(key in r for r in rows):
            continue
        seen.add(key)
        columns.append(Column(key, str(name), bool(metric.get("higher_is_better", True))))
    scorers = (results or {}).get("scorers") or {}
    for prefix in prefixes:
        key = f"{prefix}.value"
        if key not in seen and any(key in r for r in rows):
            seen.add(key)
            hib = (scorers.get(prefix) or {}).get("higher_is_better", True)
            columns.append(Column(key, prefix, bool(hib)))
    return columns


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]], depth: int = 0) -> None:
    if isinstance(value, dict) and depth < 4:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out, depth + 1)
    elif value not in (None, "", [], {}):
        s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        out.append((prefix, s[:300]))


def _eval_settings(results: Mapping[str, Any] | None, run_json: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    src = results or run_json or {}
    out: list[tuple[str, str]] = []
    bench = src.get("benchmark") or {}
    for key in ("name", "version", "definition_sha256"):
        if bench.get(key) is not None:
            out.append((f"benchmark.{key}", str(bench[key])))
    _flatten("model", src.get("model") or {}, out)
    for prefix, scorer in (src.get("scorers") or {}).items():
        if isinstance(scorer, dict):
            _flatten(f"scorer.{prefix}", {k: v for k, v in scorer.items() if k not in ("requires",)}, out)
    config = dict(src.get("config") or {})
    config.pop("limits", None)
    _flatten("config", config, out)
    env = (results or {}).get("environment") or {}
    for key in ("git_commit", "python", "platform"):
        if env.get(key):
            out.append((key, str(env[key])))
    _flatten("packages", env.get("packages") or {}, out)
    if (results or {}).get("finished_at"):
        out.append(("finished_at", str(results["finished_at"])))
    return out


def _histograms(columns: Sequence[Column], items: Sequence[ItemRow]) -> list[Histogram]:
    out = []
    for c in columns:
        values = [i.values[c.key].value for i in items if i.values[c.key].mark is None]
        values = [v for v in values if v is not None]
        if values:
            out.append(histogram(c.label, values))
    return out


def histogram(label: str, values: Sequence[float], bins: int = HISTOGRAM_BINS, width: int = 240,
              height: int = 80) -> Histogram:
    """Equal-width bins over [min, max] (one bin when all values are equal), scaled to the box."""
    low, high = min(values), max(values)
    n_bins = bins if high > low else 1
    counts = [0] * n_bins
    for v in values:
        k = n_bins - 1 if high == low else min(int((v - low) / (high - low) * n_bins), n_bins - 1)
        counts[k] += 1
    top = max(counts)
    step = (high - low) / n_bins if high > low else 0.0
    w = width / n_bins
    bars = []
    for k, count in enumerate(counts):
        h = height * count / top if top else 0.0
        bars.append((round(k * w, 2), round(height - h, 2), round(max(w - 1, 1), 2), round(h, 2), count,
                     low + k * step, low + (k + 1) * step if step else high))
    return Histogram(label, len(values), low, high, bars, width, height)


def read_eval_run(path: Path, linker: _AudioLinker) -> Run:
    warnings: list[str] = []
    rows = read_jsonl(path / "samples.jsonl", warnings)
    if not rows:
        shards = sorted(path.glob("samples.rank*.jsonl"))
        for shard in shards:
            rows += read_jsonl(shard, warnings)
        if shards:
            warnings.append(f"{path}: no samples.jsonl; read the unmerged shards {', '.join(s.name for s in shards)}")
    results = _read_json(path / "results.json", warnings)
    run_json = _read_json(path / "run.json", warnings)
    if results is None:
        warnings.append(f"{path}: no results.json (the run did not finish): per-item rows only")
    src = results or run_json or {}
    from evalsuite.eval import BASE_COLUMNS

    prefixes: list[str] = list((src.get("scorers") or {}).keys())
    for row in rows:
        prefixes += [p for p in _prefixes(row, BASE_COLUMNS) if p not in prefixes]
    columns = _eval_columns(results, rows, prefixes)
    items = [_item_row(r, k, columns, prefixes, linker, path, text_key="response.text", audio_key="response.audio",
                       prompt_audio=r.get("prompt_audio")) for k, r in enumerate(rows)]
    summary = []
    for name, m in ((results or {}).get("metrics") or {}).items():
        if isinstance(m, dict):
            summary.append(SummaryRow(str(name), _number(m.get("value")), _number(m.get("stderr")), m.get("n"),
                                      m.get("n_failed"), m.get("n_not_applicable"), m.get("higher_is_better"),
                                      name == results.get("primary"), m.get("column")))
    name = (src.get("model") or {}).get("name") or path.name
    bench = (src.get("benchmark") or {}).get("name")
    return Run("eval", path, str(name), bench, columns, items, summary, _histograms(columns, items),
               _eval_settings(results, run_json), warnings=warnings,
               results=path / "results.json" if results is not None else None)


def _score_source_items(summary: Mapping[str, Any] | None, path: Path, warnings: list[str]) -> dict[str, Any]:
    """id → the scored item (its text channel, prompt, reference), read back from the source when it is there."""
    source = (summary or {}).get("source")
    if not source:
        return {}
    from evalsuite.inputs import InputError, load_items

    for candidate in (Path(source), path / source, path.parent / source):
        if candidate.exists():
            try:
                return {item.id: item for item in load_items(candidate)}
            except (InputError, OSError, ValueError) as e:
                warnings.append(f"{path}: the scored source {source} is unreadable ({e}): no text channel")
                return {}
    warnings.append(f"{path}: the scored source {source} is gone: no text channel, prompt or reference")
    return {}


def read_score_run(path: Path, linker: _AudioLinker) -> Run:
    from evalsuite.results import BASE_COLUMNS

    warnings: list[str] = []
    rows = read_jsonl(path / "scores.jsonl", warnings)
    summary = _read_json(path / "summary.json", warnings)
    if summary is None:
        warnings.append(f"{path}: no summary.json (the run did not finish): per-item rows only")
    names = list(((summary or {}).get("settings") or {}).get("scorers") or {})
    for row in rows:
        names += [p for p in _prefixes(row, BASE_COLUMNS) if p not in names]
    scorers = ((summary or {}).get("settings") or {}).get("scorers") or {}
    columns = [Column("audio.duration", "seconds")] if any("audio.duration" in r for r in rows) else []
    columns += [Column(f"{n}.value", n, bool((scorers.get(n) or {}).get("higher_is_better", True))) for n in names
                if any(f"{n}.value" in r for r in rows)]
    source = _score_source_items(summary, path, warnings)
    items = []
    for k, row in enumerate(rows):
        item = source.get(row.get("id"))
        extra = {"text": item.text, "prompt": item.prompt, "reference": item.reference} if item else {}
        items.append(_item_row(row, k, columns, names, linker, path, text_key="text", audio_key="audio",
                               prompt_audio=None, extra_text=extra))
    rows_summary = []
    for col, m in ((summary or {}).get("metrics") or {}).items():
        if isinstance(m, dict):
            rows_summary.append(SummaryRow(col, _number(m.get("mean")), _number(m.get("stderr")), m.get("n_scored"),
                                           m.get("n_failed"), column=col))
    settings: list[tuple[str, str]] = []
    if summary:
        settings.append(("source", str(summary.get("source"))))
        _flatten("", (summary.get("settings") or {}), settings)
        env = summary.get("environment") or {}
        for key in ("git_commit", "python", "platform"):
            if env.get(key):
                settings.append((key, str(env[key])))
        _flatten("packages", env.get("packages") or {}, settings)
    return Run("score", path, path.name, "score", columns, items, rows_summary, _histograms(columns, items),
               settings, warnings=warnings)


# --- align runs ------------------------------------------------------------------------------------------------

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward_mean",)),  # + every reward.<component>_mean
    ("λ and its gates", ("lambda", "lambda_raw", "lambda_ema", "gate_v", "gate_g")),
    ("losses", ("loss", "loss_sft", "loss_grpo", "loss_kl")),
    ("loss weights", ("w_sft", "w_rl")),
    ("KL per channel", ("kl_text", "kl_speech", "kl_all")),
    ("groups with zero reward variance", ("frac_zero_var",)),
    ("length (positions)", ("len_text", "len_speech")),
)


def read_log(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """The align loop's log: ``log.jsonl`` when it is there, else ``log.csv``; values as floats where they parse."""
    if (path / "log.jsonl").is_file():
        return read_jsonl(path / "log.jsonl", warnings)
    if not (path / "log.csv").is_file():
        return []
    with (path / "log.csv").open(newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for k, v in row.items():
            if k is None:
                continue
            try:
                parsed[k] = float(v) if v not in (None, "") else None
            except ValueError:
                parsed[k] = v
        out.append(parsed)
    return out


def _ticks(low: float, high: float, n: int = 4) -> list[float]:
    if high <= low:
        return [low]
    return [low + (high - low) * k / n for k in range(n + 1)]


def line_chart(title: str, steps: Sequence[float], series: Mapping[str, Sequence[float | None]],
               width: int = 320, height: int = 160) -> Chart | None:
    """Polylines of each series over the steps; a None or non-finite value breaks its line. None if nothing is
    finite."""
    points = [(s, v) for ys in series.values() for s, v in zip(steps, ys)
              if v is not None and math.isfinite(v) and s is not None and math.isfinite(s)]
    if not points:
        return None
    xs = [s for s in steps if s is not None and math.isfinite(s)]  # the x axis spans every logged step
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)

    def sx(x: float) -> float:
        return round((x - x0) / (x1 - x0) * width, 2)

    def sy(y: float) -> float:
        return round(height - (y - y0) / (y1 - y0) * height, 2)

    lines = []
    for k, (name, ys) in enumerate(series.items()):
        segments, current = [], []
        for s, v in zip(steps, ys):
            if v is None or not math.isfinite(v) or s is None:
                if current:
                    segments.append(current)
                current = []
                continue
            current.append(f"{sx(s)},{sy(v)}")
        if current:
            segments.append(current)
        if segments:  # a lone point between gaps is drawn as a dot
            lines.append((name, PALETTE[k % len(PALETTE)], [" ".join(seg) for seg in segments if len(seg) > 1],
                          [tuple(seg[0].split(",")) for seg in segments if len(seg) == 1]))
    return Chart(title, lines, [(sx(t), _fmt(t)) for t in _ticks(x0, x1)], [(sy(t), _fmt(t)) for t in _ticks(y0, y1)],
                 width, height)


def align_charts(log: Sequence[Mapping[str, Any]]) -> list[Chart]:
    if not log:
        return []
    steps = [_number(r.get("step")) for r in log]
    keys = list(dict.fromkeys(k for r in log for k in r))
    charts = []
    for title, names in PANELS:
        wanted = list(names)
        if title == "reward":
            wanted += [k for k in keys if k.startswith("reward.") and k.endswith("_mean")]
        series = {n: [_number(r.get(n)) for r in log] for n in wanted if n in keys}
        chart = line_chart(title, steps, series) if series else None
        if chart is not None:
            charts.append(chart)
    return charts


def _rollout_steps(path: Path, linker: _AudioLinker, warnings: list[str]) -> list[RolloutStep]:
    folder = path / "rollouts"
    steps = []
    for file in sorted(folder.glob("step-*.jsonl")) if folder.is_dir() else []:
        step_warnings: list[str] = []
        lines = read_jsonl(file, step_warnings)
        match = re.search(r"(\d+)", file.stem)
        step = int(match.group(1)) if match else len(steps)
        groups: dict[str, tuple[Text | None, list[Rollout]]] = {}
        components: list[str] = []
        for line in lines:
            comps = line.get("components") if isinstance(line.get("components"), dict) else {}
            components += [c for c in comps if c not in components]
            text = line.get("text") if isinstance(line.get("text"), str) else None
            transcript = line.get("transcript") if isinstance(line.get("transcript"), str) else None
            pid = str(line.get("prompt_id", line.get("prompt", "?")))
            rollout = Rollout(
                prompt_id=pid, prompt=_text(line.get("prompt")), rollout=line.get("rollout"),
                text=_text(text), audio=linker.audio(line.get("audio"), folder), transcript=_text(transcript),
                diff=word_diff(text, transcript), reward=_cell({"r.value": line.get("reward"),
                                                                 "r.error": line.get("error")}, "r.value"),
                components={c: _cell({"c.value": v}, "c.value") for c, v in comps.items()},
                advantage=_cell({"a.value": line.get("advantage")}, "a.value"),
                error=str(line["error"]) if line.get("error") else None,
            )
            groups.setdefault(pid, (rollout.prompt, []))[1].append(rollout)
        steps.append(RolloutStep(step, [(pid, p, rs) for pid, (p, rs) in groups.items()], components,
                                 step_warnings))
        warnings += step_warnings
    return sorted(steps, key=lambda s: s.step)


def read_align_run(path: Path, linker: _AudioLinker) -> Run:
    warnings: list[str] = []
    log = read_log(path, warnings)
    config = _read_json(path / "config.json", warnings)
    settings: list[tuple[str, str]] = []
    _flatten("", config or {}, settings)
    last = [(k, _fmt(v) if _number(v) is not None else str(v)) for k, v in (log[-1] if log else {}).items()
            if v is not None]
    run = Run("align", path, path.name, None, settings=settings, charts=align_charts(log), last_step=last,
              rollouts=_rollout_steps(path, linker, warnings), warnings=warnings)
    if not log:
        warnings.append(f"{path}: no log.csv or log.jsonl yet: no curves")
    return run


def read_run(path: str | Path, linker: _AudioLinker) -> Run:
    """An eval, score or align run folder, by what it holds."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder")
    if (path / "samples.jsonl").is_file() or (path / "results.json").is_file() or any(path.glob("samples.rank*")):
        return read_eval_run(path, linker)
    if (path / "scores.jsonl").is_file() or (path / "summary.json").is_file():
        return read_score_run(path, linker)
    if (path / "log.csv").is_file() or (path / "log.jsonl").is_file() or (path / "rollouts").is_dir():
        return read_align_run(path, linker)
    raise ReportError(f"{path} holds no run: no samples.jsonl/results.json (eval), scores.jsonl/summary.json "
                      "(score) or log.csv/rollouts (align)")


# --- comparing runs --------------------------------------------------------------------------------------------


def align_items(runs: Sequence[Run]) -> Comparison:
    """The runs' items aligned by id (in the first run's order, then the ids only later runs have), with per-item
    deltas against the first run and the spread over the runs for every column they share."""
    columns: list[Column] = []
    for run in runs:
        columns += [c for c in run.columns if c.key not in {x.key for x in columns}]
    by_run = [{item.id: item for item in run.items} for run in runs]
    ids = list(dict.fromkeys(item.id for run in runs for item in run.items))
    ranges: dict[str, float] = {}
    for c in columns:
        values = [i.values[c.key].value for run in runs for i in run.items
                  if c.key in i.values and i.values[c.key].mark is None]
        values = [v for v in values if v is not None]
        ranges[c.key] = (max(values) - min(values)) if values else 0.0
    aligned = []
    for item_id in ids:
        rows = [index.get(item_id) for index in by_run]
        deltas: dict[str, list[float | None]] = {}
        spread: dict[str, float | None] = {}
        parts = []
        for c in columns:
            values = [_value_of(r, c.key) for r in rows]
            base = values[0]
            deltas[c.key] = [None if base is None or v is None else v - base for v in values]
            present = [v for v in values if v is not None]
            spread[c.key] = max(present) - min(present) if len(present) > 1 else None
            if spread[c.key] is not None and ranges[c.key] > 0:
                parts.append(spread[c.key] / ranges[c.key])
        difference = sum(parts) / len(parts) if parts and len(runs) > 1 else None
        aligned.append(AlignedItem(item_id, rows, deltas, spread, difference, len(aligned) + 1))
    categories = sorted({i.category for run in runs for i in run.items if i.category})
    return Comparison(runs[0].benchmark, list(runs), columns, aligned, categories)


def _value_of(row: ItemRow | None, key: str) -> float | None:
    if row is None or key not in row.values or row.values[key].mark is not None:
        return None
    return row.values[key].value


def _leaderboard(runs: Sequence[Run], warnings: list[str]) -> dict[str, Any] | None:
    """The leaderboard of the eval runs when they come from several models (evalsuite.leaderboard's table)."""
    with_results = [r for r in runs if r.kind == "eval" and r.results is not None]
    if len({r.name for r in with_results}) < 2:
        return None
    from evalsuite.benchmark import suites
    from evalsuite.leaderboard import LeaderboardError, make_table, newest_runs
    from evalsuite.leaderboard import read_run as read_results

    try:
        board = make_table(newest_runs([read_results(r.results) for r in with_results], warnings), suites=suites(),
                           warnings=warnings)
    except (LeaderboardError, KeyError, ValueError) as e:
        warnings.append(f"no leaderboard: {e}")
        return None
    names = [c.name for c in board.columns]
    rows = []
    for row in board.rows:
        cells = []
        for name in names:
            value, err = _number(row.get(name)), _number(board.stderr.get(row["model"], {}).get(name))
            cells.append("" if value is None else _fmt(value) + ("" if err is None else f" ± {_fmt(err)}"))
        rows.append((row.get("rank"), row["model"], cells))
    return {"columns": names, "rows": rows, "ranked_by": board.ranked_by}


# --- the page --------------------------------------------------------------------------------------------------


def build_report(run_dirs: Sequence[str | Path], output: str | Path, *, embed: bool = False) -> Report:
    """Read the runs and put them together: eval/score runs grouped by benchmark (compared when a group has
    several), align runs apart, the leaderboard when several models ran."""
    if not run_dirs:
        raise ReportError("give at least one run folder")
    linker = _AudioLinker(Path(output).parent, embed)
    runs = [read_run(p, linker) for p in run_dirs]
    warnings = [w for r in runs for w in r.warnings]
    groups: dict[tuple[str, str | None], list[Run]] = {}
    for run in runs:
        if run.kind != "align":
            groups.setdefault((run.kind, run.benchmark), []).append(run)
    comparisons = [align_items(group) for group in groups.values()]
    board = _leaderboard(runs, warnings)
    report = Report(comparisons, [r for r in runs if r.kind == "align"], board, warnings, linker.embedded_bytes)
    if embed and linker.embedded_bytes > EMBED_WARN_BYTES:
        report.warnings.append(f"--embed inlined {linker.embedded_bytes / 2**20:.1f} MiB of audio (over "
                               f"{EMBED_WARN_BYTES / 2**20:.0f} MiB): the page may load slowly; link the audio "
                               "instead (without --embed)")
    return report


def render(report: Report, title: str = "wavalign report") -> str:
    """The page's HTML (Jinja2, autoescaped: no text from a run is ever markup)."""
    import secrets

    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # the folder beside this file (PackageLoader misses it under some editable installs)
    env = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda x: "" if x is None else _fmt(float(x))
    return env.get_template("report.html.j2").render(report=report, title=title,
                                                        nonce=secrets.token_urlsafe(16))


def write_report(run_dirs: Sequence[str | Path], output: str | Path, *, embed: bool = False,
                 title: str | None = None) -> Report:
    """Build and write the report; returns it (``warnings`` says what was wrong with the input)."""
    output = Path(output)
    report = build_report(run_dirs, output, embed=embed)
    if title is None:
        names = [c.benchmark or "runs" for c in report.comparisons] + [r.name for r in report.align_runs]
        title = "wavalign report: " + ", ".join(dict.fromkeys(n for n in names if n))
    output.parent.mkdir(parents=True, exist_ok=True)
    html = render(report, title)
    write_atomic(output, html.encode("utf-8"))
    return report


__all__ = ["REPORT_HTML", "Report", "ReportError", "align_items", "build_report", "histogram", "line_chart",
           "read_run", "render", "word_diff", "write_report"]
