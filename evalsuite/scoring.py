"""Score a folder or manifest with a set of scorers: the engine behind ``wavalign score``.

Items go through in batches: load and validate the batch's audio (once, at the rate the scorers share), run each
scorer on the whole batch, append one row per item to scores.jsonl. A bad item gets its error in its row and
the run goes on; a scorer that raises on a batch is retried item by item so only the culprit fails.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from evalsuite.inputs import Item
from evalsuite.results import (
    RUN_JSON,
    SCORES_CSV,
    SCORES_JSONL,
    SUMMARY_JSON,
    RowWriter,
    WriteError,
    add_repair,
    column_stats,
    columns,
    environment,
    make_dirs,
    read_json,
    read_rows,
    repair_rows,
    write_csv,
    write_json,
)
from rewards.audio import Audio, AudioError, AudioLimits, load_audio
from rewards.base import Sample, Scorer, score_each


class RunConflictError(ValueError):
    """The output folder holds results made with other settings."""


@dataclass
class RunResult:
    out_dir: Path
    n_items: int
    n_scored_now: int
    n_resumed: int
    summary: dict[str, Any]
    seconds: float


def _common_rate(scorers: Sequence[Scorer]) -> int | None:
    rates = {getattr(s, "sample_rate", None) for s in scorers if "audio" in s.requires}
    return rates.pop() if len(rates) == 1 else None


def _load(item: Item, rate: int | None, limits: AudioLimits) -> tuple[Audio | None, str | None]:
    if item.audio_path is None:
        return None, None
    try:
        return load_audio(item.audio_path, rate, limits), None
    except AudioError as e:
        return None, str(e)


def _settings(scorers: Sequence[Scorer], limits: AudioLimits) -> dict[str, Any]:
    return {
        "scorers": {s.name: s.info().as_dict() for s in scorers},
        "audio_limits": asdict(limits),
    }


_RESOLVED = frozenset({"model_id", "compute_type", "models"})  # filled in when models load, not chosen by the user


def _comparable(settings: Any) -> Any:
    """Settings that decide the numbers: everything but what model loading resolves, at any depth."""
    if isinstance(settings, dict):
        return {k: _comparable(v) for k, v in settings.items() if k not in _RESOLVED}
    if isinstance(settings, list):
        return [_comparable(v) for v in settings]
    return settings


def score_items(
    items: Sequence[Item],
    scorers: Sequence[Scorer],
    out_dir: str | Path,
    *,
    source: str = "",
    batch_size: int = 8,
    limits: AudioLimits = AudioLimits(),
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Score ``items`` into ``out_dir`` (scores.jsonl, scores.csv, summary.json), resuming what is there.

    A last line of scores.jsonl cut off by a crash or a full disk is dropped (its item scored again), logged, and
    recorded under ``repairs`` in run.json and summary.json.

    Raises:
        RunConflictError: ``out_dir`` has results from different scorers or settings (and not ``overwrite``).
        WriteError: an output file could not be written (disk full, read-only folder); the rows written are intact.
    """
    started = time.perf_counter()
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"each scorer can run once per run; got {', '.join(names)}")
    log = log or (lambda message: print(message, file=sys.stderr))
    out = make_dirs(out_dir)
    jsonl = out / SCORES_JSONL
    settings = _settings(scorers, limits)
    run_file = out / RUN_JSON
    previous: dict[str, Any] = {}
    if overwrite:
        try:
            jsonl.unlink(missing_ok=True)
        except OSError as e:
            raise WriteError(jsonl, e) from e
    elif jsonl.exists() and run_file.exists():
        previous = read_json(run_file)
        if _comparable(previous.get("settings")) != _comparable(settings):
            raise RunConflictError(
                f"{out} holds scores made with other scorers or settings; use --overwrite or another -o"
            )

    repairs = previous.get("repairs", [])

    def record(repair: dict[str, Any]) -> None:
        nonlocal repairs
        repairs = add_repair(repairs, repair)
        write_json(run_file, {"source": source, "settings": settings, "repairs": repairs})

    done_rows, _ = repair_rows(jsonl, log, record)  # a line cut off by a crash is dropped: its item is scored again
    write_json(run_file, {"source": source, "settings": settings, "repairs": repairs})
    done = {row["id"] for row in done_rows}
    todo = [item for item in items if item.id not in done]
    for scorer in scorers:  # load models up front: a missing model is one clear error, before any work
        prepare = getattr(scorer, "prepare", None)
        if prepare is not None and todo:
            prepare()
    rate = _common_rate(scorers)

    writer = RowWriter(jsonl)
    bar = _progress(len(items), len(items) - len(todo), progress)
    timings = {"audio_io": 0.0, **{name: 0.0 for name in names}}
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            rows = _score_one_batch(batch, scorers, rate, limits, timings)
            for row in rows:
                writer.write(row)
            bar.update(len(batch))
    finally:
        writer.close()
        bar.close()

    # The table and summary describe this input: rows of items no longer in it stay in scores.jsonl only.
    order = {item.id: k for k, item in enumerate(items)}
    all_rows = sorted((r for r in read_rows(jsonl)[0] if r["id"] in order), key=lambda r: order[r["id"]])
    cols = columns(all_rows, names)
    write_csv(out / SCORES_CSV, all_rows, cols)
    final_settings = _settings(scorers, limits)  # now with resolved model ids
    summary = {
        "source": source,
        "n_items": len(all_rows),
        "n_items_with_errors": sum(1 for r in all_rows if any(r.get(f"{n}.error") for n in names)
                                   or r.get("audio.error")),
        "metrics": column_stats(all_rows, cols),
        # per judge, the items whose judged text addressed the judge (a flag; the score is the judge's)
        "n_injection_suspected": {n: sum(1 for r in all_rows if r.get(f"{n}.injection_suspected") is True)
                                  for n in names if any(f"{n}.injection_suspected" in r for r in all_rows)},
        "settings": final_settings,
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 3),
        "seconds_by_stage": {k: round(v, 3) for k, v in timings.items()},  # this invocation's work only
        "repairs": repairs,  # lines of scores.jsonl dropped on resume (cut off by a crash), their items redone
    }
    write_json(out / SUMMARY_JSON, summary)
    write_json(run_file, {"source": source, "settings": final_settings, "repairs": repairs})
    return RunResult(out, len(all_rows), len(todo), len(done), summary, summary["seconds"])


def _score_one_batch(
    batch: Sequence[Item], scorers: Sequence[Scorer], rate: int | None, limits: AudioLimits,
    timings: dict[str, float],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    samples: list[Sample] = []
    tick = time.perf_counter()
    for item in batch:
        audio, audio_error = _load(item, rate, limits)
        rows.append({
            "id": item.id,
            "audio": str(item.audio_path) if item.audio_path else None,
            "audio.duration": round(audio.duration, 4) if audio else None,
            "audio.warnings": "; ".join(audio.warnings) if audio and audio.warnings else None,
            "audio.error": item.error or audio_error,
        })
        meta = dict(item.meta)
        meta["audio_path"] = str(item.audio_path) if item.audio_path else None
        samples.append(Sample(
            id=item.id,
            audio=audio.samples if audio else None,
            sample_rate=audio.sample_rate if audio else None,
            text=item.text,
            prompt=item.prompt,
            reference=item.reference,
            meta=meta,
        ))
    timings["audio_io"] += time.perf_counter() - tick
    for scorer in scorers:
        # Items whose audio failed to load are failed here for the scorers that need audio; the rest go through
        # score_each, which fails items lacking other inputs and isolates an item that makes the scorer raise.
        runnable = []
        for k, row in enumerate(rows):
            if row["audio.error"] and "audio" in scorer.requires:
                row[f"{scorer.name}.value"] = None
                row[f"{scorer.name}.error"] = f"audio {row['audio.error']}"
            else:
                runnable.append(k)
        run_scorer(scorer, samples, rows, runnable, timings)
    return rows


def run_scorer(
    scorer: Scorer, samples: list[Sample], rows: list[dict[str, Any]], indices: Sequence[int],
    timings: dict[str, float], *, prefix: str | None = None, views: Sequence[Sample] | None = None,
) -> None:
    """Score ``samples[k]`` for k in ``indices`` (or ``views[k]``, the same items as the scorer should read them)
    into ``rows[k]``: ``<prefix>.value``, one column per metric, ``<prefix>.error`` (prefix: the scorer's name).
    Word timings from an asr scorer go into ``samples[k].meta["words"]`` for the scorers after it."""
    if not indices:
        return
    prefix = prefix or scorer.name
    source = views if views is not None else samples
    tick = time.perf_counter()
    scores = score_each(scorer, [source[k] for k in indices])
    timings[prefix] = timings.get(prefix, 0.0) + time.perf_counter() - tick
    for k, score in zip(indices, scores):
        row = rows[k]
        row[f"{prefix}.value"] = score.value
        problems = [score.error] if score.error else []
        for metric, value in score.metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{metric} was {value}, recorded as missing")  # JSON has no NaN
                value = None
            row[f"{prefix}.{metric}"] = value
        row[f"{prefix}.error"] = "; ".join(problems) or None
        if score.not_applicable:
            row[f"{prefix}.not_applicable"] = score.not_applicable
        if isinstance(score.metrics.get("words"), list):
            # Word timings (asr with word_timestamps) are an input of later scorers (prosody's speaking rate).
            samples[k] = replace(samples[k], meta={**samples[k].meta, "words": score.metrics["words"]})


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="item", file=sys.stderr, dynamic_ncols=True)
