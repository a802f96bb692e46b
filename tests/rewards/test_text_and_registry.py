from __future__ import annotations

import subprocess
import sys

import pytest

from rewards.base import Sample, Score
from rewards.registry import UnknownScorerError, build, register, resolve
from rewards.text import error_rate_reward, error_rates, normalize


def test_english_normaliser_is_whispers():
    assert normalize("Mr. Smith's colour, 1st!") == normalize("mister smith's color first")
    assert error_rates("in 1813.", "IN EIGHTEEN THIRTEEN").wer == 0.0


def test_wer_and_cer_values():
    rates = error_rates("the cat sat on a mat", "the cat sat on the mat")
    assert rates.wer == pytest.approx(1 / 6)
    assert 0 < rates.cer < rates.wer
    assert error_rates("", "hello there").wer == 1.0


def test_character_languages_use_cer():
    rates = error_rates("今天天气很好", "今天天气真好", language="zh")
    assert rates.primary == rates.cer == pytest.approx(1 / 6)
    assert error_rates("今天 天气 很好", "今天天气很好", language="zh-CN").primary == 0.0


def test_empty_reference_is_undefined_not_a_number():
    with pytest.raises(ValueError, match="undefined"):
        error_rates("something", "!!!")
    assert error_rates("", "").wer == 0.0


def test_reward_mapping():
    assert error_rate_reward(0.0) == 1.0
    assert error_rate_reward(0.25) == 0.75
    assert error_rate_reward(1.7) == 0.0


def test_score_value_must_be_finite():
    with pytest.raises(ValueError):
        Score(value=float("nan"))
    assert Score.failed("why").value is None


def test_registry_resolves_lazily_and_suggests():
    with pytest.raises(UnknownScorerError, match="did you mean 'quality'"):
        resolve("qualty")
    with pytest.raises(UnknownScorerError, match="cannot import"):
        resolve("no_such_pkg.mod:Thing")
    with pytest.raises(UnknownScorerError, match="has no class"):
        resolve("rewards.loudness:Nope")


def test_registry_accepts_user_classes():
    scorer = build("rewards.loudness:LoudnessScorer")
    assert scorer.name == "loudness"
    register("my_loudness", "rewards.loudness:LoudnessScorer")
    assert resolve("my_loudness").__name__ == "LoudnessScorer"
    with pytest.raises(ValueError):
        register("bad", "no-colon")


def test_loudness_scorer_is_deterministic():
    import numpy as np

    scorer = build("loudness")
    out = scorer.score([Sample("a", np.full(100, 0.5, dtype=np.float32), 16000), Sample("b")])
    assert out[0].value == pytest.approx(20 * np.log10(0.5))
    assert out[1].value is None and "audio" in out[1].error


def test_registry_import_does_not_load_backends():
    code = "import rewards.registry, sys; print('torch' in sys.modules, 'faster_whisper' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
