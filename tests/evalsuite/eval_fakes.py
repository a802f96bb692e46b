"""Model-free adapters and scorers for the eval runner's tests (importable as ``eval_fakes:...``)."""

from __future__ import annotations

import os
import time

import numpy as np

from evalsuite.adapters import Response
from rewards.base import Score, ScorerInfo


class EchoAdapter:
    """Answers "the answer is <reference-ish word>" from the prompt; speaks a tone when ``speak``.

    Items whose id contains "boom" make the whole batch raise (the runner must isolate them); with ``log`` set,
    every answered id is appended to that file and each item takes ``delay`` seconds (kill-and-resume tests).
    """

    def __init__(self, speak: bool = True, delay: float = 0.0, log: str | None = None):
        self.name = "echo"
        self.speak = speak
        self.delay = delay
        self.log = log or os.environ.get("ECHO_ADAPTER_LOG")

    def info(self):
        return {"adapter": "echo", "speak": self.speak}

    def respond(self, requests):
        if any("boom" in r.id for r in requests):
            raise RuntimeError("model exploded")
        out = []
        for r in requests:
            time.sleep(self.delay)
            if self.log:
                with open(self.log, "a") as f:
                    f.write(r.id + "\n")
            if os.environ.get("ECHO_ADAPTER_RANKS"):  # which process answered what (sharding tests)
                with open(os.environ["ECHO_ADAPTER_RANKS"], "a") as f:
                    f.write(f"{os.environ.get('RANK', '0')} {r.id}\n")
            heard = "audio" if r.audio is not None else "text"
            text = f"I heard {heard}. {r.text.split('?')[0].split()[-1]} is the answer"
            audio = None
            if self.speak:
                t = np.arange(8000) / 16000
                audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
            out.append(Response(text=text, audio=audio, sample_rate=16000 if self.speak else None))
        return out


class _TextScorer:
    version = "1"
    higher_is_better = True
    sample_rate = 16000

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})


class ContainsScorer(_TextScorer):
    """1 when the reference occurs in the answer text, else 0."""

    name = "contains"
    requires = frozenset({"text", "reference"})

    def score(self, samples):
        return [Score(value=float(s.reference.lower() in s.text.lower()), metrics={"read": s.text}) for s in samples]


class WordsInAnswerScorer(_TextScorer):
    """Number of words in the answer text."""

    name = "nwords"
    requires = frozenset({"text"})

    def score(self, samples):
        return [Score(value=float(len(s.text.split()))) for s in samples]
