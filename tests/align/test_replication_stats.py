"""The replication runner's statistics (benchmarks/replication/run.py) against hand computations: per-item values
read from an evaluation's samples, each mode's mean ± se across seeds, the paired difference against wavalign with
its 95% interval across seeds, and the decision rule."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "replication" / "run.py"
T_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (from a printed table: 4.303)


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("replication_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_difference_by_hand(run):
    other = {0: {"a": 50, "b": 70}, 1: {"a": 60, "b": 60}, 2: {"a": 40, "b": 80, "c": 10}}
    base = {0: {"a": 60, "b": 90}, 1: {"a": 55, "b": 75}, 2: {"a": 70, "b": 83}}  # "c": only one side scored it
    out = run.paired(other, base, higher_is_better=True)
    # per seed: D0 = (10 + 20)/2 = 15, D1 = (−5 + 15)/2 = 5, D2 = (30 + 3)/2 = 16.5; mean 36.5/3
    assert out["per_seed"] == {0: 15.0, 1: 5.0, 2: 16.5}
    assert out["diff"] == pytest.approx(36.5 / 3)
    # sd with n − 1: deviations 2.8333, −7.1667, 4.3333 → (8.0278 + 51.3611 + 18.7778)/2 = 39.0833
    se = math.sqrt(((15 - 36.5 / 3) ** 2 + (5 - 36.5 / 3) ** 2 + (16.5 - 36.5 / 3) ** 2) / 2) / math.sqrt(3)
    assert se == pytest.approx(3.6094, abs=1e-4)
    assert out["se"] == pytest.approx(se)
    assert out["low"] == pytest.approx(36.5 / 3 - T_975_2 * se)
    assert out["high"] == pytest.approx(36.5 / 3 + T_975_2 * se)
    assert out["low"] < 0 < out["high"] and run.decide(out) == "undecided"
    # per item, averaged over seeds: a → (10 − 5 + 30)/3, b → (20 + 15 + 3)/3; sd of the two / √2
    a, b = 35 / 3, 38 / 3
    assert out["items"] == 2 and out["se_items"] == pytest.approx(abs(a - b) / math.sqrt(2) / math.sqrt(2))
    # a lower-is-better metric (WER): the same numbers say the base is worse
    low = run.paired(other, base, higher_is_better=False)
    assert low["diff"] == pytest.approx(-36.5 / 3) and low["high"] == pytest.approx(-out["low"])


def test_decision_rule_and_claims(run):
    above = run.paired({0: {"a": 0}, 1: {"a": 0}, 2: {"a": 0}}, {0: {"a": 10}, 1: {"a": 11}, 2: {"a": 12}}, True)
    assert above["low"] == pytest.approx(11 - T_975_2 * 1 / math.sqrt(3)) and run.decide(above) == "reproduced"
    below = run.paired({0: {"a": 0}, 1: {"a": 0}, 2: {"a": 0}}, {0: {"a": 10}, 1: {"a": 11}, 2: {"a": 12}}, False)
    assert run.decide(below) == "contradicted"
    one = run.paired({0: {"a": 0}}, {0: {"a": 10}}, True)
    assert one["diff"] == 10 and one["low"] is None and run.decide(one).startswith("undecided")
    assert run.claim_outcome(["reproduced", "reproduced"]) == "reproduced"
    assert run.claim_outcome(["reproduced", "undecided"]) == "not decided"
    assert run.claim_outcome(["reproduced", "contradicted"]) == "contradicted"
    # every comparison names a mode and a metric the runner measures
    for _, other, metrics in run.COMPARISONS:
        assert other in run.MODES and other != "wavalign" and set(metrics) <= set(run.HIGHER)


def test_mode_stats_by_hand(run):
    stats = run.mode_stats([60.0, 50.0, None, 58.0])  # None (a run without the metric) is not a 0
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(56.0)
    assert stats["se"] == pytest.approx(math.sqrt((16 + 36 + 4) / 2) / math.sqrt(3))
    assert run.mode_stats([None])["mean"] is None and run.mode_stats([5.0])["se"] is None


def test_item_values_from_samples(run, tmp_path):
    rows = [
        {"id": "q1", "iq_text.value": 1.0, "iq_speech.value": None, "asr.wer_consistency": 0.25,
         "quality.dnsmos_ovrl": 3.1, "prosody.expressiveness": 0.5, "prosody.style_match": None,
         "response.meta": {"finished": True}},
        {"id": "q2", "iq_text.value": None, "iq_speech.value": 0.5, "asr.wer_consistency": None,
         "quality.dnsmos_ovrl": None, "prosody.expressiveness": 0.25, "prosody.style_match": 0.75,
         "response.meta": {"finished": False}},
    ]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    values = run.item_values(tmp_path)
    assert values["iq_text"] == {"q1": 100.0}  # an unscored item is absent, not 0
    assert values["iq_speech_all"] == {"q1": 0.0, "q2": 50.0}  # no recognisable speech counts as 0
    assert values["asr_wer"] == {"q1": 25.0} and values["mos"] == {"q1": 3.1}
    assert values["style_match"] == {"q2": 75.0} and values["finished"] == {"q1": 100.0, "q2": 0.0}
    row = run.held_out(tmp_path)
    assert row["n"] == 2 and row["iq_speech_all"] == pytest.approx(25.0) and row["expressiveness"] == 37.5
