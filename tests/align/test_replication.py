"""benchmarks/replication/run.py end to end on the tiny policy: warm start, two modes, held-out evaluations, the
table and the curves; a second call reuses everything and redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "replication" / "run.py"


@pytest.mark.slow
def test_replication_runner_on_the_tiny_policy(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--config", "tiny", "--out", str(tmp_path), "--modes", "wavalign", "po-all",
           "--steps", "2", "--seeds", "0", "--warmstart-steps", "3", "--limit", "2", "--jobs", "2",
           "--set", "kl_every=1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = summary["rows"]
    assert list(rows) == ["warm start (before)", "wavalign", "po-all"]
    for name, row in rows.items():
        assert row["n"]["mean"] == 2 and row["finished"]["mean"] is not None, name
    # one seed: a mean without a standard error, the per-seed value kept beside it
    assert rows["po-all"]["steps"] == {"mean": 2, "se": None, "n": 1}
    assert rows["wavalign"]["reward_last"]["mean"] == rows["wavalign"]["per_seed"]["0"]["reward_last"] is not None
    assert rows["wavalign"]["group_var"]["mean"] is not None and rows["wavalign"]["gate_v"]["mean"] is not None
    # claim A compares wavalign with po-all on the held-out items both scored; one seed cannot decide it
    compared = {c["metric"]: c for c in summary["comparisons"]}
    assert set(compared) == {"asr_wer", "expressiveness", "iq_speech_all"}
    iq = compared["iq_speech_all"]
    assert iq["seeds"] == 1 and iq["items"] == 2 and iq["low"] is None
    means = {mode: rows[mode]["iq_speech_all"]["mean"] for mode in ("wavalign", "po-all")}
    assert iq["diff"] == pytest.approx(means["wavalign"] - means["po-all"])  # every item in both: diff of means
    assert iq["outcome"] == "undecided (fewer than 2 seeds)"
    assert summary["claims"] == [{"claim": compared["asr_wer"]["claim"], "outcome": "not decided"}]
    table = (tmp_path / "summary.md").read_text()
    assert "| po-all |" in table and "wavalign vs po-all" in table and "**not decided**" in table
    assert (tmp_path / "curves.png").stat().st_size > 5000
    # the runs started from the warm start's weights: the KL reference is the warm start, so step 1 has KL 0
    # (measured every step here: kl_every=1; by default KL is measured every 10 steps and at the last)
    log = (tmp_path / "train" / "po-all-s0" / "log.csv").read_text().splitlines()
    header, first = log[0].split(","), log[1].split(",")
    assert float(first[header.index("kl_all")]) == pytest.approx(0.0, abs=1e-6)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ wavalign" not in again.stdout  # everything was already complete
