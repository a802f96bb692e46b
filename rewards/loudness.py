"""A cheap deterministic scorer with no model: RMS level and peak in dBFS.

Useful on its own (spotting too-quiet or too-loud outputs) and for testing runners without loading models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rewards.audio import AudioError, scorable
from rewards.base import Sample, Score, ScorerInfo, missing_inputs


class LoudnessScorer:
    """RMS level of the waveform in dBFS (``value``), plus the peak level.

    Range: (-inf, 0] dBFS for in-range audio. ``higher_is_better`` is True in the sense "louder"; this is a
    diagnostic, not a quality reward.
    """

    name = "loudness"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        results = []
        for sample in samples:
            missing = missing_inputs(sample, self.requires)
            if missing:
                results.append(Score.failed(f"missing input: {', '.join(missing)}"))
                continue
            try:  # garbage (NaN, a rate of 1 Hz, a peak of 1e30) is an error, not a level
                x = np.asarray(scorable(sample)[0], dtype=np.float64)
            except AudioError as e:
                results.append(Score.failed(str(e)))
                continue
            rms = math.sqrt(float(np.mean(x * x)))  # scorable() refuses a waveform without samples
            peak = float(np.max(np.abs(x)))
            if rms == 0.0:
                results.append(Score.failed("silent: RMS is zero, the level in dBFS is undefined"))
                continue
            rms_db = 20 * math.log10(rms)
            results.append(Score(value=rms_db, metrics={"rms_dbfs": rms_db, "peak_dbfs": 20 * math.log10(peak)}))
        return results

    def info(self) -> ScorerInfo:
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})
