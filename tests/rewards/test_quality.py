"""Quality scorer: DNSMOS and DistillMOS against their reference implementations, and ordering on real speech."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from rewards.audio import load_audio
from rewards.base import Sample
from rewards.models import ModelUnavailableError
from rewards.quality import QualityConfig, QualityScorer, _Dnsmos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(real_speech):
    # LibriSpeech dev-clean read speech and an LJ Speech studio recording.
    return {name: load_audio(real_speech / name, target_sr=16000).samples
            for name in ("2412-153948-0000.flac", "LJ050-0131.wav")}


def _noisy(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32)
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    y = x + noise
    return (y / max(1.0, np.max(np.abs(y)))).astype(np.float32)


def _band_limited(x: np.ndarray, low: float = 300.0, high: float = 1000.0) -> np.ndarray:
    sos = butter(8, [low, high], btype="bandpass", fs=16000, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def test_dnsmos_matches_microsofts_reference_windowing(clean, real_speech):
    from speechmos import dnsmos  # the package's own implementation of Microsoft's dnsmos_local.py

    scorer = QualityScorer(backends=("dnsmos",))
    # short (repeated) and long; the CREMA-D clip hits the reference's float rounding that skips a window
    fea = load_audio(real_speech / "1001_DFA_FEA_XX.wav", target_sr=16000).samples
    clips = [clean["LJ050-0131.wav"][:16000 * 2], clean["2412-153948-0000.flac"], fea]
    ours = scorer.score([Sample(str(k), c, 16000) for k, c in enumerate(clips)])
    for clip, score in zip(clips, ours):
        ref = dnsmos.run(clip, 16000)
        assert score.metrics["dnsmos_ovrl"] == pytest.approx(ref["ovrl_mos"], abs=1e-5)
        assert score.metrics["dnsmos_sig"] == pytest.approx(ref["sig_mos"], abs=1e-5)
        assert score.metrics["dnsmos_bak"] == pytest.approx(ref["bak_mos"], abs=1e-5)
        assert score.metrics["dnsmos_p808"] == pytest.approx(float(ref["p808_mos"]), abs=1e-5)
        assert score.value == pytest.approx((score.metrics["dnsmos_ovrl"] - 1) / 4)


def test_dnsmos_fast_windows_are_a_subset_of_the_reference_ones():
    x = np.random.default_rng(0).standard_normal(16000 * 30).astype(np.float32)
    ref = _Dnsmos.windows(x, fast=False)
    fast = _Dnsmos.windows(x, fast=True)
    assert len(ref) == 7 and len(fast) == 2  # the reference keeps 7 of its 21 one-second starts
    assert all(any(np.array_equal(f, r) for r in ref) for f in fast)
    assert np.array_equal(fast[-1], ref[-1])  # the end of the clip is covered
    short = x[:16000 * 3]
    assert len(_Dnsmos.windows(short, fast=True)) == 1


def test_dnsmos_shared_convolutions_equal_the_whole_model_per_window(clean):
    model = QualityScorer(backends=("dnsmos",))._model("dnsmos")
    audio, starts = model.plan(np.tile(clean["2412-153948-0000.flac"], 2), fast=False)  # 23 s: 7 windows
    assert starts == list(range(7))
    segments = np.stack([audio[s * 16000 : s * 16000 + 144160] for s in starts])
    shared = model._p835_raw(segments, starts)
    whole = np.concatenate([model.p835.run(None, {"input_1": seg[None]})[0] for seg in segments])
    assert np.abs(shared - whole).max() < 1e-5


def test_dnsmos_reference_never_looks_past_16_seconds():
    # Microsoft's windowing drops every window starting at 7 s or later (float rounding of the window end), so
    # the reference score of a clip depends only on its first 16.01 s. We reproduce that, and document it.
    rng = np.random.default_rng(1)
    head = rng.standard_normal(16000 * 17).astype(np.float32) * 0.1
    tail_a = rng.standard_normal(16000 * 8).astype(np.float32) * 0.1
    a = np.concatenate([head, tail_a])
    b = np.concatenate([head, np.zeros_like(tail_a) + 1e-3])
    windows_a, windows_b = _Dnsmos.windows(a, fast=False), _Dnsmos.windows(b, fast=False)
    assert len(windows_a) == 7 and all(np.array_equal(x, y) for x, y in zip(windows_a, windows_b))


def test_distillmos_matches_the_packages_forward(clean):
    import torch
    from distillmos import ConvTransformerSQAModel

    reference = ConvTransformerSQAModel().eval()
    clips = [clean["LJ050-0131.wav"][:16000 * 3], clean["2412-153948-0000.flac"]]  # padded and multi-segment
    ours = QualityScorer(backends=("distillmos",), distillmos_batch=3).score(
        [Sample(str(k), c, 16000) for k, c in enumerate(clips)]
    )
    with torch.no_grad():
        expected = [reference(torch.from_numpy(c)[None]).item() for c in clips]
    assert [s.metrics["distillmos"] for s in ours] == pytest.approx(expected, abs=1e-4)


def test_quality_orders_clean_noisy_band_limited_as_a_listener_would(clean, report):
    scorer = QualityScorer()
    for name, x in clean.items():
        variants = {"clean": x, "noisy_20db": _noisy(x, 20), "noisy_0db": _noisy(x, 0), "band": _band_limited(x)}
        scores = dict(zip(variants, scorer.score([Sample(k, v, 16000) for k, v in variants.items()])))
        for metric in ("dnsmos_ovrl", "distillmos"):
            m = {k: s.metrics[metric] for k, s in scores.items()}
            report(f"{metric} on {name}: " + ", ".join(f"{k}={v:.2f}" for k, v in m.items()))
            assert m["clean"] > m["noisy_20db"] > m["noisy_0db"], (name, metric, m)
            assert m["clean"] > m["band"] + 0.3, (name, metric, m)


def test_empty_and_missing_audio_fail_per_item(clean):
    """A waveform without samples is refused by the shared guard (`scorable`) before any backend sees it."""
    scorer = QualityScorer(backends=("dnsmos",))
    out = scorer.score([Sample("empty", np.zeros(0, np.float32), 16000), Sample("none"),
                        Sample("ok", clean["LJ050-0131.wav"][:16000], 16000)])
    assert out[0].value is None and out[0].error == "empty: the audio holds no samples"
    assert out[1].value is None and "audio" in out[1].error
    assert out[2].value is not None


def test_a_short_clip_gets_the_reference_dnsmos_and_distillmos(clean):
    """A 0.31 s answer (the demo's "A"): DNSMOS repeats it to fill its window, as speechmos does, and DistillMOS
    pads it, as its own forward does; issue #11 (it was refused below 0.5 s)."""
    import torch
    from distillmos import ConvTransformerSQAModel
    from speechmos import dnsmos

    clip = clean["LJ050-0131.wav"][16000: 16000 + int(0.31 * 16000)]
    (score,) = QualityScorer(backends=("dnsmos", "distillmos")).score([Sample("a", clip, 16000)])
    ref = dnsmos.run(clip, 16000)
    assert score.error is None
    assert score.metrics["dnsmos_ovrl"] == pytest.approx(ref["ovrl_mos"], abs=1e-5)
    assert score.metrics["dnsmos_sig"] == pytest.approx(ref["sig_mos"], abs=1e-5)
    assert score.metrics["dnsmos_bak"] == pytest.approx(ref["bak_mos"], abs=1e-5)
    assert score.metrics["dnsmos_p808"] == pytest.approx(float(ref["p808_mos"]), abs=1e-5)
    assert score.value == pytest.approx((ref["ovrl_mos"] - 1) / 4)
    model = ConvTransformerSQAModel().eval()  # the package's own weights and its own segmenting forward
    with torch.inference_mode():
        expected = float(model(torch.from_numpy(clip)[None]).reshape(-1)[0])
    assert score.metrics["distillmos"] == pytest.approx(expected, abs=1e-4)


def test_each_backend_keeps_its_own_minimum(tmp_path, clean):
    """UTMOS needs 400 samples (one wav2vec 2.0 frame); DNSMOS scores the same 300-sample clip."""
    import torch

    from rewards.utmos import CHECKPOINT_NAME, UTMOS22Strong

    torch.manual_seed(0)
    torch.save(UTMOS22Strong().state_dict(), tmp_path / CHECKPOINT_NAME)
    scorer = QualityScorer(backends=("dnsmos", "utmos"), utmos_checkpoint=str(tmp_path))
    short, ok = scorer.score([Sample("short", clean["LJ050-0131.wav"][16000:16300], 16000),
                              Sample("ok", clean["LJ050-0131.wav"][16000:16400], 16000)])
    assert short.metrics["dnsmos_ovrl"] is not None and short.value is not None
    assert short.metrics["utmos"] is None and "utmos: too_short" in short.error
    assert ok.error is None and np.isfinite(ok.metrics["utmos"])


def test_other_sample_rates_are_resampled(clean):
    from rewards.audio import resample

    x = clean["LJ050-0131.wav"][:16000 * 3]
    a, b = QualityScorer(backends=("dnsmos",)).score([Sample("a", x, 16000), Sample("b", resample(x, 16000, 48000),
                                                                                   48000)])
    assert a.metrics["dnsmos_ovrl"] == pytest.approx(b.metrics["dnsmos_ovrl"], abs=0.05)


def test_utmos_backend_runs_a_checkpoint_in_the_official_layout(tmp_path, clean):
    import torch

    from rewards.utmos import CHECKPOINT_NAME, UTMOS22Strong

    torch.manual_seed(0)
    torch.save(UTMOS22Strong().state_dict(), tmp_path / CHECKPOINT_NAME)
    scorer = QualityScorer(backends=("utmos", "dnsmos"), utmos_checkpoint=str(tmp_path))
    (score,) = scorer.score([Sample("a", clean["LJ050-0131.wav"][:16000 * 2], 16000)])
    assert np.isfinite(score.metrics["utmos"]) and score.metrics["dnsmos_ovrl"] is not None
    assert score.value == pytest.approx(np.clip((score.metrics["utmos"] - 1) / 4, 0, 1))
    assert str(tmp_path) in scorer.info().settings["models"]["utmos"]


def test_utmos_without_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="--utmos-checkpoint"):
        QualityScorer(backends=("utmos",), utmos_checkpoint=None).prepare()


def test_config_validation():
    with pytest.raises(ValueError):
        QualityConfig(backends=("pesq",))
    with pytest.raises(ValueError):
        QualityConfig(dnsmos_windowing="sometimes")
