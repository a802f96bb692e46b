"""The ``wavalign`` command line. Commands are thin: parse flags, build configs, call the library.

Heavy imports (numpy, torch, model backends) happen inside command bodies so ``wavalign --help`` stays instant.
Errors a user can fix print one line and exit with status 2; an output that cannot be written (disk full, read-only
folder) prints one line and exits with status 3, every row already written intact for a resumed run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

app = typer.Typer(
    name="wavalign",
    help="Score, evaluate and align end-to-end spoken dialogue models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Device = Annotated[str, typer.Option(help="Device for torch/CTranslate2 models: cpu or cuda.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _write_failed(error: OSError, hint: str) -> NoReturn:
    """A write failure (evalsuite.results.is_write_failure): one line, exit status 3."""
    from evalsuite.results import WriteError

    what = str(error) if isinstance(error, WriteError) else f"cannot write {error.filename or 'an output'}: " \
        f"{error.strerror or error}"
    typer.echo(f"error: {what}; {hint}", err=True)
    raise typer.Exit(code=3)


def _is_write_failure(error: BaseException) -> bool:
    from evalsuite.results import is_write_failure

    return is_write_failure(error)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def score(
    path: Annotated[Path, typer.Argument(help="Folder of audio files (x.wav + optional x.txt), or a JSONL/CSV manifest.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder for scores.csv/jsonl and summary.json.")] = Path("wavalign-scores"),
    scorers: Annotated[str, typer.Option(help="Comma-separated scorer names, or your own 'pkg.mod:Class'.")] = "asr,quality",
    asr_backend: Annotated[str, typer.Option(help="faster-whisper or openai-whisper.")] = "faster-whisper",
    asr_model: Annotated[str | None, typer.Option(help="Whisper name, CTranslate2 dir or .pt path (default: packaged tiny.en / large-v3).")] = None,
    asr_decode: Annotated[str, typer.Option(help="sequential (reference) or batched (faster, faster-whisper only).")] = "sequential",
    asr_beam_size: Annotated[int, typer.Option(help="Whisper beam width.")] = 5,
    asr_compute_type: Annotated[str, typer.Option(help="CTranslate2 compute type (auto, int8, float32, float16...).")] = "auto",
    language: Annotated[str, typer.Option(help="Spoken language (ISO 639-1); a manifest's 'language' column wins.")] = "en",
    word_timestamps: Annotated[bool, typer.Option(help="Also record word timings from the ASR.")] = False,
    quality_backends: Annotated[str, typer.Option(help="Comma-separated: dnsmos, distillmos, utmos.")] = "dnsmos,distillmos",
    dnsmos_windowing: Annotated[str, typer.Option(help="reference (9.01 s windows, 1 s hops) or fast.")] = "reference",
    utmos_checkpoint: Annotated[str | None, typer.Option(help="UTMOS22 strong checkpoint (utmos22_strong_step7459_v1.pt).")] = None,
    judge_backend: Annotated[str, typer.Option(help="openai (any OpenAI-compatible endpoint), hf (local transformers model: --judge-model PATH) or reference (offline: answer extraction, match, MiniLM similarity; rubric qa or reference_0_5).")] = "openai",
    judge_rubric: Annotated[str, typer.Option(help="open, qa, reference_0_5, pairwise, spoken_holistic, semantic, paralinguistic.")] = "open",
    judge_model: Annotated[str | None, typer.Option(help="Judge model name as the endpoint knows it.")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="Endpoint base URL (default $OPENAI_BASE_URL or OpenAI's).")] = None,
    judge_api_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key (never written anywhere).")] = "OPENAI_API_KEY",
    judge_n: Annotated[int, typer.Option(min=1, help="Judgments per item, aggregated by mean.")] = 1,
    judge_concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 8,
    emotion_model: Annotated[str | None, typer.Option(help="SpeechBrain emotion model dir or HF id in the local cache.")] = None,
    composite_config: Annotated[Path | None, typer.Option(help="YAML config of the composite reward (for --scorers composite).")] = None,
    fast: Annotated[bool, typer.Option(help="Shortcut for --asr-decode batched --dnsmos-windowing fast (close to, not identical with, the reference numbers).")] = False,
    device: Device = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Items per scorer call.")] = 8,
    max_seconds: Annotated[float, typer.Option(help="Reject audio longer than this many seconds.")] = 600.0,
    clipped_is_error: Annotated[bool, typer.Option(help="Reject clipped audio instead of flagging it.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard existing results in the output folder.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    report: Annotated[bool, typer.Option(help="Also write OUT_DIR/report.html, the listening report (players beside transcripts and scores).")] = False,
) -> None:
    """Score a folder or manifest of spoken answers: per-file CSV/JSONL and a summary (resumes by default)."""
    from evalsuite.inputs import InputError, load_items
    from evalsuite.scoring import RunConflictError, score_items
    from rewards.audio import AudioLimits
    from rewards.models import ModelUnavailableError
    from rewards.registry import UnknownScorerError, build

    if fast:
        asr_decode, dnsmos_windowing = "batched", "fast"
    names = _split(scorers)
    if "asr" in names and "prosody" in names:
        # prosody takes its speaking rate from asr's word timings, so asr runs first and records them
        word_timestamps = True
        names = ["asr"] + [n for n in names if n != "asr"]
    options = {
        "asr": {
            "backend": asr_backend, "model": asr_model, "decode": asr_decode, "beam_size": asr_beam_size,
            "compute_type": asr_compute_type, "language": language, "device": device,
            "word_timestamps": word_timestamps,
        },
        "quality": {
            "backends": tuple(_split(quality_backends)), "dnsmos_windowing": dnsmos_windowing,
            "utmos_checkpoint": utmos_checkpoint, "device": device,
        },
    }
    judge = {"backend": judge_backend, "rubric": judge_rubric, "model": judge_model or "",
             "api_key_env": judge_api_key_env, "n": judge_n, "concurrency": judge_concurrency}
    if judge_base_url:
        judge["base_url"] = judge_base_url
    if judge_backend == "hf":
        judge["device"] = device
    options["judge"] = judge
    options["emotion"] = {"device": device, **({"model": emotion_model} if emotion_model else {})}
    try:
        if "composite" in names:
            if composite_config is None:
                _fail("--scorers composite needs --composite-config FILE.yaml (weights and components)")
            from rewards.composite import CompositeConfig

            options["composite"] = {"config": CompositeConfig.from_yaml(composite_config)}
        items = load_items(path)
        built = [build(name, **options.get(name, {})) for name in names]
        if not built:
            _fail("--scorers is empty")
        result = score_items(
            items, built, output, source=str(path), batch_size=batch_size,
            limits=AudioLimits(max_seconds=max_seconds, clipped_is_error=clipped_is_error),
            overwrite=overwrite, progress=progress,
        )
    except (InputError, RunConflictError, UnknownScorerError, ModelUnavailableError, ValueError) as e:
        _fail(str(e))
    except OSError as e:
        if not _is_write_failure(e):
            raise
        _write_failed(e, f"the rows in {output}/scores.jsonl are kept: free space (or make the folder writable) and "
                         "run the same command again to resume")
    _print_summary(result.summary, result.n_resumed)
    typer.echo(f"wrote {output}/scores.csv, scores.jsonl, summary.json ({result.seconds:.1f} s)")
    if report:
        _write_report([output], output / "report.html")


def _print_summary(summary: dict, n_resumed: int) -> None:
    metrics = summary["metrics"]
    width = max([len(k) for k in metrics] + [6])
    typer.echo(f"{'metric':<{width}}  {'mean':>9}  {'stderr':>8}  {'n':>5}  {'failed':>6}")
    for name, s in metrics.items():
        mean = "-" if s["mean"] is None else f"{s['mean']:.4f}"
        err = "-" if s["stderr"] is None else f"{s['stderr']:.4f}"
        typer.echo(f"{name:<{width}}  {mean:>9}  {err:>8}  {s['n_scored']:>5}  {s['n_failed']:>6}")
    extra = f", {n_resumed} resumed from an earlier run" if n_resumed else ""
    typer.echo(f"{summary['n_items']} items, {summary['n_items_with_errors']} with errors{extra}")


def _parse_model_args(values: list[str]) -> dict:
    import yaml

    out = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            _fail(f"expected KEY=VALUE, got {value!r}")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


@app.command("eval")
def eval_(
    benchmark: Annotated[str | None, typer.Option("--benchmark", "-b", help="Built-in benchmark name (see --list) or a definition YAML path.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the built-in benchmarks and exit.")] = False,
    model: Annotated[str, typer.Option(help="cascade (offline baseline), policy (an align policy: --model-arg checkpoint=RUN/checkpoint/trainer.pt), responses:DIR, responses:FILE.jsonl, or your own 'package.module:Class'.")] = "cascade",
    model_name: Annotated[str | None, typer.Option(help="Name of the model in results and leaderboards (default: the adapter's).")] = None,
    model_arg: Annotated[list[str] | None, typer.Option(help="KEY=VALUE passed to the model adapter's constructor (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder (default runs/<benchmark>/<model name>).")] = None,
    data: Annotated[str | None, typer.Option(help="Local copy of the benchmark's data (.jsonl/.csv/.parquet, a folder of them, or a datasets save_to_disk folder).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N items.")] = None,
    judge_on: Annotated[str | None, typer.Option(help="What text-reading scorers read: text (s2t), transcript (s2s: ASR of the speech), auto, both (default: the definition's choice).")] = None,
    judge_backend: Annotated[str | None, typer.Option(help="Override the judge backend of the definition: openai, hf or reference.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name (openai) or local path (hf).")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="Judge endpoint base URL (default $OPENAI_BASE_URL or OpenAI's).")] = None,
    judge_api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the judge API key.")] = None,
    judge_n: Annotated[int | None, typer.Option(min=1, help="Judgments per item.")] = None,
    judge_concurrency: Annotated[int | None, typer.Option(min=1, help="Judge requests in flight at once.")] = None,
    asr_model: Annotated[str | None, typer.Option(help="Whisper model of the asr scorer (default: packaged tiny.en).")] = None,
    rules_llm_fallback: Annotated[bool, typer.Option(help="Let an LLM read the answers the extraction rules cannot decide (mcq, bbh, refusal), through --judge-backend openai|hf and --judge-model; each such row says method 'llm'. Off by default: scoring stays rule-only and offline.")] = False,
    device: Device = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Items per model call and per scorer call.")] = 8,
    resume: Annotated[bool, typer.Option(help="Continue the run in the output folder (same settings).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard an earlier run in the output folder.")] = False,
    leaderboard: Annotated[bool, typer.Option(help="Also rebuild the leaderboard of the runs next to this one (in the output's parent folder).")] = True,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any item has an error (a scorer that does not apply, e.g. to a text-only answer, is no error).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    report: Annotated[bool, typer.Option(help="Also write report.html beside results.json: the listening report (players beside transcripts and scores).")] = True,
) -> None:
    """Run a model on a benchmark and score its answers: samples.jsonl, samples.csv, results.json, report.html.

    Exit status: 0 when the run completed, per-item errors included (each recorded in samples.jsonl and counted in
    results.json); with --strict, 1 when any item has an error; 1 when items are missing from the run; 2 for usage
    errors; 3 when an output could not be written (disk full, read-only folder: the rows written are kept for
    --resume)."""
    from evalsuite.adapters import AdapterError, build_adapter
    from evalsuite.benchmark import BenchmarkError, list_benchmarks, load_benchmark

    if list_:
        for b in list_benchmarks():
            where = b.source.get("hf") or b.source.get("local") or "-"
            typer.echo(f"{b.name:<28} v{b.version:<3} {b.suite or '':<11} {where:<24} {b.description.splitlines()[0][:70] if b.description else ''}")
        return
    if benchmark is None:
        _fail("--benchmark NAME is required (see `wavalign eval --list`)")
    from evalsuite.data import DataError
    from evalsuite.eval import EvalConfig, RunConflictError, distributed_env, run_eval
    from rewards.models import ModelUnavailableError
    from rewards.registry import UnknownScorerError

    _, world, local_rank = distributed_env()
    if world > 1 and device == "cuda":
        device = f"cuda:{local_rank}"  # one GPU per process under accelerate launch / torchrun
    judge = {k: v for k, v in {"backend": judge_backend, "model": judge_model, "base_url": judge_base_url,
                                "api_key_env": judge_api_key_env, "n": judge_n,
                                "concurrency": judge_concurrency}.items() if v is not None}
    if judge_backend == "hf":
        judge["device"] = device
    scorer_args = {"judge": judge, "asr": {"device": device, **({"model": asr_model} if asr_model else {})},
                   "quality": {"device": device}, "emotion": {"device": device}}
    if rules_llm_fallback:
        if judge.get("backend", "openai") not in ("openai", "hf") or not judge.get("model"):
            _fail("--rules-llm-fallback reads answers with an LLM: give --judge-model (and --judge-backend openai or hf)")
        fallback = {k: v for k, v in judge.items() if k in ("backend", "model", "base_url", "api_key_env", "device",
                                                            "concurrency")}
        scorer_args.update({name: {"llm_fallback": fallback} for name in ("mcq", "bbh", "refusal")})
    options = _parse_model_args(model_arg or [])
    if model == "cascade":
        options.setdefault("device", device)
    try:
        bench = load_benchmark(benchmark)
        adapter = build_adapter(model, options, name=model_name)
        out = output or Path("runs") / bench.name / _safe(adapter.name)
        config = EvalConfig(data=data, limit=limit, judge_on=judge_on, scorer_args=scorer_args,
                            batch_size=batch_size, resume=resume, overwrite=overwrite)
        result = run_eval(bench, adapter, out, config, progress=progress)
    except (BenchmarkError, AdapterError, DataError, RunConflictError, UnknownScorerError, ModelUnavailableError,
            ValueError) as e:
        _fail(str(e))
    except OSError as e:
        if not _is_write_failure(e):
            raise
        _write_failed(e, f"the rows in {out}/samples.jsonl are kept: free space (or make the folder writable) and "
                         "rerun with --resume")
    if result.results is None:  # another rank: rank 0 reports
        return
    _print_results(result.results, result.n_resumed)
    typer.echo(f"wrote {out}/results.json, samples.jsonl, samples.csv ({result.results['seconds']['total']:.1f} s)")
    if report:
        _write_report([out], out / "report.html")
    if leaderboard:
        from evalsuite.benchmark import suites
        from evalsuite.leaderboard import build_leaderboard

        board_csv = out.parent / "leaderboard.csv"
        try:
            build_leaderboard([out.parent], board_csv, suites=suites())
        except OSError as e:
            if not _is_write_failure(e):
                raise
            _write_failed(e, f"the run is complete in {out}; rerun with --resume to write the leaderboard")
        typer.echo(f"wrote {board_csv} (+ .md, .png)")
    if not result.results["complete"] or (strict and result.results["n_items_with_errors"]):
        raise typer.Exit(code=1)


def _safe(name: str) -> str:
    from evalsuite.adapters import safe_name

    return safe_name(name)


def _print_results(results: dict, n_resumed: int) -> None:
    metrics = results["metrics"]
    width = max([len(k) for k in metrics] + [6])
    typer.echo(f"{results['benchmark']['name']} / {results['model']['name']}")
    typer.echo(f"{'metric':<{width}}  {'value':>9}  {'stderr':>8}  {'n':>5}  {'failed':>6}  {'n/a':>5}")
    for name, m in metrics.items():
        value = "-" if m["value"] is None else f"{m['value']:.2f}"
        err = "-" if m["stderr"] is None else f"{m['stderr']:.2f}"
        mark = "*" if name == results["primary"] else " "
        typer.echo(f"{name:<{width}}{mark} {value:>9}  {err:>8}  {m['n']:>5}  {m['n_failed']:>6}  "
                   f"{m.get('n_not_applicable', 0):>5}")
    extra = f", {n_resumed} resumed from an earlier run" if n_resumed else ""
    typer.echo(f"{results['n_rows']}/{results['n_items']} items, {results['n_items_with_errors']} with errors{extra}")


@app.command()
def leaderboard(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or folders holding runs) with results.json.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Leaderboard CSV (a .md and a .png are written beside it).")] = Path("leaderboard.csv"),
) -> None:
    """One row per model, one column per benchmark metric, an overall column per suite; CSV, Markdown and PNG."""
    from evalsuite.benchmark import suites
    from evalsuite.leaderboard import LeaderboardError, build_leaderboard

    try:
        board = build_leaderboard(runs, output, suites=suites())
    except LeaderboardError as e:
        _fail(str(e))
    for warning in getattr(board, "warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {output} (+ .md, .png)")


@app.command()
def align(
    config: Annotated[str, typer.Option("--config", "-c", help="Shipped config (tiny, reference) or a YAML path.")] = "tiny",
    mode: Annotated[str | None, typer.Option(help="wavalign (adaptive λ), fixed, po-all, po-text or sft.")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps in all (a resumed run continues up to it).")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Run folder: log.csv, checkpoint/, curves.png, config.json.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --output-dir from its checkpoint (exactly).")] = False,
    device: Annotated[str | None, typer.Option(help="cpu or cuda.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of data order, rollouts and initialisation.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any config field as KEY=VALUE (YAML value), e.g. --set lr=1e-5 (repeatable).")] = None,
    report: Annotated[bool, typer.Option(help="Also write OUTPUT_DIR/report.html: training curves and the saved rollouts.")] = False,
) -> None:
    """Post-train a spoken dialogue model with the WavAlign adaptive hybrid loop (or an ablation mode)."""
    from align.train import load_config, train
    from rewards.models import ModelUnavailableError

    overrides = _parse_model_args(set_ or [])
    overrides.update({"mode": mode, "max_steps": max_steps, "output_dir": output_dir, "device": device,
                      "seed": seed, "resume": resume or None})
    cfg = None
    try:
        cfg = load_config(config, overrides)
        row = train(cfg)
    except (ValueError, FileNotFoundError, ModelUnavailableError) as e:
        _fail(str(e))
    except OSError as e:
        if not _is_write_failure(e):
            raise
        saved = cfg is not None and (Path(cfg.output_dir) / "checkpoint" / "trainer.pt").exists()
        _write_failed(e, "log.csv and the last checkpoint are kept: free space (or make the folder writable) and "
                         + ("rerun with --resume" if saved else "rerun (no checkpoint was saved yet)"))
    typer.echo(f"wrote {cfg.output_dir}/log.csv, checkpoint/, curves.png (step {row.get('step')})")
    if report:
        _write_report([Path(cfg.output_dir)], Path(cfg.output_dir) / "report.html")


@app.command("report")
def report_(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of wavalign eval, score or align; two or more eval runs of one benchmark are compared item by item.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")] = Path("report.html"),
    embed: Annotated[bool, typer.Option(help="Inline the audio (base64) for one portable file, instead of linking it relative to the report.")] = False,
) -> None:
    """A static, self-contained HTML listening report: players beside transcripts, text channel and scores."""
    _write_report(runs, output, embed=embed, after_run=False)


def _write_report(runs: list[Path], output: Path, *, embed: bool = False, after_run: bool = True) -> None:
    """Write the report; after a run (eval, score, align), a report that cannot be written is a warning, not a
    failed run."""
    from evalsuite.report import ReportError, write_report

    try:
        built = write_report(runs, output, embed=embed)
    except (ReportError, OSError) as e:
        if _is_write_failure(e):  # disk full or read-only: a write failure like any other
            _write_failed(e, ("the run's results are complete; " if after_run else "")
                          + "run `wavalign report` again once the folder is writable and has space")
        if not after_run:
            _fail(str(e))
        typer.echo(f"warning: no report: {e}", err=True)
        return
    for warning in built.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {output}")


@app.command("convert-whisper")
def convert_whisper(
    output: Annotated[Path, typer.Argument(help="Where to write the openai-whisper .pt checkpoint.")],
    ct2_dir: Annotated[Path | None, typer.Option(help="CTranslate2 Whisper model dir (default: the packaged tiny.en).")] = None,
) -> None:
    """Convert a CTranslate2 Whisper model into an openai-whisper checkpoint (for --asr-backend openai-whisper)."""
    from rewards.models import ModelUnavailableError

    try:
        from rewards.asr import packaged_whisper_dir
        from rewards.whisper_convert import convert_ct2_to_openai_whisper

        source = ct2_dir or packaged_whisper_dir()
        path = convert_ct2_to_openai_whisper(source, output)
    except (ModelUnavailableError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"wrote {path} (from {source})")


def main() -> None:
    app(prog_name="wavalign")


if __name__ == "__main__":
    sys.exit(main())
