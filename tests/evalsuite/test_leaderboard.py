"""The leaderboard reads results.json files of fake runs (written in the design's format) and writes CSV, MD, PNG."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from evalsuite.leaderboard import LeaderboardError, build_leaderboard


def metric(value, stderr=None, *, higher_is_better=True, scale=100, column="mcq.value", n=10):
    return {"value": value, "stderr": stderr, "n": n, "n_failed": 0, "scale": scale, "column": column,
            "higher_is_better": higher_is_better}


def write_run(folder: Path, model: str, benchmark: str, metrics: dict, primary: str, *, suite=None,
              complete=True, finished_at=None, version=1) -> Path:
    """A results.json exactly as the design lays it out (plus finished_at when given)."""
    data = {
        "format": "wavalign.eval/1",
        "benchmark": {"name": benchmark, "version": version, "suite": suite, "definition_sha256": "0" * 64,
                      "data": "demo"},
        "model": {"name": model, "settings": {}},
        "config": {"judge_on": "text", "limit": None, "batch_size": 8},
        "scorers": {"mcq": {"name": "mcq", "version": "1", "settings": {}}},
        "metrics": metrics,
        "primary": primary,
        "n_items": 10, "n_responded": 10, "n_failed": 0, "complete": complete,
        "columns": {"mcq.value": {"mean": 0.7, "stderr": 0.02, "n": 10, "failed": 0}},
        "environment": {"python": "3.11", "packages": {}, "git_commit": "abc"},
        "seconds": {"generate": 1.0, "score": 1.0, "total": 2.0},
    }
    if finished_at is not None:
        data["finished_at"] = finished_at
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def accuracy(value, stderr=None):
    return {"accuracy": metric(value, stderr)}


def gpt(score_x20, score):
    """VoiceBench-style open subset: the 0–100 primary first, the raw 1–5 GPT score beside it."""
    return {"score_x20": metric(score_x20, column="judge.score", scale=20),
            "gpt_score": metric(score, column="judge.score", scale=1)}


def wer(value):
    return {"wer": metric(value, higher_is_better=False, column="asr.wer")}


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """Three models: two have the whole 'vb' suite (a tie at 75), one has half of it, in an incomplete run."""
    root = tmp_path / "runs"
    write_run(root / "cascade" / "vb-a", "cascade", "vb-a", accuracy(70.0, 2.0), "accuracy", suite="vb")
    write_run(root / "cascade" / "vb-b", "cascade", "vb-b", gpt(80.0, 4.0), "score_x20", suite="vb")
    write_run(root / "cascade" / "asr", "cascade", "asr-wer", wer(12.5), "wer")
    write_run(root / "moshi" / "vb-a", "moshi", "vb-a", accuracy(60.0, 1.5), "accuracy", suite="vb")
    write_run(root / "moshi" / "vb-b", "moshi", "vb-b", gpt(90.0, 4.5), "score_x20", suite="vb")
    write_run(root / "moshi" / "asr", "moshi", "asr-wer", wer(8.0), "wer")
    write_run(root / "tiny" / "vb-a", "tiny", "vb-a", accuracy(50.0), "accuracy", suite="vb", complete=False)
    write_run(root / "tiny" / "asr", "tiny", "asr-wer", wer(20.0), "wer")
    return root


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_csv_values_overall_and_ranking(runs: Path, tmp_path: Path):
    board = build_leaderboard([runs], tmp_path / "out" / "leaderboard.csv")
    assert board.ranked_by == "vb/overall"
    assert read_csv(tmp_path / "out" / "leaderboard.csv") == [
        ["rank", "model", "vb/overall", "vb-a/accuracy", "vb-b/score_x20", "vb-b/gpt_score", "asr-wer/wer",
         "runs_incomplete"],
        # a tie at 75 shares rank 1 and keeps name order; tiny lacks vb-b: empty overall, unranked, last
        ["1", "cascade", "75.0", "70.0", "80.0", "4.0", "12.5", ""],
        ["1", "moshi", "75.0", "60.0", "90.0", "4.5", "8.0", ""],
        ["", "tiny", "", "50.0", "", "", "20.0", "vb-a"],
    ]
    assert board.warnings == []


def test_lower_is_better_sorts_ascending(runs: Path, tmp_path: Path):
    board = build_leaderboard([runs], tmp_path / "lb.csv", sort_by="asr-wer/wer")
    assert [(r["rank"], r["model"], r["asr-wer/wer"]) for r in board.rows] == [
        (1, "moshi", 8.0), (2, "cascade", 12.5), (3, "tiny", 20.0)]
    board = build_leaderboard([runs], tmp_path / "lb.csv", sort_by="vb-a/accuracy")
    assert [r["model"] for r in board.rows] == ["cascade", "moshi", "tiny"]


def test_without_a_suite_ranks_by_the_first_benchmark_primary(tmp_path: Path):
    root = tmp_path / "runs"
    write_run(root / "1", "a", "asr-wer", wer(9.0), "wer")
    write_run(root / "2", "b", "asr-wer", wer(3.0), "wer")
    write_run(root / "3", "c", "asr-wer", wer(None), "wer")  # every item failed: no value, not 0
    write_run(root / "4", "c", "zz-bench", accuracy(99.0), "accuracy")
    board = build_leaderboard([root], tmp_path / "lb.csv")
    assert board.ranked_by == "asr-wer/wer"
    assert read_csv(tmp_path / "lb.csv") == [
        ["rank", "model", "asr-wer/wer", "zz-bench/accuracy", "runs_incomplete"],
        ["1", "b", "3.0", "", ""],
        ["2", "a", "9.0", "", ""],
        ["", "c", "", "99.0", ""],
    ]


def test_given_suites_need_every_member(runs: Path, tmp_path: Path):
    board = build_leaderboard([runs], tmp_path / "lb.csv",
                              suites={"vb": ["vb-a", "vb-b", "vb-c"], "other": ["not-run"]})
    assert [c.name for c in board.columns][:1] == ["vb/overall"]  # 'other' has no results: no column
    assert all(r["vb/overall"] is None for r in board.rows)
    assert any("no results for vb-c" in w for w in board.warnings)
    assert board.ranked_by == "vb-a/accuracy"  # nobody has an overall: the first benchmark's primary ranks
    # members in the given order; a benchmark outside every suite is still a column
    board = build_leaderboard([runs], tmp_path / "lb.csv", suites={"vb": ["vb-b", "vb-a"]})
    assert [c.name for c in board.columns] == ["vb/overall", "vb-b/score_x20", "vb-b/gpt_score", "vb-a/accuracy",
                                               "asr-wer/wer"]
    assert board.rows[0]["vb/overall"] == 75.0


def test_overall_is_not_averaged_over_a_lower_is_better_primary(tmp_path: Path):
    root = tmp_path / "runs"
    write_run(root / "1", "m", "s-acc", accuracy(80.0), "accuracy", suite="s")
    write_run(root / "2", "m", "s-wer", wer(10.0), "wer", suite="s")
    board = build_leaderboard([root], tmp_path / "lb.csv")
    assert board.rows[0]["s/overall"] is None
    assert any("lower-is-better" in w for w in board.warnings)


def test_overall_rounds_the_mean(tmp_path: Path):
    root = tmp_path / "runs"
    for i, value in enumerate([70.1, 65.2, 33.3]):
        write_run(root / str(i), "m", f"s-{i}", accuracy(value), "accuracy", suite="s")
    board = build_leaderboard([root], tmp_path / "lb.csv")
    assert board.rows[0]["s/overall"] == 56.2
    assert read_csv(tmp_path / "lb.csv")[1][2] == "56.2"


def test_newest_run_wins_by_finished_at(runs: Path, tmp_path: Path):
    old = write_run(runs / "cascade" / "vb-a-old", "cascade", "vb-a", accuracy(10.0), "accuracy", suite="vb",
                    finished_at="2024-01-01T00:00:00+00:00")
    new = write_run(runs / "cascade" / "vb-a-new", "cascade", "vb-a", accuracy(90.0), "accuracy", suite="vb",
                    finished_at="2025-06-01T12:00:00Z")
    # the older file is touched last, so mtime alone would pick it
    os.utime(old, (new.stat().st_mtime + 100, new.stat().st_mtime + 100))
    # the original vb-a run (no finished_at) falls back to its mtime, older than 2025
    os.utime(runs / "cascade" / "vb-a" / "results.json", (1_600_000_000, 1_600_000_000))
    board = build_leaderboard([runs], tmp_path / "lb.csv")
    cascade = next(r for r in board.rows if r["model"] == "cascade")
    assert cascade["vb-a/accuracy"] == 90.0
    assert cascade["vb/overall"] == 85.0
    [warning] = board.warnings
    assert "'cascade'" in warning and "'vb-a'" in warning and "3 runs" in warning
    assert f"using the newest, {new}" in warning and str(old) in warning


def test_newest_run_falls_back_to_mtime(tmp_path: Path):
    a = write_run(tmp_path / "r1", "m", "b", accuracy(1.0), "accuracy")
    b = write_run(tmp_path / "r2", "m", "b", accuracy(2.0), "accuracy")
    os.utime(a, (2_000_000_000, 2_000_000_000))
    os.utime(b, (1_000_000_000, 1_000_000_000))
    board = build_leaderboard([tmp_path / "r1", tmp_path / "r2"], tmp_path / "lb.csv")
    assert board.rows[0]["b/accuracy"] == 1.0
    assert len(board.warnings) == 1 and f"using the newest, {a}" in board.warnings[0]


def test_run_dirs_files_and_repeats(runs: Path, tmp_path: Path):
    # a run folder, a results.json given directly, and the same run twice: read once, no duplicate warning
    board = build_leaderboard([runs / "moshi" / "vb-a", runs / "moshi" / "vb-a" / "results.json",
                               runs / "moshi"], tmp_path / "lb.csv")
    assert [r["model"] for r in board.rows] == ["moshi"]
    assert len(board.runs) == 3 and board.warnings == []


def test_markdown(runs: Path, tmp_path: Path):
    board = build_leaderboard([runs], tmp_path / "leaderboard.csv")
    assert board.md_path == tmp_path / "leaderboard.md"
    text = board.md_path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert "Ranked by `vb/overall` (higher is better)" in text
    assert ("- `vb/overall` = mean of the primary metric (0–100) of vb-a, vb-b; empty unless the model has all of "
            "them") in lines
    assert lines[lines.index("| rank | model | vb/overall ↑ | vb-a/accuracy ↑ | vb-b/score_x20 ↑ | vb-b/gpt_score ↑ "
                             "| asr-wer/wer ↓ | runs_incomplete |") + 2:] == [
        "| 1 | cascade | 75.00 | 70.00 ± 2.00 | 80.00 | 4.00 | 12.50 |  |",
        "| 1 | moshi | 75.00 | 60.00 ± 1.50 | 90.00 | 4.50 | 8.00 |  |",
        "|  | tiny |  | 50.00 |  |  | 20.00 | vb-a |",
    ]


def test_markdown_escapes_pipes(tmp_path: Path):
    write_run(tmp_path / "r", "a|b", "bench", accuracy(1.0), "accuracy")
    board = build_leaderboard([tmp_path / "r"], tmp_path / "lb.csv")
    assert "| 1 | a\\|b | 1.00 |  |" in board.md_path.read_text(encoding="utf-8")


def test_png(runs: Path, tmp_path: Path):
    from matplotlib import image

    board = build_leaderboard([runs], tmp_path / "leaderboard.csv")
    assert board.png_path == tmp_path / "leaderboard.png"
    data = board.png_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(board.png_path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 300
    assert pixels.std() > 0  # something is drawn
    assert board.chart_columns == ["vb/overall", "vb-a/accuracy", "vb-b/score_x20", "asr-wer/wer"]


def test_png_with_a_series_nobody_has(tmp_path: Path):
    write_run(tmp_path / "r", "m", "bench", accuracy(None), "accuracy")
    board = build_leaderboard([tmp_path / "r"], tmp_path / "lb.csv")
    assert board.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupt_and_foreign_files_are_skipped_with_warnings(runs: Path, tmp_path: Path):
    (runs / "broken").mkdir()
    (runs / "broken" / "results.json").write_text('{"format": "wavalign.eval/1", "metr', encoding="utf-8")
    (runs / "foreign").mkdir()
    (runs / "foreign" / "results.json").write_text('{"format": "lm-eval/0"}', encoding="utf-8")
    partial = write_run(runs / "partial", "x", "vb-a", accuracy(1.0), "nope")
    board = build_leaderboard([runs], tmp_path / "lb.csv")
    assert [r["model"] for r in board.rows] == ["cascade", "moshi", "tiny"]
    assert len(board.warnings) == 3
    assert any("broken" in w and "not valid JSON" in w for w in board.warnings)
    assert any("foreign" in w and "'lm-eval/0'" in w for w in board.warnings)
    assert any(str(partial) in w and "primary 'nope'" in w for w in board.warnings)


def test_no_usable_results_is_an_error(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LeaderboardError, match="no usable results.json .*no results.json found"):
        build_leaderboard([empty], tmp_path / "lb.csv")
    (empty / "results.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(LeaderboardError, match="format is 'list'"):
        build_leaderboard([empty], tmp_path / "lb.csv")
    with pytest.raises(LeaderboardError, match="no such file or folder"):
        build_leaderboard([tmp_path / "missing"], tmp_path / "lb.csv")
    assert not (tmp_path / "lb.csv").exists()


def test_unknown_sort_column(runs: Path, tmp_path: Path):
    with pytest.raises(LeaderboardError, match="did you mean 'asr-wer/wer'"):
        build_leaderboard([runs], tmp_path / "lb.csv", sort_by="asr-wer/wr")


def test_benchmark_versions_that_differ_are_flagged(tmp_path: Path):
    write_run(tmp_path / "r1", "a", "bench", accuracy(1.0), "accuracy", version=1)
    write_run(tmp_path / "r2", "b", "bench", accuracy(2.0), "accuracy", version=2)
    board = build_leaderboard([tmp_path], tmp_path / "lb.csv")
    assert board.warnings == ["benchmark 'bench': runs of versions 1, 2; scores may not compare"]
