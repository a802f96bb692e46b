"""Synthesize the spoken prompts of the vstyle-lite benchmark with the packaged Piper voice (offline).

    .venv/bin/python benchmarks/vstyle_lite/make_audio.py [--voice PATH.onnx] [--force]

Reads ``items.jsonl`` beside this script and writes each item's ``prompt`` as speech to its ``audio`` path
(``audio/<id>.flac``, 16-bit FLAC at 16 kHz, the rate spoken-dialogue models take; the voice's own rate is
22.05 kHz, resampled by `rewards.audio.resample`, which keeps the files small). The voice reads the
instruction in its own neutral style: the benchmark asks for a style in words, it does not demonstrate it. The
same text and seed give the same audio, so rerunning reproduces the committed files; existing files are kept
unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voice", default=None, help="a Piper voice .onnx (default: the packaged en_US-joe-medium)")
    parser.add_argument("--force", action="store_true", help="rewrite audio files that already exist")
    args = parser.parse_args()

    from evalsuite.piper_tts import load_voice
    from rewards.audio import resample

    voice = load_voice(args.voice)
    items = [json.loads(line) for line in (HERE / "items.jsonl").read_text(encoding="utf-8").splitlines() if line]
    for item in items:
        out = HERE / item["audio"]
        if out.exists() and not args.force:
            continue
        audio, rate = voice.synthesize(item["prompt"], seed=0)
        audio = resample(audio, rate, SAMPLE_RATE)
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        print(f"{out.relative_to(HERE)}  {len(audio) / SAMPLE_RATE:.1f} s")


if __name__ == "__main__":
    main()
