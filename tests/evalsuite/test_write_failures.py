"""Write failures (issue #14): a full disk or a read-only output folder gives one clear error line and exit status
3, leaves every completed row intact, and once the fault is gone the same command (``--resume`` for eval and align)
finishes with the outputs of a run that never failed.

Faults come two ways. Injected: the ``os`` module the write layer uses (evalsuite.results, align.train) is wrapped
so that one file's write or fsync fails with ENOSPC, the write landing half first, as a full disk does. Real: a
64 KiB tmpfs and a read-only bind mount, in a user namespace (``unshare -rm``; skipped where that is not allowed).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

import evalsuite.results as results_module
from cli import app

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


@pytest.fixture(autouse=True)
def _fakes_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # eval_fakes:EchoAdapter


class DiskFull:
    """Stands in for ``os`` in one module: the ``after``+1-th ``op`` ("write" or "fsync") on a file whose name ends
    with ``target`` fails with ENOSPC (a write lands half first), and so does every later one on that folder, until
    the test removes it."""

    def __init__(self, real, target: str, op: str, after: int = 0, code: int = errno.ENOSPC):
        self._real, self.target, self.op, self.after, self.code = real, target, op, after, code
        self.seen = 0
        self.folder: str | None = None  # set once the fault fired: the disk stays full
        self.halved = False

    def __getattr__(self, name):
        return getattr(self._real, name)

    def _path(self, fd: int) -> str:
        return self._real.readlink(f"/proc/self/fd/{fd}")

    def _fails(self, fd: int, op: str) -> bool:
        path = self._path(fd)
        if self.folder is not None:
            return path.startswith(self.folder)
        if op == self.op and path.endswith(self.target):
            self.seen += 1
            if self.seen > self.after:
                self.folder = str(Path(path).parent)
                return True
        return False

    def write(self, fd, data):
        if self._fails(fd, "write"):
            if len(data) > 1 and not self.halved:
                self.halved = True
                return self._real.write(fd, bytes(data[: len(data) // 2]))  # half lands; the next call fails
            raise OSError(self.code, os.strerror(self.code))
        return self._real.write(fd, data)

    def fsync(self, fd):
        if self._fails(fd, "fsync"):
            raise OSError(self.code, os.strerror(self.code))
        return self._real.fsync(fd)


def _one_error_line(stderr: str, *expected: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _no_tmp(out: Path) -> None:
    assert not list(out.rglob("*.tmp")), list(out.rglob("*.tmp"))


# --- wavalign score ------------------------------------------------------------------------------------------------


def _clips(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        t = np.arange(8000) / 16000
        sf.write(folder / f"c{k:02d}.wav", ((0.05 + 0.05 * k) * np.sin(2 * np.pi * (200 + 30 * k) * t)
                                             ).astype(np.float32), 16000)
    return folder


def _score(src: Path, out: Path):
    return CliRunner().invoke(app, ["score", str(src), "-o", str(out), "--scorers", "loudness", "--batch-size", "2",
                                    "--no-progress"])


def _same_scores(out: Path, ref: Path) -> None:
    assert _rows(out / "scores.jsonl") == _rows(ref / "scores.jsonl")
    assert (out / "scores.csv").read_bytes() == (ref / "scores.csv").read_bytes()
    timing = ("seconds", "seconds_by_stage", "environment", "repairs")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


@pytest.mark.parametrize("target,op,after,rows_kept,earlier", [
    ("scores.jsonl", "write", 5, 5, 0),  # the 6th row half written, then the disk is full
    ("scores.jsonl", "fsync", 3, 3, 0),  # the 4th row written but its fsync fails: taken back
    # a run of 4 clips done, 4 clips added: every row written, the new summary is not, the old one stays whole
    ("summary.json.tmp", "fsync", 0, 8, 4),
])
def test_score_on_a_full_disk_exits_3_keeps_its_rows_and_resumes(tmp_path, monkeypatch, target, op, after,
                                                                  rows_kept, earlier):
    out = tmp_path / "out"
    old_summary = None
    if earlier:  # an earlier, complete run on the first clips
        assert _score(_clips(tmp_path / "in", earlier), out).exit_code == 0
        old_summary = (out / "summary.json").read_bytes()
    src = _clips(tmp_path / "in", 8)
    ref = tmp_path / "ref"
    assert _score(src, ref).exit_code == 0
    fault = DiskFull(os, target, op, after)
    monkeypatch.setattr(results_module, "os", fault)
    failed = _score(src, out)
    assert failed.exit_code == 3, failed.output
    assert fault.folder is not None  # the fault fired
    _one_error_line(failed.stderr, f"cannot write {out / target.removesuffix('.tmp')}: No space left on device",
                    "run the same command again")
    # every completed row intact, byte for byte the uninterrupted run's, and nothing half written
    kept = (out / "scores.jsonl").read_bytes()
    assert kept == b"".join((ref / "scores.jsonl").read_bytes().splitlines(keepends=True)[:rows_kept])
    assert (out / "summary.json").read_bytes() == old_summary if earlier else not (out / "summary.json").exists()
    _no_tmp(out)
    monkeypatch.undo()  # space again: the same command resumes
    again = _score(src, out)
    assert again.exit_code == 0, again.output
    assert f"{rows_kept} resumed" in again.output
    _same_scores(out, ref)


# --- wavalign eval -------------------------------------------------------------------------------------------------


def _benchmark(root: Path, n: int = 6) -> Path:
    data = root / "bench" / "data"
    data.mkdir(parents=True)
    rows = []
    for k in range(n):
        t = np.arange(4800) / 16000
        sf.write(str(data / f"q{k}.wav"), (0.1 * np.sin(2 * np.pi * (220 + 20 * k) * t)).astype(np.float32), 16000)
        rows.append({"id": f"q{k}", "prompt": f"Is {k} even, yes?", "reference": "yes" if k % 2 else "no",
                     "audio": f"q{k}.wav"})
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    definition = {"name": "disk-test", "version": 1, "source": {"local": "data/items.jsonl"},
                  "fields": {"id": "id", "audio": "audio", "prompt": "prompt", "reference": "reference"},
                  "scorers": [{"name": "eval_fakes:ContainsScorer", "column": "contains"}, {"name": "loudness"}],
                  "metrics": [{"name": "accuracy", "column": "contains.value", "scale": 100},
                              {"name": "level", "column": "loudness.value"}],
                  "primary": "accuracy"}
    path = root / "bench" / "disk-test.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def _eval_args(definition: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "-b", str(definition), "--model", "eval_fakes:EchoAdapter", "--batch-size", "1", "-o", str(out),
            "--no-progress", "--no-leaderboard", "--no-report", *extra]


def _same_eval(out: Path, ref: Path) -> None:
    def rows(d: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "response.seconds"} for r in _rows(d / "samples.jsonl")]

    def results(d: Path) -> dict:
        r = json.loads((d / "results.json").read_text())
        r["columns"].pop("response.seconds")
        return {k: v for k, v in r.items() if k not in ("seconds", "finished_at", "environment", "repairs")}

    def table(d: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "response.seconds"}
                for r in csv.DictReader((d / "samples.csv").open())]

    assert rows(out) == rows(ref) and table(out) == table(ref) and results(out) == results(ref)
    assert results(out)["complete"]
    wavs = sorted(p.name for p in (ref / "responses").iterdir())
    assert sorted(p.name for p in (out / "responses").iterdir()) == wavs and len(wavs) == len(rows(ref))
    for name in wavs:
        assert (out / "responses" / name).read_bytes() == (ref / "responses" / name).read_bytes(), name


@pytest.mark.parametrize("target,op,after,rows_kept,earlier", [
    ("samples.jsonl", "write", 2, 2, 0),
    ("q4.wav.tmp", "fsync", 0, 4, 0),  # q4's spoken answer cannot be saved: q0-q3 are done, q4 is not
    # a run of 3 items done (--limit 3), resumed for all 6: every row written, the new results are not, the old
    # results.json stays whole
    ("results.json.tmp", "fsync", 0, 6, 3),
])
def test_eval_on_a_full_disk_exits_3_keeps_its_rows_and_resumes(tmp_path, monkeypatch, target, op, after,
                                                                 rows_kept, earlier):
    definition = _benchmark(tmp_path)
    runner = CliRunner()
    ref = tmp_path / "ref"
    assert runner.invoke(app, _eval_args(definition, ref)).exit_code == 0
    out = tmp_path / "out"
    old_results = None
    if earlier:
        assert runner.invoke(app, _eval_args(definition, out, "--limit", str(earlier))).exit_code == 0
        old_results = (out / "results.json").read_bytes()
    monkeypatch.setattr(results_module, "os", DiskFull(os, target, op, after))
    failed = runner.invoke(app, _eval_args(definition, out, *(["--resume"] if earlier else [])))
    assert failed.exit_code == 3, failed.output
    _one_error_line(failed.stderr, "cannot write", target.removesuffix(".tmp"), "No space left on device",
                    "--resume")
    kept = (out / "samples.jsonl").read_bytes()
    ref_lines = (ref / "samples.jsonl").read_bytes().splitlines(keepends=True)
    assert [json.loads(x)["id"] for x in kept.splitlines()] == [f"q{k}" for k in range(rows_kept)]
    assert len(kept.splitlines(keepends=True)) == rows_kept and kept.endswith(b"\n") or not kept
    assert [{k: v for k, v in json.loads(x).items() if k != "response.seconds"} for x in kept.splitlines()] == [
        {k: v for k, v in json.loads(x).items() if k != "response.seconds"} for x in ref_lines[:rows_kept]]
    assert (out / "results.json").read_bytes() == old_results if earlier else not (out / "results.json").exists()
    _no_tmp(out)
    monkeypatch.undo()
    again = runner.invoke(app, _eval_args(definition, out, "--resume"))
    assert again.exit_code == 0, again.output
    _same_eval(out, ref)


# --- wavalign align ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_align_on_a_full_disk_exits_3_keeps_log_and_checkpoint_and_resumes(tmp_path, monkeypatch):
    import torch

    import align.train as train_module

    args = ["align", "--config", "tiny", "--max-steps", "4", "--set", "save_every=2"]
    runner = CliRunner()
    ref = tmp_path / "ref"
    assert runner.invoke(app, [*args, "--output-dir", str(ref)]).exit_code == 0

    def log(d: Path) -> list[dict]:
        timing = ("seconds", "peak_mem_gb")
        return [{k: v for k, v in r.items() if not (k in timing or k.startswith(("t_", "seconds_")))}
                for r in csv.DictReader((d / "log.csv").open())]

    def same_as_ref(d: Path) -> None:
        assert log(d) == log(ref)
        a, b = (torch.load(x / "checkpoint" / "trainer.pt", weights_only=False) for x in (d, ref))
        assert a["step"] == b["step"] == 4
        assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in b["weights"])

    # the log row of step 3 cannot be written (the checkpoint of step 2 is there): resumed from step 2
    out = tmp_path / "log-full"
    monkeypatch.setattr(train_module, "os", DiskFull(os, "log.csv", "write", after=2))
    failed = runner.invoke(app, [*args, "--output-dir", str(out)])
    assert failed.exit_code == 3, failed.output
    _one_error_line(failed.stderr, f"cannot write {out / 'log.csv'}: No space left on device", "--resume")
    assert [r["step"] for r in log(out)] == ["1", "2"] and log(out) == log(ref)[:2]
    monkeypatch.undo()
    again = runner.invoke(app, [*args, "--output-dir", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    same_as_ref(out)

    # the checkpoint of step 4 cannot be saved: the one of step 2 is kept whole, and the log rows after it go
    out = tmp_path / "checkpoint-full"
    monkeypatch.setattr(results_module, "os", DiskFull(os, "trainer.pt.tmp", "fsync", after=1))
    failed = runner.invoke(app, [*args, "--output-dir", str(out)])
    assert failed.exit_code == 3, failed.output
    _one_error_line(failed.stderr, f"cannot write {out / 'checkpoint' / 'trainer.pt'}: No space left on device",
                    "--resume")
    assert torch.load(out / "checkpoint" / "trainer.pt", weights_only=False)["step"] == 2
    _no_tmp(out)
    monkeypatch.undo()
    again = runner.invoke(app, [*args, "--output-dir", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert "dropped the rows of steps 3-4" in again.stderr
    same_as_ref(out)


# --- a real full disk and a real read-only folder (user namespace) -------------------------------------------------


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt 2>/dev/null || "
                            "mount -t tmpfs none /tmp"], capture_output=True, timeout=30)
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(not _unshare_works(),
                                     reason="needs unshare -rm (a user namespace that may mount tmpfs)")


def _cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=_cli_env(), capture_output=True,
                          text=True, timeout=300)


def _in_namespace(script: str, *args: str) -> subprocess.CompletedProcess:
    """``script`` (sh, "$1"... = args) as root of a new user and mount namespace: its mounts vanish with it."""
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *args], cwd=REPO, env=_cli_env(),
                          capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@needs_namespace
def test_eval_on_a_real_full_tmpfs_exits_3_and_the_copy_resumes(tmp_path):
    definition = _benchmark(tmp_path)
    ref = tmp_path / "ref"
    assert _cli(_eval_args(definition, ref)).returncode == 0
    mount, copy = tmp_path / "small-disk", tmp_path / "copy"
    mount.mkdir()
    # 64 KiB: run.json and the first spoken answers (16-bit WAVs of 0.5 s) fit, then the disk is full
    script = ('mount -t tmpfs -o size=64k none "$1" || exit 99; disk=$1; here=$2; copy=$3; shift 3; '
              '"$@" 2>"$here/stderr"; echo $? >"$here/rc"; cp -a "$disk/run" "$copy"')
    done = _in_namespace(script, str(mount), str(tmp_path), str(copy), sys.executable, "-m", "cli",
                         *_eval_args(definition, mount / "run"))
    assert (tmp_path / "rc").read_text().strip() == "3", done.stderr + (tmp_path / "stderr").read_text()
    _one_error_line((tmp_path / "stderr").read_text(), "No space left on device", "--resume")
    rows = _rows(copy / "samples.jsonl")
    assert 0 < len(rows) < 6 and [r["id"] for r in rows] == [f"q{k}" for k in range(len(rows))]
    _no_tmp(copy)
    again = _cli(_eval_args(definition, copy, "--resume"))
    assert again.returncode == 0, again.stderr
    _same_eval(copy, ref)


@pytest.mark.slow
@needs_namespace
def test_a_read_only_output_folder_exits_3_changes_nothing_and_resumes_once_writable(tmp_path):
    # eval: a run of 3 items, resumed for all 6 into a folder that is now read-only
    definition = _benchmark(tmp_path)
    ref = tmp_path / "ref"
    assert _cli(_eval_args(definition, ref)).returncode == 0
    out = tmp_path / "run"
    assert _cli(_eval_args(definition, out, "--limit", "3")).returncode == 0
    before = _snapshot(out)
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 99; shift; "$@"')
    blocked = _in_namespace(script, str(out), sys.executable, "-m", "cli", *_eval_args(definition, out, "--resume"))
    assert blocked.returncode == 3, blocked.stderr
    _one_error_line(blocked.stderr, f"cannot write {out}", "Read-only file system", "--resume")
    assert _snapshot(out) == before  # nothing changed, nothing lost
    again = _cli(_eval_args(definition, out, "--resume"))
    assert again.returncode == 0, again.stderr
    _same_eval(out, ref)

    # score: 3 clips scored, then 3 more added, scored into the folder made read-only
    src = _clips(tmp_path / "clips", 3)
    out = tmp_path / "scores"
    assert _cli(["score", str(src), "-o", str(out), "--scorers", "loudness", "--no-progress"]).returncode == 0
    _clips(src, 6)
    ref = tmp_path / "scores-ref"
    assert _cli(["score", str(src), "-o", str(ref), "--scorers", "loudness", "--no-progress"]).returncode == 0
    before = _snapshot(out)
    blocked = _in_namespace(script, str(out), sys.executable, "-m", "cli", "score", str(src), "-o", str(out),
                            "--scorers", "loudness", "--no-progress")
    assert blocked.returncode == 3, blocked.stderr
    _one_error_line(blocked.stderr, f"cannot write {out}", "Read-only file system")
    assert _snapshot(out) == before
    again = _cli(["score", str(src), "-o", str(out), "--scorers", "loudness", "--no-progress"])
    assert again.returncode == 0 and "3 resumed" in again.stdout, again.stderr
    _same_scores(out, ref)
