"""The command line: typer's CliRunner for flags and errors, one real subprocess of the console script."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
from conftest import REPO, tone
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
EXAMPLE = REPO / "benchmarks" / "examples" / "spoken_answers"


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys, cli; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "score" in result.output


def test_score_with_a_model_free_scorer(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(1.0), 16000)
    (src / "b.wav").write_bytes(b"garbage")
    result = runner.invoke(app, ["score", str(src), "-o", str(tmp_path / "out"), "--scorers", "loudness",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "loudness.rms_dbfs" in result.output and "2 items, 1 with errors" in result.output
    rerun = runner.invoke(app, ["score", str(src), "-o", str(tmp_path / "out"), "--scorers", "loudness",
                                "--no-progress"])
    assert rerun.exit_code == 0 and "2 resumed" in rerun.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["score", "/no/such/dir"], "does not exist"),
        (["score", str(EXAMPLE), "--scorers", "qualty"], "did you mean 'quality'"),
        (["score", str(EXAMPLE), "--asr-backend", "kaldi"], "asr backend must be one of"),
        (["score", str(EXAMPLE), "--quality-backends", "pesq"], "quality backends must be among"),
        (["score", str(EXAMPLE), "--scorers", "quality", "--quality-backends", "utmos"], "--utmos-checkpoint"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no UTMOS weights in the hub cache
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_conflicting_rerun_is_a_usage_error(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(1.0), 16000)
    out = str(tmp_path / "out")
    assert runner.invoke(app, ["score", str(src), "-o", out, "--scorers", "loudness", "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["score", str(src), "-o", out, "--scorers", "loudness", "--max-seconds", "5",
                                 "--no-progress"])
    assert result.exit_code == 2 and "--overwrite" in result.output


@pytest.mark.slow
def test_console_script_scores_the_bundled_example(tmp_path):
    exe = shutil.which("wavalign") or str(REPO / ".venv" / "bin" / "wavalign")
    out = tmp_path / "out"
    done = subprocess.run([exe, "score", str(EXAMPLE / "manifest.jsonl"), "-o", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with (out / "scores.csv").open() as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"capital", "boiling", "planets", "greeting", "mismatch", "noisy"}
    for column in ("asr.wer_reference", "asr.wer_consistency", "asr.transcript", "quality.dnsmos_ovrl",
                   "quality.distillmos"):
        assert column in rows["capital"]
    assert float(rows["capital"]["asr.wer_consistency"]) == 0.0
    assert float(rows["mismatch"]["asr.wer_consistency"]) > 0.5  # the speech contradicts the text channel
    assert float(rows["noisy"]["quality.dnsmos_bak"]) < float(rows["capital"]["quality.dnsmos_bak"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["quality.distillmos"]["n_scored"] == 6
    assert summary["settings"]["scorers"]["asr"]["settings"]["model_id"].startswith("whisper-tiny.en")
    assert "asr.wer_consistency" in done.stdout  # the summary table


def test_composite_reward_from_a_yaml_config(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", tone(1.0, amp=0.1), 16000)
    config = tmp_path / "reward.yaml"
    config.write_text("components:\n  - {scorer: loudness, range: [-60, 0], weight: 1}\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["score", str(src), "-o", str(out), "--scorers", "composite",
                                 "--composite-config", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert row["composite.value"] == pytest.approx((row["composite.loudness.raw"] + 60) / 60)
    missing = runner.invoke(app, ["score", str(src), "-o", str(out), "--scorers", "composite", "--no-progress"])
    assert missing.exit_code == 2 and "--composite-config" in missing.output
    config.write_text("components:\n  - {scorer: loudness, wieght: 1}\n")
    typo = runner.invoke(app, ["score", str(src), "-o", str(tmp_path / "o2"), "--scorers", "composite",
                               "--composite-config", str(config), "--no-progress"])
    assert typo.exit_code == 2 and "did you mean 'weight'" in typo.output
