"""Hostile audio, fuzzed (issue #14): the loader and every audio scorer give a per-item error or a finite score.

Hypothesis draws random bytes, truncated and corrupted files of every format the loader reads (WAV, FLAC,
Ogg Vorbis, Opus, MP3, and RF64/W64/AIFF, which libsndfile also opens), WAV headers that claim hours, sample rates
from 1 Hz to 2^32 - 1, 1–16 channels of int8/uint8/int16/int32/float32/float64 samples holding noise, DC,
denormals, inf and NaN. A decoded clip is compared with the samples written into it (an oracle computed from the
numpy array, not from the loader); memory is measured with tracemalloc; a watchdog (faulthandler) kills a test that
hangs inside C code, where no Python timeout could reach. Examples are derandomised (the same on every CI run) and
counted: the totals are printed under "measured figures".
"""

from __future__ import annotations

import faulthandler
import io
import math
import struct
import time
import tracemalloc
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from conftest import drop_unloadable_lazy_modules
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rewards.audio import Audio, AudioError, AudioLimits, decode_audio, load_audio
from rewards.base import Sample, Score

LIMITS = AudioLimits()
KINDS = {"unreadable", "empty", "too_short", "too_long", "silent", "non_finite", "clipped", "missing", "sample_rate",
         "out_of_range"}
EXAMPLES: Counter[str] = Counter()  # Hypothesis examples run, per test


def fuzz(examples: int) -> settings:
    """The same examples on every run (derandomised, no example database written into the checkout); the watchdog
    below stands in for Hypothesis's per-example deadline, which a model's first call would trip."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def watchdog(request, report):
    """Dump every thread's stack and exit if a test runs past its budget (a hang in libsndfile or a model)."""
    budget = 600 if request.node.get_closest_marker("slow") else 120
    faulthandler.dump_traceback_later(budget, exit=True)
    before = sum(EXAMPLES.values())
    yield
    faulthandler.cancel_dump_traceback_later()
    ran = sum(EXAMPLES.values()) - before
    if ran:
        report(f"fuzz {request.node.name}: {ran} Hypothesis examples (all fuzz tests so far: {sum(EXAMPLES.values())})")


def decode(data: bytes, target_sr: int | None = None, limits: AudioLimits = LIMITS) -> Audio | AudioError:
    try:
        return decode_audio(lambda: io.BytesIO(data), "fuzz", target_sr, limits)
    except AudioError as e:
        return e


def assert_usable(audio: Audio, limits: AudioLimits = LIMITS) -> None:
    """What the loader hands a scorer: finite mono float32 within the limits."""
    x = audio.samples
    assert x.dtype == np.float32 and x.ndim == 1 and len(x) > 0
    assert np.isfinite(x).all()
    assert limits.min_sample_rate <= audio.sample_rate <= limits.max_sample_rate
    assert limits.min_seconds <= audio.duration <= limits.max_seconds
    peak = float(np.abs(x).max())
    assert 20 * math.log10(peak) >= limits.silence_dbfs and peak <= limits.max_peak


# -- files written by hand, so that headers can lie --------------------------------------------------------------

WAV_PCM, WAV_FLOAT = 1, 3


def wav_bytes(payload: bytes, rate: int, channels: int, bits: int, tag: int = WAV_PCM,
              claimed: int | None = None) -> bytes:
    """A canonical 44-byte-header WAV around ``payload``; ``claimed`` is what the data chunk says it holds."""
    block = channels * bits // 8
    size = len(payload) if claimed is None else claimed
    header = b"RIFF" + struct.pack("<I", (36 + size) & 0xFFFFFFFF) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, rate & 0xFFFFFFFF,
                                    (rate * block) & 0xFFFFFFFF, block, bits)
    return header + b"data" + struct.pack("<I", size & 0xFFFFFFFF) + payload


def tone(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def encoded(fmt: str, subtype: str, rate: int = 16000, seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


# Every format the loader reads (AUDIO_EXTENSIONS), plus the WAV relatives and AIFF that libsndfile also opens.
FORMATS = {
    "wav-pcm16": ("WAV", "PCM_16", 16000),
    "wav-float": ("WAV", "FLOAT", 16000),
    "wav-u8": ("WAV", "PCM_U8", 16000),
    "flac": ("FLAC", "PCM_16", 16000),
    "flac-s8": ("FLAC", "PCM_S8", 16000),
    "ogg-vorbis": ("OGG", "VORBIS", 16000),
    "opus": ("OGG", "OPUS", 48000),
    "mp3": ("MP3", "MPEG_LAYER_III", 16000),
    "rf64": ("RF64", "PCM_16", 16000),
    "w64-double": ("W64", "DOUBLE", 16000),
    "aiff-s8": ("AIFF", "PCM_S8", 16000),
}
_ENCODED: dict[str, bytes] = {}


def valid_file(name: str) -> bytes:
    if name not in _ENCODED:
        fmt, subtype, rate = FORMATS[name]
        _ENCODED[name] = encoded(fmt, subtype, rate)
    return _ENCODED[name]


# -- random bytes and damaged files --------------------------------------------------------------------------------


@fuzz(300)
@given(data=st.binary(max_size=4096), prefix=st.sampled_from([b"", b"ID3\x03\x00\x00\x00\x00\x00\x00", b"\xff\xfb",
                                                              b"\xff\xf3\x90\x00"]))
def test_random_bytes_are_unreadable(data, prefix):
    """Random bytes, bare or behind an ID3 tag or an MPEG frame sync (what a lenient MP3 decoder may take for
    audio), never decode to a signal."""
    EXAMPLES["random_bytes"] += 1
    result = decode(prefix + data)
    assert isinstance(result, AudioError) and result.kind == "unreadable", result


@fuzz(150)
@given(data=st.binary(min_size=1, max_size=2048), magic=st.sampled_from([
    b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS\x00\x02", b"RIFF\xff\xff\xff\xffWAVE", b"FORM\x00\x00\x00\x00AIFF",
    b"RF64\xff\xff\xff\xffWAVEds64", b"riff.\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00",
]))
def test_random_bytes_behind_a_format_magic_fail_alone(data, magic):
    """A real format's magic number followed by noise: an AudioError, or (if the noise happens to form a header)
    a usable clip, never an exception of another kind."""
    EXAMPLES["magic_bytes"] += 1
    result = decode(magic + data)
    assert isinstance(result, AudioError) and result.kind in KINDS or (assert_usable(result) is None)


# soundfile's virtual I/O reports libsndfile's seek before the start of a cut-off buffer as an unraisable
# ValueError (the open then fails cleanly: that is what is tested)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@fuzz(330)
@given(name=st.sampled_from(sorted(FORMATS)), where=st.floats(0, 1), in_header=st.booleans())
def test_truncated_files_of_every_format(name, where, in_header):
    """A file cut anywhere (half the cuts inside its first 512 bytes, where the headers are) is an AudioError or a
    shorter clip: never more audio than was written, never a crash."""
    EXAMPLES["truncated"] += 1
    data = valid_file(name)
    cut = int(where * (min(len(data), 512) if in_header else len(data)))
    result = decode(data[:cut])
    if isinstance(result, AudioError):
        assert result.kind in KINDS
        return
    assert_usable(result)
    assert result.duration <= 1.0 + 0.1  # what was written (1 s), plus an MP3/Opus decoder's padding


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@fuzz(330)
@given(name=st.sampled_from(sorted(FORMATS)), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                              min_size=1, max_size=24), in_header=st.booleans())
def test_corrupted_files_of_every_format(name, flips, in_header):
    """Bytes overwritten in the header or the body: an AudioError or a usable clip whose length is bounded by what
    the bytes can hold (a corrupted size field cannot conjure hours)."""
    EXAMPLES["corrupted"] += 1
    data = bytearray(valid_file(name))
    span = min(len(data), 128) if in_header else len(data)
    for where, value in flips:
        data[min(int(where * span), len(data) - 1)] = value
    result = decode(bytes(data))
    if isinstance(result, AudioError):
        assert result.kind in KINDS
        return
    assert_usable(result)
    # An uncompressed clip holds at most one frame per byte; compressed ones decode to what was encoded (1 s).
    compressed = FORMATS[name][1] in ("VORBIS", "OPUS", "MPEG_LAYER_III", "PCM_16") and FORMATS[name][0] in (
        "OGG", "MP3", "FLAC")
    assert result.duration <= (1.2 if compressed else len(data) / result.sample_rate)


# -- headers that claim hours ----------------------------------------------------------------------------------------


@fuzz(100)
@given(claimed=st.integers(0, 2**32 - 1), seconds=st.floats(0.0, 2.0), bits=st.sampled_from([8, 16, 32]))
def test_wav_header_claiming_hours_reads_only_what_is_there(claimed, seconds, bits):
    """A data chunk that claims up to 4 GiB (hours of audio) over a short payload: the clip is what the payload
    holds, read in bounded memory, or an error."""
    EXAMPLES["claims_hours"] += 1
    n = int(seconds * 16000)
    x = tone(seconds, 16000)[:, 0]
    payload = {8: (np.round(x * 127) + 128).astype(np.uint8).tobytes(),
               16: np.round(x * 32767).astype("<i2").tobytes(),
               32: np.round(x * (2**31 - 1)).astype("<i4").tobytes()}[bits]
    data = wav_bytes(payload, 16000, 1, bits, claimed=claimed)
    tracemalloc.start()
    try:
        result = decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20 + 16 * len(data)  # the payload's own size, a few times over, never the claim's
    if isinstance(result, AudioError):
        assert result.kind in {"too_short", "empty", "unreadable", "too_long"}
        if result.kind == "too_long":  # only when the header is believed: not for these short payloads
            pytest.fail(f"{n} samples reported as too long: {result}")
        return
    assert len(result.samples) <= n
    assert np.allclose(result.samples, x[: len(result.samples)], atol=2 / 2 ** (bits - 1))


def test_a_file_that_really_is_hours_long_is_refused_before_decoding(tmp_path):
    """A 5-hour WAV on disk (sparse, 576 MB of zeros behind a true header): too_long from the header, in
    milliseconds and without memory to speak of; a FLAC whose STREAMINFO claims 10 hours likewise."""
    path = tmp_path / "hours.wav"
    frames = 5 * 3600 * 16000
    with path.open("wb") as f:
        f.write(wav_bytes(b"", 16000, 1, 16, claimed=2 * frames))
        f.truncate(44 + 2 * frames)
    tracemalloc.start()
    tick = time.perf_counter()
    with pytest.raises(AudioError) as caught:
        load_audio(path, 16000)
    elapsed = time.perf_counter() - tick
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert caught.value.kind == "too_long" and "18000.0 s" in str(caught.value) and "header" in str(caught.value)
    assert elapsed < 2.0 and peak < 2**20

    flac = bytearray(valid_file("flac"))
    # STREAMINFO's 36-bit total sample count sits in bytes 21–25 of the file (after "fLaC" and the block header)
    total = 10 * 3600 * 16000
    flac[21] = (flac[21] & 0xF0) | (total >> 32)
    flac[22:26] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    result = decode(bytes(flac))
    assert isinstance(result, AudioError) and result.kind == "too_long", result


def test_the_sample_cap_binds_while_decoding_when_the_header_says_nothing():
    """When a header gives no length (or a false one), decoding stops at the cap: a clip past max_seconds is
    too_long after at most the cap's worth of samples, not read to its end."""
    limits = AudioLimits(max_seconds=1.0)
    x = tone(3.0)[:, 0]
    data = wav_bytes(np.round(x * 32767).astype("<i2").tobytes(), 16000, 1, 16)
    result = decode(data, limits=limits)
    assert isinstance(result, AudioError) and result.kind == "too_long"
    limits = AudioLimits(max_samples=8000)  # half a second at 16 kHz: the memory cap, for high-rate clips
    result = decode(data, limits=limits)
    assert isinstance(result, AudioError) and result.kind == "too_long" and "8000" in str(result)


# -- the parameter space: rates, channels, sample formats, special values ------------------------------------------

SAMPLE_FORMATS = {  # name: (WAV format tag, bits, numpy dtype, full scale, offset)
    "uint8": (WAV_PCM, 8, "u1", 128.0, 128.0),
    "int16": (WAV_PCM, 16, "<i2", 32768.0, 0.0),
    "int32": (WAV_PCM, 32, "<i4", 2.0**31, 0.0),
    "float32": (WAV_FLOAT, 32, "<f4", 1.0, 0.0),
    "float64": (WAV_FLOAT, 64, "<f8", 1.0, 0.0),
}
COMMON_RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000]
EDGE_RATES = [1, 2, 100, 3999, 4000, 192000, 384000, 768000, 768001]
# 60% common rates, 20% the edges, 20% anything a 32-bit header field can say
RATES = st.tuples(st.integers(0, 9), st.sampled_from(COMMON_RATES), st.sampled_from(EDGE_RATES),
                  st.integers(1, 2**31 - 1)).map(lambda t: t[1] if t[0] < 6 else t[2] if t[0] < 8 else t[3])
CONTENT = st.sampled_from(["noise", "dc", "denormal", "silence", "full_scale", "loud_float", "nan", "inf",
                           "mixed_inf"])


def signal(content: str, frames: int, channels: int, fmt: str, rng: np.random.Generator) -> np.ndarray:
    """(frames, channels) of ``fmt``'s numpy dtype: the values as stored in the file."""
    kind = SAMPLE_FORMATS[fmt]
    floaty = kind[0] == WAV_FLOAT
    scale, offset = kind[3], kind[4]
    unit = rng.uniform(-0.5, 0.5, (frames, channels))
    if content == "dc":
        unit = np.full((frames, channels), 0.25)
    elif content == "denormal":
        unit = np.full((frames, channels), 1e-40 if floaty else 0.0)
    elif content == "silence":
        unit = np.zeros((frames, channels))
    elif content == "full_scale":
        unit = np.sign(unit) * 1.0
    elif content == "loud_float" and floaty:
        unit = unit * 1e6
    elif content in ("nan", "inf", "mixed_inf") and floaty and frames:
        unit[rng.integers(0, frames), rng.integers(0, channels)] = {"nan": np.nan, "inf": np.inf,
                                                                    "mixed_inf": -np.inf}[content]
        if content == "mixed_inf":
            unit[:, :] = np.where(np.arange(channels) % 2, -np.inf, np.inf)  # +inf and -inf average to NaN
    if floaty:
        return unit.astype(kind[2])
    info = np.iinfo(np.dtype(kind[2]))
    return np.clip(np.round(unit * scale + offset), info.min, info.max).astype(kind[2])


def expected(stored: np.ndarray, fmt: str, rate: int) -> tuple[str | None, np.ndarray | None]:
    """What the loader must give for a WAV holding ``stored`` at ``rate`` (the rules of rewards.audio, computed
    from the array): (error kind, None) or (None, the mono float32 samples)."""
    _, _, _, scale, offset = SAMPLE_FORMATS[fmt]
    if not LIMITS.min_sample_rate <= rate <= LIMITS.max_sample_rate:
        return "sample_rate", None
    frames = len(stored)
    if frames == 0:
        return "empty", None  # libsndfile opens a WAV without frames; no samples to score
    if frames > min(LIMITS.max_seconds * rate, LIMITS.max_samples):
        return "too_long", None
    channels = (stored.astype(np.float32) if scale == 1.0 else (stored.astype(np.float64) - offset) / scale)
    with np.errstate(over="ignore", invalid="ignore"):
        mono = channels.astype(np.float32).astype(np.float64).mean(axis=1).astype(np.float32)
    if not np.isfinite(mono).all():
        return "non_finite", None
    peak = float(np.abs(mono).max())
    if peak > LIMITS.max_peak:
        return "out_of_range", None
    if frames / rate < LIMITS.min_seconds:
        return "too_short", None
    if peak == 0 or 20 * math.log10(peak) < LIMITS.silence_dbfs:
        return "silent", None
    return None, mono


@fuzz(600)
@given(rate=RATES, channels=st.integers(1, 16), fmt=st.sampled_from(sorted(SAMPLE_FORMATS)), content=CONTENT,
       frames=st.one_of(st.integers(0, 64), st.integers(800, 4000), st.sampled_from([16000, 48000])),
       seed=st.integers(0, 2**16))
def test_rates_channels_formats_and_special_values(rate, channels, fmt, content, frames, seed):
    """1 Hz … 2^31 Hz, 1–16 channels, uint8/int16/int32/float32/float64 with noise, DC, denormals, silence, full
    scale, 1e6 overs, NaN, inf: the loader's verdict is the one computed from the array, and an accepted clip is
    the written samples, downmixed (and at 16 kHz when resampled, of the right length and finite)."""
    EXAMPLES["parameter_space"] += 1
    rng = np.random.default_rng(seed)
    stored = signal(content, frames, channels, fmt, rng)
    tag, bits = SAMPLE_FORMATS[fmt][:2]
    data = wav_bytes(stored.tobytes(), rate, channels, bits, tag)
    want_error, want = expected(stored, fmt, rate)
    event(f"verdict: {want_error or 'accepted'}")
    result = decode(data)
    if want_error is not None:
        assert isinstance(result, AudioError), f"expected {want_error}, got a clip"
        assert result.kind == want_error, result
        return
    assert isinstance(result, Audio), result
    assert result.sample_rate == rate
    np.testing.assert_allclose(result.samples, want, rtol=1e-6, atol=1e-7)
    assert_usable(result)
    at16k = decode(data, 16000)
    assert isinstance(at16k, Audio) and at16k.sample_rate == 16000 and np.isfinite(at16k.samples).all()
    assert abs(len(at16k.samples) - frames * 16000 / rate) <= 1 + frames * 16000 / rate * 1e-6


@fuzz(40)
@given(channels=st.integers(1, 16), rate=st.sampled_from([4000, 8000, 16000, 44100, 96000]),
       seed=st.integers(0, 2**16))
def test_signed_8_bit_samples(channels, rate, seed):
    """int8 (WAV has no signed 8-bit: AIFF and FLAC do): the loader reads x / 128, downmixed."""
    EXAMPLES["int8"] += 1
    rng = np.random.default_rng(seed)
    stored = rng.integers(-128, 128, (int(0.2 * rate), channels)).astype(np.int8)
    for fmt in ("AIFF", "FLAC") if channels <= 8 else ("AIFF",):  # FLAC holds at most 8 channels
        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", rate, channels, "PCM_S8", format=fmt) as f:
            f.write(stored.astype(np.int16) * 256)  # libsndfile stores int16 >> 8 as PCM_S8
        result = decode(buffer.getvalue())
        assert isinstance(result, Audio), result
        np.testing.assert_allclose(result.samples, (stored / 128.0).mean(axis=1), atol=1e-6)


def test_sixteen_channels_at_768_khz_decode_in_memory_of_the_mono_signal():
    """One second of 16-channel int16 at 768 kHz (24.6 MB on disk, 49 MB as a float32 frames × channels array):
    decoded block by block, the loader's peak stays below half of that; the clip is the channel average."""
    rate, channels = 768000, 16
    rng = np.random.default_rng(0)
    stored = rng.integers(-8000, 8000, (rate, channels), dtype=np.int16)
    data = wav_bytes(stored.tobytes(), rate, channels, 16)
    tracemalloc.start()
    result = decode(data, 16000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(result, Audio) and result.sample_rate == 16000 and len(result.samples) == 16000
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    native = decode(data)
    np.testing.assert_allclose(native.samples, (stored / 32768.0).mean(axis=1), atol=1e-6)


def test_an_odd_rate_resamples_in_bounded_memory():
    """767999 Hz (prime factors that make the exact 16000/767999 filter 15 M taps, ~750 MB): the nearest ratio with
    small terms is used, the length is right to the sample and the tone keeps its pitch."""
    from rewards.audio import resample

    rate = 767999
    t = np.arange(rate // 2) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tracemalloc.start()
    out = resample(x, rate, 16000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert abs(len(out) - len(x) * 16000 / rate) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 3


# -- every audio scorer on hostile waveforms that never went through the loader ------------------------------------
#
# An align policy's decoded speech reaches the scorers as a Sample directly. Each scorer must answer every sample of
# a batch: a finite value, or None with the reason; garbage (NaN/inf, no samples, a rate outside 4 kHz–768 kHz, a
# peak of 1e30) always None; and the good clip of the same batch gets the number it gets alone.

SCORER_RATES = st.sampled_from([None, 0, -16000, 1, 3999, 4000, 8000, 16000, 16000.0, 16000.5, 44100, 48000,
                                768000, 768001, float("nan"), True])
SCORER_DTYPES = st.sampled_from(["int8", "uint8", "int16", "int32", "float32", "float64"])
SCORER_CONTENT = st.sampled_from(["noise", "speechlike", "dc", "denormal", "silence", "full_scale", "huge", "nan",
                                  "inf", "mixed_inf"])


@st.composite
def hostile_waveforms(draw, max_seconds: float = 3.0):
    """(array, rate, garbage): an array as an adapter might hand it over (any dtype, 1-D or frames × channels)."""
    rate = draw(SCORER_RATES)
    channels = draw(st.integers(1, 16))
    dtype = np.dtype(draw(SCORER_DTYPES))
    content = draw(SCORER_CONTENT)
    nominal = rate if isinstance(rate, (int, float)) and not isinstance(rate, bool) and 4000 <= rate <= 48000 \
        else 16000
    frames = draw(st.one_of(st.integers(0, 64), st.integers(int(0.2 * nominal), int(max_seconds * nominal))))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    t = np.arange(frames) / nominal
    unit = np.repeat((0.3 * np.sin(2 * np.pi * (140 + 30 * np.sin(3 * t)) * t))[:, None], channels, axis=1) \
        if content == "speechlike" else rng.uniform(-0.5, 0.5, (frames, channels))
    if content == "dc":
        unit = np.full((frames, channels), 0.25)
    elif content == "denormal":
        unit = np.full((frames, channels), 1e-40)
    elif content == "silence":
        unit = np.zeros((frames, channels))
    elif content == "full_scale":
        unit = np.sign(unit)
    floaty = dtype.kind == "f"
    if content == "huge" and floaty:
        unit = unit * 1e30
    if content in ("nan", "inf", "mixed_inf") and floaty and frames:
        unit[rng.integers(0, frames), rng.integers(0, channels)] = np.nan if content == "nan" else np.inf
        if content == "mixed_inf":
            unit[0] = np.where(np.arange(channels) % 2, -np.inf, np.inf)
    if floaty:
        with np.errstate(over="ignore"):
            array = unit.astype(dtype)
    else:
        info = np.iinfo(dtype)
        half = 2.0 ** (8 * dtype.itemsize - 1)
        array = np.clip(np.round(unit * half + (half if dtype.kind == "u" else 0)), info.min, info.max).astype(dtype)
    if channels == 1 and draw(st.booleans()):
        array = array[:, 0]
    good_rate = (isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate)
                 and rate == int(rate) and LIMITS.min_sample_rate <= rate <= LIMITS.max_sample_rate)
    with np.errstate(over="ignore", invalid="ignore"):
        mono = (array.astype(np.float64) if floaty else unit).reshape(frames, -1).astype(np.float32).astype(
            np.float64).mean(axis=1) if frames else np.zeros(0)
    garbage = not good_rate or frames == 0 or not np.isfinite(mono).all() or float(np.abs(mono).max()) > 10
    return array, rate, garbage


def good_clip() -> Sample:
    t = np.arange(32000) / 16000
    voice = 0.3 * np.sin(2 * np.pi * (140 + 30 * np.sin(3 * t)) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return Sample("good", voice.astype(np.float32), 16000, text="a b c", meta={"style": "neutral"})


def check_scorer(scorer, waveforms, alone: dict) -> None:
    """Score the hostile clips with the good one in the middle of the batch; check every answer."""
    samples = [Sample(f"h{k}", array, rate, text="a b c", meta={"style": "neutral"})
               for k, (array, rate, _) in enumerate(waveforms)]
    middle = len(samples) // 2
    samples.insert(middle, good_clip())
    scores = scorer.score(samples)
    assert len(scores) == len(samples)
    for sample, score in zip(samples, scores):
        assert isinstance(score, Score)
        if score.value is None:
            assert score.error or score.not_applicable, (sample.id, score)
        else:
            assert math.isfinite(score.value)
    for (_, _, garbage), score in zip(waveforms, scores[:middle] + scores[middle + 1:]):
        if garbage:
            assert score.value is None and score.error, score
    want = alone["good"].value
    assert scores[middle].value == (None if want is None else pytest.approx(want, rel=1e-5, abs=1e-6))


def scorer_fuzz(name: str, scorer, examples: int, batch: int = 3, max_seconds: float = 3.0):
    # The good clip alone first: it loads the scorer's model, whose imports (speechbrain's lazy stand-ins for
    # integrations we do not install) must be out of sys.modules before Hypothesis scans it while drawing.
    alone = {"good": scorer.score([good_clip()])[0]}
    drop_unloadable_lazy_modules()

    @fuzz(examples)
    @given(waveforms=st.lists(hostile_waveforms(max_seconds), min_size=1, max_size=batch))
    def run(waveforms):
        EXAMPLES[f"scorer_{name}"] += 1
        try:
            check_scorer(scorer, waveforms, alone)
        finally:
            drop_unloadable_lazy_modules()

    run()


def test_loudness_on_hostile_waveforms():
    from rewards.loudness import LoudnessScorer

    scorer_fuzz("loudness", LoudnessScorer(), 300, batch=4)


def test_prosody_on_hostile_waveforms():
    from rewards.prosody import ProsodyScorer

    scorer_fuzz("prosody", ProsodyScorer(), 200)


@pytest.mark.slow
def test_asr_on_hostile_waveforms():
    """tiny.en, greedy, on 30 batches of up to 3 hostile clips (≤ 3 s) and a good one: budget ~90 s on 2 busy
    cores (garbage can make Whisper decode to its length limit)."""
    from rewards.asr import AsrScorer

    scorer_fuzz("asr", AsrScorer(beam_size=1), 30)


@pytest.mark.slow
def test_quality_on_hostile_waveforms():
    """DNSMOS (reference windowing) and DistillMOS on 20 batches of up to 3 hostile clips: budget ~60 s."""
    from rewards.quality import QualityScorer

    scorer_fuzz("quality", QualityScorer(), 20)


@pytest.mark.slow
def test_emotion_on_hostile_waveforms(tmp_path_factory):
    """The emotion scorer on a tiny random SpeechBrain model in the real layout (tests/rewards/test_emotion.py):
    30 batches, budget ~30 s."""
    pytest.importorskip("speechbrain")
    from test_emotion import build_tiny_model

    from rewards.emotion import EmotionConfig, EmotionScorer

    model = build_tiny_model(tmp_path_factory.mktemp("emotion-fuzz"))
    scorer = EmotionScorer(EmotionConfig(model=str(model), savedir=str(tmp_path_factory.mktemp("sb"))))
    scorer_fuzz("emotion", scorer, 30)


@pytest.mark.slow
def test_utmos_on_hostile_waveforms(tmp_path_factory):
    """UTMOS22 strong (random weights in the official layout: the real ones are not offline) on 6 batches of up
    to 2 clips of ≤ 2 s: budget ~60 s."""
    import torch

    from rewards.quality import QualityScorer
    from rewards.utmos import CHECKPOINT_NAME, UTMOS22Strong

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("utmos")
    torch.save(UTMOS22Strong().eval().state_dict(), folder / CHECKPOINT_NAME)
    scorer_fuzz("utmos", QualityScorer(backends=("utmos",), utmos_checkpoint=str(folder)), 6, batch=2,
                max_seconds=2.0)
