"""The eval runner on model-free adapters and scorers: rows, metrics, per-item failures, resume, shards, CLI."""

from __future__ import annotations

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
import yaml

from evalsuite.adapters import AdapterError, ResponsesFile, build_adapter
from evalsuite.benchmark import BenchmarkError, list_benchmarks, load_benchmark, parse_benchmark
from evalsuite.eval import EvalConfig, RunConflictError, plan_scorers, run_eval

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FAKES = "eval_fakes"


@pytest.fixture(autouse=True)
def _fakes_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def _tone(path: Path, seconds: float = 0.6) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    return path


QUESTIONS = [("q1", "What is the capital of France?", "France", "qa"),
             ("q2", "Which planet is red, Mars?", "Mars", "qa"),
             ("q3", "Pick one: Venus?", "Earth", "mcq"),
             ("q4", "Name a colour like blue?", "blue", "qa"),
             ("q5", "Is water wet, yes?", "yes", "mcq")]


def _benchmark(tmp_path: Path, *, audio: bool = True, extra_items=(), metrics=None, scorers=None) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = []
    for item_id, prompt, reference, category in QUESTIONS:
        row = {"id": item_id, "prompt": prompt, "reference": reference, "category": category}
        if audio:
            row["audio"] = _tone(data / f"{item_id}.wav").name
        rows.append(row)
    rows += list(extra_items)
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    definition = {
        "name": "tiny-test", "version": 1, "description": "runner test",
        "source": {"local": "data/items.jsonl"},
        "fields": {"id": "id", "audio": "audio", "prompt": "prompt", "reference": "reference",
                   "meta": ["category"]},
        "scorers": scorers or [
            {"name": f"{FAKES}:ContainsScorer", "column": "contains"},
            {"name": f"{FAKES}:WordsInAnswerScorer", "column": "nwords", "where": {"category": "qa"}},
        ],
        "metrics": metrics or [
            {"name": "accuracy", "column": "contains.value", "scale": 100},
            {"name": "length", "column": "nwords.value", "higher_is_better": False},
        ],
        "primary": "accuracy",
    }
    path = tmp_path / "tiny-test.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_run_writes_rows_metrics_and_response_audio(tmp_path):
    bench = load_benchmark(_benchmark(tmp_path))
    adapter = build_adapter(f"{FAKES}:EchoAdapter")
    result = run_eval(bench, adapter, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4", "q5"]
    # answers end with the last word of the question: France, Mars, Venus, blue, yes → 4 of 5 contain the reference
    assert [r["contains.value"] for r in rows] == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert rows[0]["response.text"].startswith("I heard audio.")
    assert (tmp_path / "run" / rows[0]["response.audio"]).is_file()
    # nwords only ran where category == qa; the mcq items have no such column (not failures)
    assert "nwords.value" not in rows[2] and rows[0]["nwords.value"] == 7.0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["format"] == "wavalign.eval/1" and res["complete"] and res["n_items_with_errors"] == 0
    assert res["metrics"]["accuracy"]["value"] == pytest.approx(80.0)
    assert res["metrics"]["accuracy"]["n"] == 5 and res["metrics"]["accuracy"]["n_failed"] == 0
    # length: the mean word count of the qa items' answers, counted here from the rows' own texts
    qa_words = [len(r["response.text"].split()) for r in rows if r["meta"]["category"] == "qa"]
    assert qa_words == [7, 7, 7]
    assert res["metrics"]["length"]["value"] == pytest.approx(sum(qa_words) / len(qa_words))
    assert res["metrics"]["length"]["n"] == 3 and res["metrics"]["length"]["n_failed"] == 0
    assert res["benchmark"]["definition_sha256"] and res["environment"]["packages"]
    assert res["model"]["name"] == "echo" and res["primary"] == "accuracy"
    assert result.all_scored
    assert (tmp_path / "run" / "samples.csv").read_text().startswith("id,prompt,")


def test_bad_prompt_audio_failing_adapter_item_and_missing_response_are_per_item(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    _tone(data / "boom.wav")
    extra = [
        {"id": "corrupt", "prompt": "Hello there?", "reference": "there", "category": "qa", "audio": "broken.wav"},
        {"id": "missing", "prompt": "Hi you?", "reference": "you", "category": "qa", "audio": "nope.wav"},
        {"id": "boom", "prompt": "Explode now?", "reference": "now", "category": "qa", "audio": "boom.wav"},
        {"id": "noaudio", "prompt": "Quiet?", "reference": "Quiet", "category": "qa"},
    ]
    bench = load_benchmark(_benchmark(tmp_path, extra_items=extra))
    result = run_eval(bench, build_adapter(f"{FAKES}:EchoAdapter"), tmp_path / "run", EvalConfig(batch_size=8),
                      progress=False)
    rows = {r["id"]: r for r in _rows(tmp_path / "run")}
    assert len(rows) == 9
    assert rows["noaudio"]["response.error"] == "row 8: no 'audio' (fields.audio)"
    assert rows["corrupt"]["response.error"].startswith("prompt audio unreadable")
    assert rows["missing"]["response.error"].startswith("prompt audio missing")
    assert "model failed: RuntimeError: model exploded" in rows["boom"]["response.error"]
    for bad in ("corrupt", "missing", "boom", "noaudio"):
        assert rows[bad]["contains.value"] is None and rows[bad]["contains.error"].startswith("no response:")
    # the items in the same batch as the exploding one were answered one by one
    assert rows["q1"]["contains.value"] == 1.0
    res = result.results
    assert res["metrics"]["accuracy"]["n"] == 5 and res["metrics"]["accuracy"]["n_failed"] == 4
    assert res["n_items_with_errors"] == 4 and not result.all_scored


def test_rerun_without_resume_refuses_and_resume_skips_done_items(tmp_path):
    bench = load_benchmark(_benchmark(tmp_path))
    log = tmp_path / "answered.log"
    adapter = build_adapter(f"{FAKES}:EchoAdapter", {"log": str(log)})
    run_eval(bench, adapter, tmp_path / "run", EvalConfig(limit=3), progress=False)
    assert log.read_text().split() == ["q1", "q2", "q3"]
    with pytest.raises(RunConflictError, match="--resume"):
        run_eval(bench, adapter, tmp_path / "run", progress=False)
    result = run_eval(bench, adapter, tmp_path / "run", EvalConfig(resume=True), progress=False)
    assert log.read_text().split() == ["q1", "q2", "q3", "q4", "q5"]
    assert result.n_resumed == 3 and result.n_done_now == 2 and result.results["complete"]
    other = load_benchmark(_benchmark(tmp_path, metrics=[{"name": "accuracy", "column": "contains.value"}]))
    assert other.metrics[0].scale == 1.0
    with pytest.raises(RunConflictError, match="other settings"):
        run_eval(bench, build_adapter(f"{FAKES}:EchoAdapter", {"speak": False}), tmp_path / "run",
                 EvalConfig(resume=True), progress=False)
    run_eval(bench, adapter, tmp_path / "run", EvalConfig(overwrite=True, limit=1), progress=False)
    assert [r["id"] for r in _rows(tmp_path / "run")] == ["q1"]


def test_scorers_reading_the_transcript_get_asr_first():
    bench = parse_benchmark({
        "name": "x", "version": 1, "primary": "a",
        "scorers": [{"name": "judge", "args": {"rubric": "open"}}, {"name": "quality"}],
        "metrics": [{"name": "a", "column": "judge.value"}],
    })
    assert [(s.name, on, p) for s, on, p in plan_scorers(bench, EvalConfig())] == [
        ("judge", "text", "judge"), ("quality", "text", "quality")]
    assert [(s.name, on, p) for s, on, p in plan_scorers(bench, EvalConfig(judge_on="transcript"))] == [
        ("asr", "text", "asr"), ("judge", "transcript", "judge"), ("quality", "text", "quality")]
    assert [(s.name, on, p) for s, on, p in plan_scorers(bench, EvalConfig(judge_on="both"))] == [
        ("asr", "text", "asr"), ("judge", "text", "judge"), ("judge", "transcript", "judge_s2s"),
        ("quality", "text", "quality")]


def test_definition_errors_are_clear(tmp_path):
    with pytest.raises(BenchmarkError, match="did you mean 'demo'"):
        load_benchmark("dmeo")
    base = {"name": "x", "version": 1, "primary": "a", "scorers": [{"name": "mcq"}],
            "metrics": [{"name": "a", "column": "mcq.value"}]}
    parse_benchmark(base)
    with pytest.raises(BenchmarkError, match="unknown keys"):
        parse_benchmark({**base, "scorer": []})
    with pytest.raises(BenchmarkError, match="which no scorer writes"):
        parse_benchmark({**base, "metrics": [{"name": "a", "column": "judge.value"}]})
    with pytest.raises(BenchmarkError, match="primary"):
        parse_benchmark({**base, "primary": "b"})
    with pytest.raises(BenchmarkError, match="on must be"):
        parse_benchmark({**base, "scorers": [{"name": "mcq", "on": "speech"}]})


def test_builtin_definitions_parse_and_list():
    names = [b.name for b in list_benchmarks()]
    assert "demo" in names
    for b in list_benchmarks():
        assert b.primary in [m.name for m in b.metrics]


def test_responses_file_with_item_fields_needs_no_benchmark_data(tmp_path):
    """VoiceBench's own output files (prompt, response, reference per line, dataset order) are rescored as is."""
    outputs = tmp_path / "mymodel-openbookqa-test-audio.jsonl"
    lines = [{"prompt": p, "response": f"Well, {ref} it is.", "reference": ref} for _, p, ref, _ in QUESTIONS[:3]]
    lines[2]["response"] = "no idea"
    outputs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    definition = {"name": "rescore", "version": 1, "source": {"hf": "nobody/offline-only", "split": "test"},
                  "fields": {"audio": "audio", "prompt": "prompt", "reference": "reference"},
                  "scorers": [{"name": f"{FAKES}:ContainsScorer", "column": "contains"}],
                  "metrics": [{"name": "acc", "column": "contains.value", "scale": 100}], "primary": "acc"}
    path = tmp_path / "rescore.yaml"
    path.write_text(yaml.safe_dump(definition))
    adapter = build_adapter(f"responses:{outputs}")
    assert isinstance(adapter, ResponsesFile) and adapter.name == outputs.stem
    result = run_eval(load_benchmark(path), adapter, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    assert [r["id"] for r in rows] == ["test-0000", "test-0001", "test-0002"]
    assert [r["contains.value"] for r in rows] == [1.0, 1.0, 0.0]
    assert result.results["metrics"]["acc"]["value"] == pytest.approx(200 / 3)


VOICEBENCH = REPO / "tests" / "data" / "voicebench"
OBQA = [("Which of these would help a plant grow? A. darkness, B. sunlight, C. salt water, D. a closed box.", "B"),
        ("What is made of many cells? A. a rock, B. a coin, C. a dog, D. a spoon.", "C")]  # the fixture's rows


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_responses_file_that_is_the_data_keeps_its_own_ids(tmp_path):
    """voicebench-openbookqa maps no id: a file that is the data gives its rows' ids to the items (issue #11)."""
    outputs = _jsonl(tmp_path / "obqa.jsonl", [
        {"id": "obqa-7", "prompt": OBQA[1][0], "reference": "C", "response": "It is C, a dog."},
        {"id": "obqa-3", "prompt": OBQA[0][0], "reference": "B", "response": "D"}])
    result = run_eval(load_benchmark("voicebench-openbookqa"), build_adapter(f"responses:{outputs}"),
                      tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    assert [(r["id"], r["response.error"], r["mcq.value"]) for r in rows] == [("obqa-7", None, 1.0),
                                                                              ("obqa-3", None, 0.0)]
    assert result.results["responses_matched_by"] == "id"
    assert result.results["config"]["data_source"] == f"items from {outputs}"


def test_responses_file_with_data_matches_by_id_when_both_sides_have_ids(tmp_path):
    """bbh's items have ids; the file lists them in the other order, so matching by position would swap them."""
    outputs = _jsonl(tmp_path / "bbh.jsonl", [{"id": "hyperbaton_0", "response": "The answer is (A)."},
                                               {"id": "sports_understanding_0", "response": "No, not plausible."}])
    result = run_eval(load_benchmark("voicebench-bbh"), build_adapter(f"responses:{outputs}"), tmp_path / "run",
                      EvalConfig(data=str(VOICEBENCH)), progress=False)
    rows = {r["id"]: r for r in _rows(tmp_path / "run")}
    assert rows["sports_understanding_0"]["response.text"] == "No, not plausible."
    assert rows["hyperbaton_0"]["response.text"] == "The answer is (A)."
    assert result.results["responses_matched_by"] == "id"
    assert result.results["metrics"]["accuracy"]["value"] == 100.0


@pytest.mark.parametrize("with_ids", [False, True])
def test_responses_file_with_data_matches_by_position_without_item_ids(tmp_path, with_ids):
    """openbookqa's items have no ids: rows answer items in order, whatever ids the file has (issue #11: a file
    with ids failed every item, "no row with id 'test-0000'")."""
    rows = [{"response": "B. Sunlight."}, {"response": "A rock, so A."}]
    if with_ids:
        rows = [{"id": f"vb-{k}", **r} for k, r in enumerate(rows)]
    outputs = _jsonl(tmp_path / "obqa.jsonl", rows)
    result = run_eval(load_benchmark("voicebench-openbookqa"), build_adapter(f"responses:{outputs}"),
                      tmp_path / "run", EvalConfig(data=str(VOICEBENCH)), progress=False)
    got = _rows(tmp_path / "run")
    assert [(r["id"], r["response.text"], r["mcq.value"]) for r in got] == [
        ("test-0000", "B. Sunlight.", 1.0), ("test-0001", "A rock, so A.", 0.0)]
    assert [r["reference"] for r in got] == [ref for _, ref in OBQA]
    assert result.results["responses_matched_by"] == "position"
    assert result.results["config"]["data_source"] == str(VOICEBENCH)


def test_responses_file_without_item_ids_on_one_row_goes_by_position(tmp_path):
    """A file that is the data but where one row lacks an id: generated ids for all, by position."""
    outputs = _jsonl(tmp_path / "obqa.jsonl", [
        {"id": "obqa-3", "prompt": OBQA[0][0], "reference": "B", "response": "B"},
        {"prompt": OBQA[1][0], "reference": "C", "response": "C"}])
    result = run_eval(load_benchmark("voicebench-openbookqa"), build_adapter(f"responses:{outputs}"),
                      tmp_path / "run", progress=False)
    assert [(r["id"], r["mcq.value"]) for r in _rows(tmp_path / "run")] == [("test-0000", 1.0), ("test-0001", 1.0)]
    assert result.results["responses_matched_by"] == "position"


def test_responses_folder_matches_ids_and_reports_missing(tmp_path):
    bench = load_benchmark(_benchmark(tmp_path))
    answers = tmp_path / "answers"
    answers.mkdir()
    (answers / "q1.txt").write_text("France!")
    _tone(answers / "q1.wav")
    (answers / "q2.txt").write_text("Jupiter")
    result = run_eval(bench, build_adapter(f"responses:{answers}"), tmp_path / "run", progress=False)
    rows = {r["id"]: r for r in _rows(tmp_path / "run")}
    assert rows["q1"]["contains.value"] == 1.0 and rows["q1"]["response.audio"] == "responses/q1.wav"
    assert rows["q2"]["contains.value"] == 0.0 and rows["q2"]["response.audio"] is None
    assert "no response file for 'q3'" in rows["q3"]["response.error"]
    assert result.results["metrics"]["accuracy"]["n_failed"] == 3


def test_adapter_spec_errors(tmp_path):
    with pytest.raises(AdapterError, match="did you mean 'cascade'"):
        build_adapter("cascad")
    with pytest.raises(AdapterError, match="does not exist"):
        build_adapter(f"responses:{tmp_path / 'nothing'}")
    with pytest.raises(AdapterError, match="cannot import"):
        build_adapter("nosuchpkg.mod:Model")


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]), **(env or {})},
                          **kw)


@pytest.mark.slow
def test_cli_resume_after_a_real_kill_loses_and_repeats_nothing(tmp_path):
    path = _benchmark(tmp_path)
    log = tmp_path / "answered.log"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli", "eval", "--benchmark", str(path), "--model", f"{FAKES}:EchoAdapter",
           "--model-arg", "delay=0.4", "--batch-size", "1", "-o", str(out), "--no-progress", "--no-leaderboard"]
    env = {**os.environ, "ECHO_ADAPTER_LOG": str(log), "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (out / "samples.jsonl").exists() and len((out / "samples.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [json.loads(x)["id"] for x in (out / "samples.jsonl").read_text().splitlines()]
    assert 2 <= len(done_before) < 5
    again = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4", "q5"]
    answered = log.read_text().split()
    # every item answered once, except at most the one in flight when the kill came
    assert len(answered) - len(set(answered)) <= 1 and set(answered) == {"q1", "q2", "q3", "q4", "q5"}
    assert "resumed from an earlier run" in again.stdout


@pytest.mark.slow
def test_cli_eval_exit_codes_and_list(tmp_path):
    listed = _cli("eval", "--list")
    assert listed.returncode == 0 and "demo" in listed.stdout
    unknown = _cli("eval", "--benchmark", "dmeo")
    assert unknown.returncode == 2 and "did you mean 'demo'" in unknown.stderr
    extra = [{"id": "boom", "prompt": "Explode now?", "reference": "now", "category": "qa"}]
    path = _benchmark(tmp_path, extra_items=extra)
    failed = _cli("eval", "--benchmark", str(path), "--model", f"{FAKES}:EchoAdapter", "-o", str(tmp_path / "r"),
                  "--no-progress")
    assert failed.returncode == 0, failed.stderr  # a completed run, its per-item error recorded (issue #11)
    assert "6/6 items, 1 with errors" in failed.stdout
    assert (tmp_path / "leaderboard.csv").is_file()
    strict = _cli("eval", "--benchmark", str(path), "--model", f"{FAKES}:EchoAdapter", "-o", str(tmp_path / "r"),
                  "--no-progress", "--resume", "--strict")
    assert strict.returncode == 1 and "6/6 items, 1 with errors" in strict.stdout, strict.stderr


def _text_only_run(tmp_path: Path, answers: list[str | None], *flags: str):
    """`wavalign eval` (in process) on a text-judged definition that also has speech scorers (asr, loudness,
    prosody, and a scorer reading the transcript), answered by a text-only responses file that is the data."""
    from typer.testing import CliRunner

    from cli import app

    definition = {"name": "text-judged", "version": 1, "source": {"hf": "nobody/offline-only", "split": "test"},
                  "fields": {"id": "id", "prompt": "prompt", "reference": "reference"},
                  "scorers": [{"name": "mcq", "on": "auto"}, {"name": "asr"}, {"name": "loudness"},
                              {"name": "prosody"}, {"name": f"{FAKES}:WordsInAnswerScorer", "column": "heard",
                               "on": "transcript"}],
                  "metrics": [{"name": "accuracy", "column": "mcq.value", "scale": 100},
                              {"name": "level", "column": "loudness.value"},
                              {"name": "wer", "column": "asr.wer_consistency", "higher_is_better": False},
                              {"name": "heard_words", "column": "heard.value"}],
                  "primary": "accuracy"}
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "text-judged.yaml"
    path.write_text(yaml.safe_dump(definition))
    rows = []
    for k, (prompt, reference) in enumerate(OBQA):
        rows.append({"id": f"q{k}", "prompt": prompt, "reference": reference,
                     **({"response": answers[k]} if answers[k] is not None else {})})
    outputs = _jsonl(tmp_path / "answers.jsonl", rows)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["eval", "-b", str(path), "--model", f"responses:{outputs}", "-o", str(out),
                                      "--no-progress", "--no-leaderboard", *flags])
    return result, out


def test_text_only_answers_leave_no_errors_and_exit_0(tmp_path):
    result, out = _text_only_run(tmp_path, ["B, sunlight.", "A"])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["n_items_with_errors"] == 0 and res["complete"]
    m = res["metrics"]["accuracy"]
    assert (m["value"], m["n"], m["n_failed"], m["n_not_applicable"]) == (50.0, 2, 0, 0)
    for metric in ("level", "wer", "heard_words"):  # the speech scorers: counted apart, never a number
        m = res["metrics"][metric]
        assert (m["value"], m["n"], m["n_failed"], m["n_not_applicable"]) == (None, 0, 0, 2), metric
    assert res["n_not_applicable"] == {"asr": 2, "mcq": 0, "loudness": 2, "prosody": 2, "heard": 2}
    for row in _rows(out):
        for prefix in ("asr", "loudness", "prosody", "heard"):
            assert row[f"{prefix}.value"] is None and row[f"{prefix}.error"] is None
            assert row[f"{prefix}.not_applicable"], prefix
        assert "mcq.not_applicable" not in row
    assert "text only" in _rows(out)[0]["loudness.not_applicable"]
    assert "no transcript to read" in _rows(out)[0]["heard.not_applicable"]
    header = (out / "samples.csv").read_text().splitlines()[0].split(",")
    assert header.index("loudness.not_applicable") == header.index("loudness.error") + 1  # shown in the table


def test_strict_exits_1_when_an_item_has_an_error(tmp_path):
    result, out = _text_only_run(tmp_path, ["B", None])  # the second row has no answer: an error
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["n_items_with_errors"] == 1 and res["metrics"]["accuracy"]["n_failed"] == 1
    assert "no response/text/answer/output or audio" in _rows(out)[1]["response.error"]
    strict, _ = _text_only_run(tmp_path / "again", ["B", None], "--strict")
    assert strict.exit_code == 1, strict.output
    clean, _ = _text_only_run(tmp_path / "clean", ["B", "C"], "--strict")
    assert clean.exit_code == 0, clean.output


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_equal_one_process(tmp_path):
    path = _benchmark(tmp_path)
    single = _cli("eval", "--benchmark", str(path), "--model", f"{FAKES}:EchoAdapter", "-o", str(tmp_path / "one"),
                  "--no-progress", "--no-leaderboard", "--batch-size", "2")
    assert single.returncode == 0, single.stderr
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", str(_free_port()),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cli", "eval",
              "--benchmark", str(path), "--model", f"{FAKES}:EchoAdapter", "-o", str(tmp_path / "two"),
              "--no-progress", "--no-leaderboard", "--batch-size", "2"]
    ranks = tmp_path / "ranks.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]), "ECHO_ADAPTER_RANKS": str(ranks)}
    two = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    strip = ("response.seconds",)
    one_rows = [{k: v for k, v in r.items() if k not in strip} for r in _rows(tmp_path / "one")]
    two_rows = [{k: v for k, v in r.items() if k not in strip} for r in _rows(tmp_path / "two")]
    assert one_rows == two_rows
    answered = sorted(line.split() for line in ranks.read_text().splitlines())
    # every item answered once, by the process whose shard holds it (items k % 2 == rank)
    assert answered == [["0", "q1"], ["0", "q3"], ["0", "q5"], ["1", "q2"], ["1", "q4"]]
    assert not list((tmp_path / "two").glob("samples.rank*.jsonl"))
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r1["metrics"] == r2["metrics"]
    assert sorted(p.name for p in (tmp_path / "two" / "responses").iterdir()) == [f"q{i}.wav" for i in range(1, 6)]


def test_pooled_ratio_and_mean_of_metrics():
    """VoiceBench's IFEval: instruction-level accuracy pools instructions; the score is the mean of four."""
    from evalsuite.eval import _metric_values

    rows = [{"id": "a", "x.followed": 1, "x.n": 1, "x.prompt": 1.0},
            {"id": "b", "x.followed": 1, "x.n": 3, "x.prompt": 0.0},
            {"id": "c", "x.followed": None, "x.n": None, "x.prompt": None}]
    plan = [{"name": "inst", "column": "x.followed", "denominator": "x.n", "scale": 100, "higher_is_better": True},
            {"name": "prompt", "column": "x.prompt", "scale": 100, "higher_is_better": True},
            {"name": "score", "column": None, "mean_of": ["inst", "prompt"], "scale": 1.0, "higher_is_better": True}]
    out = _metric_values(rows, plan)
    assert out["inst"]["value"] == pytest.approx(50.0)  # 2 of 4 instructions, not the per-item mean (66.7)
    assert out["inst"]["n"] == 2 and out["inst"]["n_failed"] == 1
    assert out["prompt"]["value"] == pytest.approx(50.0)
    assert out["score"]["value"] == pytest.approx(50.0)
    rows[0]["x.prompt"] = None
    rows[1]["x.prompt"] = None
    assert _metric_values(rows, plan)["score"]["value"] is None  # a part without a value → no overall number


@pytest.mark.slow
def test_leaderboard_cli_from_two_runs(tmp_path):
    path = _benchmark(tmp_path)
    for name, speak in (("talker", "true"), ("writer", "false")):
        done = _cli("eval", "--benchmark", str(path), "--model", f"{FAKES}:EchoAdapter", "--model-name", name,
                    "--model-arg", f"speak={speak}", "-o", str(tmp_path / "runs" / name), "--no-progress",
                    "--no-leaderboard")
        assert done.returncode == 0, done.stderr
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "results.json").write_text("{not json")
    board = _cli("leaderboard", str(tmp_path / "runs"), "-o", str(tmp_path / "board" / "lb.csv"))
    assert board.returncode == 0, board.stderr
    assert "broken" in board.stderr  # the unreadable results file is named in a warning, the rest is used
    import csv

    rows = list(csv.DictReader((tmp_path / "board" / "lb.csv").open()))
    assert sorted(r["model"] for r in rows) == ["talker", "writer"]
    assert all(float(r["tiny-test/accuracy"]) == 80.0 for r in rows)
    assert (tmp_path / "board" / "lb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tiny-test/accuracy" in (tmp_path / "board" / "lb.md").read_text()
    empty = _cli("leaderboard", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "x.csv"))
    assert empty.returncode == 2 and empty.stderr.startswith("error:")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_column_stats_survive_absurd_numbers():
    """A number extracted from a transcript of 200 digits (1e217) once crashed the run at its very end."""
    from evalsuite.results import column_stats

    rows = [{"id": str(i), "judge.extracted": v, "judge.value": float(i % 2)}
            for i, v in enumerate([1.0, 1.01e217, 2.0, float("inf"), 1e308, 1e308])]
    stats = column_stats(rows, ["judge.extracted", "judge.value"])
    assert stats["judge.extracted"]["mean"] is None and stats["judge.extracted"]["stderr"] is None
    assert stats["judge.extracted"]["n_scored"] == 6
    assert stats["judge.value"]["mean"] == 0.5 and stats["judge.value"]["stderr"] > 0
    ok = column_stats([{"id": "a", "x.v": 1e200}, {"id": "b", "x.v": -1e200}], ["x.v"])["x.v"]
    assert ok["mean"] == 0.0 and ok["stderr"] is None  # the squares overflow: no stderr, still no crash


def test_cli_rules_llm_fallback_reads_what_the_rules_cannot(tmp_path):
    """--rules-llm-fallback sends only the answers the rules cannot read to the judge's endpoint, and the row says
    so; without it the run stays rule-only (issue #11 part 2)."""
    from typer.testing import CliRunner

    from cli import app
    from tests.rewards.test_rules import _FakeServer

    outputs = _jsonl(tmp_path / "obqa.jsonl", [
        {"id": "easy", "prompt": OBQA[0][0], "reference": "B", "response": "The answer is B."},
        {"id": "hard", "prompt": OBQA[1][0], "reference": "C", "response": "Hmm, the furry one that barks."}])
    server = _FakeServer("<score>3</score>")
    try:
        runs = {}
        for flags in ((), ("--rules-llm-fallback", "--judge-model", "fake", "--judge-base-url", server.url)):
            out = tmp_path / ("llm" if flags else "rules")
            result = CliRunner().invoke(app, ["eval", "-b", "voicebench-openbookqa", "--model", f"responses:{outputs}",
                                              "-o", str(out), "--no-progress", "--no-leaderboard", *flags])
            assert result.exit_code == 0, result.output
            runs[bool(flags)] = {r["id"]: r for r in _rows(out)}
    finally:
        server.close()
    assert len(server.requests) == 1 and "furry" in json.dumps(server.requests[0])
    assert runs[False]["hard"]["mcq.extract_failed"] is True and runs[False]["hard"]["mcq.value"] == 0.0
    assert runs[True]["hard"]["mcq.method"] == "llm" and runs[True]["hard"]["mcq.value"] == 1.0
    assert runs[True]["easy"]["mcq.method"] == "letter" and runs[True]["easy"]["mcq.value"] == 1.0
    bad = CliRunner().invoke(app, ["eval", "-b", "voicebench-openbookqa", "--model", f"responses:{outputs}",
                                   "-o", str(tmp_path / "bad"), "--rules-llm-fallback"])
    assert bad.exit_code == 2 and "--judge-model" in bad.output


@pytest.mark.parametrize("speaks", [True, False])
def test_a_model_that_speaks_and_gives_no_audio_fails_the_speech_scorers(tmp_path, speaks):
    """For a model that says it speaks, an answer without audio is its failure (an error for the speech scorers,
    with the decoder's reason); for a text model it is a text-only answer they do not apply to (issue #11)."""
    from eval_fakes import EchoAdapter

    class Mute(EchoAdapter):
        def respond(self, requests):
            out = super().respond(requests)
            for request, response in zip(requests, out):
                if request.id == "q2":
                    response.audio, response.sample_rate = None, None
                    response.meta["decode_error"] = "codec refused the tokens"
            return out

    adapter = Mute()
    adapter.speaks = speaks
    bench = _benchmark(tmp_path, scorers=[{"name": f"{FAKES}:ContainsScorer", "column": "contains"},
                                          {"name": "loudness"}],
                       metrics=[{"name": "accuracy", "column": "contains.value", "scale": 100},
                                {"name": "level", "column": "loudness.value"}])
    result = run_eval(load_benchmark(str(bench)), adapter, tmp_path / "run", progress=False)
    rows = {r["id"]: r for r in _rows(tmp_path / "run")}
    assert rows["q1"]["loudness.value"] is not None and rows["q2"]["contains.value"] is not None  # text still read
    mute = rows["q2"]
    assert mute["loudness.value"] is None
    if speaks:
        assert "returned no audio" in mute["loudness.error"] and "codec refused" in mute["loudness.error"]
        assert not mute.get("loudness.not_applicable") and result.results["n_items_with_errors"] == 1
    else:
        assert mute["loudness.error"] is None and mute["loudness.not_applicable"]
        assert result.results["n_items_with_errors"] == 0
