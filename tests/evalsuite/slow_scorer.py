"""Model-free scorers for runner tests: slow (kill-and-resume, logs to $SLOW_SCORER_LOG), exploding, NaN, words."""

from __future__ import annotations

import os
import time

from rewards.base import Score, ScorerInfo


class _TestScorer:
    """What every scorer here shares: the protocol's attributes and info()."""

    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = 16000

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})


class SlowScorer(_TestScorer):
    name = "slow"

    def score(self, samples):
        out = []
        for sample in samples:
            time.sleep(0.25)
            with open(os.environ["SLOW_SCORER_LOG"], "a") as f:
                f.write(sample.id + "\n")
            out.append(Score(value=float(len(sample.audio)), metrics={"n": len(sample.audio)}))
        return out


class ExplodingScorer(_TestScorer):
    """Raises on any batch containing an item whose id contains 'boom' (tests per-item isolation)."""

    name = "exploding"

    def score(self, samples):
        if any("boom" in s.id for s in samples):
            raise RuntimeError("kaboom")
        return [Score(value=1.0) for _ in samples]


class NanScorer(_TestScorer):
    """Returns a NaN sub-metric (a scorer bug the runner must survive)."""

    name = "nan"

    def score(self, samples):
        return [Score(value=1.0, metrics={"bad": float("nan"), "good": 2.0}) for _ in samples]


class WordsScorer(_TestScorer):
    """Emits word timings like asr with word_timestamps=True."""

    name = "words"

    def score(self, samples):
        return [Score(value=1.0, metrics={"words": [{"word": "hi", "start": 0.0, "end": 0.25}]}) for _ in samples]


class CountWordsScorer(_TestScorer):
    """Counts the word timings a previous scorer left in meta["words"]."""

    name = "count"

    def score(self, samples):
        return [Score(value=float(len(s.meta.get("words") or []))) for s in samples]
