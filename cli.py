"""The ``wavalign`` command line. Commands are thin: parse flags, build configs, call the library.

Heavy imports (numpy, torch, model backends) happen inside command bodies so ``wavalign --help`` stays instant.
Errors a user can fix print one line and exit with status 2.
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
    _print_summary(result.summary, result.n_resumed)
    typer.echo(f"wrote {output}/scores.csv, scores.jsonl, summary.json ({result.seconds:.1f} s)")


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
