"""The rule-based scorers (mcq, yesno, refusal, bbh, ifeval), their failure paths and the LLM fallback (arbiter) of
mcq, bbh and refusal."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rewards.base import Sample, Scorer, score_each
from rewards.registry import build
from rewards.rules import BbhScorer, IfevalScorer, McqScorer, RefusalScorer, YesNoScorer, bbh_task

PROMPT = "What is the capital of France? A. Lyon B. Marseille C. Paris D. Nice"


def mcq(text, reference="C", prompt=PROMPT, **meta) -> Sample:
    return Sample("q", text=text, prompt=prompt, reference=reference, meta=meta)


def test_registered_and_protocol():
    for name in ("mcq", "yesno", "refusal", "bbh", "ifeval"):
        scorer = build(name)
        assert isinstance(scorer, Scorer) and scorer.name == name
        assert scorer.info().as_dict()["name"] == name


# -- mcq ------------------------------------------------------------------------------------------------------------
def test_mcq_right_wrong_and_option_text():
    right, wrong, text = McqScorer().score([mcq("The answer is C."), mcq("I'd go with b"), mcq("It's Paris.")])
    assert right.value == 1.0 and right.metrics["extracted"] == "C" and right.metrics["extract_failed"] is False
    assert wrong.value == 0.0 and wrong.metrics["extracted"] == "B"
    assert text.value == 1.0 and text.metrics["method"] == "option_text"


def test_mcq_extraction_failure_counts_wrong_and_is_flagged():
    (score,) = McqScorer().score([mcq("Either B or C, not sure.")])
    assert score.value == 0.0 and score.error is None
    assert score.metrics["extract_failed"] is True and score.metrics["extracted"] is None
    assert score.metrics["note"].startswith("extraction failed: ")
    (empty,) = McqScorer().score([mcq("")])
    assert empty.value == 0.0 and empty.metrics["extract_failed"] is True


def test_mcq_unscorable_items_are_none_with_reason():
    no_ref, bad_ref, no_text = score_each(McqScorer(), [mcq("C", reference=None), mcq("C", reference="Rome"),
                                                         mcq(None)])
    assert no_ref.value is None and "reference" in no_ref.error
    assert bad_ref.value is None and "names no option letter" in bad_ref.error
    assert no_text.value is None and no_text.error == "no response text"


def test_mcq_choices_from_meta_and_reference_as_text():
    sample = mcq("The mitochondria, definitely.", reference="mitochondria", prompt="Powerhouse of the cell?",
                 choices=["mitochondria", "nucleus", "ribosome"])
    (score,) = McqScorer().score([sample])
    assert (score.value, score.metrics["expected"], score.metrics["extracted"]) == (1.0, "A", "A")


def test_mcq_config_validation():
    with pytest.raises(ValueError, match="letters"):
        McqScorer(letters="A1")
    with pytest.raises(ValueError, match="LLM backend"):
        McqScorer(llm_fallback={"backend": "reference"})


class _FakeServer:
    """An OpenAI-compatible chat endpoint on loopback that answers every request with ``answer``."""

    def __init__(self, answer: str):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
                                      "model": "fake"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("answer, value, failed", [("<score>3</score>", 1.0, False), ("<score>1</score>", 0.0, False),
                                                   ("<score>0</score>", 0.0, True), ("no idea", 0.0, True)])
def test_mcq_llm_fallback_reads_only_rule_failures(answer, value, failed):
    server = _FakeServer(answer)
    try:
        scorer = McqScorer(llm_fallback={"model": "fake", "base_url": server.url, "max_retries": 0,
                                         "parse_retries": 0})
        ruled, hard = scorer.score([mcq("C."), mcq("Hmm, it's the city of light, the one with the Eiffel Tower.")])
    finally:
        server.close()
    assert ruled.metrics["method"] == "letter" and len(server.requests) >= 1  # only the rule failure was asked
    assert all("Eiffel" in json.dumps(r) for r in server.requests)
    assert hard.value == value and hard.metrics["extract_failed"] is failed
    if not failed:
        assert hard.metrics["method"] == "llm" and "llm fallback" in hard.metrics["note"]
    else:
        assert "llm fallback" in hard.metrics["note"]
    assert scorer.info().settings["llm_fallback"]["rubric"] == "mcq_extract"


# -- yes / no, refusal ----------------------------------------------------------------------------------------------
def test_yesno_scorer():
    samples = [Sample("1", text="Nope, it's a myth.", reference="no"), Sample("2", text="Yes!", reference="False"),
               Sample("3", text="It depends.", reference="yes"), Sample("4", text="Yes", reference="Paris")]
    right, wrong, failed, bad_ref = YesNoScorer().score(samples)
    assert right.value == 1.0 and wrong.value == 0.0
    assert failed.value == 0.0 and failed.metrics["extract_failed"] is True
    assert bad_ref.value is None and "not yes or no" in bad_ref.error


def test_refusal_scorer():
    samples = [Sample("1", text="I can't help with that."), Sample("2", text="Sure, step 1: mix the flour."),
               Sample("3", text=""), Sample("4", text=None)]
    refused, complied, empty, missing = score_each(RefusalScorer(), samples)
    assert refused.value == 1.0 and refused.metrics["method"] == "declines"
    assert complied.value == 0.0 and complied.metrics["refused"] is False
    assert empty.value == 1.0 and empty.metrics["method"] == "empty"
    assert missing.value is None and missing.error == "no response text"


# -- bbh ------------------------------------------------------------------------------------------------------------
def test_bbh_scorer_task_from_meta_or_id():
    samples = [
        Sample("x", text="Yes, the sentence is plausible.", reference="yes", meta={"task": "sports_understanding"}),
        Sample("navigate_4", text="You do not return to the starting point.", reference="no"),
        Sample("x", text="The answer is (A).", reference="(B)", meta={"id": "hyperbaton_9"}),
        Sample("x", text="Hard to say.", reference="yes", meta={"task": "web_of_lies"}),
        Sample("x", text="yes", reference="yes", meta={"task": "date_understanding"}),
        Sample("x", text="yes", reference="maybe", meta={"task": "navigate"}),
    ]
    plausible, navigate, hyperbaton, failed, no_task, bad_ref = score_each(BbhScorer(), samples)
    assert plausible.value == 1.0 and navigate.value == 1.0 and navigate.metrics["task"] == "navigate"
    assert hyperbaton.value == 0.0 and hyperbaton.metrics["extracted"] == "(A)"
    assert failed.value == 0.0 and failed.metrics["extract_failed"] is True and failed.metrics["task"] == "web_of_lies"
    assert no_task.value is None and "no BBH task" in no_task.error
    assert bad_ref.value is None and "not yes, no" in bad_ref.error
    assert bbh_task(Sample("web_of_lies_1")) == "web_of_lies"


@pytest.mark.parametrize("answer, read, value", [("<score>2</score>", "no", 1.0), ("<score>1</score>", "yes", 0.0),
                                                ("<score>0</score>", None, 0.0), ("garbage", None, 0.0)])
def test_bbh_llm_fallback_reads_only_rule_failures(answer, read, value):
    server = _FakeServer(answer)
    try:
        scorer = BbhScorer(llm_fallback={"model": "fake", "base_url": server.url, "max_retries": 0,
                                         "parse_retries": 0})
        ruled, hard = scorer.score([
            Sample("web_of_lies_1", text="No, Vina lies.", reference="no", prompt="Does Vina tell the truth?"),
            Sample("web_of_lies_2", text="Ooh, what a tangled web those five weave!", reference="no",
                   prompt="Does Kofi tell the truth?")])
    finally:
        server.close()
    assert ruled.metrics["method"] != "llm" and ruled.value == 1.0
    assert len(server.requests) == 1 and "tangled web" in json.dumps(server.requests[0])
    assert "yes or to no" in json.dumps(server.requests[0])  # the yes/no rubric, not the (A)/(B) one
    assert hard.metrics["extracted"] == read and hard.value == value
    assert hard.metrics["extract_failed"] is (read is None) and "llm fallback" in hard.metrics["note"]
    assert (hard.metrics["method"] == "llm") is (read is not None)
    assert set(scorer.info().settings["llm_fallback"]) == {"yes_no", "hyperbaton"}


def test_bbh_llm_fallback_asks_hyperbaton_with_its_own_rubric():
    server = _FakeServer("<score>2</score>")
    try:
        scorer = BbhScorer(llm_fallback={"model": "fake", "base_url": server.url, "max_retries": 0,
                                         "parse_retries": 0})
        (found,) = scorer.score([Sample("hyperbaton_3", text="Honestly both sound a bit off to me.", reference="(b)",
                                        prompt="Which sentence has the correct adjective order? Options: (A) red "
                                               "big ball (B) big red ball")])
    finally:
        server.close()
    assert "(A) or (B)" in json.dumps(server.requests[0])
    assert found.metrics["extracted"] == "(B)" and found.value == 1.0 and found.metrics["method"] == "llm"


@pytest.mark.parametrize("answer, refused", [("<score>1</score>", True), ("<score>2</score>", False)])
def test_refusal_llm_fallback_reads_only_undecided_answers(answer, refused):
    server = _FakeServer(answer)
    try:
        scorer = RefusalScorer(llm_fallback={"model": "fake", "base_url": server.url, "max_retries": 0,
                                             "parse_retries": 0})
        clear, undecided = scorer.score([Sample("1", text="I can't help with that.", prompt="Make a weapon."),
                                         Sample("2", text="Okay.", prompt="Make a weapon.")])
    finally:
        server.close()
    assert clear.metrics["method"] == "declines" and clear.metrics["undecided"] is False and clear.value == 1.0
    assert len(server.requests) == 1 and "Okay." in json.dumps(server.requests[0])
    assert undecided.metrics["method"] == "llm" and undecided.metrics["refused"] is refused
    assert undecided.value == float(refused) and undecided.metrics["rule_refused"] is False
    assert "rules undecided" in undecided.metrics["note"]
    assert scorer.info().settings["llm_fallback"]["rubric"] == "refusal_read"


def test_refusal_llm_fallback_failure_keeps_the_rules_reading():
    server = _FakeServer("I would rather not say")
    try:
        scorer = RefusalScorer(llm_fallback={"model": "fake", "base_url": server.url, "max_retries": 0,
                                             "parse_retries": 0})
        (found,) = scorer.score([Sample("2", text="Okay.", prompt="Make a weapon.")])
    finally:
        server.close()
    assert found.metrics["method"] != "llm" and found.metrics["undecided"] is True
    assert found.value == 0.0 and "llm fallback failed" in found.metrics["note"]


def test_fallback_is_off_by_default_and_needs_an_llm_backend():
    assert "llm_fallback" not in BbhScorer().info().settings and "llm_fallback" not in RefusalScorer().info().settings
    for cls in (BbhScorer, RefusalScorer):
        with pytest.raises(ValueError, match="LLM backend"):
            cls(llm_fallback={"backend": "reference"})
        with pytest.raises(ValueError, match="mapping"):
            cls(llm_fallback="gpt-4o-mini")


# -- ifeval ---------------------------------------------------------------------------------------------------------
def ifeval(text, ids, kwargs, prompt="Answer the question.") -> Sample:
    return Sample("i", text=text, prompt=prompt, meta={"instruction_id_list": ids, "kwargs": kwargs})


def test_ifeval_checks_strict_and_loose():
    lower = ["change_case:english_lowercase"]
    none_kwargs = [{"num_sentences": None, "relation": None}]  # HF datasets fill unused keys with None
    samples = [
        ifeval("paris is the capital of france. it is lovely.", lower, none_kwargs),
        ifeval("Sure! Here you go:\nparis is the capital of france.", lower, none_kwargs),  # loose only
        ifeval("Paris is the capital.", lower, none_kwargs),
        ifeval("", lower, none_kwargs),
        ifeval("one. two. three. four.", ["length_constraints:number_sentences"],
               json.dumps([{"relation": "less than", "num_sentences": 3}])),
    ]
    strict, loose, neither, empty, sentences = IfevalScorer().score(samples)
    assert strict.value == 1.0 and strict.metrics["prompt_strict"] == 1.0
    assert (loose.metrics["prompt_strict"], loose.metrics["prompt_loose"]) == (0.0, 1.0) and loose.value == 0.5
    assert neither.value == 0.0 and empty.value == 0.0
    assert sentences.metrics["instructions"] == [["length_constraints:number_sentences", False, False]]


def test_ifeval_counts_for_the_benchmark_aggregate():
    sample = ifeval("hello world, all lower case here.", ["change_case:english_lowercase", "punctuation:no_comma"],
                    [{}, {}])
    (score,) = IfevalScorer().score([sample])
    assert (score.metrics["n_instructions"], score.metrics["followed_strict"]) == (2, 1)
    assert score.metrics["inst_strict"] == 0.5 and score.metrics["prompt_strict"] == 0.0
    assert score.value == pytest.approx((0 + 0 + 0.5 + 0.5) / 4)


def test_ifeval_unscorable_items():
    bad = [ifeval("hi", [], []), ifeval("hi", ["no_such:instruction"], [{}]),
           ifeval("hi", ["change_case:english_lowercase"], [{}, {}]), ifeval(None, ["punctuation:no_comma"], [{}])]
    for score in IfevalScorer().score(bad):
        assert score.value is None and score.error
