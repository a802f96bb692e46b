"""The scorer protocol: what goes in (`Sample`), what comes out (`Score`), and what a scorer declares.

Every scorer takes a batch of samples and returns one `Score` per sample, in order. A sample that cannot be
scored gets ``Score(value=None, error="...")``: never a made-up number. Scorers load their models lazily, on
the first batch, through `rewards.models.cached` so two scorers that share a model share one copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One thing to score.

    Attributes:
        id: unique id within a run (file stem or manifest id).
        audio: mono float32 waveform in [-1, 1], or None for text-only items.
        sample_rate: rate of ``audio`` in Hz.
        text: the model's own text channel (what the speech should say).
        prompt: the question (text, or a transcript of the spoken question).
        reference: a reference answer / transcript.
        meta: anything else (source path, language, target style, warnings from audio loading...).
    """

    id: str
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    text: str | None = None
    prompt: str | None = None
    reference: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        if self.audio is None or not self.sample_rate:
            return None
        return len(self.audio) / self.sample_rate


@dataclass
class Score:
    """A scorer's result for one sample.

    Attributes:
        value: the headline number, in the scorer's documented reward range, or None when the sample could not
            be scored (``error`` then says why).
        metrics: named sub-scores (``{"wer_consistency": 0.12, "transcript": "..."}``); a sub-score that could
            not be computed is None (e.g. ``wer_reference`` without a reference).
        error: why the sample (or part of it) could not be scored.
        not_applicable: why the scorer does not apply to this sample (an audio scorer on a text-only answer): not
            an error, and never a number (``value`` stays None); counted apart from the failures.
    """

    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    not_applicable: str | None = None

    @classmethod
    def failed(cls, reason: str, **metrics: Any) -> Score:
        return cls(value=None, metrics=dict(metrics), error=reason)

    def __post_init__(self) -> None:
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"score value must be finite or None, got {self.value!r}")
        if self.not_applicable and (self.value is not None or self.error):
            raise ValueError("a score that does not apply has no value and no error")


@dataclass(frozen=True)
class ScorerInfo:
    """What a scorer is and how it ran: written next to every result."""

    name: str
    version: str
    higher_is_better: bool
    requires: frozenset[str]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "higher_is_better": self.higher_is_better,
            "requires": sorted(self.requires),
            "settings": dict(self.settings),
        }


@runtime_checkable
class Scorer(Protocol):
    """Batch in, per-item results out."""

    name: str
    version: str
    higher_is_better: bool
    requires: frozenset[str]  # fields of Sample that must be present: {"audio"}, {"audio", "text"}, ...

    def score(self, samples: Sequence[Sample]) -> list[Score]: ...

    def info(self) -> ScorerInfo: ...


def one_line(error: BaseException) -> str:
    """An exception as one line of text (per-item error messages end up in CSV cells and one-line CLI errors)."""
    return " ".join(str(error).split()) or type(error).__name__


def missing_inputs(sample: Sample, requires: frozenset[str]) -> list[str]:
    """The required fields that ``sample`` lacks (empty strings count as missing)."""
    missing = []
    for name in sorted(requires):
        value = getattr(sample, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(name)
    return missing


def not_applicable(sample: Sample, requires: frozenset[str]) -> str | None:
    """Why a scorer that ``requires`` these inputs does not apply to ``sample``, or None: a scorer of speech on an
    answer with no speech at all (text only). Any other missing input is the sample's failure, not this."""
    if "audio" in requires and sample.audio is None:
        return "no audio: the answer is text only"
    return None


def score_each(scorer: Scorer, samples: Sequence[Sample]) -> list[Score]:
    """One Score per sample from ``scorer``, whatever goes wrong with single items.

    A sample lacking an input the scorer requires fails alone; a batch that raises is retried item by item so only
    the culprit fails, with the exception as its reason. A missing model is no item's fault: it propagates.
    """
    from rewards.models import ModelUnavailableError

    out: list[Score | None] = [None] * len(samples)
    todo = []
    for i, sample in enumerate(samples):
        missing = missing_inputs(sample, frozenset(scorer.requires))
        if missing:
            out[i] = Score.failed(f"missing input: {', '.join(missing)}")
        else:
            todo.append(i)
    if not todo:
        return out  # type: ignore[return-value]
    try:
        scores = list(scorer.score([samples[i] for i in todo]))
    except ModelUnavailableError:
        raise
    except Exception:  # noqa: BLE001 - isolate the bad item below
        scores = []
    if len(scores) == len(todo):
        for i, score in zip(todo, scores):
            out[i] = score
        return out  # type: ignore[return-value]
    for i in todo:
        try:
            (out[i],) = scorer.score([samples[i]])
        except ModelUnavailableError:
            raise
        except Exception as e:  # noqa: BLE001 - one item's failure, recorded with its reason
            out[i] = Score.failed(f"{type(e).__name__}: {one_line(e)}")
    return out  # type: ignore[return-value]
