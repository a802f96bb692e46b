"""A trained align policy as an eval model (`align.adapter.PolicyAdapter`), and the SFT warm start without rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import read_log

from align.train import load_config, train
from evalsuite.adapters import Request, build_adapter
from evalsuite.benchmark import definitions_dir, read_benchmark
from evalsuite.eval import EvalConfig, run_eval

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "benchmarks" / "align" / "train.jsonl"
SPOKEN = REPO / "benchmarks" / "demo" / "items.jsonl"




pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    """A tiny policy after a few SFT steps without rollouts (the warm-start recipe)."""
    out = tmp_path_factory.mktemp("warm")
    cfg = load_config("tiny", {"mode": "sft", "sft_rollouts": False, "max_steps": 6, "prompts_per_step": 8,
                               "lr": 3e-3, "output_dir": str(out)})
    train(cfg, log=lambda m: None)
    return out


def test_sft_without_rollouts_fits_the_reference_answers_and_generates_nothing(warm):
    rows = read_log(warm)
    assert [r["step"] for r in rows] == [str(k) for k in range(1, 7)]
    assert "reward_mean" not in rows[0] and "seconds_generate" not in rows[0]  # no rollouts, no reward
    losses = [float(r["loss_sft"]) for r in rows]
    assert losses[-1] < losses[0] - 0.5, losses
    assert all(float(r["w_sft"]) == 1.0 and float(r["len_target"]) > 5 for r in rows)
    assert (warm / "checkpoint" / "trainer.pt").is_file() and (warm / "curves.png").is_file()


def test_sft_without_rollouts_resumes_exactly(tmp_path):
    base = {"mode": "sft", "sft_rollouts": False, "max_steps": 4, "save_every": 2, "prompts_per_step": 4}
    train(load_config("tiny", {**base, "output_dir": str(tmp_path / "a")}), log=lambda m: None)
    train(load_config("tiny", {**base, "max_steps": 2, "output_dir": str(tmp_path / "b")}), log=lambda m: None)
    train(load_config("tiny", {**base, "output_dir": str(tmp_path / "b"), "resume": True}), log=lambda m: None)
    straight, split = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [float(r["loss_sft"]) for r in split] == pytest.approx([float(r["loss_sft"]) for r in straight],
                                                                  rel=1e-5)


def _policy(checkpoint: Path | None):
    args = {"policy": "tiny", "data": str(TRAIN), "hidden_size": 64, "layers": 2, "text_chunk": 4,
            "speech_chunk": 8, "max_new_tokens": 40}
    if checkpoint:
        args["checkpoint"] = str(checkpoint)
    return build_adapter("policy", args)


def test_policy_adapter_answers_in_both_channels_from_a_checkpoint(warm):
    adapter = _policy(warm / "checkpoint" / "trainer.pt")
    assert adapter.name == f"tiny-{warm.name}"
    requests = [Request(id="a", text="What is 5 plus 7?"), Request(id="b", text="  "),
                Request(id="c", audio=np.zeros(10, dtype=np.float32), sample_rate=None)]
    first = adapter.respond(requests)
    assert first[0].error is None and first[0].text and first[0].meta["question_source"] == "text"
    assert first[0].meta["completion_tokens"] <= 40
    if first[0].meta["speech_tokens"]:
        assert first[0].audio is not None and first[0].sample_rate > 0 and len(first[0].audio) > 0
    assert "neither audio nor text" in first[1].error and first[1].text is None
    assert "sample rate" in first[2].error
    again = adapter.respond(requests[:1])  # greedy by default: the same answer
    assert again[0].text == first[0].text
    # the checkpoint's weights are used: the untrained policy answers differently
    assert _policy(None).respond(requests[:1])[0].text != first[0].text
    info = adapter.info()
    assert info["checkpoint"].endswith("trainer.pt") and info["temperature"] == 0.0


def test_policy_adapter_hears_spoken_questions_through_the_asr_front_end(warm):
    row = json.loads(SPOKEN.read_text(encoding="utf-8").splitlines()[0])
    audio, rate = sf.read(SPOKEN.parent / row["audio"], dtype="float32")
    adapter = _policy(warm / "checkpoint" / "trainer.pt")
    (response,) = adapter.respond([Request(id=row["id"], audio=audio, sample_rate=rate)])
    assert response.error is None and response.meta["question_source"] == "asr"
    transcript = response.meta["transcript"].lower()
    assert sum(w in transcript for w in row["prompt"].lower().split()) >= len(row["prompt"].split()) // 2


def test_eval_of_a_checkpoint_on_align_heldout(warm, tmp_path):
    benchmark = read_benchmark(definitions_dir() / "align-heldout.yaml")
    result = run_eval(benchmark, _policy(warm / "checkpoint" / "trainer.pt"), tmp_path / "eval",
                      EvalConfig(limit=3), progress=False, log=lambda m: None)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["n_items"] == 3 and saved["model"]["name"] == f"tiny-{warm.name}"
    assert saved["model"]["settings"]["policy"] == "tiny" and saved["model"]["settings"]["checkpoint"]
    iq = saved["metrics"]["iq_text"]
    assert iq["n"] + iq["n_failed"] == 3  # every item's text channel judged (None: no number to read in it)
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").open()]
    assert all(s["response.error"] is None and s["response.text"] for s in samples)
    assert result is not None
