"""Native interleaved checkpoints (align/interleaved/native.py) on tiny random LlamaForCausalLM checkpoints whose
tokenizer already has its speech tokens: layout, sampling, log-probs, losses, the loop, eval, seed data, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import killed_and_resumed_align, read_log

from align.interleaved.native import (
    DONE,
    FINAL_TEXT,
    SPEECH_RUN,
    TEXT_CHUNK,
    FrameCodec,
    NativeInterleavedPolicy,
    NativeLogitsProcessor,
    build_native_policy,
    build_random_native_policy,
    build_tiny_native_policy,
    native_spec,
    save_tiny_native,
    tiny_native_tokenizer,
)
from align.objectives import MODES, hybrid_loss
from align.policy import BOUNDARY, PAD_CHANNEL, SPEECH, TEXT, PolicyAdapter, SpeechCodec
from align.train import load_config, train

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "benchmarks" / "demo"
CODEC = "align.interleaved.native:FrameCodec"
# (pattern, markers, markers_in_chunk): GLM-4-Voice's 13 : 26; VITA-Audio Boost's 1 10 4 10 without and with markers
LAYOUTS = [((13, 26), "none", False), ((1, 10, 4, 10), "none", False), ((1, 10, 4, 10), "each_run", True),
           ((2, 3), "each_run", False)]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(pattern=(4, 8), markers="none", markers_in_chunk=False, **kwargs) -> NativeInterleavedPolicy:
    return build_tiny_native_policy(["what is two plus two? two plus two is four. say hello."], pattern=pattern,
                                    markers=markers, markers_in_chunk=markers_in_chunk, **kwargs)


def ask(policy, question: str) -> list[int]:
    return policy.build_prompt([{"role": "user", "content": question}])


def random_sentence(policy, rng: random.Random, end_prob: float) -> list[int]:
    """Walk the grammar with random legal tokens: a full chunk is left with probability 0.9, any other with
    ``end_prob`` (so walks have long regular prefixes as well as early ends)."""
    grammar, spec = policy.grammar, policy.spec
    state, out = grammar.start(), []
    while state[0] != DONE:
        phase, pair, count, _ = state
        ids = grammar.mask(grammar.allowed(state), torch.device("cpu")).nonzero().flatten().tolist()
        channel = TEXT if phase in (TEXT_CHUNK, FINAL_TEXT) else SPEECH
        stay = [t for t in ids if spec.channel(t) == channel and t != spec.eos_id]
        leave = [t for t in ids if t not in stay]
        full = (phase == TEXT_CHUNK and count == spec.text_chunk(pair)) or (
            phase == SPEECH_RUN and count == spec.speech_chunk(pair))
        token = rng.choice(leave) if leave and (not stay or rng.random() < (0.9 if full else end_prob)) else (
            rng.choice(stay))
        out.append(token)
        state = grammar.advance(state, token)
    return out


def pairs(policy, completion: list[int]) -> list[tuple[int, int]]:
    """(text tokens, speech tokens) per pair of a completion: runs of text, then of speech (+ markers)."""
    spec, out = policy.spec, []
    for token in completion:
        if token == spec.eos_id:
            break
        speech = spec.channel(token) != TEXT
        if not out or (not speech and out[-1][1]):
            out.append([0, 0])
        if speech:
            out[-1][1] += spec.is_speech(token)
        else:
            out[-1][0] += 1
    return [tuple(p) for p in out]


def assert_follows_pattern(policy, completion: list[int], finished: bool) -> None:
    """Every pair before the last is exactly the pattern's chunk sizes; the last holds the rest."""
    spec = policy.spec
    policy.grammar.check(completion, finished=finished)
    found = pairs(policy, completion)
    for p, (t, s) in enumerate(found[:-1]):
        assert (t, s) == (spec.text_chunk(p), spec.speech_chunk(p)), (p, found)
    if finished:
        assert policy.layout(*policy.split(completion)) == completion


# ------------------------------------------------------------------------------------------------ the tokenizer
def test_speech_tokens_and_markers_are_read_from_the_tokenizer_not_added():
    policy = tiny()
    tok, spec = policy.tokenizer, policy.spec
    n = len(tok)
    assert spec.speech_offset == tok.convert_tokens_to_ids("<|audio_0|>")
    assert spec.speech_vocab_size == 64 == policy.codec.vocab_size
    assert tok.convert_ids_to_tokens(spec.speech_offset + 63) == "<|audio_63|>"
    assert (spec.boa_id, spec.eoa_id) == tuple(tok.convert_tokens_to_ids(["<|begin_of_audio|>", "<|end_of_audio|>"]))
    assert spec.eos_id == tok.convert_tokens_to_ids("<|im_end|>")
    native_spec(tok, pattern="1 10 4 10")
    assert len(tok) == n  # nothing added
    rows = policy.model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows > len(tok)  # padding rows, as real checkpoints have
    info = policy.info()
    json.dumps(info)
    assert info["pattern"] == "4 8" and info["native"] and info["codec"]["name"] == "frame"
    assert isinstance(policy, PolicyAdapter) and isinstance(policy.codec, SpeechCodec) and policy.hears_audio


def test_speech_token_errors():
    plain = tiny_native_tokenizer(["hello there"], speech_vocab=0)
    with pytest.raises(ValueError, match="no speech tokens named '<\\|audio_N\\|>'"):
        native_spec(plain)
    gappy = tiny_native_tokenizer(["hello there"], speech_vocab=0)
    gappy.add_tokens(["<|audio_0|>", "<|audio_1|>", "<|audio_3|>"])
    with pytest.raises(ValueError, match="<\\|audio_2\\|> is missing"):
        native_spec(gappy)
    split = tiny_native_tokenizer(["hello there"], speech_vocab=0)
    split.add_tokens(["<|audio_0|>", "<|other|>", "<|audio_1|>"])
    with pytest.raises(ValueError, match="not contiguous ids"):
        native_spec(split)
    with pytest.raises(ValueError, match="no end-of-turn token '<\\|user\\|>'"):
        native_spec(tiny_native_tokenizer(["hi"], speech_vocab=4), eos="<|user|>")
    with pytest.raises(ValueError, match="pairs of chunk sizes"):
        native_spec(tiny_native_tokenizer(["hi"], speech_vocab=4), pattern="13 26 4")


# ------------------------------------------------------------------------------------------------ the codec
def test_frame_codec_encodes_real_audio_and_decodes_tokens():
    codec = FrameCodec()
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(0, codec.vocab_size, 400)]
    canonical = [t if t >= codec.bands else 0 for t in tokens]  # level 0 is silence (band 0)
    audio, rate = codec.decode(tokens)
    assert audio.dtype == np.float32 and rate == 16000 and len(audio) == 640 * len(tokens)
    assert np.abs(audio).max() < 1.0
    assert codec.encode_audio(audio, rate) == canonical
    assert codec.encode_audio(audio[::2], 8000) == canonical  # resampled to its own rate first
    # a real spoken question: 25 tokens a second, a varied contour, silence where the file is silent
    speech, sr = sf.read(DEMO / "audio" / "qa-01.flac", dtype="float32")
    encoded = codec.encode_audio(speech, sr)
    assert abs(len(encoded) - len(speech) / sr * 25) <= 1
    assert len(set(encoded)) > 8 and all(0 <= t < 64 for t in encoded)
    assert codec.encode_audio(np.zeros(16000, dtype=np.float32), 16000) == [0] * 25
    assert FrameCodec(text_front_end=False).encode_text("hello") is None


# ------------------------------------------------------------------------------------------------ the layout
def test_layout_by_hand():
    policy = tiny(pattern=(2, 3))
    spec = policy.spec
    a, b, c, d, e = policy.tokenizer("a b c d e", add_special_tokens=False)["input_ids"][:5]
    EOS = spec.eos_id
    s = [spec.speech_offset + i for i in range(9)]
    # GLM-4-Voice style: the text ends first, the speech continues alone; no text-end token, no markers
    assert policy.layout([a, b, c], range(9)) == [a, b, *s[:3], c, *s[3:9], EOS]
    # the speech is the shorter channel: the last text chunk runs on, one last short speech chunk follows
    assert policy.layout([a, b, c, d, e], range(4)) == [a, b, *s[:3], c, d, e, s[3], EOS]
    assert policy.layout([a, b], range(3)) == [a, b, *s[:3], EOS]
    assert policy.layout([a], []) == [a, EOS] and policy.layout([], [0]) == [s[0], EOS]
    assert policy.layout([], []) == [EOS]
    # VITA-Audio style: every speech chunk between BOA and EOA, the markers counted in the chunk (5 = 1 + 3 + 1)
    vita = tiny(pattern=(1, 5, 2, 5), markers="each_run", markers_in_chunk=True)
    B, E, EOS = vita.spec.boa_id, vita.spec.eoa_id, vita.spec.eos_id
    s = [vita.spec.speech_offset + i for i in range(9)]
    assert vita.layout([a, b, c, d], range(9)) == [a, B, *s[:3], E, b, c, B, *s[3:6], E, d, B, *s[6:9], E, EOS]
    assert vita.layout([a, b, c, d, e], range(4)) == [a, B, *s[:3], E, b, c, d, e, B, s[3], E, EOS]
    with pytest.raises(ValueError, match="not text tokens"):
        policy.layout([a, spec.boa_id], [])
    with pytest.raises(ValueError, match="out of range"):
        policy.layout([a], [64])


@pytest.mark.parametrize("pattern,markers,in_chunk", LAYOUTS)
def test_every_sentence_of_the_pattern_is_the_layout_of_its_channels(pattern, markers, in_chunk):
    """Both ways: random walks of the grammar are layouts, and layouts of random channels are sentences."""
    policy = tiny(pattern=pattern, markers=markers, markers_in_chunk=in_chunk)
    rng = random.Random(0)
    text_ids = policy.grammar.kinds.eq(0).nonzero().flatten().tolist()
    for k in range(150):
        sentence = random_sentence(policy, rng, end_prob=(0.02, 0.1, 0.4)[k % 3])
        assert_follows_pattern(policy, sentence, finished=True)
        n_text, n_speech = rng.randint(0, 40), rng.randint(0, 90)
        laid = policy.layout(rng.choices(text_ids, k=n_text), rng.choices(range(64), k=n_speech))
        assert_follows_pattern(policy, laid, finished=True)
        assert [len(x) for x in policy.split(laid)] == [n_text, n_speech]


def test_logits_processor_keeps_sampling_inside_the_pattern_and_the_vocabulary():
    """Scores that favour padding rows, chat specials, markers and EOS: the argmax is still the pattern's."""
    policy = tiny(pattern=(1, 10, 4, 10))
    grammar, spec, tok = policy.grammar, policy.spec, policy.tokenizer
    vocab = grammar.vocab_size
    bad = [len(tok), vocab - 1, tok.convert_tokens_to_ids("<|im_start|>"), spec.boa_id, spec.eoa_id, tok.pad_token_id]
    processor = NativeLogitsProcessor(grammar)
    ids = torch.tensor([[5, 6, 7]])
    rng = torch.Generator().manual_seed(0)
    for _ in range(80):
        scores = torch.randn(1, vocab, generator=rng)
        scores[0, bad] = 100.0
        scores[0, spec.eos_id] = 50.0 if ids.shape[1] < 60 else 200.0
        out = processor(ids, scores)
        token = int(out.argmax())
        assert token < len(tok) and token not in bad
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        if token == spec.eos_id:
            break
    completion = ids[0, 3:].tolist()
    assert completion[-1] == spec.eos_id
    assert_follows_pattern(policy, completion, finished=True)


# ------------------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("pattern,markers,in_chunk", LAYOUTS[:3])
def test_sampling_follows_the_configured_pattern(pattern, markers, in_chunk):
    policy = tiny(pattern=pattern, markers=markers, markers_in_chunk=in_chunk)
    tok, spec = policy.tokenizer, policy.spec
    prompts = [ask(policy, "what is two plus two?"), ask(policy, "say hello.")]
    groups = policy.generate(prompts, 6, temperature=1.0, top_p=1.0, max_new_tokens=80, seed=0)
    legal = {spec.eos_id, spec.boa_id, spec.eoa_id} if markers == "each_run" else {spec.eos_id}
    special = set(tok.all_special_ids) | {spec.boa_id, spec.eoa_id}
    finished = 0
    for prompt, group in zip(prompts, groups):
        for traj in group:
            assert traj.prompt_ids == prompt
            assert_follows_pattern(policy, traj.completion_ids, traj.finished)
            assert all(t < len(tok) for t in traj.completion_ids)  # never a padding row
            assert {t for t in traj.completion_ids if t in special} <= legal
            assert traj.channels == [spec.channel(t) for t in traj.completion_ids]
            assert traj.speech_tokens == [t - spec.speech_offset for t in traj.completion_ids if spec.is_speech(t)]
            assert len(traj.completion_ids) == 80 or traj.finished
            finished += traj.finished
    assert finished >= 2
    again = policy.generate(prompts, 6, temperature=1.0, top_p=1.0, max_new_tokens=80, seed=0)
    assert [t.completion_ids for g in again for t in g] == [t.completion_ids for g in groups for t in g]


def test_sft_then_greedy_generation_reproduces_a_vita_style_target():
    """SFT through `logprobs` teaches the 1 10 4 10 layout (markers in the chunk); greedy decoding emits it exactly."""
    policy = tiny(pattern=(1, 10, 4, 10), markers="each_run", markers_in_chunk=True)
    prompt = ask(policy, "what is two plus two?")
    target = policy.sft_target(prompt, "two plus two is four.", list(range(16, 36)))
    assert len(pairs(policy, target.completion_ids)) >= 3  # the pattern's first pair, then repeats
    assert pairs(policy, target.completion_ids)[:2] == [(1, 8), (4, 8)]
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-2)
    policy.model.train()
    for _ in range(150):
        logp, mask, _ = policy.logprobs([target])
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    [[greedy]] = policy.generate([prompt], 1, temperature=0, max_new_tokens=120)
    assert greedy.completion_ids == target.completion_ids and greedy.finished
    assert greedy.text == "two plus two is four." and greedy.speech_tokens == target.speech_tokens


# ------------------------------------------------------------------------------------------------ log-probs, losses
def direct_logits(model, traj) -> torch.Tensor:
    """Logits predicting each completion token, from one plain forward pass of the transformers model."""
    ids = torch.tensor([traj.prompt_ids + traj.completion_ids])
    p = len(traj.prompt_ids)
    return model(input_ids=ids).logits[0, p - 1: p - 1 + len(traj.completion_ids)].float()


def test_logprobs_per_channel_equal_a_direct_forward():
    policy = tiny(pattern=(2, 3), markers="each_run")
    prompts = [ask(policy, "what is two plus two?"), ask(policy, "hi")]
    trajs = [t for g in policy.generate(prompts, 2, temperature=1.0, max_new_tokens=30, seed=1) for t in g]
    trajs.append(policy.sft_target(prompts[1], "four.", [1, 2, 3, 4]))
    logp, mask, channels = policy.logprobs(trajs)
    assert logp.shape == mask.shape == channels.shape == (len(trajs), max(len(t.completion_ids) for t in trajs))
    for i, traj in enumerate(trajs):
        n = len(traj.completion_ids)
        direct = direct_logits(policy.model, traj).log_softmax(-1)
        expected = direct.gather(-1, torch.tensor(traj.completion_ids)[:, None]).squeeze(-1)
        assert torch.allclose(logp[i, :n], expected, atol=1e-5)
        assert channels[i, :n].tolist() == traj.channels and (channels[i, n:] == PAD_CHANNEL).all()
        assert mask[i, :n].all() and not mask[i, n:].any() and (logp[i, n:] == 0).all()
        for channel in (TEXT, SPEECH, BOUNDARY):
            where = torch.tensor(traj.channels) == channel
            assert torch.allclose(logp[i, :n][where].sum(), expected[where].sum(), atol=1e-4)
    assert sum(t.count(BOUNDARY) for t in trajs) > 0 and sum(t.count(SPEECH) for t in trajs) > 0


def logit_grads(policy, traj, mode: str) -> torch.Tensor:
    """d loss / d logits [T, V] at the positions predicting ``traj``'s completion, for one trajectory."""
    captured = []

    def keep(module, inputs, out) -> None:
        out.retain_grad()
        captured.append(out)

    hook = policy.model.get_output_embeddings().register_forward_hook(keep)
    try:
        logp, mask, channels = policy.logprobs([traj])
    finally:
        hook.remove()
    n = len(traj.completion_ids)
    if mode == "sft":
        loss, _ = hybrid_loss("sft", sft_logp=logp, sft_mask=mask)
    else:
        loss, _ = hybrid_loss(mode, logp=logp, adv=torch.tensor([1.5]), mask=mask, channels=channels)
    policy.model.zero_grad()
    loss.backward()
    grad = captured[0].grad[0]
    return grad[grad.shape[0] - 1 - n: grad.shape[0] - 1]  # logits_to_keep: the last n + 1 positions


def test_grpo_reaches_text_positions_only_and_sft_every_channel():
    policy = tiny(pattern=(2, 3), markers="each_run")
    prompt = ask(policy, "what is two plus two?")
    traj = policy.sft_target(prompt, "two plus two is four.")
    channels = torch.tensor(traj.channels)
    assert {TEXT, SPEECH, BOUNDARY} <= set(traj.channels)
    norms = {mode: logit_grads(policy, traj, mode).abs().sum(-1) for mode in ("po-text", "po-all", "sft")}
    text = channels == TEXT
    assert (norms["po-text"][~text] == 0).all() and (norms["po-text"][text] > 0).all()
    assert (norms["po-all"] > 0).all()  # the same loss over every channel does reach speech: the mask is the cause
    assert (norms["sft"] > 0).all()
    # and the gradients agree with the per-position derivative of the direct forward's log-probs
    logits = direct_logits(policy.model, traj).detach().requires_grad_(True)
    lp = logits.log_softmax(-1).gather(-1, torch.tensor(traj.completion_ids)[:, None]).squeeze(-1)
    (-(lp * text).sum() * 1.5 / text.sum()).backward()
    assert torch.allclose(logit_grads(policy, traj, "po-text"), logits.grad, atol=1e-6)


# ------------------------------------------------------------------------------------------------ the loop
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_two_steps(tmp_path, mode):
    cfg = load_config("tiny-interleaved-native", {"mode": mode, "max_steps": 2, "output_dir": str(tmp_path / mode)})
    train(cfg, log=lambda m: None)
    rows = read_log(tmp_path / mode)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(float(r["loss"]) == float(r["loss"]) for r in rows)  # finite
    assert float(rows[-1]["len_speech"]) > 0 and float(rows[-1]["kl_text"]) >= 0
    saved = json.loads((tmp_path / mode / "config.json").read_text())
    assert saved["policy"] == "tiny-interleaved-native" and saved["policy_args"]["pattern"] == "4 8"
    assert (tmp_path / mode / "checkpoint" / "trainer.pt").is_file()


def test_resume_reproduces_the_losses(tmp_path):
    base = {"max_steps": 4, "save_every": 2, "mode": "wavalign"}
    train(load_config("tiny-interleaved-native", {**base, "output_dir": str(tmp_path / "a")}), log=lambda m: None)
    train(load_config("tiny-interleaved-native", {**base, "max_steps": 2, "output_dir": str(tmp_path / "b")}),
          log=lambda m: None)
    train(load_config("tiny-interleaved-native", {**base, "output_dir": str(tmp_path / "b"), "resume": True}),
          log=lambda m: None)
    straight, split = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in split] == ["1", "2", "3", "4"]
    for x, y in zip(straight, split):
        for key in ("loss", "loss_sft", "loss_grpo", "reward_mean", "lambda", "grad_norm", "len_speech"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-5, abs=1e-7), (x["step"], key)


@pytest.mark.slow
def test_cli_kill_and_resume_reproduces_the_losses(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    common = [sys.executable, "-m", "cli", "align", "--config", "tiny-interleaved-native", "--max-steps", "4",
              "--set", "save_every=1"]
    straight = subprocess.run(common + ["--output-dir", str(tmp_path / "straight")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    resumed = killed_and_resumed_align(common[4:], out)
    assert resumed.returncode == 0 and "resumed from step" in resumed.stderr, resumed.stderr[-2000:]
    a, b = read_log(tmp_path / "straight"), read_log(out)
    assert [r["step"] for r in b] == ["1", "2", "3", "4"]
    for x, y in zip(a, b):
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-5, abs=1e-7), x["step"]


# ------------------------------------------------------------------------------------------------ seed data
def test_a_seed_row_with_a_spoken_turn_reaches_the_model_as_audio(tmp_path):
    from align.data import read_examples
    from align.train import _prompt, _sft_targets

    question, answer = DEMO / "audio" / "qa-01.flac", DEMO / "audio" / "qa-02.flac"
    row = {"messages": [{"role": "user", "content": "<|audio|>"}], "audios": [str(question)],
           "question_text": "What is the capital of France?", "sft_target_text": "The capital of France is Paris.",
           "sft_target_audio": str(answer)}
    data = tmp_path / "seed.jsonl"
    data.write_text(json.dumps(row) + "\n" + json.dumps({**row, "audios": [str(answer)]}) + "\n")
    (example, _), _ = read_examples(data)
    policy = tiny(text_front_end=False)  # like a neural codec: reference speech must come as audio
    codec, spec = policy.codec, policy.spec
    prompt = _prompt(policy, example)
    heard = [spec.speech_offset + t for t in codec.encode_audio(*sf.read(question, dtype="float32"))]
    start = prompt.index(spec.boa_id)
    assert prompt[start + 1: start + 1 + len(heard)] == heard and prompt[start + 1 + len(heard)] == spec.eoa_id
    assert len(heard) > 25
    (target,) = _sft_targets(policy, [prompt], [example])
    assert target.speech_tokens == codec.encode_audio(*sf.read(answer, dtype="float32"))
    assert target.text == "The capital of France is Paris." and target.finished
    assert_follows_pattern(policy, target.completion_ids, finished=True)
    with pytest.raises(ValueError, match="needs its reference speech"):
        policy.sft_target(prompt, "Paris.")
    # and the loop trains on such rows
    cfg = load_config("tiny-interleaved-native", {"data": str(data), "max_steps": 1, "prompts_per_step": 2,
                                                  "policy_args": {"pattern": "4 8", "text_front_end": False},
                                                  "output_dir": str(tmp_path / "run")})
    train(cfg, log=lambda m: None)
    assert float(read_log(tmp_path / "run")[0]["loss"]) == float(read_log(tmp_path / "run")[0]["loss"])


def test_glm_4_voice_prompt_format():
    tok = tiny_native_tokenizer(["hello there"], speech_vocab=64,
                                extra_special=["<|system|>", "<|user|>", "<|assistant|>"])
    policy = tiny()
    policy = NativeInterleavedPolicy(policy.model, tok, native_spec(tok, eos="<|user|>"), FrameCodec(),
                                     prompt_format="glm-4-voice")
    audio = (np.sin(np.arange(8000) / 8).astype(np.float32) * 0.3, 16000)
    ids = policy.build_prompt([{"role": "user", "content": "<audio>"}], [audio])
    speech = [policy.spec.speech_offset + t for t in FrameCodec().encode_audio(*audio)]
    head = tok("<|system|>\nUser will provide you with a speech instruction.", add_special_tokens=False)["input_ids"]
    assert ids[: len(head)] == head
    tail = tok("<|user|>\n", add_special_tokens=False)["input_ids"]
    i = ids.index(policy.spec.boa_id)
    assert ids[i - len(tail): i] == tail and ids[i + 1: i + 1 + len(speech)] == speech
    assert tok.decode(ids[i + 2 + len(speech):]) == "<|assistant|>streaming_transcription\n"
    assert policy.spec.eos_id == tok.convert_tokens_to_ids("<|user|>")
    # the chat-template format takes a system prompt too (VITA-Audio's demo has one), unless the messages have one
    chat = NativeInterleavedPolicy(policy.model, tok, policy.spec, system_prompt="Respond in a text-audio manner.")
    expected = tok.apply_chat_template([{"role": "system", "content": "Respond in a text-audio manner."},
                                        {"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    prompt = chat.build_prompt([{"role": "user", "content": "hi"}])
    assert prompt == tok(expected, add_special_tokens=False)["input_ids"]
    assert tok.decode(chat.build_prompt([{"role": "system", "content": "be brief"}])).count("system") == 1


# ------------------------------------------------------------------------------------------------ folders, eval
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny_native(tmp_path_factory.mktemp("tiny-native"), pattern=(4, 8))


@pytest.fixture(scope="module")
def warm(saved, tmp_path_factory) -> Path:
    """The saved checkpoint after a few SFT steps without rollouts on spoken questions (demo items 3-18 in the seed
    schema), trained as ``policy: interleaved`` by folder."""
    out = tmp_path_factory.mktemp("warm-native")
    rows = [json.loads(line) for line in (DEMO / "items.jsonl").read_text().splitlines()[2:18]]
    data = out / "spoken.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "<|audio|>"}],
                                        "audios": [str(DEMO / r["audio"])], "question_text": r["prompt"],
                                        "sft_target_text": f"The answer is {r['reference'] or 'no'}."}) + "\n"
                            for r in rows))
    cfg = load_config("tiny-interleaved-native", {
        "policy": "interleaved", "policy_args": {"path": str(saved), "codec": CODEC, "pattern": "4 8"},
        "data": str(data), "mode": "sft", "sft_rollouts": False, "max_steps": 8, "prompts_per_step": 8, "lr": 3e-3,
        "output_dir": str(out / "run")})
    train(cfg, log=lambda m: None)
    return out / "run" / "checkpoint" / "trainer.pt"


def test_a_saved_checkpoint_loads_back_by_folder(saved):
    loaded = build_native_policy(path=str(saved), codec=CODEC, pattern="4 8")
    original = build_tiny_native_policy(pattern=(4, 8))
    assert loaded.spec == original.spec
    prompt = ask(loaded, "what is two plus two?")
    assert prompt == ask(original, "what is two plus two?")
    with torch.no_grad():
        a = loaded.model(input_ids=torch.tensor([prompt])).logits
        b = original.model(input_ids=torch.tensor([prompt])).logits
    assert torch.allclose(a, b, atol=1e-6)
    vita = build_native_policy(path=str(saved), codec=CODEC, codec_args={"text_front_end": False},
                               preset="vita-audio")
    assert vita.spec.pattern == (1, 10, 4, 10) and vita.spec.marked and vita.spec.markers_in_chunk
    assert vita.codec.encode_text("x") is None


def test_eval_answers_demo_items_in_both_channels(saved, warm, tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from evalsuite.adapters import Request, build_adapter

    losses = [float(r["loss_sft"]) for r in read_log(warm.parent.parent)]
    assert losses[-1] < losses[0] - 0.5, losses
    adapter = build_adapter("interleaved", {"path": str(saved), "codec": CODEC, "pattern": "4 8",
                                            "checkpoint": str(warm), "max_new_tokens": 48})
    rows = [json.loads(line) for line in (DEMO / "items.jsonl").read_text().splitlines()[:2]]
    requests = []
    for row in rows:
        audio, rate = sf.read(DEMO / row["audio"], dtype="float32")
        requests.append(Request(id=row["id"], audio=audio, sample_rate=rate))
    responses = adapter.respond(requests)
    for response in responses:
        assert response.error is None and response.meta["question_source"] == "audio"
        assert response.text and response.meta["speech_tokens"] > 0
        assert response.sample_rate == FrameCodec().sample_rate and len(response.audio) > 0
    assert adapter.name == f"{saved.name}-{warm.parent.parent.name}"
    assert adapter.info()["policy_info"]["pattern"] == "4 8"
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--benchmark", "demo", "--model", "interleaved", "--model-arg",
                                      f"path={saved}", "--model-arg", f"codec={CODEC}", "--model-arg", "pattern=4 8",
                                      "--model-arg", "max_new_tokens=32", "--limit", "2", "-o", str(out),
                                      "--no-progress", "--no-leaderboard"])
    assert result.exit_code in (0, 1), result.output
    samples = [json.loads(line) for line in (out / "samples.jsonl").open()]
    assert len(samples) == 2 and all(s["response.error"] is None and s["response.text"] for s in samples)
    assert json.loads((out / "results.json").read_text())["model"]["settings"]["policy"] == "interleaved"


# ------------------------------------------------------------------------------------------------ errors
def test_checkpoint_errors_are_one_line(tmp_path, saved):
    from transformers import LlamaConfig, LlamaForCausalLM, Wav2Vec2Config, Wav2Vec2Model

    encoder = tmp_path / "wav2vec2"
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                 conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
                                 num_conv_pos_embeddings=4)).save_pretrained(encoder)
    text_only = tmp_path / "text-only"
    tok = tiny_native_tokenizer(["hello there"], speech_vocab=0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(text_only)
    tok.save_pretrained(text_only)
    cases = [({"path": str(encoder)}, "is a wav2vec2 checkpoint \\(Wav2Vec2Model\\), not a causal LM"),
             ({"path": str(text_only)}, "no speech tokens named"),
             ({"path": str(tmp_path / "missing")}, "does not exist"),
             ({"path": "no-such-org/no-such-voice-model", "local_files_only": True}, "cannot load checkpoint"),
             ({"path": str(text_only), "preset": "glm4"}, "unknown preset"),
             ({"path": str(saved), "codec": "align.nowhere:Codec"}, "cannot import codec"),
             ({"path": str(saved), "markers": "each_run", "markers_in_chunk": True, "pattern": "2 2"},
              "need >= 3 positions")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            build_native_policy(**kwargs)
        assert "\n" not in str(info.value), str(info.value)


def test_random_policy_at_glm_4_voice_shape():
    """GLM-4-Voice-9B's shape in GlmForCausalLM (built on the meta device: shapes only, no memory)."""
    policy = build_random_native_policy("real", device="meta")
    n = sum(p.numel() for p in policy.model.parameters())
    h, f, layers, vocab, kv = 4096, 13696, 40, 168960, 2 * 128
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * f + 2 * h  # q, k+v (with bias), o, mlp, 2 norms
    assert type(policy.model).__name__ == "GlmForCausalLM" and n == layers * per_layer + 2 * vocab * h + h
    assert 9.5e9 < n < 9.6e9  # GLM-4-9B's 9.4 B + 16384 speech rows (x 2: untied)
    assert policy.spec.speech_vocab_size == 16384 and policy.grammar.vocab_size == 168960
    assert policy.spec.eos_id == policy.tokenizer.convert_tokens_to_ids("<|user|>")
