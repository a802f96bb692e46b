"""Hostile ids and paths (issue #14): refused per item, the run goes on, nothing is written outside OUT_DIR.

Real ``wavalign score`` and ``wavalign eval`` runs (subprocesses, model-free scorers and adapter) on manifests and
benchmark data whose ids are ``../x``, absolute paths, NUL bytes, 300-byte names, lone surrogates, bytes that are
not UTF-8, and ids that would share a response file; audio paths that point outside the data folder are read (user
data) but never written. The whole tree around OUT_DIR (the working directory included) is fingerprinted before and
after each run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalsuite.adapters import safe_name
from evalsuite.inputs import MAX_ID_BYTES, id_problem, load_items

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

HOSTILE_IDS = {
    "../escape": "climbs out",
    "a/../../escape": "climbs out",
    "..\\windows": "climbs out",
    "/tmp/absolute": "absolute path",
    "\\\\server\\share": "absolute path",
    "C:evil": "absolute path",
    "~root": "absolute path",
    "nul\x00id": "control character",
    "new\nline": "control character",
    "x" * 300: "300 bytes long",
    "é" * 101: "202 bytes long",
    "": "empty",
}
RUN_IDS = [i for i in HOSTILE_IDS if i]  # an empty id in a row means "none": the row gets its default id


def fingerprint(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Every file and folder under ``root`` (but ``skip``): its kind, size and sha256."""
    out = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"link {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = f"{path.stat().st_size} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return out


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def tone(path: Path) -> Path:
    t = np.arange(8000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def test_id_rules():
    for item_id, why in HOSTILE_IDS.items():
        problem = id_problem(item_id)
        assert problem is not None and why in problem, (item_id, problem)
    assert id_problem("\ud800x") is not None and "Unicode" in id_problem("\ud800x")
    for fine in ("q1", "sub/water", "what is 2+2?", "...", "a..b", "x" * MAX_ID_BYTES, "法国-01"):
        assert id_problem(fine) is None, fine


EXAMPLES = []


@settings(max_examples=500, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(item_id=st.one_of(
    st.text(max_size=260),
    st.text(alphabet=st.sampled_from(["/", "\\", ".", "a", "~", ":", "\x00", "é", "C", " "]), max_size=40),
    st.lists(st.sampled_from(["..", ".", "a", "", "b c", "é"]), max_size=8).map("/".join),
))
def test_an_accepted_id_names_a_file_inside_the_responses_folder(item_id, tmp_path_factory):
    """Any id the rules accept becomes one file name directly under responses/ (resolved, never outside, never
    longer than a name may be, always encodable); a refused one has a reason."""
    EXAMPLES.append(item_id)
    problem = id_problem(item_id)
    if problem is not None:
        assert isinstance(problem, str) and problem
        return
    folder = Path("/out/responses")
    target = (folder / f"{safe_name(item_id)}.wav").resolve()
    assert target.parent == folder
    assert len(target.name.encode("utf-8")) <= 255
    item_id.encode("utf-8")


def test_fuzzed_id_count(report):
    report(f"fuzz ids: {len(EXAMPLES)} Hypothesis examples of item ids")
    assert len(EXAMPLES) >= 500


def hostile_manifest(root: Path, data: Path) -> Path:
    """A score manifest with every hostile id, a line that is not UTF-8, one escaping a lone surrogate, audio read
    from outside the manifest's folder, and two good items."""
    outside = tone(root / "outside.wav")
    lines = [json.dumps({"id": item_id, "audio": "good.wav", "text": "hello"}) for item_id in RUN_IDS]
    lines.append(json.dumps({"id": "good", "audio": "good.wav", "text": "hello"}))
    lines.append(json.dumps({"id": "reads-outside", "audio": "../outside.wav"}))
    lines.append(json.dumps({"id": "reads-absolute", "audio": str(outside)}))
    lines.append(json.dumps({"id": "reads-etc", "audio": "/etc/passwd"}))
    lines.append('{"id": "\\ud800lone", "audio": "good.wav"}')
    manifest = data / "manifest.jsonl"
    tone(data / "good.wav")
    manifest.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "\xff\xfe"}\n')
    return manifest


def test_score_refuses_hostile_ids_per_item_and_writes_only_into_out_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    manifest = hostile_manifest(tmp_path, data)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"
    before = fingerprint(tmp_path)
    result = cli("score", str(manifest), "-o", str(out), "--scorers", "loudness", "--no-progress", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert fingerprint(tmp_path, skip=out) == before  # nothing outside OUT_DIR was created or changed
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "scores.csv", "scores.jsonl", "summary.json"]
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
    n_lines = len(RUN_IDS) + 6
    assert len(rows) == n_lines and len({r["id"] for r in rows}) == n_lines
    refused = [r for r in rows if r["id"].startswith("refused-")]
    assert len(refused) == len(RUN_IDS)
    for row in refused:
        assert "refused:" in row["audio.error"] and row["loudness.value"] is None
    by_id = {r["id"]: r for r in rows}
    for good in ("good", "reads-outside", "reads-absolute"):  # reading outside is allowed: the user's data
        assert by_id[good]["audio.error"] is None and by_id[good]["loudness.value"] == pytest.approx(
            20 * np.log10(0.3 / np.sqrt(2)), abs=0.05)
    assert by_id["reads-etc"]["audio.error"].startswith("unreadable")
    bad_lines = [r for r in rows if r["id"].startswith("line")]
    assert len(bad_lines) == 2
    assert any("lone surrogate" in r["audio.error"] for r in bad_lines)
    assert any("not valid UTF-8" in r["audio.error"] for r in bad_lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == n_lines and summary["n_items_with_errors"] == len(RUN_IDS) + 3


def test_folder_items_keep_subfolder_ids_and_refuse_undecodable_names(tmp_path):
    root = tmp_path / "answers"
    (root / "sub").mkdir(parents=True)
    tone(root / "sub" / "water.wav")
    # a file name that is not UTF-8 (a surrogate-escaped str in Python)
    os.rename(tone(root / "plain.wav"), os.fsencode(root) + b"/bad\xffname.wav")
    items = {item.id: item for item in load_items(root)}
    assert items["sub/water"].error is None
    (refused,) = [i for i in items.values() if i.id.startswith("refused-")]
    assert "not valid Unicode" in refused.error and refused.audio_path is None


def hostile_benchmark(tmp_path: Path) -> Path:
    data = tmp_path / "bench" / "data"
    data.mkdir(parents=True)
    outside = tone(tmp_path / "outside.wav")
    ids = [*RUN_IDS, "good", "sub/one", "a b", "a_b"]
    rows = [{"id": item_id, "prompt": "Is it blue?", "reference": "blue", "audio": "q.wav"} for item_id in ids]
    rows.append({"id": "prompt-outside", "prompt": "Is it red?", "reference": "red", "audio": str(outside)})
    tone(data / "q.wav")
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    definition = {
        "name": "hostile", "version": 1, "source": {"local": "data/items.jsonl"},
        "fields": {"id": "id", "audio": "audio", "prompt": "prompt", "reference": "reference"},
        "scorers": [{"name": "eval_fakes:ContainsScorer", "column": "contains"}],
        "metrics": [{"name": "accuracy", "column": "contains.value", "scale": 100}],
        "primary": "accuracy",
    }
    path = tmp_path / "bench" / "hostile.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def test_eval_refuses_hostile_ids_per_item_and_writes_only_into_out_dir(tmp_path):
    definition = hostile_benchmark(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    runs = tmp_path / "runs"
    out = runs / "echo"
    before = fingerprint(tmp_path)
    result = cli("eval", "-b", str(definition), "--model", "eval_fakes:EchoAdapter", "-o", str(out),
                 "--no-progress", "--no-leaderboard", cwd=cwd)
    assert result.returncode == 0, result.stderr
    after = fingerprint(tmp_path, skip=out)
    assert after == {**before, "runs": "dir"}  # OUT_DIR's parent was made for it; nothing else appeared
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(RUN_IDS) + 5
    refused = [r for r in rows if r["id"].startswith("refused-")]
    assert len(refused) == len(RUN_IDS)
    assert all("refused:" in r["response.error"] and r["response.audio"] is None for r in refused)
    by_id = {r["id"]: r for r in rows}
    assert "would share responses/a_b.wav with item 'a b'" in by_id["a_b"]["response.error"]
    written = sorted(p.name for p in (out / "responses").iterdir())
    assert written == ["a_b.wav", "good.wav", "prompt-outside.wav", "sub_one.wav"]
    assert by_id["a b"]["response.audio"] == "responses/a_b.wav" and by_id["sub/one"]["contains.value"] == 1.0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["n_items_with_errors"] == len(RUN_IDS) + 1

    # The leaderboard is the one documented write beside OUT_DIR (OUT_DIR/../leaderboard.*): nothing else.
    second = runs / "echo-2"
    before = fingerprint(tmp_path, skip=second)
    result = cli("eval", "-b", str(definition), "--model", "eval_fakes:EchoAdapter", "--model-name", "echo-2",
                 "-o", str(second), "--no-progress", cwd=cwd)
    assert result.returncode == 0, result.stderr
    changed = {k for k, v in fingerprint(tmp_path, skip=second).items() if before.get(k) != v}
    assert changed == {"runs/leaderboard.csv", "runs/leaderboard.md", "runs/leaderboard.png"}
