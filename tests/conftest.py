"""Shared fixtures: real recorded speech from ../shared/data/real_speech and espeak-ng synthesized speech."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def real_speech_dir() -> Path | None:
    """The shared real-speech clips: $WAVALIGN_REAL_SPEECH, else ../shared/data/real_speech beside the repo."""
    candidates = [os.environ.get("WAVALIGN_REAL_SPEECH"), REPO.parent / "shared" / "data" / "real_speech"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "manifest.jsonl").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_speech() -> Path:
    path = real_speech_dir()
    if path is None:
        pytest.skip("real speech clips not found (../shared/data/real_speech or $WAVALIGN_REAL_SPEECH)")
    return path


@pytest.fixture(scope="session")
def real_manifest(real_speech: Path) -> list[dict]:
    return [json.loads(line) for line in (real_speech / "manifest.jsonl").read_text().splitlines() if line.strip()]


def synthesize(text: str, path: Path, rate: int = 16000, voice: str = "en-us", speed: int = 150) -> Path:
    """Speak ``text`` into ``path`` with espeak-ng (resampled by soundfile-compatible sox when needed)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs it)")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    data, sr = sf.read(raw, dtype="float32")
    raw.unlink()
    if sr != rate:
        from rewards.audio import resample

        data = resample(data, sr, rate)
    sf.write(path, data, rate)
    return path


@pytest.fixture(scope="session")
def spoken_dir(tmp_path_factory) -> Path:
    """Three espeak-ng utterances with text sidecars (one sidecar deliberately differs from the speech)."""
    root = tmp_path_factory.mktemp("spoken")
    lines = {
        "paris": ("The capital of France is Paris.", "The capital of France is Paris."),
        "sub/water": ("Water boils at one hundred degrees.", "Water boils at one hundred degrees."),
        "mismatch": ("I like green apples.", "The train leaves at noon tomorrow."),
    }
    for name, (spoken, text) in lines.items():
        path = root / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        synthesize(spoken, path)
        path.with_suffix(".txt").write_text(text)
    return root


@pytest.fixture
def one_thread():
    """One torch thread: tiny models on a busy CPU lose more to thread hand-offs than the matmuls cost (~30x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_log(run: Path) -> list[dict]:
    """The rows of an align run's ``log.csv``."""
    import csv

    with (run / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def killed_and_resumed_align(args: list[str], out: Path, *, kill_after_steps: int = 2, timeout: float = 600):
    """Run ``wavalign align ARGS --output-dir OUT`` in a subprocess, SIGKILL it once ``kill_after_steps`` steps are
    logged, then run it again with ``--resume``; returns the resumed run's CompletedProcess."""
    import signal
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cli", "align", *args, "--output-dir", str(out)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    log = out / "log.csv"
    while time.time() < deadline and proc.poll() is None and not (
            log.exists() and len(log.read_text().splitlines()) > kill_after_steps):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


_FIGURES: list[str] = []


@pytest.fixture
def report():
    """Record a measured figure; all of them are printed at the end of the run (``measured figures``)."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


def drop_unloadable_lazy_modules() -> None:
    """Remove from ``sys.modules`` the lazy stand-ins whose real module cannot be imported.

    speechbrain puts ``LazyModule`` objects in ``sys.modules`` for optional integrations
    (``speechbrain.integrations.nlp`` needs packages we do not install). Reading any attribute of one tries the real
    import and raises ``ImportError``, not ``AttributeError``, so Hypothesis's scan of ``sys.modules`` for constants
    (``getattr(module, "__file__", None)``, at collection and when a property test draws) stops the whole session. A
    module that cannot be imported has nothing to offer there; a later real import of it raises the same error.
    """
    import sys

    for name, module in list(sys.modules.items()):
        try:
            getattr(module, "__file__", None)
        except ImportError:
            sys.modules.pop(name, None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    drop_unloadable_lazy_modules()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Tests that ran before a property test may have imported speechbrain after collection.
    if item.get_closest_marker("hypothesis") is not None:
        drop_unloadable_lazy_modules()
