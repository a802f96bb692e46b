"""The offline reference judge: extraction rules, agreement with hand-labelled verdicts, the JudgeScorer hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalsuite.inputs import load_items
from evalsuite.scoring import score_items
from rewards.base import Sample
from rewards.judge import JudgeConfig, JudgeScorer
from rewards.reference_judge import (
    EMBEDDING_SHA256,
    cosine_to_score,
    extract_choice,
    extract_number,
    extract_yes_no,
    judge_against_reference,
    judge_many,
    minilm_embedder,
    normalise,
    packaged_minilm_dir,
    parse_options,
    reference_letter,
    reference_number,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "reference_qa.jsonl"
OPTIONS = {"A": "Paris", "B": "Lyon", "C": "Marseille"}


def no_embedding(texts):
    raise AssertionError(f"the embedding model should not be needed here: {texts}")


# -- extraction rules ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("response, expected", [
    ("The answer is (B).", "B"),
    ("**C**", "C"),
    ("**C) Marseille** is my pick.", "C"),
    ("I'd go with option d.", "D"),
    ("b", "B"),
    ("(e)", "E"),
    ("Answer: c", "C"),
    ("It's not A, it's C.", "C"),
    ("Option A is wrong; the correct option is C.", "C"),
    ("A good question! I think B is right.", "B"),  # "A" the article
    ("I'd choose B rather than D.", "B"),
    ("Either A or B.", None),  # hedged between two
    ("The answer is A. No wait, the answer is C.", None),  # two explicit answers: never pick one
    ("I am not sure.", None),
    ("Not A.", None),  # only a rejection
    ("A.", "A"),
])
def test_extract_choice(response, expected):
    chosen, reason = extract_choice(response)
    assert chosen == expected
    assert (reason is None) == (expected is not None)


@pytest.mark.parametrize("response, expected", [
    ("I think it's Lyon, not Paris.", "B"),
    ("Marseille, the port city.", "C"),
    ("Paris or Lyon, hard to say.", None),
    ("It's definitely not Paris.", None),
])
def test_extract_choice_by_option_text(response, expected):
    assert extract_choice(response, OPTIONS)[0] == expected


def test_options_and_reference_letters():
    assert parse_options("Which city? A. Paris B. Lyon C. Marseille") == OPTIONS
    assert parse_options("Which city?\n(A) Paris\n(B) Lyon\n(C) Marseille") == OPTIONS
    assert parse_options("What is a cat?") == {}
    for ref in ("B", "(b)", "B.", "Option B", "The answer is B", "Lyon"):
        assert reference_letter(ref, OPTIONS) == "B", ref
    assert reference_letter("Lyon") is None and reference_letter("Bee") is None


@pytest.mark.parametrize("response, expected", [
    ("Yes, it is.", "yes"),
    ("No.", "no"),
    ("Well, yes.", "yes"),
    ("I don't think so.", "no"),
    ("Of course not!", "no"),
    ("Of course!", "yes"),
    ("Maybe, it depends.", None),
    ("Yes and no.", None),
    ("Whales are mammals.", None),
    ("", None),
])
def test_extract_yes_no(response, expected):
    assert extract_yes_no(response)[0] == expected


@pytest.mark.parametrize("response, expected", [
    ("There are twelve months in a year.", 12),
    ("That is 1,200 metres.", 1200),
    ("Pi is about 3.14159.", 3.14159),
    ("3 plus 4 equals 7, so you have 7 apples.", 7),
    ("The answer is 12, as there are 12 months in 1 year.", 12),
    ("About 2.5 million people.", 2.5e6),
    ("I have no idea.", None),
])
def test_extract_number(response, expected):
    value, _ = extract_number(response)
    assert value == (None if expected is None else pytest.approx(expected))


def test_numeric_references_and_tolerance():
    assert reference_number("twelve") == (12, 0)
    assert reference_number("$1,200") == (1200, 0)
    assert reference_number("3.5 km") == (3.5, 1)
    assert reference_number("Apollo 11") is None  # a name, not a quantity
    assert reference_number("the 12 apostles of Jesus") is None
    assert judge_against_reference("Pi is 3.1416.", "3.14", embed=no_embedding)[0] == 1.0
    assert judge_against_reference("Pi is 3.2.", "3.14", embed=no_embedding)[0] == 0.0
    assert judge_against_reference("About 13 of them.", "12", embed=no_embedding)[:2] == (0.0, "number")


def test_text_methods():
    assert normalise("The Colour of THE sky!") == "color of sky"
    assert judge_against_reference("The colour red.", "the color red", embed=no_embedding)[:2] == (1.0, "exact")
    assert judge_against_reference("Its capital is Paris.", "Paris", embed=no_embedding)[:2] == (1.0, "contains")
    score, method, details = judge_against_reference("It's not Paris, it's Lyon.", "Paris", embed=no_embedding)
    assert (score, method, details["rejected"]) == (0.0, "contains", True)
    score, method, details = judge_against_reference("Paris or maybe Lyon.", "Paris", embed=no_embedding)
    assert (score, method, details["hedged"]) == (0.0, "contains", True)
    # "Paris" inside another word is no match; that goes to the embedding
    score, method, details = judge_against_reference("Parisian food is great.", "Paris",
                                                     embed=lambda texts: np.eye(2, dtype=np.float32))
    assert (score, method, details["cosine"]) == (0.0, "embedding", 0.0)


def test_missing_inputs_give_none_with_a_reason():
    for response, reference in (("Paris.", ""), ("Paris.", None), ("", "Paris")):
        score, _, details = judge_against_reference(response, reference, embed=no_embedding)
        assert score is None and details["reason"]
    score, method, details = judge_against_reference("No idea.", "B", prompt="A. x B. y", embed=no_embedding)
    assert (score, method, details["reason"]) == (None, "choice", "no choice found in the response")


def test_cosine_mapping():
    assert cosine_to_score(0.2) == 0.0 and cosine_to_score(0.5) == pytest.approx(0.5) and cosine_to_score(0.9) == 1
    assert cosine_to_score(-1.0) == 0.0
    assert cosine_to_score(0.75, short=True) == pytest.approx(0.5) and cosine_to_score(0.55, short=True) == 0.0


# -- the real model ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embed():
    return minilm_embedder()


def test_packaged_model_is_pinned():
    root = packaged_minilm_dir()
    assert (root / "model.safetensors").is_file() and len(EMBEDDING_SHA256) == 64


@pytest.mark.slow
def test_embedding_orders_paraphrase_above_unrelated(embed):
    reference = "Because the Earth's axis is tilted relative to its orbit around the Sun."
    paraphrase, _, p = judge_against_reference("Seasons happen because Earth is tilted on its axis as it orbits.",
                                               reference, embed=embed)
    unrelated, _, u = judge_against_reference("I really enjoy cooking pasta on weekends.", reference, embed=embed)
    assert p["cosine"] > u["cosine"] + 0.3 and paraphrase > 0.5 > unrelated


@pytest.mark.slow
def test_agreement_with_labelled_verdicts(embed, report):
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    assert len(rows) >= 30
    verdicts = judge_many([(r["response"], r["reference"], r["prompt"], None) for r in rows], embed)
    agree = [((v.score or 0.0) >= 0.5) == r["correct"] for r, v in zip(rows, verdicts)]
    methods = sorted({v.method for v in verdicts})
    wrong = [r["id"] for r, ok in zip(rows, agree) if not ok]
    report(f"reference judge agreement with labelled verdicts: {sum(agree)}/{len(rows)} "
           f"({sum(agree) / len(rows):.1%}); methods used: {', '.join(methods)}; disagreements: {', '.join(wrong)}")
    assert sum(agree) / len(rows) >= 0.9
    assert set(methods) == {"choice", "yes_no", "number", "exact", "contains", "embedding"}


# -- the JudgeScorer backend ---------------------------------------------------------------------------------------
def test_config():
    JudgeConfig(backend="reference", rubric="qa")
    JudgeConfig(backend="reference", rubric="reference_0_5")
    for bad in ({"rubric": "open"}, {"rubric": "pairwise"}, {"rubric": "qa", "audio": True}):
        with pytest.raises(ValueError, match="needs a rubric that has one"):
            JudgeConfig(backend="reference", **bad)


def test_scorer_needs_no_key_and_records_settings(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    scorer = JudgeScorer(backend="reference", rubric="reference_0_5")
    scorer.prepare()
    info = scorer.info().as_dict()
    assert info["requires"] == ["reference", "text"]
    settings = info["settings"]
    assert settings["backend"] == "reference" and settings["embedding_sha256"] == EMBEDDING_SHA256[:16]
    assert "cos" in settings["embedding_mapping"]
    scores = scorer.score([
        Sample("a", None, None, text="The answer is (B).", prompt="A. x B. y", reference="B"),
        Sample("b", None, None, text="Twelve.", reference="12"),
        Sample("c", None, None, text="Paris.", reference=None),
    ])
    assert scores[0].value == 1.0 and scores[0].metrics["score"] == 5.0 and scores[0].metrics["method"] == "choice"
    assert scores[1].metrics["extracted"] == 12 and scores[1].metrics["rubric"] == "reference_0_5"
    assert scores[2].value is None and scores[2].error == "missing input: reference"


@pytest.mark.slow
def test_through_the_runner(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rows = [
        {"id": "mc", "prompt": "Which? A. Mars B. Venus", "text": "I'd go with A.", "reference": "A"},
        {"id": "fact", "prompt": "Capital of France?", "text": "It is Paris.", "reference": "Paris"},
        {"id": "para", "prompt": "Why seasons?", "text": "Because Earth's axis is tilted as it orbits the Sun.",
         "reference": "Seasons come from the tilt of the Earth's axis."},
        {"id": "none", "prompt": "Capital of Italy?", "text": "Rome."},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = score_items(load_items(manifest), [JudgeScorer(backend="reference", rubric="qa")], out,
                         progress=False)
    assert result.n_scored_now == 4
    scored = {r["id"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    assert [scored[k]["judge.method"] for k in ("mc", "fact", "para")] == ["choice", "contains", "embedding"]
    assert scored["mc"]["judge.value"] == 1.0 and scored["fact"]["judge.value"] == 1.0
    assert scored["para"]["judge.value"] > 0.5
    assert scored["none"]["judge.value"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["scorers"]["judge"]["settings"]["backend"] == "reference"
