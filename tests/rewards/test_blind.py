"""Agreement of the extraction rules with their authors' labels on the blind part of the hard sets (issue #11).

The files under tests/data/extraction/blind/ were written by authors who saw neither the rules nor their tests, and
were committed before the rules they measure were written (see the README there). Nothing is developed against
them: this test only reads them, prints the agreement per evaluator and per kind, fails below the figure measured
once on them (the README's), and marks the issue's 95% target as not reached (a strict xfail).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.bbh import extract_bbh
from rewards.extract import extract_choice, options_from
from rewards.refusal import detect_refusal

BLIND = Path(__file__).resolve().parents[1] / "data" / "extraction" / "blind"
TARGET = 0.95

READERS = {
    "mcq": lambda r: extract_choice(r["response"], options_from(None, r["prompt"]) or None, question=r["prompt"]),
    "refusal": lambda r: detect_refusal(r["response"]),
    "bbh": lambda r: extract_bbh(r["response"], r["task"], r["prompt"]),
}


def _agreement(name: str) -> tuple[int, int, dict[str, tuple[int, int]], list[str]]:
    rows = [json.loads(line) for line in (BLIND / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    kinds: dict[str, list[int]] = {}
    misses = []
    for row in rows:
        got = READERS[name](row).value
        hit = got == row["expected"]
        counts = kinds.setdefault(row["kind"], [0, 0])
        counts[0] += hit
        counts[1] += 1
        if not hit:
            misses.append(f"[{row['kind']}] {row['response'][:90]!r}: expected {row['expected']!r}, got {got!r}")
    return sum(h for h, _ in kinds.values()), len(rows), {k: (h, n) for k, (h, n) in kinds.items()}, misses


# Measured once on this blind part, after the rules were developed on the earlier parts (README, "Extraction never
# guesses"): the rules must not fall below it
MEASURED = {"mcq": 59, "refusal": 56, "bbh": 42}


@pytest.mark.parametrize("name", sorted(READERS))
def test_blind_agreement_does_not_fall(name):
    hits, n, kinds, misses = _agreement(name)
    print(f"blind {name}: {hits}/{n} = {hits / n:.1%}; " + ", ".join(f"{k} {h}/{c}" for k, (h, c) in kinds.items()))
    assert n >= 54 and all(c >= 18 for _, c in kinds.values())
    assert hits >= MEASURED[name], "\n".join(misses)


# The target, not reached: regular-expression rules read 78-82% of these independently written answers
# (the answers they cannot decide go to the optional LLM arbiter). strict: reaching it makes this test fail, so
# that the marker and the README are updated.
@pytest.mark.xfail(strict=True, reason="blind agreement measured 59/72 (mcq), 56/72 (refusal), 42/54 (bbh); "
                                       "target 95% not reached by the rules alone")
@pytest.mark.parametrize("name", sorted(READERS))
def test_blind_agreement_reaches_the_target(name):
    hits, n, _, misses = _agreement(name)
    assert hits / n >= TARGET, "\n".join(misses)
