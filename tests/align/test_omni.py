"""The thinker–talker family (`align.omni`) on a tiny random Qwen2.5-Omni of transformers' real classes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import read_log
from transformers import LogitsProcessor, LogitsProcessorList

from align.objectives import hybrid_loss
from align.omni import SAMPLE_RATE, build_omni_policy, build_tiny_omni_policy, save_tiny_omni
from align.policy import PAD_CHANNEL, SPEECH, TEXT
from align.train import load_config, train

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "benchmarks" / "align" / "train.jsonl"
CORPUS = ["what is two plus two", "two plus two is four.", "say it with joy", "the capital of kenya is nairobi."]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy():
    return build_tiny_omni_policy(CORPUS, seed=3, talker_max_new_tokens=20)


def _tone(seconds: float = 1.0, rate: int = 16000, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def prompts(policy):
    return [policy.build_prompt([{"role": "user", "content": "what is two plus two"}]),
            policy.build_prompt([{"role": "user", "content": "<audio> say it with joy"}], [(_tone(), 16000)])]


class _Recorder(LogitsProcessor):
    """Keeps the scores transformers' generate samples from at each step."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.detach().clone())
        return scores


def _hf_generate(policy, prompts, *, sample: bool, text_tokens: int = 6, codes: int = 20):
    """transformers' own `Qwen2_5OmniForConditionalGeneration.generate` on a left-padded batch: per row its text
    ids, talker codes and the log-softmax of the scores each step sampled from.

    A batch whose rows differ in length has a real attention mask, so the talker takes generate's padded-batch path
    (codec BOS/PAD embeddings added, multimodal RoPE positions), the one `OmniPolicy` always follows; for a single
    row generate drops the all-ones mask and its talker takes another branch (logits differ by ~1e-3).
    """
    model = policy.model.eval()
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p.input_ids), 1
    assert (mask == 0).any(), "rows of one length: generate would drop the mask"
    captured = {}
    original = model.talker.generate

    def capture(*args, **kwargs):
        out = original(*args, **kwargs)
        captured["codes"] = out[:, kwargs["input_ids"].shape[1]:].tolist()
        return out

    thinker_scores, talker_scores = _Recorder(), _Recorder()
    model.talker.generate = capture
    try:
        torch.manual_seed(0)
        seq, _ = model.generate(
            input_ids=ids, attention_mask=mask, speaker="tiny", thinker_max_new_tokens=text_tokens,
            thinker_do_sample=sample, thinker_top_k=0, thinker_top_p=1.0, thinker_temperature=1.0,
            thinker_logits_processor=LogitsProcessorList([thinker_scores]),
            talker_do_sample=sample, talker_top_k=0, talker_top_p=1.0, talker_temperature=1.0,
            talker_repetition_penalty=1.0, talker_eos_token_id=list(policy.codec_ends), talker_max_new_tokens=codes,
            talker_logits_processor=LogitsProcessorList([talker_scores]),
            **policy._audio_inputs(prompts, torch.device("cpu")))
    finally:
        del model.talker.generate
    out = []
    for i in range(len(prompts)):
        text = seq[i, width:].tolist()
        if policy.eos_id in text:
            text = text[: text.index(policy.eos_id) + 1]
        code = captured["codes"][i]
        code = code[: next((k + 1 for k, c in enumerate(code) if c in policy.codec_ends), len(code))]

        def logp(recorder, chosen, row=i):
            return torch.stack([s[row].log_softmax(-1)[c] for s, c in zip(recorder.steps, chosen)])

        out.append((text, code, logp(thinker_scores, text), logp(talker_scores, code)))
    return out


def test_greedy_answers_equal_transformers_generate_in_both_channels(policy, prompts):
    hf = _hf_generate(policy, prompts, sample=False)
    for prompt, (text, codes, _, _) in zip(prompts, hf):
        (ours,) = policy.generate([prompt], 1, temperature=0, max_new_tokens=6)[0]
        assert ours.stream("text") == text and len(text) == 6
        assert ours.stream("talker") == codes and len(codes) == 20
        assert ours.channels == [TEXT] * 6 + [SPEECH] * 20 and ours.streams == {"text": (0, 6), "talker": (6, 26)}


def test_logprobs_per_channel_equal_the_scores_generate_sampled_from(policy, prompts):
    """Teacher-forced, batched and right-padded log-probs vs transformers' generate sampling both streams."""
    sampled = _hf_generate(policy, prompts, sample=True)
    trajs = [policy.trajectory(p, text, codes) for p, (text, codes, _, _) in zip(prompts, sampled)]
    assert len(prompts[0]) != len(prompts[1])  # rows of different lengths: padding is exercised
    logp, mask, channels = policy.logprobs(trajs)
    for i, (text, codes, text_ref, code_ref) in enumerate(sampled):
        n = len(text) + len(codes)
        assert mask[i].sum() == n and (channels[i, n:] == PAD_CHANNEL).all()
        torch.testing.assert_close(logp[i, : len(text)], text_ref, atol=2e-5, rtol=0)
        torch.testing.assert_close(logp[i, len(text) : n], code_ref, atol=2e-5, rtol=0)
        assert channels[i, : len(text)].eq(TEXT).all() and channels[i, len(text) : n].eq(SPEECH).all()


def test_sampling_is_seeded_and_follows_the_policys_own_logprobs(policy, prompts):
    first = policy.generate(prompts, 2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=7)
    again = policy.generate(prompts, 2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=7)
    ids = [[t.completion_ids for t in g] for g in first]
    assert ids == [[t.completion_ids for t in g] for g in again]
    assert len({tuple(x) for g in ids for x in g}) > 1  # sampling: not all identical


def _grads(policy, loss):
    policy.model.zero_grad(set_to_none=True)
    loss.backward()
    named = dict(policy.model.named_parameters())
    return {name: (p.grad is not None and float(p.grad.abs().sum()) > 0) for name, p in named.items()}


def test_grpo_on_text_reaches_the_thinker_only_and_sft_reaches_both_channels(policy, prompts):
    policy.model.train()
    groups = policy.generate(prompts, 2, temperature=1.0, max_new_tokens=5, seed=1)
    trajs = [t for g in groups for t in g]
    logp, mask, channels = policy.logprobs(trajs)
    logp.retain_grad()
    loss, _ = hybrid_loss("po-text", logp=logp, adv=[1.0, -1.0, 0.5, -0.5], mask=mask, channels=channels)
    grads = _grads(policy, loss)
    assert (logp.grad[channels == SPEECH] == 0).all() and (logp.grad[channels == TEXT] != 0).any()
    assert grads["thinker.lm_head.weight"]
    assert not any(v for k, v in grads.items() if k.startswith("talker."))  # speech heads untouched

    targets = [policy.sft_target(p, "two plus two is four.") for p in prompts]
    sft_logp, sft_mask, sft_channels = policy.logprobs(targets)
    sft, _ = hybrid_loss("sft", sft_logp=sft_logp, sft_mask=sft_mask)
    grads = _grads(policy, sft)
    assert grads["thinker.lm_head.weight"] and grads["talker.codec_head.weight"]
    assert (sft_channels == SPEECH).sum() > 0 and (sft_channels == TEXT).sum() > 0
    # the SFT loss is the token mean over both streams, as computed by hand
    expected = -torch.cat([sft_logp[i, : len(t.completion_ids)] for i, t in enumerate(targets)]).mean()
    torch.testing.assert_close(sft.detach(), expected.detach())


def test_self_targets_are_the_talkers_greedy_codes_and_text_only_sft_drops_them(prompts):
    policy = build_tiny_omni_policy(CORPUS, seed=3, talker_max_new_tokens=20)
    target = policy.sft_target(prompts[0], "two plus two is four.")
    text_ids = [*policy._encode("two plus two is four."), policy.eos_id]
    assert target.stream("text") == text_ids and target.text == "two plus two is four."
    (greedy,) = policy._generate_codes([prompts[0]], [text_ids], 0.0, 1.0, 20)
    assert target.stream("talker") == greedy
    batched = policy.sft_targets(prompts, ["two plus two is four."] * 2)
    assert batched[0].completion_ids == target.completion_ids
    given = policy.sft_target(prompts[0], "four.", [3, 4, 5])
    assert given.stream("talker") == [3, 4, 5, policy.codec_ends[0]] and given.speech_tokens == [3, 4, 5]
    with pytest.raises(ValueError, match="out of range"):
        policy.sft_target(prompts[0], "four.", [999])
    text_only = build_tiny_omni_policy(CORPUS, seed=3, sft_speech="none").sft_target(prompts[0], "four.")
    assert text_only.count(SPEECH) == 0 and list(text_only.streams) == ["text", "talker"]


def test_frozen_talker_is_not_trained(prompts):
    policy = build_tiny_omni_policy(CORPUS, seed=3, talker="frozen", talker_max_new_tokens=10)
    assert not any(p.requires_grad for p in policy.model.talker.parameters())
    assert not any(p.requires_grad for p in policy.model.token2wav.parameters())
    assert any(p.requires_grad for p in policy.model.thinker.parameters())
    target = policy.sft_target(prompts[0], "four.")
    logp, mask, _ = policy.logprobs([target])
    (-logp[mask]).mean().backward()  # speech SFT still reaches the thinker through the states the talker reads
    assert policy.model.thinker.lm_head.weight.grad is not None


def test_decode_is_deterministic_audio_at_24_khz(policy):
    audio, rate = policy.decode_speech([1, 2, 3, 4, 5])
    again, _ = policy.decode_speech([1, 2, 3, 4, 5])
    assert rate == SAMPLE_RATE and audio.dtype == np.float32 and len(audio) == 5 * 480
    assert np.array_equal(audio, again) and 0.01 < np.abs(audio).max() <= 1.0
    assert len(policy.decode_speech([])[0]) == 0


def test_an_audio_user_turn_reaches_the_thinker_as_audio_features(policy, tmp_path):
    sf.write(tmp_path / "q.wav", _tone(1.2, 16000), 16000)
    data = tmp_path / "seed.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "<|audio|>"}], "audios": ["q.wav"],
                                "sft_target_text": "four."}) + "\n")
    from align.data import read_examples
    from align.train import _prompt

    (example,), problems = read_examples(data)
    assert not problems
    prompt = _prompt(policy, example)
    heard, _ = sf.read(tmp_path / "q.wav", dtype="float32")  # the file's own (16-bit) samples
    expected = policy.feature_extractor(heard, sampling_rate=16000, return_attention_mask=True, return_tensors="np")
    frames = int(expected["attention_mask"][0].sum())
    assert frames == 120  # 10 ms hop
    assert len(prompt.features) == 1 and prompt.features[0].shape == (128, frames)
    np.testing.assert_allclose(prompt.features[0], expected["input_features"][0, :, :frames], atol=1e-6)
    n_audio = prompt.input_ids.count(policy.audio_token)
    assert n_audio == 30 and prompt.input_ids.count(policy.audio_bos) == 1  # 120 frames -> 60 -> 30 tokens
    # the thinker's answer depends on what it heard
    other = policy.build_prompt(example.messages, [(_tone(1.2, 16000, 880.0), 16000)])
    a = policy.logprobs([policy.trajectory(prompt, [5, 6, policy.eos_id], [])])[0]
    b = policy.logprobs([policy.trajectory(other, [5, 6, policy.eos_id], [])])[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("mode", ["wavalign", "fixed", "po-all", "po-text", "sft"])
def test_each_mode_trains_two_steps(tmp_path, mode, small_data):
    cfg = load_config("tiny-omni", {"mode": mode, "max_steps": 2, "data": str(small_data),
                                    "output_dir": str(tmp_path / mode)})
    train(cfg, log=lambda m: None)
    rows = read_log(tmp_path / mode)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["len_speech"]) > 0 and float(rows[-1]["kl_speech"]) >= 0
    loss = float(rows[-1]["loss"])
    assert loss == loss
    if mode in ("wavalign", "fixed", "sft"):
        assert float(rows[-1]["loss_sft"]) > 0


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:8]), encoding="utf-8")
    return path


def test_resume_reproduces_the_losses(tmp_path, small_data):
    base = {"max_steps": 4, "save_every": 2, "mode": "wavalign", "data": str(small_data), "kl_every": 2}
    train(load_config("tiny-omni", {**base, "output_dir": str(tmp_path / "a")}), log=lambda m: None)
    train(load_config("tiny-omni", {**base, "max_steps": 2, "output_dir": str(tmp_path / "b")}), log=lambda m: None)
    train(load_config("tiny-omni", {**base, "resume": True, "output_dir": str(tmp_path / "b")}), log=lambda m: None)
    straight, split = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in split] == ["1", "2", "3", "4"]
    for key in ("loss", "loss_sft", "reward_mean", "kl_speech"):
        rows = [(a[key], b[key]) for a, b in zip(straight, split) if a[key] or b[key]]  # kl_every 2: steps 2 and 4
        assert len(rows) == (2 if key == "kl_speech" else 4), key
        assert [float(b) for _, b in rows] == pytest.approx([float(a) for a, _ in rows], rel=1e-5), key


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_omni(tmp_path_factory.mktemp("omni") / "tiny-omni", CORPUS, seed=3)


def test_a_saved_checkpoint_loads_by_path(tiny_folder, prompts):
    loaded = build_omni_policy(str(tiny_folder), talker="frozen", talker_max_new_tokens=8, system_prompt=None)
    fresh = build_tiny_omni_policy(CORPUS, seed=3, talker_max_new_tokens=8)
    assert loaded.speaker_name == "tiny" and loaded.info()["talker"] == "frozen"
    a = loaded.generate([prompts[0]], 1, temperature=0, max_new_tokens=4)[0][0]
    b = fresh.generate([prompts[0]], 1, temperature=0, max_new_tokens=4)[0][0]
    assert a.completion_ids == b.completion_ids


def test_a_wrong_architecture_gives_a_one_line_error(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(str(tmp_path / "llama"))
    with pytest.raises(ValueError, match="holds a 'llama' model, not Qwen2.5-Omni") as e:
        build_omni_policy(str(tmp_path / "llama"))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot load Qwen2.5-Omni") as e:
        build_omni_policy(str(tmp_path / "nothing-here"))
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_eval_answers_the_demo_in_both_channels(tiny_folder, tmp_path):
    """`wavalign eval --benchmark demo --model qwen2.5-omni --model-arg path=DIR --limit 4` on the saved tiny model."""
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "cli", "eval", "--benchmark", "demo", "--model", "qwen2.5-omni", "--model-arg",
           f"path={tiny_folder}", "--model-arg", "max_new_tokens=8", "--model-arg", "talker_max_new_tokens=40",
           "--limit", "4", "-o", str(out), "--no-leaderboard"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    samples = [json.loads(line) for line in (out / "samples.jsonl").open()]
    assert len(samples) == 4
    for s in samples:
        assert s["response.error"] is None and s["response.text"] is not None
        info = sf.info(str(out / s["response.audio"]))
        assert info.samplerate == SAMPLE_RATE and info.frames > 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["settings"]["policy"] == "omni"
    assert results["model"]["settings"]["policy_info"]["family"] == "omni"


def test_lora_talker_trains_only_its_adapters(prompts):
    policy = build_tiny_omni_policy(CORPUS, seed=3, talker="lora", talker_max_new_tokens=10)
    trainable = [n for n, p in policy.model.talker.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    target = policy.sft_target(prompts[0], "two plus two is four.")
    logp, mask, channels = policy.logprobs([target])
    (-logp[mask & (channels == SPEECH)]).mean().backward()
    lora_b = [p for n, p in policy.model.talker.named_parameters() if "lora_B" in n]
    lora_a = [p for n, p in policy.model.talker.named_parameters() if "lora_A" in n]
    assert all(p.grad is not None for p in lora_b) and any(float(p.grad.abs().sum()) > 0 for p in lora_b)
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in lora_a)  # B starts at 0: A gets none yet
    assert policy.info()["talker"] == "lora"
