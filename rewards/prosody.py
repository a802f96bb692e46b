"""Prosody: pitch, loudness, rhythm and voice quality of speech, an expressiveness score and a target-style match.

No model: signal processing at 16 kHz on one frame grid with a 10 ms hop (frame i is centred on sample i * hop;
the signal is zero-padded by half a frame at both ends, like librosa's ``center=True``).

Speech frames: the RMS level of 25 ms frames (dBFS) is at least ``silence_dbfs`` (-60), at most
``speech_range_db`` (35 dB) below the clip's 95th-percentile level, and at least ``noise_margin_db`` (6 dB)
above its noise floor (5th-percentile level; this last condition is dropped when the 5-95 spread is under twice
the margin: a steady tone or noise has no floor to tell apart). The speech span runs from the first to the last
speech frame.

Pitch backends (``backend=``); whatever the backend, voiced frames must be speech frames, frames more than 6 st
from the median of the voiced frames within +-50 ms (octave jumps) are dropped, then voiced runs under 30 ms:
    yin          (default) our own vectorised YIN (de Cheveigné & Kawahara, JASA 2002), numpy/scipy only. The
                 signal is band-passed (4th-order Butterworth, zero phase, min(50 Hz, 0.8 fmin) to
                 ``yin_lowpass_hz`` = 1 kHz). For every 64 ms frame at once, the squared difference
                 d(T) = sum_{j<W} (x[j] - x[j+T])^2 (W = frame - max lag - 1) comes from an FFT
                 cross-correlation and cumulative energies, and is normalised d'(T) = d(T) T / sum_{t<=T} d(t).
                 Candidates are the local minima of d' below ``yin_threshold`` (0.15), else all local minima; the
                 winner minimises d'(T) + 0.02 log2(T / T_min) (an octave cost, as Praat's, against picking a
                 multiple of the period, or the short period of one strong harmonic), refined by parabolic
                 interpolation. Voiced: d' at the winner < ``voicing_threshold`` (0.4). Two passes, after Hirst's
                 two-pass range: the second searches ``yin_octave_span`` (1) octave either side of the first
                 pass's median F0 over speech frames (the first pass looks at every third frame only).
                 Measured in a 2-core sandbox: ~11 ms per second of audio for the pitch track, ~15 ms for the
                 whole scorer.
    pyin         ``librosa.pyin`` (Mauch & Dixon, ICASSP 2014) on the same grid and frame: the reference
                 implementation, ~10x slower (130-210 ms per second of audio). On the shared real clips it makes
                 more octave errors (F0 range 26.2 and 12.9 st on two LibriSpeech clips where ours gives 11.1 and
                 3.5 st and Praat 12.3 and 3.6) and finds no voiced frame in three of the noisy CREMA-D clips.
    parselmouth  Praat's ``To Pitch (ac)`` (Boersma 1993) through ``praat-parselmouth``, an optional GPL-3.0 extra
                 (``pip install praat-parselmouth``), sampled at our frame times.
``fmin`` defaults to 65 Hz, not lower: 50/60 Hz mains hum in pauses is periodic and would be tracked as a voice.

Metrics (columns ``prosody.<metric>``). Semitones are re 55 Hz: ``st = 12 log2(f0 / 55)`` (100 Hz = 10.4 st,
200 Hz = 22.4 st). Statistics are over voiced frames unless stated.
    f0_median_hz        median F0 (Hz)
    f0_median_st        the same in semitones re 55 Hz
    f0_range_st         90th minus 10th percentile of F0 (st): the pitch range, robust to stray frames
    f0_std_st           standard deviation of F0 (st)
    f0_slope_st_per_s   slope of the least-squares line through F0 (st) against time (s): declination < 0
    energy_std_db       standard deviation of the 25 ms frame level (dB): loudness dynamics
    energy_range_db     90th minus 10th percentile of the same
    speaking_rate       words per second, from the first available of:
                        ``words``: ``sample.meta["words"]``, word timestamps ``[{"word", "start", "end"}, ...]`` as
                            the asr scorer writes them with ``word_timestamps=True``: number of words (tokens
                            with a letter or digit) / (last end - first start);
                        ``text``: words in ``sample.text`` / speech span (not for CJK text, which has no spaces);
                        ``syllables``: ``syllable_rate / 1.4`` (syllables per word of English running speech).
                        Pauses are included in every case (speaking rate, not articulation rate).
    rate_source         ``words``, ``text`` or ``syllables``: which one gave ``speaking_rate``
    syllable_rate       syllable nuclei per second of speech span, always acoustic (after de Jong & Wempe, 2009):
                        peaks of the 30 ms-smoothed frame level with >= 1.5 dB prominence, >= 70 ms apart, on
                        speech frames within 20 ms of a voiced frame. On the real read-speech clips it finds
                        0.9-1.2 times a vowel-group syllable count of the transcript; far fewer on poorly voiced (noisy,
                        creaky) audio.
    pause_ratio         fraction of the speech span in pauses: runs of non-speech frames >= ``min_pause_seconds``
                        (0.15 s)
    voiced_ratio        voiced frames / speech frames
    hnr_db              harmonics-to-noise ratio, the mean over voiced frames of 10 log10(r / (1 - r)), r being the
                        full-band normalised autocorrelation sum x[j] x[j+T] / sqrt(sum x[j]^2 sum x[j+T]^2) at the
                        backend's period T (peak within a lag, parabola-interpolated), clipped to [1e-4, 1 - 1e-4]
                        (so within +-40 dB). A simplified Boersma (1993) HNR: no window correction.
    speech_seconds      the speech span (s)
    expressiveness      in [0, 1], below
    style               the target style (canonical name), from ``sample.meta["style"]``, else
                        ``sample.meta["emotion"]``; None when neither is given
    style_match         in [0, 1] when a style is given, below

Expressiveness = weighted mean of sigma((m - ref) / scale), sigma(z) = 1 / (1 + exp(-z)); each term is 0.5 at a
typical value of adult read speech (the real LibriSpeech / LJ Speech / JFK clips have f0_range_st 3.5-13, median
~8; f0_std_st 1.3-4.8; energy_std_db 3.9-8.3):
    f0_range_st     ref 7.0 st, scale 2.5 st, weight 0.4
    f0_std_st       ref 3.0 st, scale 1.0 st, weight 0.3
    energy_std_db   ref 6.0 dB, scale 1.5 dB, weight 0.3
A flat voice (range < 1 st) scores < 0.2; the shared real read-speech clips score 0.18-0.82 (median ~0.55).

Style match: each style expects some metrics higher or lower than typical (the table ``STYLES``; directions
after Juslin & Laukka, Psychol. Bull. 2003, and Scherer, Speech Commun. 2003). There is no speaker baseline, so
each metric is compared with a gender-agnostic reference for adult speech, z = (m - ref) / scale:
    f0_median_st    ref 17.4 st (150 Hz: between typical male ~110 and female ~210 Hz), scale 4 st
    f0_range_st     ref 7.0 st, scale 2.5 st
    speaking_rate   ref 2.6 words/s (~155 words per minute), scale 0.6 words/s
    energy_std_db   ref 6.0 dB, scale 1.5 dB
    voiced_ratio    ref 0.6, scale 0.15
A term is sigma(z) for "higher", sigma(-z) for "lower", 2 sigma(-|z|) for "typical" (1 at the reference);
``style_match`` is the weighted mean of a style's terms (weights in ``STYLES``). The F0-level term has half the
weight of the range term or less, because male and female voices differ by ~11 st whatever their style.
    excited, happy      higher level, range, rate and loudness dynamics
    angry               higher loudness dynamics, range and rate; higher level (weaker)
    surprised           higher level and range
    fearful             higher level and rate
    sad                 lower level, range, rate and loudness dynamics
    calm                lower range, rate and loudness dynamics
    disgusted           lower level and rate
    neutral             typical range, rate and loudness dynamics
    whisper             lower voiced ratio and loudness dynamics (a fully unvoiced clip has no pitch: it fails
                        with "no voiced frames", as noise does)
Aliases (anger, happiness, joy, sadness, fear, ...) are accepted (``STYLE_ALIASES``). An unknown style gives
``value`` None with the error "unknown style ..." while every other metric is still filled.

``value``: ``style_match`` when the sample names a style, else ``expressiveness``; higher is better. Failures are
``value`` None with the reason, never a number: missing audio, shorter than ``min_seconds`` (0.5 s), non-finite
samples, silence, "no voiced frames: cannot estimate pitch" (noise, whisper), or less than
``min_voiced_seconds`` (0.1 s) of voiced frames.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

from rewards.audio import usable_audio
from rewards.base import Sample, Score, ScorerInfo, one_line
from rewards.models import ModelUnavailableError

SAMPLE_RATE = 16000
BACKENDS = ("yin", "pyin", "parselmouth")
F0_REFERENCE_HZ = 55.0  # semitone reference: st = 12 * log2(f0 / 55)
YIN_OCTAVE_COST = 0.02  # added to YIN's normalised difference per octave of lag above the shortest searched
SYLLABLES_PER_WORD = 1.4  # English running speech; turns the acoustic syllable rate into words per second
_MIN_VOICED_RUN_SECONDS = 0.03
_OUTLIER_RADIUS_SECONDS = 0.05
_OUTLIER_SEMITONES = 6.0
_SYLLABLE_SMOOTH_SECONDS = 0.03
_SYLLABLE_PROMINENCE_DB = 1.5
_SYLLABLE_DISTANCE_SECONDS = 0.07
_SYLLABLE_VOICED_REACH_SECONDS = 0.02
_HNR_R_CLIP = 1e-4

# metric -> (reference, scale, weight): each term is sigmoid((m - reference) / scale)
EXPRESSIVENESS: dict[str, tuple[float, float, float]] = {
    "f0_range_st": (7.0, 2.5, 0.4),
    "f0_std_st": (3.0, 1.0, 0.3),
    "energy_std_db": (6.0, 1.5, 0.3),
}
# metric -> (reference, scale), gender-agnostic adult speech
STYLE_REFERENCE: dict[str, tuple[float, float]] = {
    "f0_median_st": (12 * math.log2(150.0 / F0_REFERENCE_HZ), 4.0),
    "f0_range_st": (7.0, 2.5),
    "speaking_rate": (2.6, 0.6),
    "energy_std_db": (6.0, 1.5),
    "voiced_ratio": (0.6, 0.15),
}
HIGHER, LOWER, TYPICAL = "higher", "lower", "typical"
# style -> {metric: (direction, weight)}
STYLES: dict[str, dict[str, tuple[str, float]]] = {
    "excited": {"f0_median_st": (HIGHER, 0.5), "f0_range_st": (HIGHER, 1.0), "speaking_rate": (HIGHER, 0.7),
                "energy_std_db": (HIGHER, 0.7)},
    "happy": {"f0_median_st": (HIGHER, 0.5), "f0_range_st": (HIGHER, 1.0), "speaking_rate": (HIGHER, 0.5),
              "energy_std_db": (HIGHER, 0.5)},
    "angry": {"f0_median_st": (HIGHER, 0.3), "f0_range_st": (HIGHER, 0.7), "speaking_rate": (HIGHER, 0.5),
              "energy_std_db": (HIGHER, 1.0)},
    "surprised": {"f0_median_st": (HIGHER, 0.5), "f0_range_st": (HIGHER, 1.0)},
    "fearful": {"f0_median_st": (HIGHER, 0.5), "speaking_rate": (HIGHER, 1.0)},
    "sad": {"f0_median_st": (LOWER, 0.5), "f0_range_st": (LOWER, 1.0), "speaking_rate": (LOWER, 0.7),
            "energy_std_db": (LOWER, 0.7)},
    "calm": {"f0_range_st": (LOWER, 1.0), "speaking_rate": (LOWER, 0.7), "energy_std_db": (LOWER, 0.7)},
    "disgusted": {"f0_median_st": (LOWER, 0.5), "speaking_rate": (LOWER, 1.0)},
    "neutral": {"f0_range_st": (TYPICAL, 1.0), "speaking_rate": (TYPICAL, 0.5), "energy_std_db": (TYPICAL, 0.5)},
    "whisper": {"voiced_ratio": (LOWER, 1.0), "energy_std_db": (LOWER, 0.5)},
}
STYLE_ALIASES: dict[str, str] = {
    "excitement": "excited", "enthusiastic": "excited", "energetic": "excited",
    "happiness": "happy", "joy": "happy", "joyful": "happy", "cheerful": "happy",
    "anger": "angry", "surprise": "surprised",
    "fear": "fearful", "scared": "fearful", "afraid": "fearful",
    "sadness": "sad", "unhappy": "sad",
    "relaxed": "calm", "soothing": "calm", "gentle": "calm",
    "disgust": "disgusted",
    "neu": "neutral", "plain": "neutral",
    "whispering": "whisper", "whispered": "whisper",
}

METRICS = (
    "f0_median_hz", "f0_median_st", "f0_range_st", "f0_std_st", "f0_slope_st_per_s", "energy_std_db",
    "energy_range_db", "speaking_rate", "rate_source", "syllable_rate", "pause_ratio", "voiced_ratio", "hnr_db",
    "speech_seconds", "expressiveness", "style", "style_match",
)


@dataclass(frozen=True)
class ProsodyConfig:
    """Settings of the prosody scorer (recorded with the results).

    Attributes:
        backend: pitch tracker: ``yin`` (our own, fast), ``pyin`` (librosa.pyin) or ``parselmouth`` (Praat, GPL,
            optional extra ``praat-parselmouth``).
        fmin: lowest F0 searched (Hz).
        fmax: highest F0 searched (Hz).
        frame_seconds: pitch analysis frame (must hold two periods of ``fmin``).
        hop_seconds: frame hop; every metric shares this grid.
        energy_frame_seconds: frame of the RMS level used for speech detection, loudness and syllables.
        yin_threshold: (yin) local minima of the normalised difference below this are the period candidates
            (when there are none, every local minimum is).
        voicing_threshold: (yin) frames whose normalised difference at the period is at or above this are
            unvoiced.
        yin_lowpass_hz: (yin) the signal is band-passed from min(50 Hz, 0.8 fmin) to this before YIN (None: high-pass
            only); the harmonicity is measured on the full band whatever the backend.
        yin_octave_span: (yin) second pass searches this many octaves either side of the first pass's median F0
            (None: a single pass over [fmin, fmax]).
        speech_range_db: frames more than this far below the clip's 95th-percentile level are not speech.
        noise_margin_db: frames less than this above the noise floor (the 5th-percentile frame level) are not
            speech (unless the 5-95 percentile spread is under twice this: no floor to tell apart).
        silence_dbfs: frames below this level are never speech; a clip whose peak is below it is silent.
        min_pause_seconds: shorter gaps between speech frames are not pauses.
        min_voiced_seconds: fewer voiced frames than this is a failure (no pitch statistics from a blip).
    """

    backend: str = "yin"
    fmin: float = 65.0
    fmax: float = 500.0
    frame_seconds: float = 0.064
    hop_seconds: float = 0.01
    energy_frame_seconds: float = 0.025
    yin_threshold: float = 0.15
    voicing_threshold: float = 0.4
    yin_lowpass_hz: float | None = 1000.0
    yin_octave_span: float | None = 1.0
    speech_range_db: float = 35.0
    noise_margin_db: float = 6.0
    silence_dbfs: float = -60.0
    min_pause_seconds: float = 0.15
    min_voiced_seconds: float = 0.1

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"prosody backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not 0 < self.fmin < self.fmax <= SAMPLE_RATE / 4:
            raise ValueError(f"need 0 < fmin < fmax <= {SAMPLE_RATE // 4} Hz, got fmin={self.fmin}, fmax={self.fmax}")
        if self.frame_seconds < 2.0 / self.fmin:
            raise ValueError(
                f"frame_seconds={self.frame_seconds} cannot hold two periods of fmin={self.fmin} Hz "
                f"(needs >= {2.0 / self.fmin:.4f} s)"
            )
        if not 0 < self.hop_seconds <= self.frame_seconds:
            raise ValueError(f"hop_seconds must be in (0, frame_seconds], got {self.hop_seconds}")
        if not 0 < self.energy_frame_seconds <= 1.0:
            raise ValueError(f"energy_frame_seconds must be in (0, 1], got {self.energy_frame_seconds}")
        for field_name in ("yin_threshold", "voicing_threshold"):
            value = getattr(self, field_name)
            if not 0 < value < 1:
                raise ValueError(f"{field_name} must be in (0, 1), got {value}")
        if self.yin_lowpass_hz is not None and self.yin_lowpass_hz <= self.fmax:
            raise ValueError(f"yin_lowpass_hz must be above fmax={self.fmax} Hz (or None), got {self.yin_lowpass_hz}")
        if self.yin_octave_span is not None and self.yin_octave_span <= 0:
            raise ValueError(f"yin_octave_span must be positive (or None), got {self.yin_octave_span}")
        if self.speech_range_db <= 0 or self.noise_margin_db < 0:
            raise ValueError(
                f"speech_range_db must be positive and noise_margin_db >= 0, got {self.speech_range_db}, "
                f"{self.noise_margin_db}"
            )
        if self.silence_dbfs >= 0:
            raise ValueError(f"silence_dbfs must be below 0 dBFS, got {self.silence_dbfs}")
        if self.min_pause_seconds <= 0 or self.min_voiced_seconds <= 0:
            raise ValueError("min_pause_seconds and min_voiced_seconds must be positive")

    @property
    def hop(self) -> int:
        return max(1, round(self.hop_seconds * SAMPLE_RATE))

    @property
    def frame(self) -> int:
        return round(self.frame_seconds * SAMPLE_RATE)


# -- pitch ---------------------------------------------------------------------------------------------------
def n_frames(n_samples: int, hop: int) -> int:
    """Frames on the centred grid: frame i at sample i * hop, for i = 0 .. n_samples // hop."""
    return 1 + n_samples // hop


def _centred(audio: np.ndarray, frame: int) -> np.ndarray:
    """``audio`` as float64, zero-padded so that frame i of ``frame`` samples starting at i * hop is centred on
    sample i * hop of the original."""
    return np.pad(np.asarray(audio, dtype=np.float64), (frame // 2, frame - frame // 2))


def _framed(x: np.ndarray, length: int, hop: int, count: int, start: int) -> np.ndarray:
    """``count`` frames of ``length`` samples, frame k starting at sample ``start + k * hop`` of padded ``x``."""
    view = np.lib.stride_tricks.sliding_window_view(x, length)
    return view[start : start + count * hop : hop][:count]


def _peak_parabola(y: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset in (-1, 1) and value of the parabola through y[k-1], y[k], y[k+1] (rows of y, one k per row)."""
    rows = np.arange(len(y))
    left, mid, right = y[rows, k - 1], y[rows, k], y[rows, k + 1]
    curve = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(np.abs(curve) > 1e-12, 0.5 * (left - right) / curve, 0.0)
    offset = np.clip(offset, -1.0, 1.0)
    value = mid - 0.25 * (left - right) * offset
    return offset, value


def _correlations(x: np.ndarray, frame: int, hop: int, lag_max: int, block: int = 1024):
    """Blocks of frames (frame i centred at sample i * hop of the unpadded signal) with, for lags t = 0 ..
    lag_max + 1 and a window of W = frame - lag_max - 1 samples: cross[:, t] = sum_{j < W} x[j] x[j + t] and
    energy[:, t] = sum_{j < W} x[j + t]^2. Yields (rows, cross, energy); blocks bound the memory on long clips."""
    count = n_frames(len(x), hop)
    padded = _centred(x, frame)
    window = frame - lag_max - 1
    nfft = 1 << int(math.ceil(math.log2(frame + window)))
    for start in range(0, count, block):
        frames = _framed(padded, frame, hop, min(block, count - start), start * hop)
        # all lags at once: correlation of the first W samples with the whole frame, via the FFT
        spec = np.fft.rfft(frames, nfft) * np.conj(np.fft.rfft(frames[:, :window], nfft))
        cross = np.fft.irfft(spec, nfft)[:, : lag_max + 2]
        power = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
        energy = power[:, window : window + lag_max + 2] - power[:, : lag_max + 2]
        yield slice(start, start + len(frames)), cross, energy


def _yin(x: np.ndarray, frame: int, hop: int, lag_max: int, search: tuple[int, int], threshold: float,
         octave_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """YIN period (samples, fractional) and aperiodicity per frame, searching lags ``search`` = (lo, hi)."""
    lo, hi = search
    count = n_frames(len(x), hop)
    period, aperiodicity = np.full(count, np.nan), np.ones(count)
    for rows, cross, energy in _correlations(x, frame, hop, lag_max):
        # squared difference d[t] = sum_{j < W} (x[j] - x[j + t])^2, then its cumulative-mean normalisation
        diff = np.maximum(energy[:, :1] + energy - 2 * cross, 0.0)
        running = np.cumsum(diff[:, 1:], axis=1)
        cmnd = np.ones_like(diff)
        with np.errstate(divide="ignore", invalid="ignore"):
            cmnd[:, 1:] = np.where(running > 0, diff[:, 1:] * np.arange(1, lag_max + 2) / running, 1.0)
        band = cmnd[:, lo : hi + 1]
        inner = band[:, 1:-1]
        minima = (inner < band[:, :-2]) & (inner <= band[:, 2:])
        dips = minima & (inner < threshold)
        # candidates: the dips below the threshold, else every local minimum; the winner has the lowest
        # normalised difference plus an octave cost that grows with the lag (as Praat's), so a period is
        # preferred to its multiples, and a true period to a strong harmonic's shorter one only if clearly better
        candidates = np.where(dips.any(axis=1, keepdims=True), dips, minima)
        cost = inner + octave_cost * np.log2(np.arange(lo + 1, hi) / (lo + 1))
        best = np.argmin(np.where(candidates, cost, np.inf), axis=1) + lo + 1
        offset, value = _peak_parabola(cmnd, best)
        found = minima.any(axis=1)
        period[rows] = np.where(found, best + offset, np.nan)
        aperiodicity[rows] = np.where(found, np.clip(value, 0.0, 1.0), 1.0)
    return period, aperiodicity


def _periodicity(x: np.ndarray, frame: int, hop: int, lag_max: int, lags: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation sum x[j] x[j+T] / sqrt(sum x[j]^2 sum x[j+T]^2) per frame at its period T
    (the peak within one lag of ``lags``, parabola-interpolated); NaN where ``lags`` is NaN."""
    out = np.full(n_frames(len(x), hop), np.nan)
    for rows, cross, energy in _correlations(x, frame, hop, lag_max):
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cross / np.sqrt(energy[:, :1] * energy)
        r[~np.isfinite(r)] = 0.0
        want = lags[rows]
        ok = np.isfinite(want)
        k = np.clip(np.rint(np.where(ok, want, 2)).astype(int), 2, lag_max)
        near = np.stack([r[np.arange(len(k)), k + d] for d in (-1, 0, 1)], axis=1)
        k = np.clip(k - 1 + np.argmax(near, axis=1), 1, lag_max)
        _, peak = _peak_parabola(r, k)
        out[rows] = np.where(ok, np.clip(peak, -1.0, 1.0), np.nan)
    return out


def _lags(sample_rate: int, fmin: float, fmax: float) -> tuple[int, int]:
    """The lag search range for [fmin, fmax], one lag wider on each side (the ends cannot be local minima)."""
    return max(2, int(math.floor(sample_rate / fmax)) - 1), int(math.ceil(sample_rate / fmin)) + 1


def _band_limited(audio: np.ndarray, sample_rate: int, fmin: float, lowpass_hz: float | None) -> np.ndarray:
    """Zero-phase 4th-order Butterworth band-pass from min(50 Hz, 0.8 fmin) to ``lowpass_hz``: YIN makes fewer
    errors without rumble and without the formants above the first few harmonics."""
    low = min(50.0, 0.8 * fmin)
    if lowpass_hz is None or lowpass_hz >= sample_rate / 2:
        sos = butter(4, low, btype="highpass", fs=sample_rate, output="sos")
    else:
        sos = butter(4, [low, lowpass_hz], btype="bandpass", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, np.asarray(audio, dtype=np.float64))


def yin_pitch(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, fmin: float = 65.0, fmax: float = 500.0,
    frame_seconds: float = 0.064, hop_seconds: float = 0.01, yin_threshold: float = 0.15,
    voicing_threshold: float = 0.4, lowpass_hz: float | None = 1000.0, octave_span: float | None = 1.0,
    octave_cost: float = YIN_OCTAVE_COST, speech: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Our YIN: F0 per frame (Hz, NaN where unvoiced), voiced flags and aperiodicity; frame i is centred at
    sample i * hop.

    Two passes (after Hirst's two-pass pitch range): the first searches [fmin, fmax] on every third frame; the
    second searches every frame within ``octave_span`` octaves of the median F0 of the first pass's voiced frames
    (those in ``speech`` when given), which removes most octave errors. ``octave_span=None``: one pass.
    """
    frame = round(frame_seconds * sample_rate)
    hop = max(1, round(hop_seconds * sample_rate))
    lag_lo, lag_hi = _lags(sample_rate, fmin, fmax)
    x = _band_limited(audio, sample_rate, fmin, lowpass_hz)
    low, high = fmin, fmax
    if octave_span:
        # first pass on every third frame: enough for a median, a third of the work
        stride = 3
        period, aperiodicity = _yin(x, frame, hop * stride, lag_hi, (lag_lo, lag_hi), yin_threshold, octave_cost)
        with np.errstate(invalid="ignore"):
            f0 = sample_rate / period
            eligible = (aperiodicity < voicing_threshold) & (f0 >= fmin * 0.97) & (f0 <= fmax * 1.03)
        if speech is not None:
            eligible &= speech[::stride][: len(eligible)]
        if np.count_nonzero(eligible) >= 5:
            centre = float(np.median(f0[eligible]))
            low, high = max(fmin, centre / 2**octave_span), min(fmax, centre * 2**octave_span)
    period, aperiodicity = _yin(x, frame, hop, lag_hi, _lags(sample_rate, low, high), yin_threshold, octave_cost)
    with np.errstate(invalid="ignore"):
        f0 = sample_rate / period
        voiced = (aperiodicity < voicing_threshold) & (f0 >= low * 0.97) & (f0 <= high * 1.03)
    return np.where(voiced, f0, np.nan), voiced, aperiodicity


def _pitch_outliers(f0: np.ndarray, voiced: np.ndarray, radius: int, max_semitones: float) -> np.ndarray:
    """Voiced frames more than ``max_semitones`` from the median of the voiced frames within ``radius`` frames
    (when there are at least 3): octave jumps and stray candidates, not intonation."""
    st = np.where(voiced, 12.0 * np.log2(np.where(voiced, f0, 1.0) / F0_REFERENCE_HZ), np.nan)
    idx = np.flatnonzero(voiced)
    if len(idx) == 0:
        return np.zeros_like(voiced)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(st, radius, constant_values=np.nan), 2 * radius + 1)
    around = windows[idx]
    local = np.nanmedian(around, axis=1)
    enough = np.count_nonzero(np.isfinite(around), axis=1) >= 3
    out = np.zeros_like(voiced)
    out[idx] = enough & (np.abs(st[idx] - local) > max_semitones)
    return out


def frame_levels(audio: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """RMS level (dBFS, floored at -120) of ``frame``-sample frames centred at i * hop."""
    x = _centred(audio, frame)
    power = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(n_frames(len(audio), hop)) * hop
    mean = (power[starts + frame] - power[starts]) / frame
    return 10 * np.log10(np.maximum(mean, 1e-12))


def speech_frames(levels: np.ndarray, speech_range_db: float, noise_margin_db: float, silence_dbfs: float
                  ) -> np.ndarray:
    """Frames loud enough to be speech: at least ``silence_dbfs``, at most ``speech_range_db`` below the 95th
    percentile level, and ``noise_margin_db`` above the noise floor (5th percentile). When the 5-95 spread is
    under twice the margin there is no floor to tell apart (a steady tone or noise): the last condition is dropped."""
    floor, top = np.percentile(levels, [5, 95])
    threshold = max(silence_dbfs, top - speech_range_db)
    if top - floor >= 2 * noise_margin_db:
        threshold = max(threshold, floor + noise_margin_db)
    return levels >= threshold


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _drop_short_runs(mask: np.ndarray, min_length: int) -> np.ndarray:
    out = mask.copy()
    for start, end in zip(*_runs(mask)):
        if end - start < min_length:
            out[start:end] = False
    return out


def _semitones(f0_hz: np.ndarray | float) -> np.ndarray | float:
    return 12.0 * np.log2(np.asarray(f0_hz) / F0_REFERENCE_HZ)


# -- speaking rate, expressiveness, style ----------------------------------------------------------------
_WORD = re.compile(r"\w+(?:['’]\w+)*")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def _words_rate(words: Any) -> float:
    """Words per second from word timestamps; ValueError when they are unusable."""
    if not isinstance(words, Sequence) or isinstance(words, (str, bytes)):
        raise ValueError(f"expected a list of {{'word', 'start', 'end'}}, got {type(words).__name__}")
    spans = []
    for entry in words:
        if not isinstance(entry, Mapping) or not {"word", "start", "end"} <= entry.keys():
            raise ValueError("each entry needs 'word', 'start' and 'end'")
        if _WORD.search(str(entry["word"])):  # punctuation-only tokens are not words
            spans.append((float(entry["start"]), float(entry["end"])))
    if not spans:
        raise ValueError("no words")
    duration = max(end for _, end in spans) - min(start for start, _ in spans)
    if not duration > 0:
        raise ValueError(f"the words span {duration:g} s")
    return len(spans) / duration


def speaking_rate(sample: Sample, syllable_rate: float, speech_seconds: float) -> tuple[float, str, str | None]:
    """(words per second, source, a note when word timestamps were given but unusable)."""
    note = None
    words = sample.meta.get("words") if sample.meta else None
    if words is not None:
        try:
            return _words_rate(words), "words", None
        except (TypeError, ValueError) as e:
            note = f"meta words ignored: {one_line(e)}"
    text = sample.text or ""
    n_words = len(_WORD.findall(text))
    if n_words and not _CJK.search(text) and speech_seconds > 0:
        return n_words / speech_seconds, "text", note
    return syllable_rate / SYLLABLES_PER_WORD, "syllables", note


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def expressiveness(metrics: Mapping[str, float]) -> float:
    """Weighted mean of ``sigmoid((m - ref) / scale)`` over the `EXPRESSIVENESS` terms, in [0, 1]."""
    total = sum(weight for _, _, weight in EXPRESSIVENESS.values())
    return sum(weight * _sigmoid((metrics[m] - ref) / scale) for m, (ref, scale, weight) in EXPRESSIVENESS.items()
               ) / total


def canonical_style(style: str) -> str | None:
    """The `STYLES` key for a style or emotion label (case-insensitive, aliases resolved), None if unknown."""
    key = style.strip().lower()
    key = STYLE_ALIASES.get(key, key)
    return key if key in STYLES else None


def style_match(style: str, metrics: Mapping[str, float]) -> float:
    """How well the metrics follow the expected directions of ``style`` (a `STYLES` key), in [0, 1]."""
    num = den = 0.0
    for metric, (direction, weight) in STYLES[style].items():
        ref, scale = STYLE_REFERENCE[metric]
        z = (metrics[metric] - ref) / scale
        term = _sigmoid(z) if direction == HIGHER else _sigmoid(-z) if direction == LOWER else 2 * _sigmoid(-abs(z))
        num += weight * term
        den += weight
    return num / den


def _target_style(sample: Sample) -> str | None:
    meta = sample.meta or {}
    for key in ("style", "emotion"):
        value = meta.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


# -- the scorer -------------------------------------------------------------------------------------------
class ProsodyScorer:
    """Pitch, loudness, rhythm and voice-quality metrics; ``value`` is ``style_match`` when the sample names a
    style (``meta["style"]`` or ``meta["emotion"]``), else ``expressiveness`` (both in [0, 1])."""

    name = "prosody"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = SAMPLE_RATE
    min_seconds = 0.5

    def __init__(self, config: ProsodyConfig | None = None, **overrides: Any):
        self.config = replace(config or ProsodyConfig(), **overrides)

    def prepare(self) -> None:
        """Import the pitch backend now, so a missing optional package is one clear error before any item."""
        self._backend_module()

    def _backend_module(self):
        if self.config.backend == "parselmouth":
            try:
                import parselmouth
            except ImportError as e:
                raise ModelUnavailableError(
                    "the 'parselmouth' prosody backend needs praat-parselmouth (GPL-3.0): "
                    "pip install praat-parselmouth, or use backend='yin'"
                ) from e
            return parselmouth
        if self.config.backend == "pyin":
            import librosa

            return librosa
        return None

    def info(self) -> ScorerInfo:
        settings: dict[str, Any] = asdict(self.config)
        settings["sample_rate"] = SAMPLE_RATE
        settings["min_seconds"] = self.min_seconds
        settings["semitone_reference_hz"] = F0_REFERENCE_HZ
        settings["syllables_per_word"] = SYLLABLES_PER_WORD
        settings["yin_octave_cost"] = YIN_OCTAVE_COST
        settings["expressiveness"] = {m: list(v) for m, v in EXPRESSIVENESS.items()}
        settings["style_reference"] = {m: list(v) for m, v in STYLE_REFERENCE.items()}
        settings["styles"] = {name: {m: list(v) for m, v in terms.items()} for name, terms in STYLES.items()}
        settings["models"] = {"pitch": self._backend_description()}
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, settings)

    def _backend_description(self) -> str:
        from importlib import metadata

        if self.config.backend == "yin":
            return "wavalign YIN (numpy)"
        package = "librosa" if self.config.backend == "pyin" else "praat-parselmouth"
        try:
            return f"{self.config.backend} ({package} {metadata.version(package)})"
        except metadata.PackageNotFoundError:
            return f"{self.config.backend} ({package} not installed)"

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        todo, audios, problems = usable_audio(samples, SAMPLE_RATE, self.min_seconds, self.name)
        results: list[Score | None] = [self._failed(problems[i]) if i in problems else None
                                       for i in range(len(samples))]
        if todo:
            self._backend_module()  # a missing backend fails the batch, not each item in turn
        for k, i in enumerate(todo):
            try:
                results[i] = self._score_one(samples[i], np.asarray(audios[k], dtype=np.float64))
            except Exception as e:  # a backend failure on one item (e.g. Praat on odd audio) is that item's error
                results[i] = self._failed(f"{self.config.backend}: {type(e).__name__}: {one_line(e)}")
        return results  # type: ignore[return-value]

    @staticmethod
    def _failed(reason: str) -> Score:
        return Score.failed(reason, **{m: None for m in METRICS})

    def _pitch(self, audio: np.ndarray, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """F0 (Hz, NaN where unvoiced), voiced frames (speech only, cleaned), and the normalised autocorrelation
        at the period (full band, whatever the backend)."""
        cfg = self.config
        count = n_frames(len(audio), cfg.hop)
        hop_s = cfg.hop / SAMPLE_RATE
        if cfg.backend == "yin":
            f0, _, _ = yin_pitch(
                audio, SAMPLE_RATE, fmin=cfg.fmin, fmax=cfg.fmax, frame_seconds=cfg.frame_seconds,
                hop_seconds=cfg.hop_seconds, yin_threshold=cfg.yin_threshold,
                voicing_threshold=cfg.voicing_threshold, lowpass_hz=cfg.yin_lowpass_hz,
                octave_span=cfg.yin_octave_span, speech=speech,
            )
        elif cfg.backend == "pyin":
            f0, _, _ = self._backend_module().pyin(
                audio, fmin=cfg.fmin, fmax=cfg.fmax, sr=SAMPLE_RATE, frame_length=cfg.frame, hop_length=cfg.hop,
                center=True,
            )
        else:
            f0 = self._praat_f0(audio, count)
        f0 = np.asarray(f0, dtype=np.float64)[:count]
        with np.errstate(invalid="ignore"):
            voiced = speech & np.isfinite(f0) & (f0 >= cfg.fmin * 0.97) & (f0 <= cfg.fmax * 1.03)
        voiced &= ~_pitch_outliers(f0, voiced, round(_OUTLIER_RADIUS_SECONDS / hop_s), _OUTLIER_SEMITONES)
        voiced = _drop_short_runs(voiced, max(1, round(_MIN_VOICED_RUN_SECONDS / hop_s)))
        lags = np.where(voiced, SAMPLE_RATE / np.where(voiced, f0, 1.0), np.nan)
        _, lag_max = _lags(SAMPLE_RATE, cfg.fmin, cfg.fmax)
        periodicity = _periodicity(np.asarray(audio, dtype=np.float64), cfg.frame, cfg.hop, lag_max, lags)
        return np.where(voiced, f0, np.nan), voiced, periodicity

    def _praat_f0(self, audio: np.ndarray, count: int) -> np.ndarray:
        parselmouth = self._backend_module()
        cfg = self.config
        pitch = parselmouth.Sound(audio, sampling_frequency=SAMPLE_RATE).to_pitch_ac(
            time_step=cfg.hop_seconds, pitch_floor=cfg.fmin, pitch_ceiling=cfg.fmax
        )
        freq = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
        times = np.arange(count) * cfg.hop / SAMPLE_RATE
        index = np.rint((times - pitch.x1) / pitch.dx).astype(int)
        inside = (index >= 0) & (index < len(freq))
        f0 = np.full(count, np.nan)
        f0[inside] = freq[index[inside]]
        f0[~(f0 > 0)] = np.nan  # Praat marks unvoiced frames with 0
        return f0

    def _score_one(self, sample: Sample, audio: np.ndarray) -> Score:
        cfg = self.config
        hop_s = cfg.hop / SAMPLE_RATE
        if not np.all(np.isfinite(audio)):
            return self._failed(f"non_finite: {int(np.count_nonzero(~np.isfinite(audio)))} samples are NaN or inf")
        peak = float(np.max(np.abs(audio)))
        if peak == 0.0 or 20 * math.log10(peak) < cfg.silence_dbfs:
            level = "digital silence" if peak == 0.0 else f"peak {20 * math.log10(peak):.1f} dBFS"
            return self._failed(f"silent: all-silent ({level}, threshold {cfg.silence_dbfs:g} dBFS): no speech")

        levels = frame_levels(audio, round(cfg.energy_frame_seconds * SAMPLE_RATE), cfg.hop)
        speech = speech_frames(levels, cfg.speech_range_db, cfg.noise_margin_db, cfg.silence_dbfs)
        f0, voiced, periodicity = self._pitch(audio, speech)
        n_voiced = int(np.count_nonzero(voiced))
        if n_voiced == 0:
            return self._failed("no voiced frames: cannot estimate pitch")
        if n_voiced * hop_s < cfg.min_voiced_seconds:
            return self._failed(
                f"too few voiced frames ({n_voiced * hop_s:.2f} s < {cfg.min_voiced_seconds:g} s): "
                "cannot estimate pitch"
            )

        m: dict[str, Any] = {}
        st = _semitones(f0[voiced])
        times = np.flatnonzero(voiced) * hop_s
        m["f0_median_hz"] = float(np.median(f0[voiced]))
        m["f0_median_st"] = float(_semitones(m["f0_median_hz"]))
        p10, p90 = np.percentile(st, [10, 90])
        m["f0_range_st"] = float(p90 - p10)
        m["f0_std_st"] = float(np.std(st))
        m["f0_slope_st_per_s"] = float(np.polyfit(times, st, 1)[0]) if np.ptp(times) > 0 else 0.0
        loud = levels[voiced]
        m["energy_std_db"] = float(np.std(loud))
        e10, e90 = np.percentile(loud, [10, 90])
        m["energy_range_db"] = float(e90 - e10)

        speech_idx = np.flatnonzero(speech)
        first, last = int(speech_idx[0]), int(speech_idx[-1])
        span = last - first + 1
        speech_seconds = span * hop_s
        starts, ends = _runs(~speech[first : last + 1])
        gaps = ends - starts
        pause_frames = int(gaps[gaps >= round(cfg.min_pause_seconds / hop_s)].sum())

        smooth = max(1, round(_SYLLABLE_SMOOTH_SECONDS / hop_s))
        envelope = np.convolve(levels, np.ones(smooth) / smooth, mode="same")
        peaks, _ = find_peaks(envelope, prominence=_SYLLABLE_PROMINENCE_DB,
                              distance=max(1, round(_SYLLABLE_DISTANCE_SECONDS / hop_s)))
        reach = 2 * round(_SYLLABLE_VOICED_REACH_SECONDS / hop_s) + 1
        near_voiced = np.convolve(voiced.astype(float), np.ones(reach), mode="same") > 0
        nuclei = int(np.count_nonzero(near_voiced[peaks] & speech[peaks]))
        m["syllable_rate"] = nuclei / speech_seconds
        rate, source, note = speaking_rate(sample, m["syllable_rate"], speech_seconds)
        m["speaking_rate"] = float(rate)
        m["rate_source"] = source
        m["pause_ratio"] = pause_frames / span
        m["voiced_ratio"] = n_voiced / int(np.count_nonzero(speech))
        r = np.clip(periodicity[voiced], _HNR_R_CLIP, 1 - _HNR_R_CLIP)
        m["hnr_db"] = float(np.mean(10 * np.log10(r / (1 - r))))
        m["speech_seconds"] = speech_seconds
        m["expressiveness"] = expressiveness(m)

        errors = [note] if note else []
        style = _target_style(sample)
        m["style"], m["style_match"] = style, None
        value: float | None = m["expressiveness"]
        if style is not None:
            key = canonical_style(style)
            if key is None:
                value = None
                errors.append(f"unknown style '{style}' (known: {', '.join(sorted(STYLES))})")
            else:
                m["style"] = key
                m["style_match"] = value = style_match(key, m)
        return Score(value=value, metrics={k: m[k] for k in METRICS}, error="; ".join(errors) or None)


__all__ = ["ProsodyScorer", "ProsodyConfig", "yin_pitch", "expressiveness", "style_match", "canonical_style"]
