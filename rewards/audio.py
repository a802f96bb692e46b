"""Audio I/O for every scorer: read, downmix, resample, validate.

Reading goes through soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3). Resampling is polyphase FIR
filtering (`scipy.signal.resample_poly`, Kaiser window), the standard band-limited method, not interpolation.

Validation problems are `AudioError`s with a short machine-readable ``kind`` and a sentence for people; the
runner turns them into a per-item error and goes on. Problems that still leave a usable signal (clipping) are
warnings unless the limits say otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from rewards.base import Sample, one_line

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")


class AudioError(ValueError):
    """An audio input that cannot be scored.

    Attributes:
        kind: one of ``unreadable``, ``empty``, ``too_short``, ``too_long``, ``silent``, ``non_finite``,
            ``clipped``, ``missing``.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


@dataclass(frozen=True)
class AudioLimits:
    """What counts as bad audio.

    Attributes:
        min_seconds: shorter clips are rejected (scorers may ask for more, see `check_duration`).
        max_seconds: longer clips are rejected before they are decoded (a cap against runaway outputs).
        silence_dbfs: a clip whose peak is below this level is "all-silent".
        clip_level: samples at or above this absolute value count as clipped.
        clip_fraction: a clip with more than this fraction of clipped samples is "clipped".
        clipped_is_error: reject clipped clips instead of scoring them with a warning.
    """

    min_seconds: float = 0.05
    max_seconds: float = 600.0
    silence_dbfs: float = -60.0
    clip_level: float = 0.999
    clip_fraction: float = 0.001
    clipped_is_error: bool = False


@dataclass
class Audio:
    """A decoded, validated mono waveform."""

    samples: np.ndarray  # float32, mono
    sample_rate: int
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) or (frames,) array into float32 mono."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data.mean(axis=1)
    elif data.ndim != 1:
        raise AudioError("unreadable", f"expected a 1-D or 2-D array, got shape {data.shape}")
    return np.ascontiguousarray(data, dtype=np.float32)


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited polyphase resampling from ``orig_sr`` to ``target_sr`` (float32 out)."""
    if orig_sr == target_sr:
        return np.asarray(samples, dtype=np.float32)
    ratio = Fraction(int(target_sr), int(orig_sr))
    out = resample_poly(np.asarray(samples, dtype=np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def validate(samples: np.ndarray, sample_rate: int, limits: AudioLimits = AudioLimits()) -> list[str]:
    """Check a mono waveform; raise `AudioError` for unusable audio, return warnings for usable-but-flawed audio."""
    if sample_rate is None or sample_rate <= 0:
        raise AudioError("unreadable", f"invalid sample rate {sample_rate!r}")
    n = len(samples)
    if n == 0:
        raise AudioError("empty", "the file holds no audio samples")
    if not np.all(np.isfinite(samples)):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError("non_finite", f"{bad} of {n} samples are NaN or infinite")
    duration = n / sample_rate
    if duration < limits.min_seconds:
        raise AudioError("too_short", f"{duration:.3f} s is shorter than the minimum {limits.min_seconds:g} s")
    if duration > limits.max_seconds:
        raise AudioError("too_long", f"{duration:.1f} s is longer than the cap {limits.max_seconds:g} s")
    peak = float(np.max(np.abs(samples)))
    if peak == 0.0 or 20 * math.log10(peak) < limits.silence_dbfs:
        level = "digital silence" if peak == 0.0 else f"peak {20 * math.log10(peak):.1f} dBFS"
        raise AudioError("silent", f"all-silent ({level}, threshold {limits.silence_dbfs:g} dBFS)")
    warnings = []
    clipped = np.count_nonzero(np.abs(samples) >= limits.clip_level) / n
    if clipped > limits.clip_fraction:
        message = f"{100 * clipped:.2f}% of samples at full scale"
        if limits.clipped_is_error:
            raise AudioError("clipped", message)
        warnings.append(f"clipped: {message}")
    return warnings


def check_duration(audio: np.ndarray, sample_rate: int, min_seconds: float, scorer: str) -> None:
    """A scorer's own minimum length (e.g. a MOS model needs enough frames)."""
    duration = len(audio) / sample_rate
    if duration < min_seconds:
        raise AudioError("too_short", f"{duration:.3f} s is shorter than {scorer}'s minimum {min_seconds:g} s")


def usable_audio(
    samples: Sequence[Sample], sample_rate: int, min_seconds: float, scorer: str
) -> tuple[list[int], list[np.ndarray], dict[int, str]]:
    """What a scorer can run on: indices and waveforms (at ``sample_rate``) of the samples with long-enough
    audio, and for the others the reason they cannot be scored."""
    indices, audios, problems = [], [], {}
    for i, sample in enumerate(samples):
        if sample.audio is None:
            problems[i] = "missing input: audio"
            continue
        audio = at_rate(sample.audio, sample.sample_rate, sample_rate)
        try:
            check_duration(audio, sample_rate, min_seconds, scorer)
        except AudioError as e:
            problems[i] = str(e)
            continue
        indices.append(i)
        audios.append(audio)
    return indices, audios, problems


def load_audio(
    path: str | Path, target_sr: int | None = None, limits: AudioLimits = AudioLimits()
) -> Audio:
    """Read ``path`` as validated mono float32, resampled to ``target_sr`` when given.

    Raises:
        AudioError: the file is missing, cannot be decoded, or fails `validate`.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError("missing", f"no such file: {path}")
    return decode_audio(lambda: str(path), path.name, target_sr, limits)


def decode_audio(
    open_source: Callable[[], Any], label: str, target_sr: int | None = None, limits: AudioLimits = AudioLimits()
) -> Audio:
    """Decode what ``open_source()`` gives soundfile (a path, or a fresh file object over bytes each call) like
    `load_audio`: the length cap is checked before decoding; ``label`` names the source in errors."""
    try:
        info = sf.info(open_source())
    except Exception as e:  # libsndfile raises several types for corrupt or unknown formats
        raise AudioError("unreadable", f"cannot decode {label}: {one_line(e)}") from e
    if info.samplerate > 0 and info.frames / info.samplerate > limits.max_seconds:
        raise AudioError(
            "too_long", f"{info.frames / info.samplerate:.1f} s is longer than the cap {limits.max_seconds:g} s"
        )
    try:
        data, sample_rate = sf.read(open_source(), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError("unreadable", f"cannot decode {label}: {one_line(e)}") from e
    return finish_audio(to_mono(data), sample_rate, target_sr, limits)


def finish_audio(samples: np.ndarray, sample_rate: int, target_sr: int | None = None,
                 limits: AudioLimits = AudioLimits()) -> Audio:
    """Validate a decoded mono waveform, then resample it to ``target_sr`` when given."""
    warnings = validate(samples, sample_rate, limits)
    if target_sr is not None and target_sr != sample_rate:
        samples = resample(samples, sample_rate, target_sr)
        sample_rate = target_sr
    return Audio(samples=samples, sample_rate=sample_rate, warnings=warnings)


def at_rate(samples: np.ndarray, sample_rate: int, target_sr: int) -> np.ndarray:
    """``samples`` at ``target_sr``: a no-op when the rate already matches (the runner usually pre-resamples)."""
    return resample(samples, sample_rate, target_sr) if sample_rate != target_sr else samples
