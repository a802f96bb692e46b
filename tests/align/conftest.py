"""Shared by the align tests: one torch thread, and reading a run's log.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: with several torch threads on a busy CPU, thread hand-offs cost more than the matmuls (~30x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_log(run: Path) -> list[dict]:
    """The rows of ``run/log.csv``."""
    with (run / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def train_log():
    return read_log
