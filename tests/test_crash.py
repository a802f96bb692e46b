"""Crash consistency (issue #14): `wavalign score`, `eval` and `align`, killed with SIGKILL at random moments and
resumed until done, give what an uninterrupted run gives.

Each workload is small and real: the console command in a subprocess (``python -m cli``), real files, real
scorers beside test ones that only make a run last long enough to be killed (a scorer or model that sleeps). An
uninterrupted run is the reference and gives the timeline: seconds to its first row, seconds in all.

Then chains of runs in fresh folders: each run is killed at a random moment of its expected life (seeded: half the
kills anywhere in it, start-up included, half in its share of the work), the next one resumes (``--resume``), until a
run ends by itself. After every kill: the rows on disk are a prefix of the reference's (so no duplicate, lost or
garbage row), and every JSON file, response WAV and checkpoint is whole. After
one kill in three a cut-off row is appended (a write torn by a power loss, which a SIGKILL alone never leaves):
the next run must drop it, say so and record it. At the end the outputs equal the reference's (timing fields aside)
and no temporary file is left.

In CI: 20 random kill points each for score, eval and align (align's ~2.5 min: a fresh align process spends ~6 s
importing before its first row), and one kill in the middle of each kind of write (rows, run.json, CSV,
summary/results, a response WAV, a checkpoint, a log row).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parent.parent
FAKES_DIR = REPO / "tests" / "evalsuite"  # eval_fakes (EchoAdapter), slow_scorer (SlowScorer)
REPAIR_MESSAGE = "dropped a truncated last"  # what a resumed run says when it drops a cut-off row


# --- the three workloads -------------------------------------------------------------------------------------------


class Workload:
    """One command on a small input: how to run it, read its rows, and compare two finished runs."""

    name: str
    rows_file: str

    def setup(self, root: Path) -> None: ...

    def argv(self, out: Path, resume: bool) -> list[str]: ...

    def rows(self, out: Path) -> list:
        """The complete rows on disk, each as the comparison sees it (timing fields dropped)."""
        raise NotImplementedError

    def check_whole(self, out: Path, ref: Path) -> None:
        """After a kill: every file that is written whole is whole (and the same as the reference's)."""
        for path in out.rglob("*.json"):
            json.loads(path.read_text())

    def compare(self, out: Path, ref: Path) -> None:
        """A finished run against the reference."""
        raise NotImplementedError

    def repairs(self, out: Path) -> list[dict]:
        """The repairs a finished run records."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}


def _jsonl(path: Path) -> list[dict]:
    """Whole lines only (a torn tail is the harness's to look at, not a row)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _tone(path: Path, seconds: float, freq: float, amp: float) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


class Score(Workload):
    """`wavalign score` on 10 tones and a broken file: loudness (real) and SlowScorer (0.25 s per item)."""

    name = "score"
    rows_file = "scores.jsonl"

    def setup(self, root: Path) -> None:
        self.input = root / "spoken"
        self.input.mkdir()
        for k in range(10):
            _tone(self.input / f"clip{k:02d}.wav", 0.4, 180 + 35 * k, 0.05 + 0.04 * k)
        (self.input / "clip99.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")  # an item with an audio error
        self.slow_log = root / "slow.log"

    def env(self) -> dict[str, str]:
        return {"SLOW_SCORER_LOG": str(self.slow_log)}

    def argv(self, out: Path, resume: bool) -> list[str]:
        # score resumes by default: the same command continues the run
        return ["score", str(self.input), "-o", str(out), "--scorers", "loudness,slow_scorer:SlowScorer",
                "--batch-size", "2", "--no-progress"]

    def rows(self, out: Path) -> list:
        return _jsonl(out / self.rows_file)

    def compare(self, out: Path, ref: Path) -> None:
        assert self.rows(out) == self.rows(ref)
        assert (out / "scores.csv").read_bytes() == (ref / "scores.csv").read_bytes()
        timing = ("seconds", "seconds_by_stage", "environment", "repairs")
        a, b = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
        assert _without(a, *timing) == _without(b, *timing)
        assert a["metrics"]["loudness.value"]["n_scored"] == 10 and a["n_items_with_errors"] == 1
        a, b = (json.loads((d / "run.json").read_text()) for d in (out, ref))
        assert _without(a, "repairs") == _without(b, "repairs")

    def repairs(self, out: Path) -> list[dict]:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["repairs"] == json.loads((out / "run.json").read_text())["repairs"]
        return summary["repairs"]


class Eval(Workload):
    """`wavalign eval` of EchoAdapter (0.12 s per answer, spoken answers saved as WAVs) on 10 items, one with a
    missing question audio; scored by ContainsScorer and loudness (real, on the saved WAVs)."""

    name = "eval"
    rows_file = "samples.jsonl"

    def setup(self, root: Path) -> None:
        data = root / "bench" / "data"
        data.mkdir(parents=True)
        rows = []
        for k in range(10):
            row = {"id": f"q{k}", "prompt": f"Is {k} a number, yes?", "reference": "yes" if k % 3 else "no",
                   "audio": f"q{k}.wav"}
            if k != 6:  # q6's question audio is missing: its row carries the error
                _tone(data / row["audio"], 0.3, 200 + 20 * k, 0.1)
            rows.append(row)
        (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        definition = {
            "name": "crash-test", "version": 1, "source": {"local": "data/items.jsonl"},
            "fields": {"id": "id", "audio": "audio", "prompt": "prompt", "reference": "reference"},
            "scorers": [{"name": "eval_fakes:ContainsScorer", "column": "contains"}, {"name": "loudness"}],
            "metrics": [{"name": "accuracy", "column": "contains.value", "scale": 100},
                        {"name": "level", "column": "loudness.value"}],
            "primary": "accuracy",
        }
        self.definition = root / "bench" / "crash-test.yaml"
        self.definition.write_text(yaml.safe_dump(definition))

    def argv(self, out: Path, resume: bool) -> list[str]:
        return ["eval", "-b", str(self.definition), "--model", "eval_fakes:EchoAdapter", "--model-arg", "delay=0.12",
                "--batch-size", "1", "-o", str(out), "--no-progress", "--no-leaderboard", "--no-report",
                *(["--resume"] if resume else [])]

    def rows(self, out: Path) -> list:
        return [_without(r, "response.seconds") for r in _jsonl(out / self.rows_file)]

    def check_whole(self, out: Path, ref: Path) -> None:
        super().check_whole(out, ref)
        for wav in (out / "responses").glob("*.wav") if (out / "responses").is_dir() else []:
            assert wav.read_bytes() == (ref / "responses" / wav.name).read_bytes(), wav.name

    def compare(self, out: Path, ref: Path) -> None:
        assert self.rows(out) == self.rows(ref)

        def table(d: Path) -> list[dict]:
            return [_without(r, "response.seconds") for r in csv.DictReader((d / "samples.csv").open())]

        assert table(out) == table(ref)
        timing = ("seconds", "finished_at", "environment", "repairs")

        def results(d: Path) -> dict:
            r = json.loads((d / "results.json").read_text())
            r["columns"].pop("response.seconds")
            return _without(r, *timing)

        assert results(out) == results(ref)
        assert results(out)["complete"] and results(out)["metrics"]["level"]["n"] == 9
        assert sorted(p.name for p in (out / "responses").iterdir()) == sorted(
            p.name for p in (ref / "responses").iterdir())
        for wav in (ref / "responses").iterdir():
            assert (out / "responses" / wav.name).read_bytes() == wav.read_bytes(), wav.name
        a, b = (json.loads((d / "run.json").read_text()) for d in (out, ref))
        assert _without(a, "repairs") == _without(b, "repairs")

    def repairs(self, out: Path) -> list[dict]:
        results = json.loads((out / "results.json").read_text())
        assert results["repairs"] == json.loads((out / "run.json").read_text())["repairs"]
        return results["repairs"]


def _timing(column: str) -> bool:
    return column == "seconds" or column.startswith(("t_", "seconds_")) or column == "peak_mem_gb"


class Align(Workload):
    """`wavalign align --config tiny`, 6 steps, a checkpoint every 2 steps."""

    name = "align"
    rows_file = "log.csv"

    def argv(self, out: Path, resume: bool) -> list[str]:
        # a run killed before its first checkpoint has nothing to resume: it is run again from the start
        resume = resume and (out / "checkpoint" / "trainer.pt").exists()
        return ["align", "--config", "tiny", "--max-steps", "6", "--set", "save_every=2", "--output-dir", str(out),
                *(["--resume"] if resume else [])]

    def rows(self, out: Path) -> list:
        path = out / self.rows_file
        if not path.exists():
            return []
        text = path.read_bytes().decode()
        whole = text[: text.rfind("\n") + 1]
        return [{k: v for k, v in r.items() if not _timing(k)} for r in csv.DictReader(io.StringIO(whole))]

    def check_whole(self, out: Path, ref: Path) -> None:
        import torch

        super().check_whole(out, ref)
        ckpt = out / "checkpoint" / "trainer.pt"
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=False)
            assert state["step"] in (2, 4, 6) and len(self.rows(out)) >= state["step"]

    def compare(self, out: Path, ref: Path) -> None:
        import torch

        assert self.rows(out) == self.rows(ref)
        assert [r["step"] for r in self.rows(out)] == ["1", "2", "3", "4", "5", "6"]
        a, b = (torch.load(d / "checkpoint" / "trainer.pt", weights_only=False) for d in (out, ref))
        assert a["step"] == b["step"] == 6
        assert a["weights"].keys() == b["weights"].keys()
        for name in a["weights"]:
            assert torch.equal(a["weights"][name], b["weights"][name]), name
        for (k, x), (_, y) in zip(sorted(a["optimizer"]["state"].items()), sorted(b["optimizer"]["state"].items())):
            for key in x:
                assert torch.equal(torch.as_tensor(x[key]), torch.as_tensor(y[key])), (k, key)
        assert (a["lambda"], a["cursor"], a["scheduler"]) == (b["lambda"], b["cursor"], b["scheduler"])
        a, b = (json.loads((d / "config.json").read_text()) for d in (out, ref))
        assert _without(a, "repairs", "output_dir", "resume") == _without(b, "repairs", "output_dir", "resume")

    def repairs(self, out: Path) -> list[dict]:
        return json.loads((out / "config.json").read_text())["repairs"]


WORKLOADS = {w.name: w for w in (Score(), Eval(), Align())}


# --- running, killing, resuming ------------------------------------------------------------------------------------


def _env(workload: Workload) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKES_DIR), str(REPO)]), "HF_HUB_OFFLINE": "1",
            **workload.env()}


@dataclass
class Reference:
    out: Path
    first_row_s: float  # from the start of the process to its first row on disk
    total_s: float
    n_rows: int
    lines: list[bytes]  # the raw lines of its row file: the torn rows are cut from these


def _start(workload: Workload, out: Path, resume: bool, log: Path) -> subprocess.Popen:
    with log.open("wb") as f:
        return subprocess.Popen([sys.executable, "-m", "cli", *workload.argv(out, resume)], cwd=REPO,
                                env=_env(workload), stdout=f, stderr=subprocess.STDOUT)


def reference_run(workload: Workload, root: Path) -> Reference:
    out = root / "reference"
    started = time.monotonic()
    proc = _start(workload, out, False, root / "reference.log")
    first = None
    while proc.poll() is None:
        if first is None and workload.rows(out):
            first = time.monotonic() - started
        time.sleep(0.02)
    total = time.monotonic() - started
    assert proc.returncode == 0, (root / "reference.log").read_text()[-3000:]
    n = len(workload.rows(out))
    return Reference(out, first if first is not None else total, total, n,
                     (out / workload.rows_file).read_bytes().splitlines(keepends=True))


@dataclass
class Tally:
    kills: int = 0
    runs: int = 0
    chains: int = 0
    torn_injected: int = 0
    torn_repaired: int = 0
    torn_by_kill: int = 0  # rows a SIGKILL itself cut off (rare: counted with the injected ones)
    kill_times: list[float] = field(default_factory=list)


def _kill_time(rng: random.Random, ref: Reference, done: int, work_only: bool) -> float:
    """A moment in the expected life of a run that starts with ``done`` rows already on disk."""
    life = ref.first_row_s + (ref.total_s - ref.first_row_s) * (1 - done / max(ref.n_rows, 1))
    low = ref.first_row_s * 0.9 if work_only or rng.random() < 0.5 else 0.0
    return rng.uniform(low, max(life, low + 0.05))


def _tear(workload: Workload, out: Path, ref: Reference, rng: random.Random) -> bool:
    """Append the first bytes of the row that would come next (no newline): a write torn by a power loss."""
    path = out / workload.rows_file
    if not path.exists() or not path.read_bytes().endswith(b"\n"):
        return False  # nothing written yet, or a torn row already waiting
    k = len(path.read_bytes().splitlines())
    line = ref.lines[k] if k < len(ref.lines) else ref.lines[-1]
    with path.open("ab") as f:
        f.write(line[: rng.randint(1, len(line.rstrip(b"\r\n")) - 1)])
    return True


def crash_and_resume(workload: Workload, ref: Reference, root: Path, kills: int, seed: str, *,
                     deadline_s: float = 1200) -> Tally:
    """Chains of killed and resumed runs until ``kills`` kills landed; every chain ends in a run that finishes,
    compared with the reference."""
    rng = random.Random(seed)
    tally = Tally()
    deadline = time.monotonic() + deadline_s
    while tally.kills < kills:
        out = root / f"chain{tally.chains}"
        tally.chains += 1
        injected = repaired = 0
        waiting = False  # a torn row appended that no run has reported dropping yet
        torn = None  # the row file as the harness left it with a torn row
        stalled = 0
        resume = False
        while True:
            assert time.monotonic() < deadline, f"{workload.name}: out of time after {tally}"
            done = len(workload.rows(out))
            # no kill once enough landed, or after 3 kills in a row that let no row through (a slow machine)
            kill_at = (None if tally.kills >= kills or stalled >= 3
                       else _kill_time(rng, ref, done, stalled >= 2))
            log = root / f"run{tally.runs}.log"
            tally.runs += 1
            proc = _start(workload, out, resume, log)
            try:
                proc.wait(timeout=kill_at)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            output = log.read_text(errors="replace")
            if waiting and REPAIR_MESSAGE in output:
                waiting, repaired = False, repaired + 1
            resume = True
            if proc.returncode == -signal.SIGKILL:
                tally.kills += 1
                tally.kill_times.append(round(kill_at, 2))
                # what a kill leaves: whole rows, each the reference's, in its order; whole files
                raw = (out / workload.rows_file).read_bytes() if (out / workload.rows_file).exists() else b""
                if raw and not raw.endswith(b"\n") and raw != torn:
                    # a kill inside a row's write (the kernel checks for it between pages): the resume must drop it
                    tally.torn_by_kill += 1
                    injected, waiting, torn = injected + 1, True, raw
                rows = workload.rows(out)
                assert rows == workload.rows(ref.out)[: len(rows)], f"{log}: rows differ from the reference's"
                workload.check_whole(out, ref.out)
                stalled = stalled + 1 if len(rows) == done else 0
                if rng.random() < 1 / 3 and _tear(workload, out, ref, rng):
                    injected += 1
                    waiting = True
                    torn = (out / workload.rows_file).read_bytes()
                continue
            assert proc.returncode == 0, f"{log}:\n{output[-3000:]}"
            break
        # the chain's last run finished: the same outputs as the uninterrupted run, the torn rows dropped and told
        workload.compare(out, ref.out)
        assert not waiting and repaired == injected, (injected, repaired)
        leftovers = [p for p in out.rglob("*.tmp")]
        assert not leftovers, leftovers
        repairs = workload.repairs(out)
        assert len({r["key"] for r in repairs}) == len(repairs)
        assert all(r["kind"] == "truncated last line" and r["dropped_bytes"] > 0 for r in repairs)
        if workload.name != "align":  # align's record starts again when a run without a checkpoint starts over
            assert len(repairs) == injected, (repairs, injected)
        tally.torn_injected += injected
        tally.torn_repaired += repaired
    return tally


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    made: dict[str, tuple[Workload, Reference, Path]] = {}

    def get(name: str):
        if name not in made:
            workload = WORKLOADS[name]
            root = tmp_path_factory.mktemp(f"crash-{name}")
            workload.setup(root)
            made[name] = (workload, reference_run(workload, root), root)
        return made[name]

    return get


CASES = [  # 20 kill points per command, all in CI (align ~150 s, score and eval ~30 s each)
    pytest.param("score", 20, marks=pytest.mark.slow, id="score-20"),
    pytest.param("eval", 20, marks=pytest.mark.slow, id="eval-20"),
    pytest.param("align", 20, marks=pytest.mark.slow, id="align-20"),
]


@pytest.mark.parametrize("name,kills", CASES)
def test_killed_at_random_moments_and_resumed_gives_the_uninterrupted_outputs(references, name, kills, tmp_path,
                                                                              report):
    workload, ref, _ = references(name)
    started = time.monotonic()
    tally = crash_and_resume(workload, ref, tmp_path, kills, seed=f"{name}-{kills}")
    assert tally.kills >= kills
    report(f"crash {name}: {tally.kills} kill points survived in {tally.chains} chains ({tally.runs} runs), "
           f"{tally.torn_injected} torn rows injected and repaired ({tally.torn_by_kill} of them cut by the kill "
           "itself), 0 rows lost; reference run "
           f"{ref.total_s:.1f} s (first row at {ref.first_row_s:.1f} s); kills at {tally.kill_times} s; "
           f"{time.monotonic() - started:.0f} s")


# --- kills at chosen writes ----------------------------------------------------------------------------------------

# Runs the CLI and SIGKILLs it in the middle of one chosen write: the Nth file opened for writing whose name holds
# TARGET gets half of its first write, then the process dies (``open``: results, run.json, CSVs, WAVs, checkpoints,
# all through evalsuite.results); or the Nth row appended to such a file (``row``: os.write in evalsuite.results and
# align.train) lands half. A random kill almost never hits these microseconds; a file written in place would be
# left half written here, and a row torn as by a power loss.
KILL_IN_A_WRITE = r"""
import builtins, os, signal, sys
target, op, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.argv = ["wavalign", *sys.argv[4:]]
seen = [0]

def hit(name):
    if target in os.path.basename(str(name)):
        seen[0] += 1
        return seen[0] == nth
    return False

def die(fd_or_file, data):
    half = bytes(data[: max(len(data) // 2, 1)])
    if isinstance(fd_or_file, int):
        os.write(fd_or_file, half)
    else:
        fd_or_file.write(half)
        fd_or_file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

class Torn:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        die(self.f, data)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

real_open = builtins.open
def open_for_the_kill(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    return Torn(f) if op == "open" and "w" in mode and hit(file) else f

class TornOs:
    def __init__(self, real):
        self.real = real
    def __getattr__(self, name):
        return getattr(self.real, name)
    def write(self, fd, data):
        if op == "row" and hit(self.real.readlink(f"/proc/self/fd/{fd}")):
            die(fd, data)
        return self.real.write(fd, data)

import evalsuite.results as results
results.open = open_for_the_kill
results.os = TornOs(os)
if sys.argv[1] == "align":
    import align.train as train
    train.os = TornOs(os)
import cli
cli.main()
"""

KILL_POINTS = [
    # (workload, file name part, open|row, which one, whether the kill leaves a torn row for the resume to repair)
    ("score", "run.json", "open", 1, False),
    ("score", "scores.jsonl", "row", 3, True),
    ("score", "scores.csv", "open", 1, False),
    ("score", "summary.json", "open", 1, False),
    ("eval", "run.json", "open", 1, False),
    ("eval", "samples.jsonl", "row", 2, True),
    ("eval", "q3.wav", "open", 1, False),
    ("eval", "samples.csv", "open", 1, False),
    ("eval", "results.json", "open", 1, False),
    ("align", "trainer.pt", "open", 2, False),
    ("align", "log.csv", "row", 3, True),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,target,op,nth,torn", KILL_POINTS,
                         ids=[f"{w}-{t}-{o}{n}" for w, t, o, n, _ in KILL_POINTS])
def test_a_kill_in_the_middle_of_a_write_leaves_whole_files_and_a_run_that_resumes(references, tmp_path, name,
                                                                                   target, op, nth, torn):
    workload, ref, _ = references(name)
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILL_IN_A_WRITE, target, op, str(nth), *workload.argv(out, False)],
                            cwd=REPO, env=_env(workload), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    raw = (out / workload.rows_file).read_bytes() if (out / workload.rows_file).exists() else b""
    assert raw.endswith(b"\n") != torn or (raw == b"" and not torn), raw[-300:]
    rows = workload.rows(out)
    assert rows == workload.rows(ref.out)[: len(rows)]
    workload.check_whole(out, ref.out)  # every JSON file parses, every WAV and checkpoint is the reference's
    resumed = subprocess.run([sys.executable, "-m", "cli", *workload.argv(out, True)], cwd=REPO, env=_env(workload),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    workload.compare(out, ref.out)
    assert not list(out.rglob("*.tmp"))
    assert (REPAIR_MESSAGE in resumed.stderr) == torn, resumed.stderr[-2000:]
    assert len(workload.repairs(out)) == int(torn)


# --- the repair on its own -----------------------------------------------------------------------------------------


def _lines(*rows: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


class _Killed(BaseException):
    """What a SIGKILL between recording a repair and making it would look like to the code after it."""


def test_a_cut_off_row_is_dropped_and_recorded_once_even_when_a_kill_interrupts_the_repair(tmp_path):
    from evalsuite.results import add_repair, repair_rows

    path = tmp_path / "scores.jsonl"
    whole = _lines({"id": "a", "x": 1}, {"id": "b", "x": 2})
    path.write_bytes(whole + b'{"id": "c", "x"')
    messages: list[str] = []

    def killed(repair):
        raise _Killed

    with pytest.raises(_Killed):  # recorded, then killed before the file changed
        repair_rows(path, messages.append, killed)
    assert path.read_bytes() == whole + b'{"id": "c", "x"'
    recorded: list[dict] = []
    rows, repair = repair_rows(path, messages.append, recorded.append)
    assert [r["id"] for r in rows] == ["a", "b"] and path.read_bytes() == whole
    assert repair["kind"] == "truncated last line" and repair["dropped_bytes"] == len(b'{"id": "c", "x"')
    assert len(messages) == 2 and all("dropped a truncated last line (15 bytes" in m for m in messages)
    first_try = dict(repair)  # what the killed run had recorded: the same damage, so the same key
    assert add_repair(add_repair([], first_try), recorded[0]) == [first_try]
    assert repair_rows(path, messages.append, recorded.append) == (rows, None) and len(recorded) == 1


def test_an_unreadable_line_before_good_rows_is_dropped_and_the_rows_after_it_kept(tmp_path):
    from evalsuite.results import repair_rows

    path = tmp_path / "samples.jsonl"
    path.write_bytes(_lines({"id": "a"}) + b"\x00\x00\x00 not json\n" + _lines({"id": "b"}, {"id": "c"}))
    rows, repair = repair_rows(path, lambda m: None)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert path.read_bytes() == _lines({"id": "a"}, {"id": "b"}, {"id": "c"})
    assert (repair["kind"], repair["dropped_lines"]) == ("unreadable lines", 1)


def test_the_align_log_is_brought_to_the_checkpoint_step_and_a_cut_off_row_recorded(tmp_path):
    from align.train import _truncate_log

    path = tmp_path / "log.csv"
    log = b"step,loss\r\n1,0.5\r\n2,0.4\r\n3,0.3\r\n"
    path.write_bytes(log + b"4,0.")
    messages: list[str] = []
    recorded: list[dict] = []
    assert _truncate_log(path, 2, messages.append, recorded.append) == ["step", "loss"]
    assert path.read_bytes() == b"step,loss\r\n1,0.5\r\n2,0.4\r\n"
    assert [r["kind"] for r in recorded] == ["truncated last line"]
    assert any("truncated last row" in m for m in messages) and any("steps 3-3" in m for m in messages)
    path.write_bytes(log)  # a fresh start (no checkpoint): the killed run's rows go
    assert _truncate_log(path, 0, messages.append) is None and not path.exists()
