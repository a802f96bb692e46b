"""The scoring engine with model-free scorers: outputs, bad inputs, resume after a real kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, tone

from evalsuite.inputs import InputError, load_items
from evalsuite.scoring import RunConflictError, score_items
from rewards.audio import AudioLimits
from rewards.registry import build

HERE = Path(__file__).resolve().parent


def _folder(tmp_path: Path, n: int = 4) -> Path:
    root = tmp_path / "answers"
    root.mkdir()
    for k in range(n):
        sf.write(root / f"a{k:02d}.wav", tone(0.5 + 0.1 * k, amp=0.1 * (k + 1)), 16000)
        (root / f"a{k:02d}.txt").write_text(f"answer {k}")
    return root


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def test_folder_scan_reads_sidecars_recursively(tmp_path):
    root = _folder(tmp_path, 2)
    (root / "deep").mkdir()
    sf.write(root / "deep" / "b.flac", tone(0.5), 16000)
    (root / "notes.md").write_text("not audio")
    items = load_items(root)
    assert [i.id for i in items] == ["a00", "a01", "deep/b"]
    assert items[0].text == "answer 0" and items[2].text is None


def test_manifest_jsonl_and_csv_resolve_relative_paths(tmp_path):
    root = _folder(tmp_path, 2)
    (root / "m.jsonl").write_text(
        json.dumps({"id": "x", "audio": "a00.wav", "text": "t", "reference": "r", "prompt": "p", "language": "en"})
        + "\n{broken\n"
        + json.dumps({"id": "textonly", "text": "just text"}) + "\n"
    )
    items = load_items(root / "m.jsonl")
    assert items[0].audio_path == root / "a00.wav" and items[0].reference == "r" and items[0].meta == {"language": "en"}
    assert items[1].error and "not a JSON object" in items[1].error
    assert items[2].audio_path is None and items[2].text == "just text"
    with (root / "m.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["id", "audio", "text"], ["y", "a01.wav", "hello"]])
    (item,) = load_items(root / "m.csv")
    assert item.audio_path == root / "a01.wav" and item.text == "hello"


def test_input_errors_are_usage_errors(tmp_path):
    with pytest.raises(InputError):
        load_items(tmp_path / "missing")
    with pytest.raises(InputError, match="no audio files"):
        load_items(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(InputError, match="duplicate"):
        load_items(tmp_path / "d.jsonl")


def test_outputs_and_summary(tmp_path):
    root = _folder(tmp_path)
    out = tmp_path / "out"
    result = score_items(load_items(root), [build("loudness")], out, progress=False)
    assert result.n_items == 4 and result.n_scored_now == 4
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["a00", "a01", "a02", "a03"]
    expected = 20 * np.log10(0.1 * np.sqrt(0.5))
    assert rows[0]["loudness.rms_dbfs"] == pytest.approx(expected, abs=0.05)
    with (out / "scores.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:5] == ["id", "audio", "audio.duration", "audio.warnings", "audio.error"]
    assert {"loudness.value", "loudness.rms_dbfs", "loudness.peak_dbfs", "loudness.error"} <= set(table[0])
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["metrics"]["loudness.rms_dbfs"]
    values = [r["loudness.rms_dbfs"] for r in rows]
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["stderr"] == pytest.approx(np.std(values, ddof=1) / 2)
    assert stats["n_scored"] == 4 and stats["n_failed"] == 0
    assert summary["settings"]["scorers"]["loudness"]["version"] == "1"
    assert "git_commit" in summary["environment"]


def test_bad_items_get_errors_and_the_run_goes_on(tmp_path):
    root = _folder(tmp_path, 2)
    (root / "corrupt.wav").write_bytes(b"not audio at all")
    sf.write(root / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(root / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(root / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(root / "long.wav", tone(3.0), 16000)
    sf.write(root / "boom.wav", tone(1.0), 16000)
    out = tmp_path / "out"
    sys.path.insert(0, str(HERE))
    try:
        scorers = [build("loudness"), build("slow_scorer:ExplodingScorer")]
    finally:
        sys.path.remove(str(HERE))
    score_items(load_items(root), scorers, out, limits=AudioLimits(max_seconds=2.0), progress=False, batch_size=16)
    rows = {r["id"]: r for r in _rows(out)}
    assert rows["corrupt"]["audio.error"].startswith("unreadable")
    assert rows["silent"]["audio.error"].startswith("silent")
    assert rows["nan"]["audio.error"].startswith("non_finite")
    assert rows["empty"]["audio.error"].startswith("empty")
    assert rows["long"]["audio.error"].startswith("too_long")
    for bad in ("corrupt", "silent", "nan", "empty", "long"):
        assert rows[bad]["loudness.value"] is None and rows[bad]["loudness.error"].startswith("audio ")
    # the exploding scorer failed only on its culprit; its batch-mates were rescored one by one
    assert rows["boom"]["exploding.value"] is None and "kaboom" in rows["boom"]["exploding.error"]
    assert rows["a00"]["exploding.value"] == 1.0 and rows["a00"]["loudness.value"] is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["loudness.value"]["n_failed"] == 5


def test_non_finite_metrics_become_missing_with_a_note(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        scorer = build("slow_scorer:NanScorer")
    finally:
        sys.path.remove(str(HERE))
    out = tmp_path / "out"
    score_items(load_items(_folder(tmp_path, 1)), [scorer], out, progress=False)
    (row,) = _rows(out)
    assert row["nan.bad"] is None and row["nan.good"] == 2.0 and "bad was nan" in row["nan.error"]


def test_word_timings_flow_to_later_scorers(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        scorers = [build("slow_scorer:WordsScorer"), build("slow_scorer:CountWordsScorer")]
    finally:
        sys.path.remove(str(HERE))
    out = tmp_path / "out"
    score_items(load_items(_folder(tmp_path, 2)), scorers, out, progress=False)
    assert [r["count.value"] for r in _rows(out)] == [1.0, 1.0]


def test_resume_skips_done_rows_and_drops_a_torn_line(tmp_path):
    root = _folder(tmp_path)
    out = tmp_path / "out"
    items = load_items(root)
    score_items(items[:2], [build("loudness")], out, progress=False)
    with (out / "scores.jsonl").open("a") as f:
        f.write('{"id": "a02", "loudness.val')  # a write cut off by a kill
    result = score_items(items, [build("loudness")], out, progress=False)
    assert result.n_resumed == 2 and result.n_scored_now == 2
    assert [r["id"] for r in _rows(out)] == ["a00", "a01", "a02", "a03"]


def test_table_describes_the_current_input_only(tmp_path):
    root = _folder(tmp_path, 3)
    out = tmp_path / "out"
    score_items(load_items(root), [build("loudness")], out, progress=False)
    (root / "a01.wav").unlink()
    result = score_items(load_items(root), [build("loudness")], out, progress=False)
    assert result.n_items == 2 and result.summary["metrics"]["loudness.value"]["n_scored"] == 2
    assert len(_rows(out)) == 3  # the JSONL keeps everything ever scored


def test_a_scorer_runs_once_per_run(tmp_path):
    with pytest.raises(ValueError, match="once"):
        score_items(load_items(_folder(tmp_path, 1)), [build("loudness"), build("loudness")], tmp_path / "o")


def test_resume_refuses_other_settings(tmp_path):
    root = _folder(tmp_path, 1)
    out = tmp_path / "out"
    score_items(load_items(root), [build("loudness")], out, progress=False)
    with pytest.raises(RunConflictError):
        score_items(load_items(root), [build("loudness")], out, progress=False, limits=AudioLimits(max_seconds=9))
    score_items(load_items(root), [build("loudness")], out, progress=False, overwrite=True,
                limits=AudioLimits(max_seconds=9))


@pytest.mark.slow
def test_killed_run_resumes_without_rescoring_or_losing_rows(tmp_path):
    root = _folder(tmp_path, 12)
    out = tmp_path / "out"
    log = tmp_path / "scored.log"
    env = {**os.environ, "SLOW_SCORER_LOG": str(log), "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    cmd = [sys.executable, str(REPO / "cli.py"), "score", str(root), "-o", str(out),
           "--scorers", "slow_scorer:SlowScorer", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (out / "scores.jsonl").exists() and len((out / "scores.jsonl").read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = (out / "scores.jsonl").read_text().splitlines()
    assert 4 <= len(before) < 12, "the run should have been killed midway"
    first_pass = log.read_text().split()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == [f"a{k:02d}" for k in range(12)]
    assert (out / "scores.jsonl").read_text().splitlines()[: len(before)] == before  # nothing rewritten
    rescored = log.read_text().split()[len(first_pass):]
    finished_before = {json.loads(line)["id"] for line in before}
    assert not finished_before & set(rescored), "items finished before the kill were scored again"
    assert len(rescored) == 12 - len(before) + (len(first_pass) - len(before))  # at most the in-flight item again
    assert len(first_pass) - len(before) <= 1
