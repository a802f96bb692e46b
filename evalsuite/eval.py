"""Run a model on a benchmark and score its answers: the engine behind ``wavalign eval``.

Items go through in batches, top to bottom:

1. load the batch's spoken questions (a corrupt or missing prompt audio fails that item only);
2. ask the model adapter for its answers (an adapter that raises on a batch is retried item by item);
3. save spoken answers under ``responses/`` and score every answer with the benchmark's scorers, each reading the
   text channel or the ASR transcript of the speech as the definition (or ``--judge-on``) says;
4. append one row per item to ``samples.jsonl`` (flushed and fsynced), so a killed run resumes where it stopped
   (a last line cut off by a crash or a full disk is dropped on resume, its item redone, the repair recorded under
   ``repairs`` in run.json and results.json).

At the end ``results.json`` gets the metrics (mean × scale with standard error, n scored, n failed), the settings
and the environment; it, run.json, samples.csv and the response WAVs are written atomically (temporary file, fsync,
rename). A write that fails raises ``WriteError`` with every completed row intact. Under ``accelerate launch`` /
``torchrun`` each process takes every WORLD_SIZE-th item and writes ``samples.rank<R>.jsonl``; rank 0 merges them
into ``samples.jsonl`` and writes the results.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from evalsuite.adapters import ModelAdapter, Request, Response, Turn, safe_name
from evalsuite.benchmark import READS, Benchmark, ScorerSpec, matches
from evalsuite.data import BenchItem, data_dir, item_audio, item_history, load_rows, split_label, to_items
from evalsuite.results import (
    RowWriter,
    WriteError,
    _stderr,
    add_repair,
    column_stats,
    environment,
    make_dirs,
    read_json,
    read_rows,
    repair_rows,
    write_atomic,
    write_csv,
    write_json,
)
from evalsuite.scoring import RunConflictError, _comparable, _progress, run_scorer
from rewards.audio import AudioError, AudioLimits, to_mono, validate
from rewards.base import Sample, Scorer, not_applicable, one_line
from rewards.registry import build

SAMPLES_JSONL = "samples.jsonl"
SAMPLES_CSV = "samples.csv"
RESULTS_JSON = "results.json"
RUN_JSON = "run.json"
RESPONSES_DIR = "responses"
FORMAT = "wavalign.eval/1"
JUDGE_ON = (*READS, "both")
BASE_COLUMNS = ("id", "prompt", "prompt_audio", "reference", "style", "meta", "response.text", "response.audio",
                "response.error", "response.seconds")


@dataclass(frozen=True)
class EvalConfig:
    """How to run a benchmark (everything but the benchmark and the model).

    Attributes:
        data: a local copy of the benchmark's data (overrides the definition's source).
        limit: evaluate only the first N items.
        judge_on: what text-reading scorers (judge, extraction rules) read: ``text`` (s2t), ``transcript`` (s2s:
            the ASR transcript of the spoken answer), ``auto`` (text when there is any), ``both`` (each such scorer
            twice; the s2s copy's columns and metrics get the suffix ``_s2s``); None = as the definition says.
        scorer_args: per scorer name, arguments that override the definition's (e.g. the judge's backend).
        batch_size: items per adapter call and per scorer call.
        prompt_sample_rate: rate of the question audio handed to the model.
        limits: what counts as unusable audio (questions and answers).
        resume: continue a run in the same output folder (its settings must match).
        overwrite: discard an earlier run in the output folder.
    """

    data: str | None = None
    limit: int | None = None
    judge_on: str | None = None
    scorer_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_size: int = 8
    prompt_sample_rate: int = 16000
    limits: AudioLimits = AudioLimits()
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.judge_on is not None and self.judge_on not in JUDGE_ON:
            raise ValueError(f"judge_on must be one of {', '.join(JUDGE_ON)}, got {self.judge_on!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class EvalResult:
    out_dir: Path
    results: dict[str, Any] | None  # None on ranks other than 0
    n_items: int
    n_done_now: int
    n_resumed: int

    @property
    def all_scored(self) -> bool:
        return bool(self.results) and self.results["complete"] and self.results["n_items_with_errors"] == 0


@dataclass
class _Scoring:
    """One scorer as a benchmark runs it."""

    spec: ScorerSpec
    scorer: Scorer
    on: str
    prefix: str


def plan_scorers(benchmark: Benchmark, config: EvalConfig) -> list[tuple[ScorerSpec, str, str]]:
    """(spec, reads, column prefix) for each scorer run: asr first (its transcript and word timings feed the
    others), ``judge_on`` applied to every scorer but asr, and asr added when something reads the transcript."""
    plan = []
    for spec in benchmark.scorers:
        if spec.name == "asr" or config.judge_on is None:
            plan.append((spec, spec.on if spec.name != "asr" else "text", spec.prefix))
        elif config.judge_on == "both":
            plan.append((spec, "text", spec.prefix))
            if _reads_text(spec):
                plan.append((spec, "transcript", f"{spec.prefix}_s2s"))
        else:
            plan.append((spec, config.judge_on if _reads_text(spec) else spec.on, spec.prefix))
    if any(on != "text" for _, on, _ in plan) and not any(spec.name == "asr" for spec, _, _ in plan):
        plan.append((ScorerSpec(name="asr"), "text", "asr"))
    plan.sort(key=lambda p: p[0].name != "asr")  # stable: asr first, the rest in definition order
    return plan


_AUDIO_ONLY = {"quality", "loudness", "prosody", "emotion"}


def _reads_text(spec: ScorerSpec) -> bool:
    return spec.name not in _AUDIO_ONLY and spec.name != "asr"


def _metrics_plan(benchmark: Benchmark, plan: Sequence[tuple[ScorerSpec, str, str]]) -> list[dict[str, Any]]:
    """The definition's metrics, plus an ``_s2s`` copy of each metric whose scorer also ran on the transcript."""
    s2s = {p[0].prefix for p in plan if p[2] == f"{p[0].prefix}_s2s"}
    out = []
    for m in benchmark.metrics:
        entry = {"name": m.name, "column": m.column, "scale": m.scale, "higher_is_better": m.higher_is_better,
                 "where": m.where, "description": m.description, "denominator": m.denominator,
                 "mean_of": list(m.mean_of)}
        out.append(entry)
        prefix = (m.column or "").partition(".")[0]
        if prefix in s2s:
            out.append({**entry, "name": f"{m.name}_s2s", "column": m.column.replace(prefix, f"{prefix}_s2s", 1),
                        "denominator": m.denominator and m.denominator.replace(prefix, f"{prefix}_s2s", 1)})
        elif m.mean_of and any(f"{x}_s2s" in {e["name"] for e in out} for x in m.mean_of):
            out.append({**entry, "name": f"{m.name}_s2s", "mean_of": [f"{x}_s2s" for x in m.mean_of]})
    return out


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as set by accelerate launch / torchrun; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def load_benchmark_items(benchmark: Benchmark, config: EvalConfig, adapter: ModelAdapter | None = None
                         ) -> tuple[list[BenchItem], str]:
    """The benchmark's items (first ``limit``) and where they came from. A responses file that carries the items'
    fields is the data when no ``--data`` is given and the definition has no local copy: its rows are the items, and
    its own ids (when every row has one) are the item ids. The adapter, when it matches rows to items (``bind``), is
    told how the items were made."""
    items, where, rows_are_items, items_have_ids = _items(benchmark, config, adapter)
    if config.limit is not None:
        items = items[: config.limit]
    items = _distinct_response_files(items)
    if callable(getattr(adapter, "bind", None)):
        adapter.bind([item.id for item in items], items_have_ids=items_have_ids, rows_are_items=rows_are_items)
    return items, where


def _distinct_response_files(items: list[BenchItem]) -> list[BenchItem]:
    """An item whose id maps to the response file of an earlier item (``a b`` and ``a_b`` both name
    responses/a_b.wav) fails alone, instead of overwriting the other's speech."""
    owner: dict[str, str] = {}
    out = []
    for item in items:
        name = f"{safe_name(item.id)}.wav"
        if item.error is None and name in owner:
            item = replace(item, error=f"item id {item.id!r} would share {RESPONSES_DIR}/{name} with item "
                                       f"{owner[name]!r}; give the items distinct file-name-safe ids")
        elif item.error is None:
            owner[name] = item.id
        out.append(item)
    return out


def _items(benchmark: Benchmark, config: EvalConfig, adapter: ModelAdapter | None
           ) -> tuple[list[BenchItem], str, bool, bool]:
    """(items, where, made from the adapter's rows, ids taken from the data rather than generated)."""
    source = benchmark.source
    fields = dict(benchmark.fields)
    rows_from_adapter = getattr(adapter, "item_rows", None)
    local = source.get("local")
    has_local = bool(local) and (benchmark.base_dir / local).exists()
    adapter_rows = rows_from_adapter() if config.data is None and not has_local and rows_from_adapter else None
    if adapter_rows is not None:
        rows, where = adapter_rows, f"items from {getattr(adapter, 'path', 'the responses file')}"
        folder = Path(getattr(adapter, "path", Path.cwd())).parent
        own = fields.get("id")
        if not (own and all(row.get(own) is not None for row in rows)):
            # the definition's id column is not in the file (VoiceBench's is null): the file's own ids, if complete
            fields["id"] = "id" if all(row.get("id") is not None for row in rows) else None
        items = to_items(rows, fields, split_name=split_label(source), data_dir=folder,
                         with_audio=False)  # outputs files carry the items' text fields, not their audio
        return items, where, True, fields["id"] is not None
    data = Path(config.data).expanduser() if config.data else None
    rows, where = load_rows(source, data=data, base_dir=benchmark.base_dir)
    folder = data_dir(source, data=data, base_dir=benchmark.base_dir)
    items = to_items(rows, fields, split_name=split_label(source), data_dir=folder)
    return items, where, False, fields.get("id") is not None


def run_eval(
    benchmark: Benchmark,
    adapter: ModelAdapter,
    out_dir: str | Path,
    config: EvalConfig = EvalConfig(),
    *,
    progress: bool = True,
    log=None,
) -> EvalResult:
    """Run ``adapter`` on ``benchmark`` into ``out_dir`` (samples.jsonl, samples.csv, results.json).

    Raises:
        RunConflictError: ``out_dir`` holds another run (without ``resume``/``overwrite``) or one made with
            other settings.
        WriteError: an output file could not be written (disk full, read-only folder); the rows written are intact.
        evalsuite.data / benchmark errors for data that cannot be loaded.
    """
    started = time.perf_counter()
    log = log or (lambda message: print(message, file=sys.stderr))
    rank, world, _ = distributed_env()
    out = Path(out_dir)
    items, data_source = load_benchmark_items(benchmark, config, adapter)
    ids = [item.id for item in items]
    plan = plan_scorers(benchmark, config)
    metrics_plan = _metrics_plan(benchmark, plan)

    scorings = []
    for spec, on, prefix in plan:
        args = {**spec.args, **config.scorer_args.get(spec.name, {})}
        if spec.name == "asr" and any(p[0].name == "prosody" for p in plan):
            args["word_timestamps"] = True  # prosody's speaking rate comes from asr's word timings
        scorings.append(_Scoring(spec, build(spec.name, **args), on, prefix))

    settings = {
        "benchmark": benchmark.as_dict(),
        "model": {"name": adapter.name, "settings": _info(adapter)},
        "config": {**_config_dict(config), "data_source": data_source, "n_items": len(items)},
        "scorers": {s.prefix: {**s.scorer.info().as_dict(), "reads": s.on,
                               "where": dict(s.spec.where) if s.spec.where else None} for s in scorings},
    }
    samples_path = out / SAMPLES_JSONL
    shard_path = out / (f"samples.rank{rank}.jsonl" if world > 1 else SAMPLES_JSONL)
    if rank == 0:
        _claim_output(out, settings, config)
    if world > 1:
        _barrier()

    done_rows = [r for r in read_rows(samples_path)[0]] if world > 1 else []
    # a line cut off by a crash is dropped (its item is redone) and, on rank 0, recorded in run.json
    shard_rows, _ = repair_rows(shard_path, log, partial(_record_repair, out) if rank == 0 else None)
    done = {row["id"] for row in done_rows + shard_rows}
    mine = [item for k, item in enumerate(items) if k % world == rank]
    todo = [item for item in mine if item.id not in done]
    if todo:
        prepare_model = getattr(adapter, "prepare", None)
        if callable(prepare_model):  # a model that cannot load is one clear error, not an error in every row
            prepare_model()
        for s in scorings:  # a missing model is one clear error, before any work
            prepare = getattr(s.scorer, "prepare", None)
            if prepare is not None:
                prepare()

    make_dirs(out / RESPONSES_DIR)
    timings: dict[str, float] = {"prompt_audio": 0.0, "generate": 0.0}
    writer = RowWriter(shard_path)
    bar = _progress(len(mine), len(mine) - len(todo), progress and rank == 0)
    try:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start: start + config.batch_size]
            rows = _run_batch(batch, adapter, scorings, benchmark, config, out, timings)
            for row in rows:
                writer.write(row)
            bar.update(len(batch))
    finally:
        writer.close()
        bar.close()

    if world > 1:
        _barrier()
        if rank != 0:
            return EvalResult(out, None, len(mine), len(todo), len(mine) - len(todo))
        _merge_shards(out, world, ids)
    rows = _ordered(read_rows(samples_path)[0], ids)
    results = _results(benchmark, settings, metrics_plan, rows, ids, timings, time.perf_counter() - started,
                       scorings, adapter)
    results["repairs"] = read_json(out / RUN_JSON).get("repairs", [])  # lines dropped on resume, their items redone
    cols = _columns(rows, [s.prefix for s in scorings])
    write_csv(out / SAMPLES_CSV, rows, cols)
    write_json(out / RESULTS_JSON, _jsonable(results))
    return EvalResult(out, results, len(items), len(todo), len(mine) - len(todo))


def _info(adapter: ModelAdapter) -> dict[str, Any]:
    info = getattr(adapter, "info", None)
    return dict(info()) if callable(info) else {}


def _config_dict(config: EvalConfig) -> dict[str, Any]:
    d = asdict(config)
    d.pop("resume")
    d.pop("overwrite")
    d["scorer_args"] = {k: dict(v) for k, v in config.scorer_args.items()}
    return d


def _claim_output(out: Path, settings: dict[str, Any], config: EvalConfig) -> None:
    """Make ``out`` ours: fresh, resumed (same settings) or overwritten; refuse to mix runs. run.json gets the
    settings and, on resume, keeps the repairs of earlier resumes."""
    make_dirs(out)
    run_file = out / RUN_JSON
    existing = [out / SAMPLES_JSONL, *out.glob("samples.rank*.jsonl")]
    has_rows = any(p.exists() and p.stat().st_size for p in existing)
    previous: dict[str, Any] = {}
    if config.overwrite:
        stale = existing + [out / RESULTS_JSON, out / SAMPLES_CSV]
        stale += list((out / RESPONSES_DIR).glob("*")) if (out / RESPONSES_DIR).is_dir() else []
        for p in stale:
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                raise WriteError(p, e) from e
    elif has_rows:
        if not config.resume:
            raise RunConflictError(f"{out} already holds a run; use --resume to continue it, --overwrite to start "
                                   "afresh, or another -o")
        previous = read_json(run_file)
        if _comparable(_resumable(previous)) != _comparable(_resumable(settings)):
            raise RunConflictError(f"{out} holds a run with other settings (benchmark, model, scorers or config); "
                                   "use --overwrite or another -o")
    write_json(run_file, {**_jsonable(settings), "repairs": previous.get("repairs", [])})


def _record_repair(out: Path, repair: dict[str, Any]) -> None:
    """Add a repair of samples.jsonl (a cut-off line dropped on resume) to run.json, for results.json."""
    run = read_json(out / RUN_JSON)
    write_json(out / RUN_JSON, {**run, "repairs": add_repair(run.get("repairs", []), repair)})


def _resumable(settings: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: all settings but the resolved model ids and the item count of --limit."""
    s = json.loads(json.dumps(settings, default=str))
    s.pop("repairs", None)
    s.get("config", {}).pop("limit", None)
    s.get("config", {}).pop("n_items", None)
    return s


def _barrier() -> None:
    import datetime as dt

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=dt.timedelta(hours=12))
    dist.barrier()


def _merge_shards(out: Path, world: int, ids: Sequence[str]) -> None:
    """Rank 0: every rank's rows (and any earlier merge) into samples.jsonl, in benchmark order."""
    rows: dict[str, dict[str, Any]] = {}
    for path in [out / SAMPLES_JSONL, *(out / f"samples.rank{r}.jsonl" for r in range(world))]:
        for row in read_rows(path)[0]:
            rows[row["id"]] = row
    merged = _ordered(list(rows.values()), ids) + [r for i, r in rows.items() if i not in set(ids)]
    write_atomic(out / SAMPLES_JSONL,
                 "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in merged).encode())
    for r in range(world):
        (out / f"samples.rank{r}.jsonl").unlink(missing_ok=True)


def _ordered(rows: Sequence[dict[str, Any]], ids: Sequence[str]) -> list[dict[str, Any]]:
    by_id = {row["id"]: row for row in rows}
    return [by_id[i] for i in ids if i in by_id]


def _requests(batch: Sequence[BenchItem], benchmark: Benchmark, config: EvalConfig, timings: dict[str, float]
              ) -> tuple[list[Request | None], list[str | None]]:
    requests: list[Request | None] = []
    errors: list[str | None] = []
    tick = time.perf_counter()
    for item in batch:
        meta = {**item.meta, **({"style": item.style} if item.style else {})}
        if item.error:
            requests.append(None)
            errors.append(item.error)
            continue
        audio = None
        if item.audio is not None:
            try:
                audio = item_audio(item, config.prompt_sample_rate, config.limits)
            except AudioError as e:
                requests.append(None)
                errors.append(f"prompt audio {e}")
                continue
        try:
            turn_audio = item_history(item, config.prompt_sample_rate, config.limits)
        except AudioError as e:
            requests.append(None)
            errors.append(f"history audio {e}")
            continue
        history = tuple(Turn(turn["role"], turn["text"], a.samples if a else None, a.sample_rate if a else None)
                        for turn, a in zip(item.history, turn_audio))
        requests.append(Request(
            id=item.id, audio=audio.samples if audio else None, sample_rate=audio.sample_rate if audio else None,
            text=item.prompt, system_prompt=benchmark.system_prompt, meta=meta, history=history,
        ))
        errors.append(None)
    timings["prompt_audio"] += time.perf_counter() - tick
    return requests, errors


def _generate(adapter: ModelAdapter, requests: Sequence[Request]) -> list[Response]:
    """The adapter's responses; a batch that raises (or answers the wrong number) is retried one by one."""
    if not requests:
        return []
    try:
        responses = list(adapter.respond(list(requests)))
        if len(responses) == len(requests) and all(isinstance(r, Response) for r in responses):
            return responses
    except Exception:  # noqa: BLE001 - isolate the item below
        pass
    out = []
    for request in requests:
        try:
            (response,) = adapter.respond([request])
            if not isinstance(response, Response):
                raise TypeError(f"respond() returned {type(response).__name__}, not a Response")
        except Exception as e:  # noqa: BLE001 - this item's failure, recorded with its reason
            response = Response(error=f"model failed: {type(e).__name__}: {one_line(e)}")
        out.append(response)
    return out


def _run_batch(batch: Sequence[BenchItem], adapter: ModelAdapter, scorings: Sequence[_Scoring],
               benchmark: Benchmark, config: EvalConfig, out: Path, timings: dict[str, float]
               ) -> list[dict[str, Any]]:
    requests, errors = _requests(batch, benchmark, config, timings)
    live = [k for k, r in enumerate(requests) if r is not None]
    tick = time.perf_counter()
    answered = _generate(adapter, [requests[k] for k in live])
    elapsed = time.perf_counter() - tick
    timings["generate"] += elapsed
    responses: list[Response] = [Response(error=e) for e in errors]
    for k, response in zip(live, answered):
        responses[k] = response

    rows, samples = [], []
    no_speech: dict[int, str] = {}
    for k, (item, response) in enumerate(zip(batch, responses)):
        row: dict[str, Any] = {
            "id": item.id, "prompt": item.prompt, "prompt_audio": _describe_audio(item.audio),
            "reference": item.reference, "style": item.style, "meta": _jsonable(item.meta),
            "response.text": response.text, "response.audio": None, "response.error": response.error,
            "response.seconds": round(elapsed / max(len(live), 1), 4),
        }
        audio, rate = None, None
        if response.audio is not None and response.error is None:
            try:
                audio, rate = _response_audio(response, config.limits)
                path = Path(RESPONSES_DIR) / f"{safe_name(item.id)}.wav"
                # score what is saved (16-bit), so rescoring the folder later gives the same numbers
                audio = _write_wav(out / path, audio, rate)
                row["response.audio"] = path.as_posix()
            except AudioError as e:
                row["response.error"] = f"response audio {e}"
                audio, rate = None, None
        if benchmark.fields.get("history"):
            row["history"] = _describe_history(item, requests[k])
        if response.meta:
            row["response.meta"] = _jsonable(response.meta)
        rows.append(row)
        samples.append(Sample(
            id=item.id, audio=audio, sample_rate=rate, text=response.text, prompt=item.prompt,
            reference=item.reference, meta={**item.meta, **({"style": item.style} if item.style else {}),
                                            "response_error": row["response.error"]},
        ))
        if audio is None and row["response.error"] is None and getattr(adapter, "speaks", False):
            # a model that speaks gave no speech here: its failure, not a text-only answer
            why = (response.meta or {}).get("decode_error")
            no_speech[k] = "the model speaks but returned no audio for this item" + (f" ({why})" if why else "")

    for s in scorings:
        # the same fields the metrics' `where` reads from samples.jsonl (one definition: _row_fields)
        indices = [k for k in range(len(batch)) if matches(s.spec.where, _row_fields(rows[k]))]
        views: list[Sample] = list(samples)
        runnable = []
        for k in indices:
            failed = rows[k]["response.error"]
            if failed:
                rows[k][f"{s.prefix}.value"] = None
                rows[k][f"{s.prefix}.error"] = f"no response: {failed}"
                continue
            view, problem = _view(samples[k], rows[k], s.on)
            reason = not_applicable(view, frozenset(s.scorer.requires)) or _no_speech_to_read(rows[k], s.on, problem)
            if reason and k in no_speech:
                reason, problem = None, no_speech[k]
            if reason:  # not an error: a speech scorer on a text-only answer, counted apart
                rows[k][f"{s.prefix}.value"] = None
                rows[k][f"{s.prefix}.error"] = None
                rows[k][f"{s.prefix}.not_applicable"] = reason
                continue
            if problem:
                rows[k][f"{s.prefix}.value"] = None
                rows[k][f"{s.prefix}.error"] = problem
                continue
            views[k] = view
            runnable.append(k)
        run_scorer(s.scorer, samples, rows, runnable, timings, prefix=s.prefix, views=views)
    return rows


def _no_speech_to_read(row: dict[str, Any], on: str, problem: str | None) -> str | None:
    """A scorer reading the transcript does not apply where asr did not (the answer has no speech)."""
    if problem and on != "text" and row.get("asr.not_applicable"):
        return f"no transcript to read: {row['asr.not_applicable']}"
    return None


def _view(sample: Sample, row: dict[str, Any], on: str) -> tuple[Sample, str | None]:
    """The sample as a scorer reading ``on`` sees it: the text channel, or the ASR transcript as its text."""
    if on == "text" or (on == "auto" and sample.text is not None):
        return sample, None
    transcript = row.get("asr.transcript")
    if transcript is None:
        why = row.get("asr.error") or "the response has no speech"
        return sample, f"no transcript of the spoken answer ({why})"
    return replace(sample, text=transcript), None


def _response_audio(response: Response, limits: AudioLimits):
    import numpy as np

    if not response.sample_rate:
        raise AudioError("unreadable", "the model returned audio without a sample rate")
    samples = to_mono(np.asarray(response.audio))
    validate(samples, response.sample_rate, limits)
    return samples, int(response.sample_rate)


def _write_wav(path: Path, audio, rate: int):
    """Write 16-bit WAV atomically; return the samples as written (what a reader of the file gets)."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, subtype="PCM_16", format="WAV")
    write_atomic(path, buffer.getvalue())
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


def _describe_audio(cell: Any) -> str | None:
    """The prompt audio as a short string for samples.jsonl (a path, or what kind of embedded audio it was)."""
    if cell is None:
        return None
    if isinstance(cell, (str, Path)):
        return str(cell)
    if isinstance(cell, Mapping) and isinstance(cell.get("path"), str) and cell.get("path"):
        return cell["path"]
    return "<embedded>"


def _describe_history(item: BenchItem, request: Request | None) -> list[dict[str, Any]]:
    """The item's earlier turns for samples.jsonl: role, text, audio (a path or ``<embedded>``) and, when it was
    decoded, its length in seconds; never the samples themselves."""
    decoded = request.history if request is not None else ()
    out = []
    for k, turn in enumerate(item.history):
        entry: dict[str, Any] = {"role": turn["role"], "text": turn["text"], "audio": _describe_audio(turn["audio"])}
        if k < len(decoded) and decoded[k].audio is not None:
            entry["audio_seconds"] = round(len(decoded[k].audio) / decoded[k].sample_rate, 3)
        out.append(entry)
    return out


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and other oddities made JSON-safe (arrays of audio are dropped)."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"<array {value.shape}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _columns(rows: Sequence[dict[str, Any]], prefixes: Sequence[str]) -> list[str]:
    seen: dict[str, list[str]] = {p: [] for p in prefixes}
    extra: list[str] = []
    for row in rows:
        for key in row:
            prefix = key.split(".", 1)[0]
            if prefix in seen and key not in seen[prefix]:
                seen[prefix].append(key)
            elif prefix not in seen and key not in BASE_COLUMNS and key not in extra:
                extra.append(key)
    cols = [*BASE_COLUMNS, *extra]
    for p in prefixes:
        last = (f"{p}.error", f"{p}.not_applicable")
        metric_cols = [c for c in seen[p] if c != f"{p}.value" and c not in last]
        cols += [f"{p}.value", *metric_cols, *(c for c in last if c == f"{p}.error" or c in seen[p])]
    return cols


def _row_fields(row: dict[str, Any]) -> dict[str, Any]:
    fields = {**(row.get("meta") or {}), "id": row["id"], "reference": row.get("reference")}
    if row.get("style") is not None or "style" not in fields:  # a style kept in meta (fields.meta) stays
        fields["style"] = row.get("style")
    return fields


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None


def metric_value(rows: Sequence[dict[str, Any]], metric: Mapping[str, Any],
                 done: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """mean × scale over the items the metric applies to whose column has a number (the others with the column
    present but empty count as failed; those its scorer does not apply to, as not applicable); the pooled ratio
    with a ``denominator``; the mean of earlier metrics (``done``) with ``mean_of``."""
    scale = metric["scale"]
    common = {"scale": scale, "column": metric["column"], "higher_is_better": metric["higher_is_better"],
              "where": metric.get("where"), "description": metric.get("description", "")}
    if metric.get("mean_of"):
        parts = [(done or {}).get(name, {}) for name in metric["mean_of"]]
        values = [p.get("value") for p in parts]
        value = None if any(v is None for v in values) else sum(values) / len(values)
        return {"value": None if value is None else round(value, 6), "stderr": None,
                "n": min((p.get("n", 0) for p in parts), default=0),
                "n_failed": max((p.get("n_failed", 0) for p in parts), default=0),
                "n_not_applicable": max((p.get("n_not_applicable", 0) for p in parts), default=0), **common,
                "mean_of": list(metric["mean_of"])}
    values, denominators, failed, inapplicable = [], [], 0, 0
    prefix = metric["column"].partition(".")[0]
    for row in rows:
        if not matches(metric.get("where"), _row_fields(row)):
            continue
        if row.get(f"{prefix}.not_applicable"):  # the scorer does not apply (a text-only answer): not a failure
            inapplicable += 1
            continue
        if metric["column"] not in row:
            continue
        v = _number(row[metric["column"]])
        d = _number(row.get(metric["denominator"])) if metric.get("denominator") else 1.0
        if v is None or d is None:
            failed += 1
        else:
            values.append(v)
            denominators.append(d)
    if metric.get("denominator"):
        total = sum(denominators)
        mean = sum(values) / total if total else None
        # delta-method standard error of a ratio of sums
        stderr = None if mean is None else _stderr([(v - mean * d) / (total / len(values))
                                                    for v, d in zip(values, denominators)])
    else:
        mean = sum(values) / len(values) if values else None
        stderr = _stderr(values)
    return {
        "value": None if mean is None else round(mean * scale, 6),
        "stderr": None if stderr is None else round(stderr * scale, 6),
        "n": len(values), "n_failed": failed, "n_not_applicable": inapplicable, **common,
        **({"denominator": metric["denominator"]} if metric.get("denominator") else {}),
    }


def _metric_values(rows: Sequence[dict[str, Any]], plan: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in plan:
        out[m["name"]] = metric_value(rows, m, out)
    return out


def _results(benchmark: Benchmark, settings: dict[str, Any], metrics_plan: Sequence[dict[str, Any]],
             rows: Sequence[dict[str, Any]], ids: Sequence[str], timings: dict[str, float], seconds: float,
             scorings: Sequence[_Scoring], adapter: ModelAdapter) -> dict[str, Any]:
    prefixes = [s.prefix for s in scorings]
    with_errors = sum(1 for r in rows if r.get("response.error") or any(r.get(f"{p}.error") for p in prefixes))
    generate = timings.get("generate", 0.0)
    score_s = sum(v for k, v in timings.items() if k not in ("generate", "prompt_audio"))
    return {
        "format": FORMAT,
        "benchmark": settings["benchmark"],
        "model": {"name": adapter.name, "settings": _info(adapter)},  # resolved ids now that models are loaded
        "config": settings["config"],
        "scorers": {s.prefix: {**s.scorer.info().as_dict(), "reads": s.on,
                               "where": dict(s.spec.where) if s.spec.where else None} for s in scorings},
        "metrics": _metric_values(rows, metrics_plan),
        "primary": benchmark.primary,
        # how a responses file's rows answered the items: "id" or "position" (None: the model answered them)
        "responses_matched_by": getattr(adapter, "matched_by", None),
        "n_items": len(ids),
        "n_rows": len(rows),
        "n_responded": sum(1 for r in rows if not r.get("response.error")),
        "n_items_with_errors": with_errors,
        # per scorer, the items it does not apply to (speech scorers on text-only answers): not errors
        "n_not_applicable": {p: sum(1 for r in rows if r.get(f"{p}.not_applicable")) for p in prefixes},
        # per judge, the items whose judged text addressed the judge (a flag; the score is the judge's)
        "n_injection_suspected": {p: sum(1 for r in rows if r.get(f"{p}.injection_suspected") is True)
                                  for p in prefixes if any(f"{p}.injection_suspected" in r for r in rows)},
        "complete": len(rows) == len(ids),
        "columns": column_stats(rows, [c for c in _columns(rows, prefixes)
                                       if c.split(".", 1)[0] in prefixes or c == "response.seconds"]),
        "environment": environment(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": {"prompt_audio": round(timings.get("prompt_audio", 0.0), 3), "generate": round(generate, 3),
                    "score": round(score_s, 3), "total": round(seconds, 3),
                    "by_scorer": {p: round(timings.get(p, 0.0), 3) for p in prefixes}},
    }
