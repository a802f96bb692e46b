"""Throughput of the offline asr + quality stack against a naive per-file loop (not a test: prints figures).

The naive loop is how VERSA / URO-Bench style scripts work: for each file, read and resample it, then call each
model on that one file (faster-whisper ``transcribe`` with beam 5, speechmos's DNSMOS ``run``, DistillMOS's
forward); models are loaded once, before the clock starts. wavalign runs the same models through
``evalsuite.scoring.score_items`` in reference mode (identical numbers) and in fast mode (``--fast``: batched
Whisper decoding, a subset of DNSMOS windows), whose agreement with the reference is printed too.

    python benchmarks/perf/score_throughput.py                    # the 18 real clips in ../shared/data/real_speech
    python benchmarks/perf/score_throughput.py --clips DIR        # any folder of audio
    python benchmarks/perf/score_throughput.py --repeat 2         # each clip twice (longer, steadier timings)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _clips(args) -> list[Path]:
    root = Path(args.clips) if args.clips else REPO.parent / "shared" / "data" / "real_speech"
    from rewards.audio import AUDIO_EXTENSIONS

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise SystemExit(f"no audio under {root}")
    return files * args.repeat


def naive_loop(files: list[Path]) -> tuple[dict[str, float], dict[str, dict]]:
    """Per-file loop with models loaded once; returns seconds per stage and the per-file outputs."""
    import torch
    from distillmos import ConvTransformerSQAModel
    from faster_whisper import WhisperModel
    from speechmos import dnsmos

    from rewards.asr import packaged_whisper_dir
    from rewards.audio import load_audio

    whisper = WhisperModel(str(packaged_whisper_dir()), device="cpu", compute_type="float32")
    distill = ConvTransformerSQAModel().eval()
    warm = np.zeros(16000, dtype=np.float32) + 1e-3
    dnsmos.run(warm, 16000)
    list(whisper.transcribe(warm, beam_size=5)[0])
    seconds = {"audio_io": 0.0, "asr": 0.0, "dnsmos": 0.0, "distillmos": 0.0}
    outputs: dict[str, dict] = {}
    for k, path in enumerate(files):
        t0 = time.perf_counter()
        audio = load_audio(path, target_sr=16000).samples
        t1 = time.perf_counter()
        segments, _ = whisper.transcribe(audio, beam_size=5)
        text = "".join(s.text for s in segments).strip()
        t2 = time.perf_counter()
        d = dnsmos.run(audio, 16000)
        t3 = time.perf_counter()
        with torch.no_grad():
            mos = distill(torch.from_numpy(audio)[None]).item()
        t4 = time.perf_counter()
        for stage, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            seconds[stage] += dt
        outputs[f"{k}"] = {"transcript": text, "dnsmos_ovrl": float(d["ovrl_mos"]), "distillmos": mos}
    return seconds, outputs


def wavalign_run(files: list[Path], fast: bool, batch_size: int) -> tuple[float, dict[str, float], list[dict]]:
    from evalsuite.inputs import Item
    from evalsuite.scoring import score_items
    from rewards.asr import AsrScorer
    from rewards.quality import QualityScorer

    items = [Item(id=f"{k}", audio_path=p) for k, p in enumerate(files)]
    scorers = [AsrScorer(decode="batched" if fast else "sequential", batch_size=batch_size),
               QualityScorer(dnsmos_windowing="fast" if fast else "reference", distillmos_batch=16)]
    for scorer in scorers:
        scorer.prepare()  # model loading is outside the timed part, as for the naive loop
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = score_items(items, scorers, out, batch_size=batch_size, progress=False)
        wall = time.perf_counter() - started
        rows = [json.loads(line) for line in (Path(out) / "scores.jsonl").read_text().splitlines()]
    return wall, result.summary["seconds_by_stage"], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", help="folder of audio files (default: ../shared/data/real_speech)")
    parser.add_argument("--repeat", type=int, default=1, help="score each clip this many times")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    files = _clips(args)

    from rewards.audio import load_audio
    from rewards.text import error_rates, normalize

    audio_seconds = sum(load_audio(p).duration for p in files)
    print(f"{len(files)} clips, {audio_seconds:.1f} s of audio")

    naive_seconds, naive = naive_loop(files)
    naive_wall = sum(naive_seconds.values())
    ref_wall, ref_stages, ref_rows = wavalign_run(files, fast=False, batch_size=args.batch_size)
    fast_wall, fast_stages, fast_rows = wavalign_run(files, fast=True, batch_size=args.batch_size)

    def line(name: str, wall: float, stages: dict[str, float]) -> None:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
        print(f"{name:<22} {wall:7.1f} s  {audio_seconds / wall:6.1f}x real time  "
              f"{naive_wall / wall:5.2f}x the naive loop   ({parts})")

    print()
    line("naive per-file loop", naive_wall, naive_seconds)
    line("wavalign reference", ref_wall, ref_stages)
    line("wavalign --fast", fast_wall, fast_stages)

    # Reference mode must reproduce the naive loop's numbers; fast mode's agreement is reported.
    def agreement(rows: list[dict], label: str) -> None:
        same_text = sum(normalize(r["asr.transcript"]) == normalize(naive[r["id"]]["transcript"]) for r in rows)
        wer = np.mean([error_rates(r["asr.transcript"], naive[r["id"]]["transcript"]).wer
                       if normalize(naive[r["id"]]["transcript"]) else 0.0 for r in rows])
        d_ovrl = np.array([r["quality.dnsmos_ovrl"] - naive[r["id"]]["dnsmos_ovrl"] for r in rows])
        d_mos = np.array([r["quality.distillmos"] - naive[r["id"]]["distillmos"] for r in rows])
        ref_ovrl = [naive[r["id"]]["dnsmos_ovrl"] for r in rows]
        r_ovrl = np.corrcoef(ref_ovrl, [r["quality.dnsmos_ovrl"] for r in rows])[0, 1]
        print(f"{label:<22} transcripts identical {same_text}/{len(rows)} (WER between {wer:.4f}); "
              f"DNSMOS OVRL |diff| mean {np.abs(d_ovrl).mean():.4f} max {np.abs(d_ovrl).max():.4f} "
              f"(Pearson r {r_ovrl:.4f}); DistillMOS |diff| max {np.abs(d_mos).max():.5f}")

    print("\nagreement with the naive loop's outputs:")
    agreement(ref_rows, "wavalign reference")
    agreement(fast_rows, "wavalign --fast")


if __name__ == "__main__":
    main()
