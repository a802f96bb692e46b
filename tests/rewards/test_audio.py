from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from rewards.audio import AudioError, AudioLimits, load_audio, resample, to_mono, validate


@pytest.mark.parametrize("fmt,ext", [("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg"), ("MP3", ".mp3")])
def test_reads_common_formats_as_mono_float32(tmp_path, fmt, ext):
    stereo = np.stack([tone(1.0, 22050), tone(1.0, 22050, freq=330)], axis=1)
    path = tmp_path / f"x{ext}"
    sf.write(path, stereo, 22050, format=fmt)
    audio = load_audio(path)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.sample_rate == 22050
    assert abs(audio.duration - 1.0) < 0.1  # mp3 adds encoder padding


def test_downmix_averages_channels():
    left, right = np.ones(10), -np.ones(10)
    assert np.allclose(to_mono(np.stack([left, right], axis=1)), 0.0)


def test_resampler_is_band_limited_not_linear():
    # A 7 kHz tone at 44.1 kHz survives 44.1 -> 16 kHz intact; a 10 kHz tone (above the 8 kHz Nyquist) must be removed,
    # where linear interpolation would alias it to 6 kHz at nearly full level.
    rate = 44100
    t = np.arange(rate) / rate
    kept = resample(np.sin(2 * np.pi * 7000 * t).astype(np.float32), rate, 16000)
    aliased = resample(np.sin(2 * np.pi * 10000 * t).astype(np.float32), rate, 16000)
    assert len(kept) == 16000
    assert np.sqrt(np.mean(kept[1000:-1000] ** 2)) > 0.65  # ~0.707 for a unit sine
    assert np.sqrt(np.mean(aliased[1000:-1000] ** 2)) < 0.01


def test_resample_preserves_a_tone_frequency():
    out = resample(tone(1.0, 48000, freq=440), 48000, 16000)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 2


def _write(tmp_path, name, data, rate=16000, subtype="FLOAT"):
    path = tmp_path / name
    sf.write(path, data, rate, subtype=subtype)
    return path


def test_each_bad_input_has_its_own_error(tmp_path):
    limits = AudioLimits(max_seconds=5.0)
    cases = {
        "missing": tmp_path / "nope.wav",
        "unreadable": tmp_path / "corrupt.wav",
        "empty": _write(tmp_path, "empty.wav", np.zeros(0, dtype=np.float32)),
        "too_short": _write(tmp_path, "short.wav", tone(0.01)),
        "silent": _write(tmp_path, "silent.wav", np.zeros(16000, dtype=np.float32)),
        "non_finite": _write(tmp_path, "nan.wav", np.where(np.arange(16000) == 5, np.nan, tone(1.0))),
        "too_long": _write(tmp_path, "long.wav", tone(6.0)),
    }
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    for kind, path in cases.items():
        with pytest.raises(AudioError) as err:
            load_audio(path, limits=limits)
        assert err.value.kind == kind, (kind, str(err.value))
        assert str(err.value).startswith(kind)


def test_truncated_file_is_unreadable(tmp_path):
    path = _write(tmp_path, "ok.flac", tone(2.0), subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioError):
        load_audio(path)


def test_clipping_is_a_warning_or_an_error_as_configured(tmp_path):
    clipped = np.clip(tone(1.0, amp=3.0), -1.0, 1.0)
    path = _write(tmp_path, "clipped.wav", clipped, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.warnings and audio.warnings[0].startswith("clipped")
    with pytest.raises(AudioError) as err:
        load_audio(path, limits=AudioLimits(clipped_is_error=True))
    assert err.value.kind == "clipped"


def test_clean_audio_has_no_warnings_and_resamples_on_load(tmp_path):
    path = _write(tmp_path, "ok.wav", tone(1.0, 24000), rate=24000)
    audio = load_audio(path, target_sr=16000)
    assert audio.warnings == [] and audio.sample_rate == 16000 and len(audio.samples) == 16000


def test_validate_quiet_but_audible_is_fine():
    assert validate(tone(1.0, amp=0.01), 16000) == []  # -40 dBFS peak
    with pytest.raises(AudioError):
        validate(tone(1.0, amp=0.0005), 16000)  # -66 dBFS peak


def test_real_clips_load(real_speech, real_manifest):
    for row in real_manifest:
        audio = load_audio(real_speech / row["file"], target_sr=16000)
        assert abs(audio.duration - row["duration_s"]) < 0.01, row["file"]
