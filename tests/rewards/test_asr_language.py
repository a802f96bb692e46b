"""Languages (issue #14): an item the ASR model cannot transcribe fails alone; each item keeps its own language.

The packaged model is whisper tiny.en (English-only): a Mandarin item must get "model tiny.en is English-only",
never an English transcript scored as Chinese, in sequential and in batched decoding, beside English items of the
same batch that are transcribed as usual. No multilingual Whisper weights are available offline, so the
multilingual prompt (``<|zh|><|transcribe|>`` per item) is not run here.
"""

from __future__ import annotations

import pytest
import soundfile as sf
from conftest import synthesize

from rewards.asr import AsrScorer, whisper_language
from rewards.base import Sample


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("languages")
    out = {}
    for name, text, voice in [("en", "The capital of France is Paris.", "en-us"),
                              ("zh", "法国的首都是巴黎。", "cmn")]:
        data, rate = sf.read(synthesize(text, root / f"{name}.wav", voice=voice), dtype="float32")
        out[name] = (data, rate, text)
    return out


def _batch(clips):
    en, zh = clips["en"], clips["zh"]
    return [
        Sample("en", en[0], en[1], text=en[2], meta={"language": "en"}),
        Sample("zh", zh[0], zh[1], text=zh[2], meta={"language": "zh"}),
        Sample("en-region", en[0], en[1], text=en[2], meta={"language": "en-US"}),
        Sample("klingon", en[0], en[1], text=en[2], meta={"language": "tlh"}),
        Sample("zh-cn", zh[0], zh[1], text=zh[2], meta={"language": "zh-CN"}),
        Sample("default", en[0], en[1], text=en[2]),  # the config's language, en
    ]


@pytest.mark.parametrize("decode", ["sequential", "batched"])
def test_english_only_model_fails_other_languages_per_item(clips, decode):
    scores = AsrScorer(decode=decode, beam_size=1).score(_batch(clips))
    by_id = dict(zip(["en", "zh", "en-region", "klingon", "zh-cn", "default"], scores))
    for name in ("zh", "zh-cn"):
        score = by_id[name]
        assert score.value is None and "model tiny.en is English-only" in score.error, score
        assert "transcript" not in score.metrics  # nothing was transcribed, so nothing can be scored as Chinese
    assert by_id["klingon"].value is None and "unknown language 'tlh'" in by_id["klingon"].error
    for name in ("en", "en-region", "default"):
        score = by_id[name]
        assert score.error is None and "paris" in score.metrics["transcript"].lower(), score
        assert score.value > 0.7
    assert by_id["en"].metrics["transcript"] == by_id["en-region"].metrics["transcript"]


def test_a_config_language_the_model_cannot_do_fails_each_item_with_the_reason(clips):
    en = clips["en"]
    scores = AsrScorer(language="de", beam_size=1).score([Sample("a", en[0], en[1], text=en[2])])
    assert scores[0].value is None and "English-only" in scores[0].error and "'de'" in scores[0].error


def test_language_codes():
    assert whisper_language("zh-CN") == "zh" and whisper_language("EN_us") == "en" and whisper_language(" ja ") == "ja"
    assert whisper_language(None) is None and whisper_language("") is None
    for bad in ("tlh", "english", 7):
        with pytest.raises(ValueError):
            whisper_language(bad)
