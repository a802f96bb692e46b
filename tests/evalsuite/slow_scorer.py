"""A deliberately slow scorer for kill-and-resume tests: logs every id it scores to $SLOW_SCORER_LOG."""

from __future__ import annotations

import os
import time

from rewards.base import Score, ScorerInfo


class SlowScorer:
    name = "slow"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = 16000

    def score(self, samples):
        out = []
        for sample in samples:
            time.sleep(0.25)
            with open(os.environ["SLOW_SCORER_LOG"], "a") as f:
                f.write(sample.id + "\n")
            out.append(Score(value=float(len(sample.audio)), metrics={"n": len(sample.audio)}))
        return out

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})


class ExplodingScorer:
    """Raises on any batch containing an item whose id contains 'boom' (tests per-item isolation)."""

    name = "exploding"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = 16000

    def score(self, samples):
        if any("boom" in s.id for s in samples):
            raise RuntimeError("kaboom")
        return [Score(value=1.0) for _ in samples]

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})


class NanScorer:
    """Returns a NaN sub-metric (a scorer bug the runner must survive)."""

    name = "nan"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = 16000

    def score(self, samples):
        return [Score(value=1.0, metrics={"bad": float("nan"), "good": 2.0}) for _ in samples]

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})


class WordsScorer:
    """Emits word timings like asr with word_timestamps=True."""

    name = "words"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = 16000

    def score(self, samples):
        return [Score(value=1.0, metrics={"words": [{"word": "hi", "start": 0.0, "end": 0.25}]}) for _ in samples]

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})


class CountWordsScorer:
    """Counts the word timings a previous scorer left in meta["words"]."""

    name = "count"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = 16000

    def score(self, samples):
        return [Score(value=float(len(s.meta.get("words") or []))) for s in samples]

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})
