"""The align loop on the tiny random interleaved model: every mode runs, logs, checkpoints and resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_log

from align.train import load_config, train

REPO = Path(__file__).resolve().parents[2]




pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("mode", ["wavalign", "fixed", "po-all", "po-text", "sft"])
def test_each_mode_trains_and_logs(tmp_path, mode):
    cfg = load_config("tiny", {"mode": mode, "max_steps": 2, "output_dir": str(tmp_path / mode)})
    train(cfg, log=lambda m: None)
    rows = read_log(tmp_path / mode)
    assert [r["step"] for r in rows] == ["1", "2"]
    for col in ("reward_mean", "reward_std", "frac_zero_var", "lambda", "lambda_raw", "loss", "kl_text",
                "kl_speech", "len_text", "len_speech", "reward.answer_mean", "reward.lively_mean", "seconds"):
        assert col in rows[0], col
    last = rows[-1]
    assert float(last["loss"]) == float(last["loss"])  # finite, not NaN
    w_sft, w_rl = float(last["w_sft"]), float(last["w_rl"])
    if mode == "sft":
        assert (w_sft, w_rl) == (1.0, 0.0)
    elif mode in ("po-all", "po-text"):
        assert (w_sft, w_rl) == (0.0, 1.0)
    elif mode == "fixed":
        assert w_rl == pytest.approx(0.7) and w_sft == pytest.approx(0.3)
    else:
        assert w_rl == pytest.approx(float(last["lambda"])) and 0 <= w_rl <= 0.8
    assert float(last["kl_text"]) >= 0 and float(last["kl_speech"]) >= 0  # measured in every mode
    assert (tmp_path / mode / "checkpoint" / "trainer.pt").is_file()
    assert (tmp_path / mode / "curves.png").stat().st_size > 1000
    saved = json.loads((tmp_path / mode / "config.json").read_text())
    assert saved["mode"] == mode and saved["group_size"] == 4


def test_resume_gives_the_same_next_steps_as_an_uninterrupted_run(tmp_path):
    base = {"max_steps": 4, "save_every": 2, "mode": "wavalign"}
    train(load_config("tiny", {**base, "output_dir": str(tmp_path / "straight")}), log=lambda m: None)
    train(load_config("tiny", {**base, "max_steps": 2, "output_dir": str(tmp_path / "split")}), log=lambda m: None)
    train(load_config("tiny", {**base, "output_dir": str(tmp_path / "split"), "resume": True}), log=lambda m: None)
    straight, split = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert [r["step"] for r in split] == ["1", "2", "3", "4"]
    for a, b in zip(straight, split):
        for key in ("loss", "loss_sft", "loss_grpo", "reward_mean", "lambda", "grad_norm", "len_speech"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-7), (a["step"], key)


def test_bad_rows_are_reported_and_skipped(tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [{"messages": [{"role": "user", "content": "What is 2 plus 2?"}], "sft_target_text": "Four."},
            {"messages": [{"role": "user", "content": "<audio>"}], "audios": ["missing.wav"],
             "sft_target_text": "x"},
            {"messages": [{"role": "user", "content": "Say hi."}], "sft_target_text": ""},
            {"prompt": "What is 3 plus 3?", "reference": "Six."},
            "not an object"]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    messages = []
    cfg = load_config("tiny", {"data": str(data), "max_steps": 1, "output_dir": str(tmp_path / "run")})
    train(cfg, log=messages.append)
    problems = [m for m in messages if m.startswith("data:")]
    assert any("line 2: missing audio missing.wav" in m for m in problems)
    assert any("line 3: empty target" in m for m in problems)
    assert any("line 5" in m for m in problems)
    assert len(problems) == 3 and len(read_log(tmp_path / "run")) == 1


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="did you mean"):
        load_config("tiny", {"mode": "wav-align"})
    with pytest.raises(ValueError, match="no align config 'tinyy'"):
        load_config("tinyy")
    train(load_config("tiny", {"max_steps": 1, "output_dir": str(tmp_path / "r")}), log=lambda m: None)
    with pytest.raises(ValueError, match="--resume"):
        train(load_config("tiny", {"max_steps": 1, "output_dir": str(tmp_path / "r")}), log=lambda m: None)


@pytest.mark.slow
def test_cli_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    common = [sys.executable, "-m", "cli", "align", "--config", "tiny", "--max-steps", "5", "--set", "save_every=1"]
    straight = subprocess.run(common + ["--output-dir", str(tmp_path / "straight")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(common + ["--output-dir", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "log.csv").exists() and len((out / "log.csv").read_text().splitlines()) >= 3:  # steps 1-2 logged
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(common + ["--output-dir", str(out), "--resume"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr
    a, b = read_log(tmp_path / "straight"), read_log(out)
    assert [r["step"] for r in b] == ["1", "2", "3", "4", "5"]
    for x, y in zip(a, b):
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-5, abs=1e-7), x["step"]


def test_lora_trains_only_adapters_and_resumes(tmp_path):
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    out = tmp_path / "lora"
    train(load_config("tiny", {"max_steps": 2, "output_dir": str(out), "lora": lora}), log=lambda m: None)
    state = torch.load(out / "checkpoint" / "trainer.pt", weights_only=False)
    assert state["weights"] and all("lora_" in name for name in state["weights"])
    row = train(load_config("tiny", {"max_steps": 3, "output_dir": str(out), "lora": lora, "resume": True}),
                log=lambda m: None)
    rows = read_log(out)
    assert row["step"] == 3 and rows[0]["kl_text"] == ""  # kl_every 10: not measured at step 1 ...
    assert float(rows[1]["kl_text"]) >= 0  # ... but at a run's last step, against the adapters-off model


@pytest.mark.slow
def test_two_processes_give_the_gradients_parameters_and_lambda_of_one(tmp_path):
    """DDP with the same script (each process its own prompts, losses normalised by global counts, gradients summed,
    λ from every process's groups, rank 0 logs and saves) against one process over the same prompts: the same
    gradients, parameters and λ. The test policy (ddp_policy.py) samples each prompt alone, seeded by the prompt and
    the step, so both runs see the same rollouts; grad_clip 0 so the saved gradients are the raw sums."""
    common = ["-m", "cli", "align", "--config", "tiny", "--max-steps", "3", "--set", "grad_clip=0",
              "--set", "policy=ddp_policy:build_ddp_test_policy", "--set", "lr=3e-3"]
    args = "hidden_size: 64, layers: 2, text_chunk: 4, speech_chunk: 8"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "align")])}
    runs = {}
    for name, prefix, per_process in (
        ("one", [sys.executable], 4),
        ("two", [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                 "--main_process_port", str(_free_port()), "--num_machines", "1", "--mixed_precision", "no",
                 "--dynamo_backend", "no"], 2),
    ):
        out, grads = tmp_path / name, tmp_path / f"{name}-grads"
        grads.mkdir()
        cmd = [*prefix, *common, "--output-dir", str(out), "--set", f"prompts_per_step={per_process}",
               "--set", f"policy_args={{grads_dir: {grads}, {args}}}"]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = (out, grads)
    (one, one_grads), (two, two_grads) = runs["one"], runs["two"]
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    a, b = read_log(one), read_log(two)
    assert [r["step"] for r in b] == ["1", "2", "3"]
    for x, y in zip(a, b):  # λ and the gates come from all 4 groups; the losses from all 4 prompts' rollouts
        for key in ("lambda", "lambda_raw", "gate_v", "gate_g", "reward_mean", "loss", "loss_sft", "loss_grpo",
                    "grad_norm", "len_text", "len_speech"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-5, abs=1e-7), (x["step"], key)
    assert 0 < float(a[-1]["lambda"]) and float(a[-1]["loss_grpo"]) != 0  # the RL term takes part
    for step in (1, 2):
        g1 = torch.load(one_grads / f"grads_step{step}_rank0.pt")
        for rank in (0, 1):  # every process steps with the summed gradients
            g2 = torch.load(two_grads / f"grads_step{step}_rank{rank}.pt")
            assert g1.keys() == g2.keys() and g1
            for n in g1:
                torch.testing.assert_close(g2[n], g1[n], rtol=1e-4, atol=1e-7,
                                       msg=lambda m, n=n, step=step: f"step {step} {n}: {m}")
    w1 = torch.load(one / "checkpoint" / "trainer.pt", weights_only=False)
    w2 = torch.load(two / "checkpoint" / "trainer.pt", weights_only=False)
    for n in w1["weights"]:  # AdamW divides by sqrt(v): a tiny gradient's last-digit differences (summed in another
        # order over processes) move its parameter by a little of lr (3e-3) per step, so 1% of lr is allowed
        torch.testing.assert_close(w2["weights"][n], w1["weights"][n], rtol=1e-4, atol=3e-5,
                                   msg=lambda m, n=n: f"{n}: {m}")
    assert w2["lambda"]["lam"] == pytest.approx(w1["lambda"]["lam"], rel=1e-6)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_numbers_written_the_yaml_1_1_way_are_numbers():
    assert load_config("tiny", {"lr": "1e-4"}).lr == 1e-4  # `--set lr=1e-4`: YAML 1.1 reads it as a string
    with pytest.raises(ValueError, match="expected a number"):
        load_config("tiny", {"lr": "fast"})


def test_the_reward_judges_against_the_short_answer():
    """A row's ``answer`` (``12``) is what the reward's judge compares with, not the whole target sentence: the
    reference judge finds "5 plus 7 is thirteen." close to "5 plus 7 is twelve." but checks the number against 12."""
    from align.data import read_examples
    from align.policy import TEXT, Trajectory
    from align.train import score_rollouts
    from rewards.reference_judge import judge_against_reference

    examples, problems = read_examples(REPO / "benchmarks" / "align" / "train.jsonl")
    assert not problems and all(e.answer for e in examples)
    (example,) = [e for e in examples if e.question_text == "What is 9 plus 3?"]
    assert (example.answer, example.judge_reference, example.target_text) == ("12", "12", "9 plus 3 is twelve.")
    assert judge_against_reference("9 plus 3 is thirteen.", example.target_text)[0] == 1.0  # why: the sentence
    seen = []

    class Recorder:
        requires = {"text"}

        def score(self, samples):
            seen.extend(samples)
            from rewards.base import Score

            return [Score(value=judge_against_reference(s.text, s.reference)[0]) for s in samples]

    trajs = [Trajectory([1], [5], [TEXT], text, [], True) for text in ("9 plus 3 is thirteen.", "It is 12.")]
    rewards, _ = score_rollouts(Recorder(), None, [example], [trajs], step=1)
    assert rewards == [[0.0, 1.0]] and {s.reference for s in seen} == {"12"}


def test_micro_batches_change_nothing_that_is_logged(tmp_path):
    """The same step in one micro-batch or several: same losses, weights and KL per channel (pooled by token
    counts, not summed over micro-batches)."""
    base = {"mode": "wavalign", "max_steps": 3, "prompts_per_step": 3, "lr": 3e-3, "kl_every": 1}
    train(load_config("tiny", {**base, "micro_batch_size": 16, "output_dir": str(tmp_path / "one")}),
          log=lambda m: None)
    train(load_config("tiny", {**base, "micro_batch_size": 5, "output_dir": str(tmp_path / "many")}),
          log=lambda m: None)
    for a, b in zip(read_log(tmp_path / "one"), read_log(tmp_path / "many")):
        assert float(b["w_rl"]) == pytest.approx(float(b["lambda"])) and float(b["w_sft"]) + float(b["w_rl"]) == 1
        for key in ("loss", "loss_sft", "loss_grpo", "w_rl", "w_sft", "kl_text", "kl_speech", "kl_all"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), (a["step"], key)
    assert float(read_log(tmp_path / "many")[-1]["kl_speech"]) > 0  # the policy moved: KL measured, not 0


def test_a_spoken_row_without_a_transcript_is_reported_for_a_text_policy(tmp_path):
    """The tiny policy takes text: a seed row whose user turn is only audio, with no question_text, is skipped with a
    message (never asked as an empty question); the other rows train."""
    import json

    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "q.wav", np.zeros(8000, dtype=np.float32), 16000)
    rows = [{"messages": [{"role": "user", "content": "<|audio|>"}], "audios": ["q.wav"],
             "sft_target_text": "Four."},
            {"messages": [{"role": "user", "content": "<|audio|>"}], "audios": ["q.wav"],
             "question_text": "What is two plus two?", "sft_target_text": "Two plus two is four."},
            {"prompt": "What is three plus three?", "reference": "Six."}]
    data = tmp_path / "seed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    messages: list[str] = []
    train(load_config("tiny", {"data": str(data), "mode": "sft", "sft_rollouts": False, "max_steps": 1,
                               "output_dir": str(tmp_path / "run")}), log=messages.append)
    assert any("line1: a spoken user turn without question_text" in m and "skipped" in m for m in messages), messages
    assert not any("line2" in m for m in messages)
    assert len(read_log(tmp_path / "run")) == 1


class NeverScorer:
    """A reward that can never score (every value None, with its reason)."""

    name, version, higher_is_better = "never", "1", True
    requires = frozenset({"text"})

    def score(self, samples):
        from rewards.base import Score

        return [Score(value=None, error="cannot score") for _ in samples]

    def info(self):
        from rewards.base import ScorerInfo

        return ScorerInfo(self.name, self.version, True, self.requires, {})


def test_a_step_whose_rewards_all_fail_is_logged_and_the_run_goes_on(tmp_path):
    from rewards.registry import register

    register("never", "test_train:NeverScorer")
    messages: list[str] = []
    cfg = load_config("tiny", {"max_steps": 2, "output_dir": str(tmp_path / "run"),
                               "reward": {"components": [{"scorer": "never", "weight": 1.0}]}})
    train(cfg, log=messages.append)
    rows = read_log(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(r["reward_mean"] == "" and int(r["reward_none"]) == 8 for r in rows)  # None, never a number
    assert any("step 2: reward none" in m for m in messages), messages


BREAKDOWN = ("t_gen", "t_decode", "t_score", "t_logp", "t_kl", "t_backward", "t_opt")


@pytest.mark.parametrize("extra", [{"mode": "wavalign", "kl_every": 2}, {"mode": "sft", "sft_rollouts": False}])
def test_the_step_breakdown_adds_up_to_the_step(tmp_path, extra):
    """Each log row's parts (generation, speech decoding, scoring, log-prob forward, KL forward, backward,
    optimizer) add up to the step's seconds, leaving only the loop's glue; each scorer's time lies inside t_score."""
    train(load_config("tiny", {"max_steps": 3, "output_dir": str(tmp_path / "run"), **extra}), log=lambda m: None)
    rows = read_log(tmp_path / "run")
    for r in rows:
        parts = [k for k in BREAKDOWN if k in r]
        total, seconds = sum(float(r[k]) for k in parts), float(r["seconds"])
        assert all(float(r[k]) >= 0 for k in parts)
        assert seconds * 0.9 - 0.02 <= total <= seconds, (r["step"], total, seconds)
        if extra["mode"] == "sft":
            assert parts == ["t_logp", "t_backward", "t_opt"]
            continue
        assert parts == list(BREAKDOWN)
        per_scorer = [float(r[k]) for k in ("t_score_answer", "t_score_lively")]
        assert 0 < sum(per_scorer) <= float(r["t_score"])
        assert float(r["t_gen"]) > 0 and float(r["t_decode"]) > 0 and float(r["t_logp"]) > 0  # the prosody listens
        assert (float(r["t_kl"]) > 0) == (r["step"] in ("2", "3"))  # KL measured at steps 2 and 3 (the last) only
        assert float(r["seconds_score"]) == pytest.approx(float(r["t_decode"]) + float(r["t_score"]))


def _run(tmp_path, name, **overrides):
    out = tmp_path / name
    train(load_config("tiny", {"max_steps": 4, "lr": 3e-3, "output_dir": str(out), **overrides}), log=lambda m: None)
    weights = torch.load(out / "checkpoint" / "trainer.pt", weights_only=False)["weights"]
    return read_log(out), weights


COMPARED = ("reward_mean", "reward_std", "lambda", "loss", "loss_sft", "loss_grpo", "loss_kl", "grad_norm",
            "len_text", "len_speech")


@pytest.mark.parametrize("mode", ["wavalign", "sft"])
def test_kl_every_changes_no_loss_reward_or_parameter_when_beta_is_0(tmp_path, mode):
    """β = 0: KL is only measured, so measuring it every 3 steps (or never) gives exactly the losses, rewards,
    gradient norms and parameters of measuring it every step; the KL columns are empty on the skipped steps and
    equal on the others (the last step is always measured)."""
    every, sparse, never = (_run(tmp_path, f"kl{k}", mode=mode, kl_every=k) for k in (1, 3, 0))
    for a, b, c in zip(every[0], sparse[0], never[0]):
        for key in COMPARED:
            assert a[key] == b[key] == c[key], (a["step"], key)  # the same digits
        for key in ("kl_text", "kl_speech", "kl_all"):
            assert float(a[key]) >= 0 and c[key] == ""
            assert b[key] == (a[key] if a["step"] in ("3", "4") else ""), (a["step"], key)
    for name in every[1]:
        assert torch.equal(every[1][name], sparse[1][name]) and torch.equal(every[1][name], never[1][name]), name


def test_kl_in_the_loss_is_computed_every_step_whatever_kl_every(tmp_path):
    """β > 0: the KL is part of the loss, so kl_every does not apply: identical runs, KL and its loss every step."""
    (a_rows, a_w), (b_rows, b_w) = (_run(tmp_path, f"kl{k}", beta_text=0.5, beta_speech=0.5, kl_every=k)
                                    for k in (1, 0))
    for a, b in zip(a_rows, b_rows):
        for key in (*COMPARED, "kl_text", "kl_speech"):
            assert a[key] == b[key] and a[key] != "", (a["step"], key)
    assert float(a_rows[-1]["loss_kl"]) > 0
    assert all(torch.equal(a_w[n], b_w[n]) for n in a_w)


def test_a_step_s_gradient_is_the_whole_batch_loss_s_gradient(tmp_path, monkeypatch):
    """The loop runs forward and backward one micro-batch at a time, with normalisers counted from the trajectories
    before any forward pass. Its gradient equals that of the hybrid loss over the whole batch in one forward pass
    (rollouts and reference answers each in one batch, every count taken from the tensors), computed here."""
    import align.train as loop
    from align.objectives import flatten_advantages, group_advantages, hybrid_loss

    seen: dict = {}
    score_rollouts = loop.score_rollouts

    def record_rollouts(reward, policy, batch, groups, step, clock=None, **kwargs):
        seen.update(policy=policy, batch=batch, groups=groups)
        rewards, scores = score_rollouts(reward, policy, batch, groups, step, clock, **kwargs)
        seen["rewards"] = rewards
        return rewards, scores

    optimizer_step = loop._optimizer_step

    def check_gradients(config, params, optimizer, scheduler, world):
        got = [p.grad.clone() for p in params]
        policy = seen["policy"]
        optimizer.zero_grad(set_to_none=True)
        trajs = [t for g in seen["groups"] for t in g]
        targets = loop._sft_targets(policy, [loop._prompt(policy, e) for e in seen["batch"]], seen["batch"])
        adv, _ = group_advantages(seen["rewards"])
        logp, mask, channels = policy.logprobs(trajs)
        sft_logp, sft_mask, _ = policy.logprobs(targets)
        loss, _ = hybrid_loss("fixed", config.fixed_lambda, logp=logp, adv=flatten_advantages(adv), mask=mask,
                              channels=channels, sft_logp=sft_logp, sft_mask=sft_mask)
        loss.backward()
        for g, p in zip(got, params):
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-8)
        seen["checked"] = seen.get("checked", 0) + 1
        return optimizer_step(config, params, optimizer, scheduler, world)

    monkeypatch.setattr(loop, "score_rollouts", record_rollouts)
    monkeypatch.setattr(loop, "_optimizer_step", check_gradients)
    train(load_config("tiny", {"mode": "fixed", "max_steps": 2, "micro_batch_size": 3, "lr": 3e-3,
                               "output_dir": str(tmp_path / "run")}), log=lambda m: None)
    assert seen["checked"] == 2 and any(abs(a) > 0 for g in seen["rewards"] for a in group_advantages([g])[0][0])
