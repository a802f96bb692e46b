"""Prosody scorer: our YIN against known tones and librosa.pyin, rankings on espeak-ng renderings and CREMA-D,
failures, speaking-rate sources, and a run through the scoring engine."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from evalsuite.inputs import load_items
from evalsuite.scoring import score_items
from rewards.audio import load_audio, resample
from rewards.base import Sample, Score
from rewards.models import ModelUnavailableError
from rewards.prosody import METRICS, ProsodyConfig, ProsodyScorer, canonical_style, yin_pitch
from rewards.registry import build

SR = 16000
SENTENCE = "I can't believe we actually won the whole championship today!"
CREMA = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def _harmonic(f0: float, seconds: float = 1.0, amplitudes: dict[int, float] | None = None) -> np.ndarray:
    """A steady harmonic signal (harmonic number -> amplitude; default 1/k for k = 1..8)."""
    amplitudes = amplitudes or {k: 1.0 / k for k in range(1, 9)}
    t = np.arange(int(seconds * SR)) / SR
    x = sum(a * np.sin(2 * np.pi * f0 * k * t + 0.3 * k) for k, a in amplitudes.items())
    return (0.3 * x / sum(amplitudes.values())).astype(np.float32)


def _glide(f_start: float, f_end: float, seconds: float = 1.5) -> np.ndarray:
    """A harmonic signal whose F0 moves exponentially (linearly in semitones) from ``f_start`` to ``f_end``."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f_start * (f_end / f_start) ** (t / seconds)) / SR
    return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


def _espeak(path: Path, pitch_range: str, pitch: int, speed: int) -> np.ndarray:
    """``SENTENCE`` spoken by espeak-ng with an SSML pitch range (0% = flat), base pitch (-p) and speed (-s)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs it)")
    ssml = f'<speak><prosody range="{pitch_range}">{SENTENCE}</prosody></speak>'
    subprocess.run(["espeak-ng", "-m", "-v", "en-us", "-p", str(pitch), "-s", str(speed), "-w", str(path), ssml],
                   check=True)
    data, rate = sf.read(path, dtype="float32")
    data = resample(data, rate, SR)
    sf.write(path, data, SR)
    return data


@pytest.fixture(scope="module")
def renderings(tmp_path_factory) -> dict[str, np.ndarray]:
    """The same sentence, lively (wide pitch range, higher, faster) and flat (no pitch movement, lower, slower)."""
    root = tmp_path_factory.mktemp("espeak")
    return {
        "expressive": _espeak(root / "expressive.wav", "x-high", 65, 180),
        "monotone": _espeak(root / "monotone.wav", "0%", 40, 130),
    }


@pytest.fixture(scope="module")
def scorer() -> ProsodyScorer:
    return ProsodyScorer()


def _one(scorer: ProsodyScorer, audio: np.ndarray, **fields) -> Score:
    (score,) = scorer.score([Sample("x", audio, SR, **fields)])
    return score


# -- (1) the pitch tracker ------------------------------------------------------------------------------------
@pytest.mark.parametrize("f0", [100.0, 150.0, 220.0])
def test_yin_recovers_tones_and_harmonic_signals(f0):
    signals = {
        "sine": tone(1.0, freq=f0),
        "harmonics 1/k": _harmonic(f0),
        "missing fundamental": _harmonic(f0, amplitudes={k: 1.0 for k in range(2, 9)}),
        # a 4th harmonic far stronger than the others: the short period it has is not the pitch
        "strong 4th harmonic": _harmonic(f0, amplitudes={1: 0.2, 2: 0.2, 3: 0.3, 4: 1.0, 5: 0.3, 6: 0.1}),
    }
    for name, signal in signals.items():
        estimate, voiced, _ = yin_pitch(signal)
        inner = slice(5, -5)  # frames whose window lies inside the signal
        assert voiced[inner].all(), name
        assert np.all(np.abs(estimate[inner] / f0 - 1) < 0.02), (name, np.nanmin(estimate), np.nanmax(estimate))


def test_glides_give_the_slope_sign_and_size(scorer):
    # 120 -> 240 Hz in 1.5 s is +12 st at 8 st/s; its 10-90 percentile range is 0.8 * 12 = 9.6 st
    rising = _one(scorer, _glide(120.0, 240.0))
    falling = _one(scorer, _glide(240.0, 120.0))
    assert rising.metrics["f0_slope_st_per_s"] == pytest.approx(8.0, abs=0.5)
    assert falling.metrics["f0_slope_st_per_s"] == pytest.approx(-8.0, abs=0.5)
    assert rising.metrics["f0_range_st"] == pytest.approx(9.6, abs=0.6)
    flat = _one(scorer, _harmonic(150.0, seconds=1.5))
    assert flat.metrics["f0_range_st"] < 0.1 and abs(flat.metrics["f0_slope_st_per_s"]) < 0.1
    assert flat.metrics["f0_median_hz"] == pytest.approx(150.0, rel=0.01)
    assert flat.metrics["f0_median_st"] == pytest.approx(12 * np.log2(150.0 / 55.0), abs=0.15)  # re 55 Hz
    assert flat.value < 0.25  # a steady tone is not expressive


@pytest.mark.slow
def test_yin_agrees_with_librosa_pyin_on_real_speech(real_speech, report):
    # a female and a male LibriSpeech reader
    clips = {name: load_audio(real_speech / name, target_sr=SR).samples
             for name in ("367-130732-0001.flac", "3005-163389-0001.flac")}
    results = {backend: ProsodyScorer(backend=backend).score([Sample(n, c, SR) for n, c in clips.items()])
               for backend in ("yin", "pyin")}
    for k, name in enumerate(clips):
        ours, ref = results["yin"][k].metrics, results["pyin"][k].metrics
        report(f"prosody yin vs pyin {name}: median F0 {ours['f0_median_hz']:.1f} vs {ref['f0_median_hz']:.1f} Hz, "
               f"range {ours['f0_range_st']:.2f} vs {ref['f0_range_st']:.2f} st")
        assert abs(ours["f0_median_st"] - ref["f0_median_st"]) < 1.0
        assert abs(ours["f0_range_st"] - ref["f0_range_st"]) < 2.0


@pytest.mark.slow
def test_yin_is_faster_than_librosa_pyin(real_speech, report):
    import librosa

    x = load_audio(real_speech / "2412-153948-0000.flac", target_sr=SR).samples  # 11.7 s
    trackers = {
        "yin": lambda a: yin_pitch(a),
        "librosa.pyin": lambda a: librosa.pyin(a, fmin=65.0, fmax=500.0, sr=SR, frame_length=1024, hop_length=160),
    }
    per_second = {}
    for name, track in trackers.items():
        track(x[:SR])  # first-call costs (imports, filter design, caches) aside
        start = time.perf_counter()
        track(x)
        per_second[name] = (time.perf_counter() - start) / (len(x) / SR)
    start = time.perf_counter()
    ProsodyScorer().score([Sample("a", x, SR)])
    whole = (time.perf_counter() - start) / (len(x) / SR)
    report(f"prosody pitch tracking per second of audio (this machine, 2 CPU cores): yin "
           f"{1000 * per_second['yin']:.1f} ms, librosa.pyin {1000 * per_second['librosa.pyin']:.1f} ms; "
           f"the whole prosody scorer (yin) {1000 * whole:.1f} ms")
    assert per_second["yin"] * 3 < per_second["librosa.pyin"]


# -- (2) monotone vs expressive ------------------------------------------------------------------------------
def test_expressive_rendering_outranks_the_monotone_one(renderings, scorer, report):
    import librosa

    # the espeak-ng options really change the pitch range: an independent tracker sees it too
    ranges = {}
    for name, audio in renderings.items():
        f0, voiced, _ = librosa.pyin(audio.astype(np.float64), fmin=65, fmax=500, sr=SR, frame_length=1024,
                                     hop_length=160)
        st = 12 * np.log2(f0[voiced] / 55)
        ranges[name] = float(np.percentile(st, 90) - np.percentile(st, 10))
    assert ranges["expressive"] > ranges["monotone"] + 3.0

    scores = {name: _one(scorer, audio, text=SENTENCE) for name, audio in renderings.items()}
    for name, score in scores.items():
        m = score.metrics
        report(f"prosody espeak {name}: expressiveness {m['expressiveness']:.3f}, F0 range {m['f0_range_st']:.2f} st "
               f"(pyin {ranges[name]:.2f}), std {m['f0_std_st']:.2f} st, energy std {m['energy_std_db']:.2f} dB, "
               f"median {m['f0_median_hz']:.0f} Hz, {m['speaking_rate']:.2f} words/s")
        assert score.error is None and score.value == m["expressiveness"]
        assert set(m) == set(METRICS)
    expressive, monotone = scores["expressive"].metrics, scores["monotone"].metrics
    assert expressive["f0_range_st"] > monotone["f0_range_st"] + 3.0
    assert expressive["f0_std_st"] > monotone["f0_std_st"]
    assert expressive["expressiveness"] > monotone["expressiveness"] + 0.1
    assert monotone["expressiveness"] < 0.25


def test_cremad_emotions(real_speech, real_manifest, scorer, report):
    """One actor, one sentence, six emotions. What holds (also with Praat's tracker, checked by hand): anger and
    happiness are spoken higher than neutral and sadness, anger with more loudness variation than sadness. What
    does NOT: this actor's anger has a narrow F0 range (~4.5 st) and his sad and neutral takes are not flatter, so
    F0 range and expressiveness are reported, not ordered. The clips are noisy (rumble at -46 dBFS) and partly
    creaky: librosa.pyin finds no voiced frame in three of them."""
    rows = {r["emotion"][:3].upper(): r for r in real_manifest if r["id"].startswith("cremad_")}
    assert set(rows) == set(CREMA)
    audio = {e: load_audio(real_speech / rows[e]["file"], target_sr=SR).samples for e in CREMA}
    plain = dict(zip(CREMA, scorer.score([Sample(e, audio[e], SR, text=rows[e]["transcript"]) for e in CREMA])))
    for e in CREMA:
        m = plain[e].metrics
        report(f"prosody CREMA-D {e}: " + (plain[e].error or (
            f"median {m['f0_median_hz']:.0f} Hz, range {m['f0_range_st']:.2f} st, std {m['f0_std_st']:.2f} st, "
            f"energy std {m['energy_std_db']:.2f} dB, rate {m['speaking_rate']:.2f} w/s, voiced "
            f"{m['voiced_ratio']:.2f}, HNR {m['hnr_db']:.1f} dB, expressiveness {m['expressiveness']:.3f}")))
    level = {e: plain[e].metrics["f0_median_st"] for e in CREMA}
    assert min(level["ANG"], level["HAP"]) > max(level["NEU"], level["SAD"]) + 1.0
    assert plain["ANG"].metrics["energy_std_db"] > plain["SAD"].metrics["energy_std_db"] + 1.0

    # style match with the manifest's emotion as the target: each clip against the labels of the others
    def match(style: str, e: str) -> float:
        (score,) = scorer.score([Sample(e, audio[e], SR, text=rows[e]["transcript"], meta={"emotion": style})])
        return score.value

    angry = {e: match("anger", e) for e in ("ANG", "NEU", "SAD")}
    sad = {e: match("sad", e) for e in ("SAD", "HAP")}
    report("prosody CREMA-D style_match: " + ", ".join(
        [f"angry/{e} {v:.3f}" for e, v in angry.items()] + [f"sad/{e} {v:.3f}" for e, v in sad.items()]))
    assert angry["ANG"] > max(angry["NEU"], angry["SAD"])
    assert sad["SAD"] > sad["HAP"]


# -- (3) style match -----------------------------------------------------------------------------------------
def test_style_match_follows_the_expected_direction(renderings, scorer, report):
    def match(style: str, name: str):
        return _one(scorer, renderings[name], text=SENTENCE, meta={"style": style})

    values = {(s, n): match(s, n) for s in ("excited", "sad", "calm") for n in renderings}
    for (style, _), score in values.items():
        assert score.error is None and score.metrics["style"] == style
        assert score.value == score.metrics["style_match"] and 0.0 <= score.value <= 1.0
    report("prosody espeak style_match: " + ", ".join(f"{s}/{n} {v.value:.3f}" for (s, n), v in values.items()))
    assert values[("excited", "expressive")].value > values[("excited", "monotone")].value + 0.1
    assert values[("sad", "monotone")].value > values[("sad", "expressive")].value + 0.1
    assert values[("calm", "monotone")].value > values[("calm", "expressive")].value
    # "emotion" is read when there is no "style"; aliases and case are normalised
    alias = _one(scorer, renderings["expressive"], text=SENTENCE, meta={"emotion": "Happiness"})
    assert alias.metrics["style"] == "happy" and alias.value == alias.metrics["style_match"]
    assert canonical_style("ANGER") == "angry" and canonical_style("sarcastic") is None


def test_unknown_style_fails_the_value_but_keeps_the_metrics(renderings, scorer):
    score = _one(scorer, renderings["expressive"], text=SENTENCE, meta={"style": "sarcastic"})
    assert score.value is None
    assert "unknown style 'sarcastic'" in score.error and "excited" in score.error
    assert score.metrics["expressiveness"] is not None and score.metrics["f0_median_hz"] is not None
    assert score.metrics["style"] == "sarcastic" and score.metrics["style_match"] is None


# -- (4) failures --------------------------------------------------------------------------------------------
def test_unscorable_items_fail_with_a_reason_in_batch_order(scorer):
    rng = np.random.default_rng(0)
    samples = [
        Sample("silence", np.zeros(SR, dtype=np.float32), SR),
        Sample("quiet", (1e-4 * rng.standard_normal(SR)).astype(np.float32), SR),
        Sample("noise", (0.1 * rng.standard_normal(2 * SR)).astype(np.float32), SR),
        Sample("short", tone(0.3, freq=150.0), SR),
        Sample("no audio", None, None, text="hello"),
        Sample("nan", np.full(SR, np.nan, dtype=np.float32), SR),
        Sample("fine", _harmonic(150.0), SR),
        Sample("blip", np.concatenate([np.zeros(SR // 2), _harmonic(150.0, 0.06), np.zeros(SR // 2)]), SR),
    ]
    scores = scorer.score(samples)
    assert len(scores) == len(samples)
    by_id = {s.id: score for s, score in zip(samples, scores)}
    assert "silent" in by_id["silence"].error and "digital silence" in by_id["silence"].error
    assert "silent" in by_id["quiet"].error
    assert by_id["noise"].error == "no voiced frames: cannot estimate pitch"
    assert "too_short" in by_id["short"].error and "0.5" in by_id["short"].error
    assert by_id["no audio"].error == "missing input: audio"
    assert "non_finite" in by_id["nan"].error
    assert "too few voiced frames" in by_id["blip"].error
    for name, score in by_id.items():
        if name != "fine":
            assert score.value is None and all(v is None for v in score.metrics.values()), name
    assert by_id["fine"].value is not None and by_id["fine"].error is None


def test_resampled_input_gives_the_same_pitch(scorer):
    x = _harmonic(180.0, seconds=1.0)
    at_44k = resample(x, SR, 44100)
    (a,) = scorer.score([Sample("16k", x, SR)])
    (b,) = scorer.score([Sample("44k", at_44k, 44100)])
    assert b.metrics["f0_median_hz"] == pytest.approx(a.metrics["f0_median_hz"], rel=0.005)


# -- (5) speaking rate ---------------------------------------------------------------------------------------
def test_speaking_rate_prefers_word_timestamps_then_text_then_syllables(renderings, scorer):
    audio = renderings["expressive"]
    words = [{"word": w, "start": 0.2 + 0.4 * k, "end": 0.5 + 0.4 * k, "probability": 0.9}
             for k, w in enumerate(SENTENCE.split())]
    words.append({"word": "!", "start": 4.0, "end": 4.1})  # punctuation-only tokens are not words
    timed = _one(scorer, audio, text=SENTENCE, meta={"words": words})
    assert timed.metrics["rate_source"] == "words"
    assert timed.metrics["speaking_rate"] == pytest.approx(10 / (0.5 + 0.4 * 9 - 0.2))

    texted = _one(scorer, audio, text=SENTENCE)
    assert texted.metrics["rate_source"] == "text"
    assert texted.metrics["speaking_rate"] == pytest.approx(10 / texted.metrics["speech_seconds"])

    acoustic = _one(scorer, audio)
    assert acoustic.metrics["rate_source"] == "syllables"
    assert acoustic.metrics["speaking_rate"] == pytest.approx(acoustic.metrics["syllable_rate"] / 1.4)
    # espeak at 180 wpm: the acoustic estimate is in the right range (about 3 words/s)
    assert 2.0 < acoustic.metrics["speaking_rate"] < 5.0

    broken = _one(scorer, audio, text=SENTENCE, meta={"words": [{"word": "hi"}]})
    assert broken.metrics["rate_source"] == "text" and "meta words ignored" in broken.error
    assert broken.value is not None
    # the faster, livelier rendering is faster by every measure
    slow = _one(scorer, renderings["monotone"], text=SENTENCE)
    assert texted.metrics["speaking_rate"] > slow.metrics["speaking_rate"]


def test_pauses_are_measured_between_speech(scorer):
    voiced = _harmonic(150.0, seconds=0.5)
    gap = np.zeros(int(0.4 * SR), dtype=np.float32)
    short_gap = np.zeros(int(0.08 * SR), dtype=np.float32)
    lead = np.zeros(int(0.3 * SR), dtype=np.float32)  # silence before and after speech is not a pause
    with_pause = _one(scorer, np.concatenate([lead, voiced, gap, voiced, lead]))
    assert with_pause.metrics["pause_ratio"] == pytest.approx(0.4 / 1.4, abs=0.03)
    assert with_pause.metrics["speech_seconds"] == pytest.approx(1.4, abs=0.05)
    without = _one(scorer, np.concatenate([lead, voiced, short_gap, voiced, lead]))
    assert without.metrics["pause_ratio"] == 0.0


# -- config, info, runner --------------------------------------------------------------------------------------
def test_config_is_validated_and_recorded():
    with pytest.raises(ValueError, match="backend"):
        ProsodyConfig(backend="crepe")
    with pytest.raises(ValueError, match="fmin"):
        ProsodyConfig(fmin=300, fmax=200)
    with pytest.raises(ValueError, match="two periods"):
        ProsodyScorer(fmin=40.0, frame_seconds=0.03)
    scorer = ProsodyScorer(ProsodyConfig(fmax=400.0), voicing_threshold=0.3)
    assert scorer.config.fmax == 400.0 and scorer.config.voicing_threshold == 0.3
    info = scorer.info().as_dict()
    assert info["name"] == "prosody" and info["higher_is_better"] and info["requires"] == ["audio"]
    assert info["settings"]["backend"] == "yin" and info["settings"]["semitone_reference_hz"] == 55.0
    assert json.loads(json.dumps(info)) == info  # JSON round trip is lossless (resume compares settings)


def test_parselmouth_backend_is_an_optional_extra():
    scorer = ProsodyScorer(backend="parselmouth")
    try:
        import parselmouth  # noqa: F401
    except ImportError:
        with pytest.raises(ModelUnavailableError, match="pip install praat-parselmouth"):
            scorer.prepare()
        return
    (score,) = scorer.score([Sample("a", _harmonic(150.0), SR)])
    assert score.metrics["f0_median_hz"] == pytest.approx(150.0, rel=0.02)


def test_runs_through_the_scoring_engine(tmp_path, renderings):
    folder = tmp_path / "answers"
    folder.mkdir()
    for name, audio in renderings.items():
        sf.write(folder / f"{name}.wav", audio, SR)
        (folder / f"{name}.txt").write_text(SENTENCE)
    sf.write(folder / "noise.wav", (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32), SR)
    scorer = build("rewards.prosody:ProsodyScorer")
    out = tmp_path / "out"
    result = score_items(load_items(folder), [scorer], out, progress=False)
    assert result.n_items == 3
    with (out / "scores.csv").open() as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    for column in ("prosody.value", "prosody.f0_median_st", "prosody.f0_range_st", "prosody.speaking_rate",
                   "prosody.rate_source", "prosody.pause_ratio", "prosody.hnr_db", "prosody.expressiveness",
                   "prosody.style_match", "prosody.error"):
        assert column in rows["expressive"], column
    assert float(rows["expressive"]["prosody.value"]) > float(rows["monotone"]["prosody.value"])
    assert rows["expressive"]["prosody.rate_source"] == "text"
    assert rows["noise"]["prosody.value"] == "" and "no voiced frames" in rows["noise"]["prosody.error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["prosody.value"]["n_scored"] == 2
    assert summary["settings"]["scorers"]["prosody"]["settings"]["backend"] == "yin"

    # a manifest carries the target style and word timestamps into meta; the second run resumes
    words = [{"word": w, "start": 0.3 * k, "end": 0.3 * k + 0.25} for k, w in enumerate(SENTENCE.split())]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in (
        {"id": "lively", "audio": str(folder / "expressive.wav"), "text": SENTENCE, "style": "excited",
         "words": words},
        {"id": "flat", "audio": str(folder / "monotone.wav"), "text": SENTENCE, "style": "excited"},
    )) + "\n")
    out2 = tmp_path / "out2"
    score_items(load_items(manifest), [scorer], out2, progress=False)
    again = score_items(load_items(manifest), [build("rewards.prosody:ProsodyScorer")], out2, progress=False)
    assert again.n_scored_now == 0 and again.n_resumed == 2
    rows2 = {json.loads(line)["id"]: json.loads(line) for line in (out2 / "scores.jsonl").read_text().splitlines()}
    assert rows2["lively"]["prosody.rate_source"] == "words" and rows2["flat"]["prosody.rate_source"] == "text"
    assert rows2["lively"]["prosody.style"] == "excited"
    assert rows2["lively"]["prosody.value"] == rows2["lively"]["prosody.style_match"]
    assert rows2["lively"]["prosody.value"] > rows2["flat"]["prosody.value"]
