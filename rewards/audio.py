"""Audio I/O for every scorer: read, downmix, resample, validate.

Reading goes through soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3). Resampling is polyphase FIR
filtering (`scipy.signal.resample_poly`, Kaiser window), the standard band-limited method, not interpolation.

Validation problems are `AudioError`s with a short machine-readable ``kind`` and a sentence for people; the
runner turns them into a per-item error and goes on. Problems that still leave a usable signal (clipping) are
warnings unless the limits say otherwise.

Hostile input (random bytes, a header that claims hours, a rate of 1 Hz, 16 channels of float64 NaN) must give an
`AudioError` or a usable signal, in bounded memory. So the header is checked (rate within
[``min_sample_rate``, ``max_sample_rate``], length under ``max_seconds`` and ``max_samples``) before any sample is
decoded; files are decoded in blocks and downmixed block by block (memory ~ the mono signal, whatever the channel
count); non-finite samples and absurd levels (peak above ``max_peak``) are errors, never sanitised into a score;
integer PCM arrays are scaled by their full scale; resampling by a ratio with huge terms (an odd rate such as
768001 Hz) uses the nearest ratio with terms up to `MAX_RATIO_TERM`. `usable_audio`, the entry of every audio
scorer, applies the same checks to waveforms that did not come through the loader (an align policy's speech).
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
MAX_RATIO_TERM = 10_000  # resampling filters grow with the ratio's terms: 44.1 -> 16 kHz is 160/441
_BLOCK_SAMPLES = 1 << 20  # samples (frames x channels) decoded at a time


class AudioError(ValueError):
    """An audio input that cannot be scored.

    Attributes:
        kind: one of ``unreadable``, ``empty``, ``too_short``, ``too_long``, ``silent``, ``non_finite``,
            ``clipped``, ``missing``, ``sample_rate`` (outside the limits), ``out_of_range`` (peak above
            ``max_peak``).
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
        min_sample_rate: lower rates are rejected (below 4 kHz there is no speech band left to score).
        max_sample_rate: higher rates are rejected (768 kHz is the highest any converter or format uses).
        max_peak: a clip whose peak exceeds this absolute value is ``out_of_range`` (float files may go a little
            over full scale; 1e30 is garbage, not loud speech).
        max_samples: the most mono samples decoded at the file's own rate (600 s at 48 kHz, ~115 MB of float32):
            bounds memory when the rate is high; at 48 kHz and below ``max_seconds`` binds first.
    """

    min_seconds: float = 0.05
    max_seconds: float = 600.0
    silence_dbfs: float = -60.0
    clip_level: float = 0.999
    clip_fraction: float = 0.001
    clipped_is_error: bool = False
    min_sample_rate: int = 4000
    max_sample_rate: int = 768_000
    max_peak: float = 10.0
    max_samples: int = 28_800_000


@dataclass
class Audio:
    """A decoded, validated mono waveform."""

    samples: np.ndarray  # float32, mono
    sample_rate: int
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def to_mono(data: Any) -> np.ndarray:
    """Average the channels of a (frames, channels) or (frames,) array into float32 mono.

    Integer PCM is scaled by its full scale as soundfile reads it (int16: / 32768; unsigned: centred first), so an
    adapter's int16 array is not taken for a signal 32768 times too loud. Bool, complex and non-numeric arrays are
    `AudioError`s.
    """
    try:
        data = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise AudioError("unreadable", f"audio is not an array of numbers: {one_line(e)}") from e
    if data.dtype.kind in "iu":
        half = float(2 ** (8 * data.dtype.itemsize - 1))
        data = (data.astype(np.float64) - (half if data.dtype.kind == "u" else 0.0)) / half
    elif data.dtype.kind != "f":
        raise AudioError("unreadable", f"audio samples must be real numbers, got dtype {data.dtype}")
    if data.ndim == 2:
        if data.shape[1] == 0:
            raise AudioError("empty", f"audio with no channels (shape {data.shape})")
        with np.errstate(over="ignore", invalid="ignore"):
            data = data.mean(axis=1, dtype=np.float64) if data.shape[1] > 1 else data[:, 0]
    elif data.ndim != 1:
        raise AudioError("unreadable", f"expected a 1-D or 2-D array, got shape {data.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range becomes inf: non_finite
        return np.ascontiguousarray(data, dtype=np.float32)


def resample_ratio(orig_sr: int, target_sr: int) -> Fraction:
    """``target_sr / orig_sr`` as the polyphase up/down factors: exact for every common rate, else (an odd rate such
    as 768001 Hz, whose exact filter would take ~1 GB) the nearest ratio with terms up to `MAX_RATIO_TERM`, off by
    less than 1e-7 relative: no audible or measurable change of pitch or length."""
    ratio = Fraction(int(target_sr), int(orig_sr))
    if max(ratio.numerator, ratio.denominator) <= MAX_RATIO_TERM:
        return ratio
    if ratio < 1:
        return ratio.limit_denominator(MAX_RATIO_TERM)
    return 1 / (1 / ratio).limit_denominator(MAX_RATIO_TERM)


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited polyphase resampling from ``orig_sr`` to ``target_sr`` (float32 out)."""
    if orig_sr == target_sr:
        return np.asarray(samples, dtype=np.float32)
    ratio = resample_ratio(orig_sr, target_sr)
    out = resample_poly(np.asarray(samples, dtype=np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def validate(samples: np.ndarray, sample_rate: int, limits: AudioLimits = AudioLimits()) -> list[str]:
    """Check a mono waveform; raise `AudioError` for unusable audio, return warnings for usable-but-flawed audio."""
    check_sample_rate(sample_rate, limits)
    n = len(samples)
    if n == 0:
        raise AudioError("empty", "the file holds no audio samples")
    check_samples(samples, limits)
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


def check_sample_rate(sample_rate: Any, limits: AudioLimits = AudioLimits()) -> int:
    """``sample_rate`` as an int if it is a whole number of Hz within the limits, else `AudioError`."""
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer, float, np.floating)):
        raise AudioError("sample_rate", f"invalid sample rate {sample_rate!r}")
    if not math.isfinite(sample_rate) or sample_rate != int(sample_rate) or sample_rate <= 0:
        raise AudioError("sample_rate", f"invalid sample rate {sample_rate!r}")
    rate = int(sample_rate)
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise AudioError("sample_rate", f"sample rate {rate} Hz is outside {limits.min_sample_rate}–"
                                        f"{limits.max_sample_rate} Hz")
    return rate


def check_samples(samples: np.ndarray, limits: AudioLimits = AudioLimits()) -> None:
    """Every sample finite and the peak within ``max_peak``, else `AudioError` (nothing is sanitised away)."""
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(np.count_nonzero(~finite))
        raise AudioError("non_finite", f"{bad} of {len(samples)} samples are NaN or infinite")
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak > limits.max_peak:
        raise AudioError("out_of_range", f"peak {peak:.3g} is beyond ±{limits.max_peak:g} (+"
                                         f"{20 * math.log10(limits.max_peak):.0f} dBFS): not a waveform in [-1, 1]")


def scorable(sample: Sample, limits: AudioLimits = AudioLimits()) -> tuple[np.ndarray, int]:
    """A sample's waveform as float32 mono and its rate, checked as a scorer needs (a whole rate within the limits,
    finite samples, peak within ``max_peak``); what did not come through `load_audio` gets the same guards.

    Raises:
        AudioError: no audio, or audio no scorer should read.
    """
    if sample.audio is None:
        raise AudioError("missing", "missing input: audio")
    rate = check_sample_rate(sample.sample_rate, limits)
    audio = to_mono(sample.audio)
    if len(audio) == 0:
        raise AudioError("empty", "the audio holds no samples")
    check_samples(audio, limits)
    return audio, rate


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
        try:
            audio, rate = scorable(sample)
            audio = at_rate(audio, rate, sample_rate)
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
    `load_audio`: the header's rate and length are checked before decoding; ``label`` names the source in errors."""
    try:
        info = sf.info(open_source())
    except Exception as e:  # libsndfile raises several types for corrupt or unknown formats
        raise AudioError("unreadable", f"cannot decode {label}: {_sf_error(e)}") from e
    if info.channels < 1:
        raise AudioError("unreadable", f"cannot decode {label}: {info.channels} channels")
    check_sample_rate(info.samplerate, limits)
    cap = _frame_cap(info.samplerate, limits)
    if info.frames > cap:
        raise AudioError("too_long", _too_long(info.frames, info.samplerate, limits, "its header says"))
    samples = _read_mono(open_source, label, info, cap, limits)
    return finish_audio(samples, info.samplerate, target_sr, limits)


def _frame_cap(sample_rate: int, limits: AudioLimits) -> int:
    """The most frames decoded: ``max_seconds`` at this rate, and at most ``max_samples``."""
    return min(int(limits.max_seconds * sample_rate), limits.max_samples)


def _too_long(frames: int, sample_rate: int, limits: AudioLimits, said: str) -> str:
    seconds = frames / sample_rate
    if seconds > limits.max_seconds:
        return f"{seconds:.1f} s is longer than the cap {limits.max_seconds:g} s ({said})"
    return (f"{frames} samples at {sample_rate} Hz are more than the {limits.max_samples} a clip may hold "
            f"({said}); resample it to a lower rate")


def _read_mono(open_source: Callable[[], Any], label: str, info: Any, cap: int, limits: AudioLimits) -> np.ndarray:
    """Decode block by block, downmixing each block, never more than ``cap`` frames: memory stays ~ the mono
    signal whatever the channel count, and a header that lies about the length cannot make us read on."""
    block = max(1, _BLOCK_SAMPLES // info.channels)
    parts, total = [], 0
    try:
        with sf.SoundFile(open_source()) as f:
            while True:
                data = f.read(min(block, cap + 1 - total), dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                parts.append(to_mono(data))
                total += len(data)
                if total > cap:
                    raise AudioError("too_long", _too_long(total, info.samplerate, limits, "decoded so far"))
    except AudioError:
        raise
    except Exception as e:
        raise AudioError("unreadable", f"cannot decode {label}: {_sf_error(e)}") from e
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _sf_error(error: BaseException) -> str:
    """libsndfile's own reason, without the repr of the file object (an address that differs every run)."""
    return one_line(Exception(getattr(error, "error_string", None) or error))


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
