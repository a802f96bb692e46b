"""Benchmark definitions: one YAML file per benchmark (or subset), parsed into a `Benchmark`.

A definition says where the data is (``source``), how its columns map to a request (``fields``), which scorers
read each response (``scorers``, with arguments, the text they read and the items they apply to) and how per-item
columns become the reported numbers (``metrics``). The built-in definitions live in ``benchmarks/definitions``;
any path to a YAML file in the same format works too. ``wavalign eval --list`` shows them.

    name: voicebench-openbookqa
    version: 1
    suite: voicebench              # the leaderboard's overall column averages a suite's primary metrics
    description: ...
    source: {hf: hlt-lab/voicebench, subset: openbookqa, split: test, local: null}
    fields: {id: null, audio: audio, prompt: prompt, reference: reference, style: null, meta: []}
    system_prompt: null
    scorers:
      - {name: mcq, args: {}, on: text, where: null}
    metrics:
      - {name: accuracy, column: mcq.value, scale: 100, higher_is_better: true, where: null}
    primary: accuracy

``on`` is what a scorer reads as the answer: ``text`` (the model's text channel; s2t), ``transcript`` (the ASR
transcript of its speech; s2s, as URO-Bench) or ``auto`` (the text channel when there is one, else the
transcript). ``where`` limits a scorer or metric to items whose field equals a value (or is in a list), e.g.
``{category: mcq}``; other items get no column for it and do not count as failed.

**Multi-turn items.** ``fields.history`` names a column holding the dialogue's earlier turns, oldest first; the
item's own ``audio``/``prompt`` is the last user turn, the one the model answers::

    fields: {id: id, audio: audio, prompt: prompt, reference: reference, history: turns}

    {"id": "d1", "audio": "d1-3.wav", "prompt": "And its population?", "reference": "about two million",
     "turns": [{"role": "user", "text": "What is the capital of France?", "audio": "d1-1.wav"},
               {"role": "assistant", "text": "Paris."}]}

Each turn is a mapping with ``role`` (``user`` or ``assistant``) and ``text`` and/or ``audio``; audio takes the
forms of the item's own audio (a path relative to the data file's folder, ``{"bytes": ..., "path": ...}`` as
parquet stores it, or ``{"array": ..., "sampling_rate": ...}``). A CSV cell may hold the list as a JSON string. An
empty or null cell means no earlier turns. A malformed history (not a list, an unknown role, a turn with neither
text nor audio) or a turn's unreadable audio is an error of that item only; the run goes on. ``samples.jsonl``
records each item's history (role, text, audio path or ``<embedded>``, seconds). Adapters pass the turns to their
model or answer the item with an error (see `evalsuite.adapters`).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

READS = ("text", "transcript", "auto")
_TOP_KEYS = {"name", "version", "suite", "description", "source", "fields", "system_prompt", "scorers", "metrics",
             "primary"}
_FIELD_KEYS = {"id", "audio", "prompt", "reference", "style", "meta", "history"}
_SOURCE_KEYS = {"hf", "subset", "split", "local", "splits"}


class BenchmarkError(ValueError):
    """A definition that cannot be used (unknown name, malformed YAML, inconsistent metrics)."""


def definitions_dir() -> Path:
    import benchmarks

    return Path(benchmarks.__file__).resolve().parent / "definitions"


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer of a benchmark: registry name (or ``pkg.mod:Class``), its arguments, what it reads, where."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    on: str = "text"
    where: Mapping[str, Any] | None = None
    column: str | None = None  # the prefix of its result columns; default the scorer's name

    @property
    def prefix(self) -> str:
        return self.column or self.name.rsplit(":", 1)[-1].lower()


@dataclass(frozen=True)
class MetricSpec:
    """A reported number, times ``scale``: the mean of a per-item column over the items it applies to; with
    ``denominator``, the pooled ratio sum(column) / sum(denominator) (e.g. instructions followed / given); with
    ``mean_of``, the mean of other metrics (already scaled; empty if any of them is)."""

    name: str
    column: str | None = None
    scale: float = 1.0
    higher_is_better: bool = True
    where: Mapping[str, Any] | None = None
    description: str = ""
    denominator: str | None = None
    mean_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: int | str
    description: str
    source: Mapping[str, Any]
    fields: Mapping[str, Any]
    scorers: tuple[ScorerSpec, ...]
    metrics: tuple[MetricSpec, ...]
    primary: str
    suite: str | None = None
    system_prompt: str | None = None
    path: Path | None = None
    sha256: str = ""

    @property
    def base_dir(self) -> Path:
        """Relative data paths in the definition are resolved against its folder."""
        return self.path.parent if self.path else Path.cwd()

    def metric(self, name: str) -> MetricSpec:
        return next(m for m in self.metrics if m.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "suite": self.suite, "description": self.description,
                "definition": str(self.path) if self.path else None, "definition_sha256": self.sha256}


def matches(where: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """Whether an item (its fields and meta, flattened) satisfies a ``where`` filter."""
    if not where:
        return True
    for key, wanted in where.items():
        value = fields.get(key)
        if isinstance(wanted, list):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def parse_benchmark(data: Mapping[str, Any], path: Path | None = None, sha256: str = "") -> Benchmark:
    """A `Benchmark` from a definition's mapping; every problem is a `BenchmarkError` naming the file."""
    where = f"{path}" if path else "definition"

    def bad(message: str) -> BenchmarkError:
        return BenchmarkError(f"{where}: {message}")

    if not isinstance(data, Mapping):
        raise bad("expected a mapping at the top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)} (known: {sorted(_TOP_KEYS)})")
    for key in ("name", "version", "scorers", "metrics", "primary"):
        if key not in data:
            raise bad(f"missing '{key}'")
    source = dict(data.get("source") or {})
    if set(source) - _SOURCE_KEYS:
        raise bad(f"unknown source keys {sorted(set(source) - _SOURCE_KEYS)} (known: {sorted(_SOURCE_KEYS)})")
    fields = dict(data.get("fields") or {})
    if set(fields) - _FIELD_KEYS:
        raise bad(f"unknown fields {sorted(set(fields) - _FIELD_KEYS)} (known: {sorted(_FIELD_KEYS)})")
    fields.setdefault("meta", [])
    if not isinstance(fields["meta"], list):
        raise bad("fields.meta must be a list of column names")

    scorers = []
    for k, raw in enumerate(data["scorers"] or []):
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise bad(f"scorers[{k}] needs a name")
        raw = {("on" if key is True else key): v for key, v in raw.items()}  # YAML 1.1 reads a bare `on:` as True
        extra = set(raw) - {"name", "args", "on", "where", "column"}
        if extra:
            raise bad(f"scorers[{k}]: unknown keys {sorted(extra)}")
        spec = ScorerSpec(name=str(raw["name"]), args=dict(raw.get("args") or {}), on=raw.get("on", "text"),
                          where=raw.get("where"), column=raw.get("column"))
        if spec.on not in READS:
            raise bad(f"scorer '{spec.name}': on must be one of {', '.join(READS)}, got {spec.on!r}")
        scorers.append(spec)
    prefixes = [s.prefix for s in scorers]
    if len(set(prefixes)) != len(prefixes):
        raise bad(f"two scorers write the same columns ({', '.join(prefixes)}); give one a 'column' name")
    if not scorers:
        raise bad("needs at least one scorer")

    metrics = []
    for k, raw in enumerate(data["metrics"] or []):
        if not isinstance(raw, Mapping) or "name" not in raw or ("column" in raw) == ("mean_of" in raw):
            raise bad(f"metrics[{k}] needs a name and either a column or mean_of")
        extra = set(raw) - {"name", "column", "scale", "higher_is_better", "where", "description", "denominator",
                            "mean_of"}
        if extra:
            raise bad(f"metrics[{k}]: unknown keys {sorted(extra)}")
        metric = MetricSpec(name=str(raw["name"]), column=raw.get("column"), scale=float(raw.get("scale", 1.0)),
                            higher_is_better=bool(raw.get("higher_is_better", True)), where=raw.get("where"),
                            description=str(raw.get("description", "")), denominator=raw.get("denominator"),
                            mean_of=tuple(raw.get("mean_of") or ()))
        for column in (metric.column, metric.denominator):
            if column is not None and str(column).split(".", 1)[0] not in prefixes:
                raise bad(f"metric '{metric.name}' reads column '{column}', which no scorer writes "
                          f"(scorers: {', '.join(prefixes)})")
        unknown_parts = [m for m in metric.mean_of if m not in {x.name for x in metrics}]
        if unknown_parts:
            raise bad(f"metric '{metric.name}': mean_of names metrics not defined before it: {unknown_parts}")
        metrics.append(metric)
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise bad("metric names must be unique")
    if data["primary"] not in names:
        raise bad(f"primary '{data['primary']}' is not one of the metrics ({', '.join(names)})")
    return Benchmark(
        name=str(data["name"]), version=data["version"], description=str(data.get("description", "")).strip(),
        source=source, fields=fields, scorers=tuple(scorers), metrics=tuple(metrics), primary=str(data["primary"]),
        suite=data.get("suite"), system_prompt=data.get("system_prompt"), path=path, sha256=sha256,
    )


def read_benchmark(path: str | Path) -> Benchmark:
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as e:
        raise BenchmarkError(f"cannot read benchmark definition {path}: {e}") from e
    return parse_benchmark(data, path.resolve(), hashlib.sha256(raw).hexdigest())


def builtin_names() -> list[str]:
    return sorted(p.stem for p in definitions_dir().glob("*.yaml"))


def load_benchmark(name_or_path: str | Path) -> Benchmark:
    """A built-in definition by name, or a definition file by path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return read_benchmark(text)
    path = definitions_dir() / f"{text}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(text, builtin_names(), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise BenchmarkError(f"unknown benchmark '{text}'{hint} (see `wavalign eval --list`, or give a YAML path)")
    benchmark = read_benchmark(path)
    if benchmark.name != text:
        raise BenchmarkError(f"{path}: its name is '{benchmark.name}', expected '{text}' (the file name)")
    return benchmark


def list_benchmarks() -> list[Benchmark]:
    return [read_benchmark(definitions_dir() / f"{name}.yaml") for name in builtin_names()]


def suites() -> dict[str, list[str]]:
    """Suite name → its member benchmarks, from the built-in definitions (the leaderboard's overall columns)."""
    out: dict[str, list[str]] = {}
    for benchmark in list_benchmarks():
        if benchmark.suite:
            out.setdefault(benchmark.suite, []).append(benchmark.name)
    return out
