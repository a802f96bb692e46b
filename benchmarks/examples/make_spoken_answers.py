"""Regenerate benchmarks/examples/spoken_answers: short spoken answers with their text channels.

Synthesized offline with espeak-ng (apt-get install espeak-ng). Each answer has the model's text channel in a
sidecar ``.txt``; ``manifest.jsonl`` carries the same items with the question and a reference answer (a full
sentence, so ``asr.wer_reference`` compares like with like). Two items
are deliberately flawed so the scores have something to find: in ``mismatch`` the speech says something other
than the text channel; ``noisy`` has background noise at 5 dB SNR.

    python benchmarks/examples/make_spoken_answers.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from rewards.audio import resample

OUT = Path(__file__).resolve().parent / "spoken_answers"
RATE = 16000

# id: (question, spoken answer, text channel, reference answer transcript)
ANSWERS = {
    "capital": ("What is the capital of France?", "The capital of France is Paris.",
                "The capital of France is Paris.", "Paris is the capital of France."),
    "boiling": ("At what temperature does water boil at sea level?",
                "Water boils at one hundred degrees Celsius at sea level.",
                "Water boils at 100 degrees Celsius at sea level.", "At sea level water boils at 100 degrees Celsius."),
    "planets": ("How many planets are in the solar system?", "There are eight planets in our solar system.",
                "There are eight planets in our solar system.", "The solar system has eight planets."),
    "greeting": ("Can you greet me warmly?", "Hello! It is wonderful to hear from you today.",
                 "Hello! It is wonderful to hear from you today.", None),
    "mismatch": ("Who wrote Romeo and Juliet?", "I think it was written by Charles Dickens.",
                 "Romeo and Juliet was written by William Shakespeare.",
                 "William Shakespeare wrote Romeo and Juliet."),
    "noisy": ("What color is the sky on a clear day?", "On a clear day the sky is blue.",
              "On a clear day the sky is blue.", "The sky is blue on a clear day."),
}


def speak(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True)
        data, rate = sf.read(wav, dtype="float32")
    return resample(data, rate, RATE)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for item_id, (question, spoken, text, reference) in ANSWERS.items():
        audio = speak(spoken)
        if item_id == "noisy":
            noise = rng.standard_normal(len(audio)).astype(np.float32)
            audio = audio + noise * np.sqrt(np.mean(audio**2) / np.mean(noise**2) / 10 ** (5 / 10))
            audio = audio / max(1.0, float(np.max(np.abs(audio))))
        sf.write(OUT / f"{item_id}.flac", audio, RATE, subtype="PCM_16")
        (OUT / f"{item_id}.txt").write_text(text + "\n")
        rows.append({"id": item_id, "audio": f"{item_id}.flac", "text": text, "prompt": question,
                     "reference": reference})
    with (OUT / "manifest.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} answers to {OUT}")


if __name__ == "__main__":
    main()
