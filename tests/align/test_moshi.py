"""The parallel-stream family (align/moshi.py) on tiny random models of transformers' Moshi and Mimi classes (CPU)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import killed_and_resumed_align, read_log, tone

from align.moshi import MoshiPolicy, build_moshi_policy, build_tiny_moshi_policy, save_tiny_moshi
from align.objectives import hybrid_loss
from align.policy import SPEECH, TEXT, PolicyAdapter

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "benchmarks" / "align" / "train.jsonl"
CORPUS = ["What is two plus two?", "Two plus two is four.", "How many legs does a spider have?",
          "A spider has eight legs.", "hello there, how are you today?"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy() -> MoshiPolicy:
    return build_tiny_moshi_policy(CORPUS, seed=0)


@pytest.fixture(scope="module")
def prompt(policy):
    return policy.build_prompt([{"role": "user", "content": "What is two plus two?"}])


@pytest.fixture(scope="module")
def rollouts(policy, prompt):
    groups = policy.generate([prompt], 3, temperature=0.8, top_p=0.9, max_new_tokens=9, seed=3)
    return [t for g in groups for t in g], [list(x) for x in policy.last_generation_logp]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """The first three rows of the align recipe (keeps Piper's work for prompts and targets small)."""
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("\n".join(TRAIN.read_text(encoding="utf-8").splitlines()[:3]) + "\n", encoding="utf-8")
    return path


def direct_logprobs(policy: MoshiPolicy, traj) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Log-probs of one trajectory by a separate route: transformers' own delay pattern, one unpadded forward of
    MoshiForConditionalGeneration, then the depth decoder position by position. Returns (text [N], K x codes)."""
    model, K, pad = policy.model, policy.K, policy.audio_vocab_size
    p = traj.prompt_ids
    text_ids, codes = MoshiPolicy.split(traj)
    n, P = len(text_ids), len(p)
    silence = policy.silence()
    moshi = torch.tensor([list(p.moshi[k]) + codes[k] + [pad] for k in range(K)])[None]  # undelayed, P+N frames
    user = torch.tensor([list(p.user[k]) + [silence[k]] * n for k in range(K)])[None]
    L = P + n
    moshi_d = model.build_delay_pattern_mask(moshi, bos_token_id=pad, pad_token_id=pad, max_length=L + 1)[0]
    user_d = model.build_delay_pattern_mask(user, bos_token_id=pad, pad_token_id=pad, max_length=L + 1)[0]
    text = torch.tensor(list(p.text) + text_ids)[None]
    with torch.no_grad():
        out = model(input_ids=text[:, :L - 1], moshi_audio_codes=moshi_d[:, :, :L - 1],
                    user_audio_codes=user_d[:, :, :L - 1])
        text_lp = out.logits[0, P - 1:L - 1].log_softmax(-1).gather(-1, text[0, P:, None]).squeeze(-1)
        per_position = []
        for t in range(P, L):
            depth_in = torch.cat([text[:, t:t + 1], moshi_d[:, :K - 1, t]], dim=1)
            logits = model.depth_decoder(input_ids=depth_in, last_hidden_state=out.last_hidden_state[:, t - 1:t],
                                         attention_mask=torch.ones_like(depth_in)).logits[0]
            target = moshi_d[0, :, t].clamp(max=pad - 1)
            per_position.append(logits.log_softmax(-1).gather(-1, target[:, None]).squeeze(-1))
    lp = torch.stack(per_position)  # [N, K]
    return text_lp, [lp[:n - 1, 0]] + [lp[1:, k] for k in range(1, K)]


# ------------------------------------------------------------------------------------------------ layout
def test_streams_channels_and_speech(policy, rollouts):
    trajs, _ = rollouts
    assert isinstance(policy, PolicyAdapter) and policy.hears_audio
    json.dumps(policy.info())
    for traj in trajs:
        n = len(traj.stream("text"))
        assert list(traj.streams) == ["text"] + [f"audio_{k}" for k in range(policy.K)]
        assert all(len(traj.stream(f"audio_{k}")) == n - 1 for k in range(policy.K))
        assert traj.channels == [TEXT] * n + [SPEECH] * (policy.K * (n - 1))
        assert traj.speech_tokens == [traj.stream(f"audio_{k}") for k in range(policy.K)]
        assert len(traj.weights) == len(traj.completion_ids)
        audio, rate = policy.decode_speech(traj.speech_tokens)
        assert rate == 24000 and len(audio) == (n - 1) * 1920 and np.isfinite(audio).all()
    # seeded: the same draw; temperature 0: greedy, every rollout the same
    again = policy.generate([trajs[0].prompt_ids], 3, temperature=0.8, top_p=0.9, max_new_tokens=9, seed=3)[0]
    assert [t.completion_ids for t in again] == [t.completion_ids for t in trajs]
    greedy = policy.generate([trajs[0].prompt_ids], 2, temperature=0.0, max_new_tokens=6)[0]
    assert greedy[0].completion_ids == greedy[1].completion_ids


def test_logprobs_follow_generation_and_a_direct_forward(policy, rollouts):
    trajs, sampled = rollouts
    logp, mask, channels = policy.logprobs(trajs)
    for i, traj in enumerate(trajs):
        n_flat = len(traj.completion_ids)
        assert mask[i, :n_flat].all() and not mask[i, n_flat:].any()
        assert channels[i, :n_flat].tolist() == traj.channels
        # the log-probs of the sampled tokens under the logits generate sampled them from
        assert torch.allclose(logp[i, :n_flat], torch.tensor(sampled[i]), atol=1e-4)
        # and a direct computation through the transformers model, per channel and per codebook
        text_lp, code_lp = direct_logprobs(policy, traj)
        assert torch.allclose(logp[i, slice(*traj.streams["text"])], text_lp, atol=1e-4)
        for k in range(policy.K):
            assert torch.allclose(logp[i, slice(*traj.streams[f"audio_{k}"])], code_lp[k], atol=1e-4)


def test_an_answer_ends_at_its_end_token(policy, prompt):
    model = copy.deepcopy(policy.model)
    with torch.no_grad():
        model.decoder.lm_head.weight[policy.end_id] += 5.0  # the text head now prefers the end token
    ender = MoshiPolicy(model, policy.tokenizer, text_pad_id=policy.text_pad_id, text_epad_id=policy.text_epad_id,
                        end_id=policy.end_id)
    (traj,) = ender.generate([prompt], 1, temperature=0.0, max_new_tokens=8)[0]
    assert traj.finished and traj.stream("text") == [policy.end_id] and traj.speech_tokens == [[]] * policy.K
    logp, _, _ = ender.logprobs([traj])
    assert torch.allclose(logp[0, :1], torch.tensor(ender.last_generation_logp[0]), atol=1e-5)
    cut = policy.generate([prompt], 1, temperature=0.0, max_new_tokens=5)[0][0]
    assert not cut.finished and len(cut.stream("text")) == 5
    # a run of end_pad_frames paddings after a word ends it too
    p = policy.text_pad_id
    assert policy._ends([7, p] + [p] * 24) and not policy._ends([p] * 30) and not policy._ends([7] + [p] * 23)


def test_sft_target_layout(policy, prompt):
    target = policy.sft_target(prompt, "Two plus two is four.")
    text, codes = MoshiPolicy.split(target)
    speech = policy.speak("Two plus two is four.")
    assert codes == speech and len(text) == len(speech[0]) + 1 and text[-1] == policy.end_id
    words = [t for t in text if t not in (policy.text_pad_id, policy.text_epad_id, policy.end_id)]
    assert words == policy.tokenizer("Two plus two is four.", add_special_tokens=False)["input_ids"]
    assert target.text == "Two plus two is four." and target.finished
    assert policy.text_epad_id in text and text.index(words[0]) == 0  # the first word starts the answer
    # weights: text 1, paddings 0.5, codebooks 100:1:1:1 sharing 1 per frame
    w = target.weights
    pads = (policy.text_pad_id, policy.text_epad_id)
    assert w[:len(text)] == [0.5 if t in pads else 1.0 for t in text]
    span = target.streams["audio_0"]
    assert w[span[0]] == pytest.approx(100 / 103) and w[target.streams["audio_1"][0]] == pytest.approx(1 / 103)


# ------------------------------------------------------------------------------------------------ losses
def _hook_audio_logits(policy):
    captured = []

    def hook(module, inputs, output):
        if output.logits.requires_grad:
            output.logits.retain_grad()
            captured.append(output.logits)

    return policy.model.depth_decoder.register_forward_hook(hook), captured


def test_grpo_po_text_reaches_text_positions_only(policy, rollouts):
    trajs, _ = rollouts
    model = policy.model
    model.zero_grad(set_to_none=True)
    handle, captured = _hook_audio_logits(policy)
    try:
        logp, mask, channels = policy.logprobs(trajs)
        loss, _ = hybrid_loss("po-text", logp=logp, adv=[1.0, -0.5, -0.5], mask=mask, channels=channels)
        loss.backward()
    finally:
        handle.remove()
    assert model.decoder.lm_head.weight.grad.abs().sum() > 0
    heads = model.depth_decoder.lm_heads.weight.grad
    assert heads is None or heads.abs().sum() == 0
    (audio_logits,) = captured
    assert audio_logits.grad is None or audio_logits.grad.abs().sum() == 0  # d loss / d audio logits == 0
    assert all(p.grad is None for p in model.audio_encoder.parameters())  # Mimi is frozen
    model.zero_grad(set_to_none=True)


def test_sft_reaches_every_codebook_and_weights_as_by_hand(policy, prompt):
    model = policy.model
    target = policy.sft_target(prompt, "Two plus two is four.")
    model.zero_grad(set_to_none=True)
    logp, mask, _ = policy.logprobs([target])
    weights = torch.tensor([target.weights])
    loss, _ = hybrid_loss("sft", sft_logp=logp, sft_mask=mask, sft_weights=weights)
    loss.backward()
    assert model.decoder.lm_head.weight.grad.abs().sum() > 0
    heads = model.depth_decoder.lm_heads.weight.grad
    assert all(heads[k].abs().sum() > 0 for k in range(policy.K))
    model.zero_grad(set_to_none=True)

    # by hand: per-stream mean NLLs weighted by the stream weights, over the summed weights
    nll = {name: -logp[0, a:b].detach() for name, (a, b) in target.streams.items()}
    text = target.stream("text")
    w_text = torch.tensor([0.5 if t in (policy.text_pad_id, policy.text_epad_id) else 1.0 for t in text])
    frames = len(text) - 1

    def by_hand(cb: list[float]) -> float:
        cb = [c / sum(cb) for c in cb]
        total = (w_text * nll["text"]).sum() + sum(cb[k] * nll[f"audio_{k}"].sum() for k in range(policy.K))
        return float(total / (w_text.sum() + frames * sum(cb)))

    assert float(loss.detach()) == pytest.approx(by_hand([100, 1, 1, 1]), rel=1e-5)
    other = MoshiPolicy(model, policy.tokenizer, text_pad_id=policy.text_pad_id, text_epad_id=policy.text_epad_id,
                        end_id=policy.end_id, codebook_weights=[1, 2, 3, 4])
    target2 = other.sft_target(prompt, "Two plus two is four.")
    with torch.no_grad():
        logp2, mask2, _ = other.logprobs([target2])
        loss2, _ = hybrid_loss("sft", sft_logp=logp2, sft_mask=mask2, sft_weights=torch.tensor([target2.weights]))
    assert float(loss2) == pytest.approx(by_hand([1, 2, 3, 4]), rel=1e-5)
    assert float(loss2) != pytest.approx(float(loss.detach()), rel=1e-3)
    with pytest.raises(ValueError, match="codebook_weights"):
        MoshiPolicy(model, policy.tokenizer, text_pad_id=policy.text_pad_id, codebook_weights=[1, 2])


# ------------------------------------------------------------------------------------------------ prompts
def test_a_spoken_seed_row_reaches_the_user_stream(policy, tmp_path):
    from align.data import read_examples
    from align.train import _prompt
    from rewards.audio import resample

    q, a = tone(1.0, 16000, 220.0), tone(0.8, 24000, 330.0)
    sf.write(tmp_path / "q.wav", q, 16000)
    sf.write(tmp_path / "a.wav", a, 24000)
    row = {"messages": [{"role": "user", "content": "<|audio|>"}], "audios": ["q.wav"],
           "sft_target_text": "A tone.", "sft_target_audio": "a.wav"}
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    (example,), problems = read_examples(tmp_path / "d.jsonl")
    assert not problems
    p = _prompt(policy, example)  # what the loop builds: the policy hears audio
    mimi = policy.model.audio_encoder
    with torch.no_grad():
        expected = mimi.encode(torch.from_numpy(resample(q, 16000, 24000))[None, None],
                               num_quantizers=policy.K)[0][0].tolist()
        expected_a = mimi.encode(torch.from_numpy(a)[None, None], num_quantizers=policy.K)[0][0].tolist()
    assert p.sources == ["user:audio"] and len(p) == 1 + len(expected[0])
    assert [u[1:] for u in p.user] == expected  # the user codes are Mimi's encoding of the file
    assert set(p.text[1:]) == {policy.text_pad_id}
    assert all(set(m[1:]) == {s} for m, s in zip(p.moshi, policy.silence()))  # Moshi is silent meanwhile
    target = policy.sft_target(p, example.target_text, audio=example.target_audio)
    assert target.speech_tokens == expected_a
    logp, mask, _ = policy.logprobs([target])
    assert torch.isfinite(logp[mask]).all()


def test_multi_turn_and_bad_prompts(policy):
    one = policy.build_prompt([{"role": "user", "content": "What is two plus two?"}])
    two = policy.build_prompt([{"role": "user", "content": "What is two plus two?"},
                               {"role": "assistant", "content": "Two plus two is four."},
                               {"role": "user", "content": "What is two plus two?"}])
    answer = policy.layout("Two plus two is four.", policy.speak("Two plus two is four."))[0]
    user_frames = len(one) - 1
    assert len(two) == 1 + 2 * user_frames + len(answer)
    assert two.text[1 + user_frames:1 + user_frames + len(answer)] == answer
    assert two.sources == ["user:piper", "assistant:piper", "user:piper"]
    with pytest.raises(ValueError, match="no system prompt"):
        policy.build_prompt([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="1 <audio> placeholders in the messages, 0 audios"):
        policy.build_prompt([{"role": "user", "content": "<audio>"}])


# ------------------------------------------------------------------------------------------------ loading
def test_a_saved_tiny_model_loads_by_path_and_wrong_folders_fail_in_one_line(policy, rollouts, tmp_path):
    save_tiny_moshi(tmp_path / "tiny", CORPUS, seed=0)
    loaded = build_moshi_policy(path=str(tmp_path / "tiny"))
    assert (loaded.text_pad_id, loaded.text_epad_id, loaded.end_id) == (policy.text_pad_id, policy.text_epad_id,
                                                                        policy.end_id)
    trajs, _ = rollouts
    with torch.no_grad():
        assert torch.allclose(loaded.logprobs(trajs)[0], policy.logprobs(trajs)[0], atol=1e-5)

    from transformers import LlamaConfig

    LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path / "llama")
    for folder, message in ((tmp_path / "llama", "holds a LlamaForCausalLM checkpoint, not Moshi"),
                            (tmp_path / "missing", "no config.json")):
        with pytest.raises(ValueError, match=message) as err:
            build_moshi_policy(path=str(folder))
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ the loop
@pytest.mark.parametrize("mode", ["wavalign", "fixed", "po-all", "po-text", "sft"])
def test_each_mode_trains_two_steps(tmp_path, small_data, mode):
    from align.train import load_config, train

    out = tmp_path / mode
    train(load_config("tiny-moshi", {"mode": mode, "max_steps": 2, "data": str(small_data),
                                     "output_dir": str(out)}), log=lambda m: None)
    rows = read_log(out)
    assert [r["step"] for r in rows] == ["1", "2"]
    last = rows[-1]
    assert float(last["loss"]) == float(last["loss"])  # finite
    assert float(last["kl_text"]) >= 0 and float(last["kl_speech"]) >= 0
    assert float(last["len_speech"]) == 4 * (float(last["len_text"]) - 1)  # K codes per frame but the last
    if mode in ("po-text", "po-all"):
        assert (float(last["w_sft"]), float(last["w_rl"])) == (0.0, 1.0)
    elif mode == "sft":
        assert (float(last["w_sft"]), float(last["w_rl"])) == (1.0, 0.0)
    assert (out / "checkpoint" / "trainer.pt").is_file()
    state = torch.load(out / "checkpoint" / "trainer.pt", weights_only=False)
    assert not any(k.startswith("audio_encoder.") for k in state["weights"])  # Mimi is frozen, not saved


def test_resume_reproduces_the_losses(tmp_path, small_data):
    from align.train import load_config, train

    base = {"max_steps": 4, "save_every": 2, "mode": "wavalign", "data": str(small_data)}
    train(load_config("tiny-moshi", {**base, "output_dir": str(tmp_path / "straight")}), log=lambda m: None)
    train(load_config("tiny-moshi", {**base, "max_steps": 2, "output_dir": str(tmp_path / "split")}),
          log=lambda m: None)
    train(load_config("tiny-moshi", {**base, "output_dir": str(tmp_path / "split"), "resume": True}),
          log=lambda m: None)
    straight, split = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert [r["step"] for r in split] == ["1", "2", "3", "4"]
    for a, b in zip(straight, split):
        for key in ("loss", "loss_sft", "loss_grpo", "reward_mean", "grad_norm", "len_speech"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-7), (a["step"], key)


@pytest.mark.slow
def test_cli_kill_and_resume(tmp_path, small_data):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    common = [sys.executable, "-m", "cli", "align", "--config", "tiny-moshi", "--max-steps", "4", "--set",
              "save_every=1", "--set", f"data={small_data}"]
    straight = subprocess.run(common + ["--output-dir", str(tmp_path / "straight")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    resumed = killed_and_resumed_align(common[4:], out, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr
    a, b = read_log(tmp_path / "straight"), read_log(out)
    assert [r["step"] for r in b] == ["1", "2", "3", "4"]
    for x, y in zip(a, b):
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-5, abs=1e-7), x["step"]


# ------------------------------------------------------------------------------------------------ eval
DEMO = REPO / "benchmarks" / "demo" / "items.jsonl"
CHEAP_DEMO = f"""name: demo-cheap
version: 1
description: the demo's items with cheap scorers (rules on the text, loudness of the speech)
source: {{local: {DEMO}}}
fields: {{id: id, audio: audio, prompt: prompt, reference: reference, style: style, meta: [category, choices]}}
scorers:
  - {{name: refusal, on: text}}
  - {{name: loudness}}
metrics:
  - {{name: refusal_rate, column: refusal.value, scale: 100}}
primary: refusal_rate
"""


def _eval(tmp_path: Path, benchmark: str) -> tuple[Path, list[dict]]:
    from typer.testing import CliRunner

    from cli import app

    model_dir = save_tiny_moshi(tmp_path / "moshi", CORPUS, seed=0)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--benchmark", benchmark, "--model", "moshi", "--model-arg",
                                      f"path={model_dir}", "--model-arg", "max_new_tokens=10", "--limit", "4",
                                      "-o", str(out), "--no-leaderboard"])
    assert result.exit_code in (0, 1), result.output[-2000:]
    samples = [json.loads(line) for line in (out / "samples.jsonl").open()]
    assert len(samples) == 4
    for s in samples:  # both channels: the text stream's words and Mimi's 24 kHz speech (9 frames of 10)
        assert s["response.error"] is None and s["response.text"]
        audio, rate = sf.read(out / s["response.audio"])
        assert rate == 24000 and len(audio) == 9 * 1920
    saved = json.loads((out / "results.json").read_text())
    assert saved["model"]["name"] == "moshi-moshi" and saved["model"]["settings"]["hear"] == "audio"
    assert saved["model"]["settings"]["policy_info"]["counts"]["user_turns_audio"] == 4  # heard as audio
    return out, samples


def test_eval_answers_the_demo_items_in_both_channels(tmp_path):
    definition = tmp_path / "demo-cheap.yaml"
    definition.write_text(CHEAP_DEMO, encoding="utf-8")
    _, samples = _eval(tmp_path, str(definition))
    assert all(s["loudness.value"] is not None for s in samples)


@pytest.mark.slow
def test_eval_of_the_demo_benchmark_with_its_scorers(tmp_path):
    """`wavalign eval --benchmark demo --model moshi --model-arg path=DIR --limit 4`, every demo scorer."""
    out, samples = _eval(tmp_path, "demo")
    assert all("asr.value" in s for s in samples)
