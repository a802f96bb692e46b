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
           "--steps", "2", "--warmstart-steps", "3", "--limit", "2", "--jobs", "2", "--set", "kl_every=1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["rows"]) == ["warm start (before)", "wavalign", "po-all"]
    for name, row in summary["rows"].items():
        assert row["n"] == 2 and row["finished"] is not None, name
    assert summary["rows"]["po-all"]["steps"] == 2 and summary["rows"]["wavalign"]["reward_last"] is not None
    table = (tmp_path / "summary.md").read_text()
    assert len(table.strip().splitlines()) == 5 and "| po-all |" in table  # header, rule, three rows
    assert (tmp_path / "curves.png").stat().st_size > 5000
    # the runs started from the warm start's weights: the KL reference is the warm start, so step 1 has KL 0
    # (measured every step here: kl_every=1; by default KL is measured every 10 steps and at the last)
    log = (tmp_path / "train" / "po-all-s0" / "log.csv").read_text().splitlines()
    header, first = log[0].split(","), log[1].split(",")
    assert float(first[header.index("kl_all")]) == pytest.approx(0.0, abs=1e-6)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ wavalign" not in again.stdout  # everything was already complete
