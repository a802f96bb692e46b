"""The listening report's data and page, built from small real eval, score and align run folders (issue #13)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from cli import app
from evalsuite import report as report_module
from evalsuite.adapters import build_adapter, safe_name
from evalsuite.benchmark import load_benchmark
from evalsuite.eval import run_eval
from evalsuite.inputs import load_items
from evalsuite.report import (
    ReportError,
    align_items,
    build_report,
    histogram,
    line_chart,
    read_run,
    render,
    word_diff,
    write_report,
)
from evalsuite.scoring import score_items
from rewards.base import Score, ScorerInfo
from rewards.registry import build

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _scorers_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


class Heard:
    """A deterministic stand-in for asr: the "transcript" is the item's meta["heard"] (column ``asr``); 1 when it
    equals the lowercased text channel."""

    name = "heard"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = 16000

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})

    def score(self, samples):
        return [Score(value=float(s.meta["heard"] == (s.text or "").lower()), metrics={"transcript": s.meta["heard"]})
                for s in samples]


class Contains:
    """1 when the reference is in the answer text, else 0 (column ``contains``)."""

    name = "contains"
    version = "1"
    higher_is_better = True
    requires = frozenset({"text", "reference"})

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})

    def score(self, samples):
        return [Score(value=float(s.reference.lower() in s.text.lower()), metrics={"read": s.text}) for s in samples]


ME = Path(__file__).stem  # this module, importable by name: the scorers above as "test_report:Heard"
ITEMS = [  # id, prompt, reference, category, what the stand-in ASR "hears"
    ("q1", "What is the capital of France?", "Paris", "qa", "it is paris"),
    ("q2", "Which planet is red?", "Mars", "qa", "mars"),
    ("q3", "Pick one: A or B?", "B", "mcq", "a"),
]


def tone(path: Path, seconds: float, freq: float = 220.0) -> Path:
    """A real 16-bit WAV of ``seconds`` of a sine tone."""
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, subtype="PCM_16")
    return path


def benchmark(tmp_path: Path) -> Path:
    if (tmp_path / "tiny-report.yaml").exists():
        return tmp_path / "tiny-report.yaml"
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = [{"id": i, "prompt": p, "reference": r, "category": c, "heard": h,
             "audio": tone(data / f"{i}.wav", 0.4).name} for i, p, r, c, h in ITEMS]
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    definition = {
        "name": "tiny-report", "version": 1, "source": {"local": "data/items.jsonl"},
        "fields": {"id": "id", "audio": "audio", "prompt": "prompt", "reference": "reference",
                   "meta": ["category", "heard"]},
        "scorers": [{"name": f"{ME}:Contains", "column": "contains"}, {"name": f"{ME}:Heard", "column": "asr"}],
        "metrics": [{"name": "accuracy", "column": "contains.value", "scale": 100},
                    {"name": "heard_ok", "column": "asr.value"}],
        "primary": "accuracy",
    }
    path = tmp_path / "tiny-report.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def eval_run(tmp_path: Path, name: str, answers: dict[str, str], seconds: dict[str, float]) -> Path:
    """A real eval run of a ``responses:`` model: ``answers`` id → text, ``seconds`` id → length of its WAV."""
    folder = tmp_path / f"answers-{safe_name(name)}"
    folder.mkdir()
    for item_id, text in answers.items():
        (folder / f"{item_id}.txt").write_text(text)
    for item_id, length in seconds.items():
        tone(folder / f"{item_id}.wav", length)
    out = tmp_path / "runs" / folder.name.removeprefix("answers-")
    run_eval(load_benchmark(benchmark(tmp_path)), build_adapter(f"responses:{folder}", name=name), out,
             progress=False)
    return out


@pytest.fixture
def two_runs(tmp_path):
    a = eval_run(tmp_path, "model-a", {"q1": "It is Paris.", "q2": "Jupiter", "q3": "A"},
                 {"q1": 0.5, "q2": 0.75, "q3": 0.3})
    b = eval_run(tmp_path, "model-b", {"q1": "It is Paris.", "q2": "mars", "q3": "B"}, {"q1": 0.6, "q3": 0.9})
    return a, b


def linker(tmp_path: Path, embed: bool = False):
    return report_module._AudioLinker(tmp_path, embed)


# --- one run ------------------------------------------------------------------------------------------------


def test_one_eval_run_gives_a_row_per_item_with_players_scores_and_diff(two_runs, tmp_path):
    a, _ = two_runs
    run = read_run(a, linker(tmp_path))
    assert run.kind == "eval" and run.name == "model-a" and run.benchmark == "tiny-report"
    assert [c.key for c in run.columns] == ["contains.value", "asr.value"]
    assert [c.label for c in run.columns] == ["accuracy", "heard_ok"]
    assert [i.id for i in run.items] == ["q1", "q2", "q3"] and [i.category for i in run.items] == ["qa", "qa", "mcq"]
    q1 = run.items[0]
    assert q1.text.shown == "It is Paris." and q1.prompt.shown == ITEMS[0][1] and q1.reference.shown == "Paris"
    # players link relative to the report's folder, with the file's real length
    assert q1.audio.src == "runs/model-a/responses/q1.wav" and q1.audio.seconds == pytest.approx(0.5)
    assert (tmp_path / q1.audio.src).is_file()
    assert q1.prompt_audio.src == "data/q1.wav" and q1.prompt_audio.seconds == pytest.approx(0.4)
    assert q1.transcript.shown == "it is paris"
    assert q1.diff == [("same", "it"), ("same", "is"), ("same", "paris")]  # case and punctuation do not count
    assert [(i.values["contains.value"].value, i.values["asr.value"].value) for i in run.items] == [
        (1.0, 0.0), (0.0, 0.0), (0.0, 1.0)]
    assert run.items[2].diff == [("same", "a")] and not any(i.failed for i in run.items)
    summary = {m.name: m for m in run.summary}
    assert summary["accuracy"].value == pytest.approx(100 / 3) and summary["accuracy"].primary
    assert summary["accuracy"].n == 3 and summary["accuracy"].n_failed == 0
    assert [h.label for h in run.histograms] == ["accuracy", "heard_ok"] and run.histograms[0].n == 3
    settings = dict(run.settings)
    assert settings["benchmark.name"] == "tiny-report" and settings["benchmark.definition_sha256"]
    assert settings["model.name"] == "model-a" and "scorer.contains.version" in settings
    assert "packages.numpy" in settings


def test_a_text_only_answer_is_not_applicable_and_a_missing_one_is_an_error(tmp_path):
    out = eval_run(tmp_path, "partial", {"q1": "Paris", "q2": "Mars"}, {"q1": 0.5})
    run = read_run(out, linker(tmp_path))
    q2, q3 = run.items[1], run.items[2]
    assert q2.audio is None and q2.values["asr.value"].mark == "na" and "text only" in q2.values["asr.value"].note
    assert not q2.failed
    assert q3.failed and q3.values["contains.value"].mark == "error"
    assert any("no response file for 'q3'" in e for e in q3.errors)


# --- comparing runs -------------------------------------------------------------------------------------------


def test_two_runs_align_by_id_with_deltas_by_hand_and_rank_what_differs(two_runs, tmp_path):
    a, b = two_runs
    cmp = align_items([read_run(a, linker(tmp_path)), read_run(b, linker(tmp_path))])
    assert cmp.compared and [x.id for x in cmp.items] == ["q1", "q2", "q3"]
    by_id = {x.id: x for x in cmp.items}
    # contains: a = 1, 0, 0; b = 1, 1, 1. heard (lowercased text == what was heard): a = 0, 0, 1; b = 0, n/a, 0
    # (b's q2 is text only: not applicable, so no value and no delta)
    assert by_id["q1"].deltas["contains.value"] == [0.0, 0.0]
    assert by_id["q2"].deltas["contains.value"] == [0.0, 1.0]
    assert by_id["q3"].deltas["contains.value"] == [0.0, 1.0]
    assert by_id["q3"].deltas["asr.value"] == [0.0, -1.0]
    assert by_id["q2"].deltas["asr.value"] == [0.0, None] and by_id["q2"].rows[1].values["asr.value"].mark == "na"
    # difference: mean over columns of |spread| / the column's range over all items (1 for both columns)
    assert by_id["q1"].difference == 0.0
    assert by_id["q2"].difference == pytest.approx(1.0)  # contains only: asr has a single value
    assert by_id["q3"].difference == pytest.approx(1.0)
    assert [x.id for x in cmp.most_different()] == ["q2", "q3"]
    assert by_id["q2"].rows[0].audio.seconds == pytest.approx(0.75) and by_id["q2"].rows[1].audio is None


def test_items_only_one_run_has_are_kept_and_three_runs_spread(two_runs, tmp_path):
    a, b = two_runs
    c = eval_run(tmp_path, "model-c", {"q1": "No idea", "q2": "Mars", "q3": "B"}, {})
    runs = [read_run(p, linker(tmp_path)) for p in (a, b, c)]
    runs[0].items = runs[0].items[:2]  # as if run a had stopped before q3
    cmp = align_items(runs)
    q3 = {x.id: x for x in cmp.items}["q3"]
    assert q3.rows[0] is None and q3.deltas["contains.value"] == [None, None, None]
    assert q3.spread["contains.value"] == 0.0  # b and c both 1
    q1 = {x.id: x for x in cmp.items}["q1"]
    assert q1.deltas["contains.value"] == [0.0, 0.0, -1.0] and q1.spread["contains.value"] == 1.0
    html = render(build_report([a, b, c], tmp_path / "r.html"))
    assert "model-c" in html and "Δ accuracy" in html


def test_leaderboard_when_several_models(two_runs, tmp_path):
    report = build_report(list(two_runs), tmp_path / "report.html")
    assert report.leaderboard is not None
    assert [row[1] for row in report.leaderboard["rows"]] == ["model-b", "model-a"]  # accuracy 100 vs 33.3
    assert "tiny-report/accuracy" in report.leaderboard["columns"]
    assert len(report.comparisons) == 1 and report.comparisons[0].compared
    assert build_report([two_runs[0]], tmp_path / "report.html").leaderboard is None


# --- diffs, histograms, curves ---------------------------------------------------------------------------------


def test_word_diff():
    assert word_diff("The answer is B.", "the answer is b") == [("same", w) for w in ["the", "answer", "is", "b"]]
    assert word_diff("It is four", "it is for sure") == [("same", "it"), ("same", "is"), ("missing", "four"),
                                                         ("extra", "for"), ("extra", "sure")]
    assert word_diff("hello", "") == [("missing", "hello")]
    assert word_diff(None, "x") is None and word_diff("x", None) is None
    long = word_diff("a " * 5000, "a " * 5000)
    assert len(long) == report_module.DIFF_WORDS


def test_histogram_and_line_chart_geometry():
    h = histogram("x", [0.0, 0.0, 1.0, 2.0], bins=2, width=100, height=50)
    assert [(b[4], b[5], b[6]) for b in h.bars] == [(2, 0.0, 1.0), (2, 1.0, 2.0)]  # 1.0 falls in the upper bin
    assert h.bars[0][:4] == (0.0, 0.0, 49.0, 50.0)
    same = histogram("y", [3.0, 3.0])
    assert len(same.bars) == 1 and same.bars[0][4] == 2
    chart = line_chart("loss", [1, 2, 3, 4], {"loss": [4.0, 2.0, None, 0.0], "kl": [None, 1.0, None, None]},
                       width=30, height=40)
    loss = chart.lines[0]
    assert loss[0] == "loss" and loss[2] == ["0.0,0.0 10.0,20.0"] and loss[3] == [("30.0", "40.0")]
    assert chart.lines[1][3] == [("10.0", "30.0")]  # a lone point is a dot
    assert line_chart("none", [1, 2], {"a": [None, float("nan")]}) is None


# --- bad input, escaping, embedding ------------------------------------------------------------------------


class _Structure(HTMLParser):
    """Counts elements and collects the scripts' text (the page must hold exactly the one it ships)."""

    def __init__(self):
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.starts[tag] = self.starts.get(tag, 0) + 1
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self.ends[tag] = self.ends.get(tag, 0) + 1
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def test_model_text_is_escaped_everywhere(tmp_path):
    evil = 'Sure </table></td><script>window.pwned = 1</script><img src=x onerror="alert(1)"> & "quotes"'
    out = eval_run(tmp_path, "evil</th><b>", {"q1": evil, "q2": "Mars", "q3": "<b>B</b>"}, {"q1": 0.5})
    html = render(build_report([out], tmp_path / "report.html"))
    assert "<script>window.pwned" not in html and "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html
    assert "<img src=x" not in html and "evil&lt;/th&gt;&lt;b&gt;" in html
    page = _Structure()
    page.feed(html)
    assert page.starts["script"] == 1 and "pwned" not in page.scripts[0]
    assert page.starts.get("img", 0) == 0 and page.starts.get("b", 0) == page.ends.get("b", 0)
    assert page.starts["table"] == page.ends["table"] and page.starts["tr"] == page.ends["tr"]


def test_bad_input_shows_as_marked_cells_not_a_broken_page(two_runs, tmp_path):
    a, _ = two_runs
    rows = [json.loads(line) for line in (a / "samples.jsonl").read_text().splitlines()]
    rows[0]["contains.value"] = float("nan")
    rows[1]["asr.transcript"] = "word " * 3000
    rows[2]["contains.value"] = "yes"
    text = "".join(json.dumps(r) + "\n" for r in rows) + "{not json\n"
    (a / "samples.jsonl").write_text(text)
    (a / "responses" / "q2.wav").unlink()
    (a / "responses" / "q3.wav").write_bytes(b"RIFF\x00\x00junk")
    report = build_report([a], tmp_path / "report.html")
    run = report.comparisons[0].runs[0]
    q1, q2, q3 = run.items
    assert q1.values["contains.value"].mark == "nan" and any("nan" in e for e in q1.errors) and q1.failed
    assert q2.transcript.cut and q2.transcript.length == 15000 and len(q2.transcript.shown) == report_module.LONG_TEXT
    assert q2.audio.problem == "missing: responses/q2.wav" and q2.audio.src is None and q2.failed
    assert q3.values["contains.value"].mark == "bad" and q3.values["contains.value"].note == "yes"
    assert q3.audio.problem.startswith("unreadable:")
    assert any("line 4 is not JSON" in w for w in report.warnings)
    html = render(report)
    assert "missing: responses/q2.wav" in html and "transcript cut: 15000 characters" in html and ">NaN<" in html
    assert ">not a number<" in html


def test_a_run_without_results_json_still_reports_its_rows(two_runs, tmp_path):
    a, _ = two_runs
    (a / "results.json").unlink()
    report = build_report([a], tmp_path / "report.html")
    assert len(report.comparisons[0].runs[0].items) == 3
    assert any("no results.json" in w for w in report.warnings)


def test_embed_inlines_the_audio_and_warns_above_the_limit(two_runs, tmp_path, monkeypatch):
    a, _ = two_runs
    report = build_report([a], tmp_path / "elsewhere" / "report.html", embed=True)
    q1 = report.comparisons[0].runs[0].items[0]
    assert q1.audio.src.startswith("data:audio/wav;base64,")
    assert report.embedded_bytes > 0 and not report.warnings
    monkeypatch.setattr(report_module, "EMBED_WARN_BYTES", 1000)
    report = build_report([a], tmp_path / "report.html", embed=True)
    assert any("--embed inlined" in w for w in report.warnings)


def test_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="holds no run"):
        build_report([tmp_path], tmp_path / "report.html")
    with pytest.raises(ReportError, match="not a folder"):
        build_report([tmp_path / "nope"], tmp_path / "report.html")


# --- score and align runs ----------------------------------------------------------------------------------


def test_score_run_reads_back_the_text_channel_and_marks_bad_audio(tmp_path):
    folder = tmp_path / "answers"
    folder.mkdir()
    tone(folder / "a.wav", 0.5)
    (folder / "a.txt").write_text("hello there")
    tone(folder / "b.wav", 1.0)
    (folder / "bad.wav").write_bytes(b"RIFFjunk")
    score_items(load_items(folder), [build("loudness")], tmp_path / "scored", source=str(folder), progress=False)
    run = read_run(tmp_path / "scored", linker(tmp_path))
    assert run.kind == "score" and [c.key for c in run.columns] == ["audio.duration", "loudness.value"]
    a, b, bad = run.items
    assert a.text.shown == "hello there" and b.text is None
    assert a.audio.seconds == pytest.approx(0.5) and a.values["audio.duration"].value == pytest.approx(0.5)
    assert bad.audio.problem.startswith("unreadable") and bad.failed
    assert bad.values["loudness.value"].mark == "error"
    assert {m.name: m.n_failed for m in run.summary}["loudness.value"] == 1


# log.csv as align/train.py writes it (the header of a real `wavalign align --config tiny` run)
LOG_HEADER = ("step,mode,reward_mean,reward_std,reward_none,frac_zero_var,lambda,lambda_raw,lambda_ema,gate_v,gate_g,"
              "reward.answer_mean,reward.answer_std,reward.lively_mean,reward.lively_std,loss,loss_sft,loss_grpo,"
              "loss_kl,w_sft,w_rl,kl_text,kl_speech,kl_all,len_text,len_speech,frac_finished,grad_norm,lr,seconds")


def align_run(tmp_path: Path) -> Path:
    run = tmp_path / "align-run"
    (run / "rollouts" / "step-000002").mkdir(parents=True)
    rows = [LOG_HEADER]
    for step in (1, 2, 3):
        kl = "" if step == 1 else f"{0.01 * step}"  # KL is not measured at the first step
        rows.append(f"{step},wavalign,{2 + step * 0.1},0.5,0,0.0,{0.01 * step},0.02,0.01,0.3,0.2,{step},0.1,0.5,0.1,"
                    f"{6 - step},{6 - step},0.1,,0.99,0.01,{kl},{kl},{kl},12,14,0.5,1.0,0.001,3.0")
    (run / "log.csv").write_text("\n".join(rows) + "\n")
    (run / "config.json").write_text(json.dumps({"mode": "wavalign", "lr": 0.001, "group_size": 2}))
    lines = []
    for p, prompt in (("p0", "What is 2+2?"), ("p1", "Say hi <script>x</script>")):
        for k in range(2):
            audio = f"step-000002/{p}-{k}.wav"
            tone(run / "rollouts" / audio, 0.3 + 0.1 * k)
            lines.append({"step": 2, "prompt_id": p, "prompt": prompt, "rollout": k, "text": f"It is {k + 4}.",
                          "audio": audio, "transcript": "it is four", "reward": [2.5, None][k],
                          "components": {"answer": 1.0 - k, "lively": 0.5}, "advantage": [0.7, None][k],
                          "error": [None, "reward failed: judge timeout"][k]})
    (run / "rollouts" / "step-000002.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_align_run_curves_and_rollouts(tmp_path):
    run = read_run(align_run(tmp_path), linker(tmp_path))
    assert run.kind == "align"
    titles = [c.title for c in run.charts]
    assert titles == ["reward", "λ and its gates", "losses", "loss weights", "KL per channel",
                      "groups with zero reward variance", "length (positions)"]
    reward = run.charts[0]
    assert [name for name, *_ in reward.lines] == ["reward_mean", "reward.answer_mean", "reward.lively_mean"]
    kl = run.charts[4]
    assert [name for name, *_ in kl.lines] == ["kl_text", "kl_speech", "kl_all"] and len(kl.lines[0][2]) == 1
    assert ("lr", "0.001") in run.settings
    (step,) = run.rollouts
    assert step.step == 2 and step.components == ["answer", "lively"]
    assert [(pid, len(rs)) for pid, _, rs in step.groups] == [("p0", 2), ("p1", 2)]
    first, failed = step.groups[0][2]
    assert first.reward.value == 2.5 and first.advantage.value == 0.7 and first.audio.seconds == pytest.approx(0.3)
    assert first.audio.src == "align-run/rollouts/step-000002/p0-0.wav"
    assert first.diff == [("same", "it"), ("same", "is"), ("missing", "4."), ("extra", "four")]
    assert failed.reward.mark == "error" and failed.error == "reward failed: judge timeout"
    html = render(build_report([tmp_path / "align-run"], tmp_path / "report.html"))
    assert "Say hi &lt;script&gt;x&lt;/script&gt;" in html and html.count("<polyline") >= 10


def test_align_run_without_rollouts_says_so(tmp_path):
    run = align_run(tmp_path)
    for f in sorted((run / "rollouts").rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    html = render(build_report([run], tmp_path / "report.html"))
    assert "No rollouts saved" in html


# --- the command line --------------------------------------------------------------------------------------


def test_cli_eval_writes_report_by_default_and_report_compares(two_runs, tmp_path):
    runner = CliRunner()
    answers = tmp_path / "answers-model-a"
    out = tmp_path / "cli-run"
    args = ["eval", "-b", str(benchmark(tmp_path)), "--model", f"responses:{answers}", "-o", str(out),
            "--no-progress", "--no-leaderboard"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and f"wrote {out / 'report.html'}" in result.output
    result = runner.invoke(app, [*args, "--overwrite", "--no-report", "-o", str(tmp_path / "cli-run-2")])
    assert result.exit_code == 0 and not (tmp_path / "cli-run-2" / "report.html").exists()

    a, b = two_runs
    result = runner.invoke(app, ["report", str(a), str(b), "-o", str(tmp_path / "cmp.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "cmp.html").read_text()
    assert "2 runs compared" in html and "Listen first" in html and 'src="runs/model-b/responses/q3.wav"' in html
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "not a folder" in result.output


def test_cli_score_report_is_opt_in(tmp_path):
    folder = tmp_path / "answers"
    folder.mkdir()
    tone(folder / "a.wav", 0.5)
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(folder), "-o", str(tmp_path / "s1"), "--scorers", "loudness",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "s1" / "report.html").exists()
    result = runner.invoke(app, ["score", str(folder), "-o", str(tmp_path / "s2"), "--scorers", "loudness",
                                 "--no-progress", "--report"])
    assert result.exit_code == 0, result.output
    assert 'src="../answers/a.wav"' in (tmp_path / "s2" / "report.html").read_text()


def test_write_report_replaces_the_file_whole(two_runs, tmp_path):
    out = tmp_path / "deep" / "report.html"
    write_report([two_runs[0]], out)
    assert out.read_text().startswith("<!doctype html>") and not list(out.parent.glob("*.tmp"))


@pytest.mark.slow
def test_cli_align_report_on_a_real_tiny_run(tmp_path):
    """The curves of a real `wavalign align --config tiny` run (2 steps, ~20 s on this CPU), read from its log.csv."""
    out = tmp_path / "align"
    result = CliRunner().invoke(app, ["align", "--config", "tiny", "--max-steps", "2", "--output-dir", str(out),
                                      "--report", "--set", "report_every=2"])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    run = read_run(out, linker(tmp_path))
    titles = [c.title for c in run.charts]
    assert {"reward", "λ and its gates", "losses", "KL per channel"} <= set(titles)
    assert "<polyline" in html
    assert dict(run.last_step)["step"] == "2"
    # the loop saved step 2's rollouts (report_every=2): one line per rollout, their rewards the log's
    import csv
    import json

    config = json.loads((out / "config.json").read_text())
    lines = [json.loads(x) for x in (out / "rollouts" / "step-000002.jsonl").read_text().splitlines()]
    assert not (out / "rollouts" / "step-000001.jsonl").exists()
    assert len(lines) == config["prompts_per_step"] * config["group_size"]
    logged = list(csv.DictReader((out / "log.csv").open()))[-1]
    rewards = [x["reward"] for x in lines if x["reward"] is not None]
    assert abs(sum(rewards) / len(rewards) - float(logged["reward_mean"])) < 1e-6
    groups: dict = {}
    for x in lines:
        groups.setdefault(x["prompt_id"], []).append(x)
    for group in groups.values():  # the saved advantages are GRPO's, by hand: (r - mean) / (std + 1e-4)
        r = [x["reward"] for x in group if x["reward"] is not None]
        mean, std = float(np.mean(r)), float(np.std(r))
        for x in group:
            want = None if x["reward"] is None else (0.0 if max(r) == min(r) else (x["reward"] - mean) / (std + 1e-4))
            assert (x["advantage"] is None) == (want is None) and (want is None or abs(x["advantage"] - want) < 1e-6)
    for x in lines:
        assert x["step"] == 2 and x["prompt_id"]
        if x["audio"]:
            info = sf.info(out / "rollouts" / x["audio"])
            assert info.subtype == "PCM_16" and info.frames > 0
    assert [s.step for s in run.rollouts] == [2]
    assert sum(len(r) for _, _, r in run.rollouts[0].groups) == len(lines)
    assert "No rollouts saved" not in html and "<audio" in html
