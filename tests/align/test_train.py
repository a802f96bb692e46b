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
    assert row["step"] == 3 and float(read_log(out)[0]["kl_text"]) >= 0  # KL against the adapters-off model


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path):
    """DDP with the same script: each process its own prompts, gradients summed, one λ, rank 0 logs and saves."""
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", str(_free_port()),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cli", "align",
              "--config", "tiny", "--max-steps", "2", "--output-dir", str(out)]
    done = subprocess.run(launch, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_log(out)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    # λ and the gates come from all 2 x 2 groups: the same λ on every process, so only one log
    assert float(rows[0]["loss"]) == float(rows[0]["loss"])


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
    base = {"mode": "wavalign", "max_steps": 3, "prompts_per_step": 3, "lr": 3e-3}
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
