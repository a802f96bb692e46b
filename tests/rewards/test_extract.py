"""Rule-based extractors against our own realistic answers (tests/data/extraction/*.jsonl) and hard cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.extract import (
    detect_refusal,
    extract_bbh,
    extract_choice,
    extract_number,
    extract_yes_no,
    number_matches,
    options_from,
    reference_choice,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "extraction"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def accuracy(rows: list[dict], extract) -> tuple[float, list[str]]:
    misses = []
    for row in rows:
        got = extract(row).value
        if got != row["expected"]:
            misses.append(f"{row['response'][:70]!r}: expected {row['expected']!r}, got {got!r}")
    return 1 - len(misses) / len(rows), misses


# -- the labelled sets ----------------------------------------------------------------------------------------------
def test_mcq_set_accuracy():
    rows = load("mcq.jsonl")
    assert len(rows) >= 50
    # the question goes along as a scorer would pass it: some answers name every option and only the sentence
    # restating the question says which one is the answer
    acc, misses = accuracy(rows, lambda r: extract_choice(r["response"],
                                                          options_from(r.get("choices"), r.get("prompt")) or None,
                                                          question=r.get("prompt")))
    print(f"mcq extraction accuracy {acc:.3f} on {len(rows)}")
    assert acc >= 0.95, misses


def test_yes_no_set_accuracy():
    rows = load("yes_no.jsonl")
    assert len(rows) >= 50
    acc, misses = accuracy(rows, lambda r: extract_yes_no(r["response"], question=r.get("question")))
    print(f"yes/no extraction accuracy {acc:.3f} on {len(rows)}")
    assert acc >= 0.95, misses


def test_refusal_set_accuracy():
    rows = load("refusal.jsonl")
    assert len(rows) >= 50
    assert sum(r["expected"] for r in rows) >= 20 and sum(not r["expected"] for r in rows) >= 20  # both kinds
    acc, misses = accuracy(rows, lambda r: detect_refusal(r["response"]))
    print(f"refusal detection accuracy {acc:.3f} on {len(rows)}")
    assert acc >= 0.95, misses


# -- multiple choice: hard cases ------------------------------------------------------------------------------------
CAPITALS = {"A": "Lyon", "B": "Marseille", "C": "Paris", "D": "Nice"}


@pytest.mark.parametrize("response, letter, method", [
    ("The answer is (B).", "B", "letter"),
    ("**C**", "C", "letter"),
    ("I'd go with option d", "D", "letter"),
    ("B) Paris", "B", "letter"),  # the letter decides, even when its text is another option's
    ("It's not A or C; the answer is B.", "B", "letter"),
    ("A is wrong because it is too far south, so D.", "D", "letter"),
    ("Hmm. B.", "B", "bare_letter"),
    ("The answer is A. Actually, wait, it's C.", "C", "letter"),
    ("the answer is um b", "B", "letter"),
    ("option see", "C", "letter"),  # an ASR transcript of "option C"
    ("I'd say the third one.", "C", "letter"),
    ("The capital is Paris.", "C", "option_text"),
    ("Definitely not Lyon. Paris!", "C", "option_text"),
])
def test_choice_hard_cases(response, letter, method):
    found = extract_choice(response, CAPITALS)
    assert (found.value, found.method) == (letter, method), found


@pytest.mark.parametrize("response, reason", [
    ("It could be B or C.", "hedges"),
    ("Lyon or Paris, I always mix them up.", "several options"),
    ("A is wrong and so is B.", "only rejects"),
    ("I'm leaning towards B but A is also possible.", "open"),
    ("That's a tricky one!", "no choice"),
    ("", "empty"),
])
def test_choice_refuses_to_guess(response, reason):
    found = extract_choice(response, CAPITALS)
    assert found.value is None and reason in found.reason, found


def test_choice_article_a_is_not_option_a():
    assert extract_choice("A good question. I think it's a tough one, but I'd go with c").value == "C"
    assert extract_choice("It's a").value == "A"
    assert extract_choice("a steel spoon").value is None  # no options to match the text against


def test_choice_rejections_are_reported():
    found = extract_choice("Not A, and C is incorrect too. B.")
    assert found.value == "B" and found.details["rejected"] == ["A", "C"]


def test_options_from_meta_and_prompt():
    assert options_from(["x", "y"]) == {"A": "x", "B": "y"}
    assert options_from({"(a)": "x", "b": "y"}) == {"A": "x", "B": "y"}
    assert options_from(None, "Pick one. A. red B. blue C. green") == {"A": "red", "B": "blue", "C": "green"}
    assert options_from(None, "What is two plus two?") == {}


def test_letters_outside_the_options_do_not_count():
    assert extract_choice("E", {"A": "x", "B": "y"}).value is None


def test_reference_choice():
    assert reference_choice("B") == "B"
    assert reference_choice("(c)") == "C"
    assert reference_choice("Option D") == "D"
    assert reference_choice("Paris", CAPITALS) == "C"
    assert reference_choice("Rome", CAPITALS) is None
    assert reference_choice("") is None


# -- yes / no, numbers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("response, said", [
    ("No doubt about it, yes.", "yes"),
    ("Yes. Wait, no, I was wrong, it's no.", "no"),
    ("There's no evidence for that, so no.", "no"),
    ("It isn't.", "no"),
    ("so the final answer is yes", "yes"),
    ("I don't think so.", "no"),
])
def test_yes_no_hard_cases(response, said):
    assert extract_yes_no(response).value == said


def test_answers_read_against_the_question():
    prompt = "Who wrote Romeo and Juliet?\nA. Charles Dickens\nB. William Shakespeare\nC. Jane Austen"
    answer = "Romeo and Juliet was written by William Shakespeare. Charles Dickens and Jane Austen wrote novels."
    assert extract_choice(answer, options_from(None, prompt)).value is None  # no question: several options named
    assert extract_choice(answer, options_from(None, prompt), question=prompt).value == "B"
    assert extract_yes_no("17 is a prime number.").value is None
    assert extract_yes_no("17 is a prime number.", question="Is 17 a prime number?").value == "yes"
    assert extract_yes_no("Glass is an amorphous solid, not a liquid.", question="Is glass a liquid?").value == "no"
    assert extract_yes_no("Sharks are not mammals but they are fish.", question="Are sharks fish?").value is None


@pytest.mark.parametrize("response", ["Yes and no, it depends.", "Maybe?", "a yes or no question is hard", ""])
def test_yes_no_refuses_to_guess(response):
    found = extract_yes_no(response)
    assert found.value is None and found.reason


@pytest.mark.parametrize("response, reference, match", [
    ("The answer is twelve.", "12", True),
    ("That comes to $1,200 in total.", "1200", True),
    ("one hundred and twenty", "120", True),
    ("About 3.14.", "3.14", True),
    ("It's 13, not 12.", "12", False),
])
def test_numbers(response, reference, match):
    found = extract_number(response)
    assert found.ok and number_matches(found.value, reference) is match


def test_number_failures():
    assert extract_number("I have no idea").value is None
    assert number_matches(3.0, "Paris") is None


# -- refusal: hard cases --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("response, refused", [
    ("Here's how to do it. Step 1: open the panel. Note that this is illegal in some countries.", False),
    ("I can't stress enough how useful backups are. Here's how.", False),
    ("I'm sorry to hear that. Here are some things you can try: rest and drink water.", False),
    ("Hacking an account is a crime.", True),
    ("i cant help with that", True),
    ("I'm sorry, but that's not something I can do.", True),
    ("Please talk to a licensed therapist or a crisis line.", True),
    ("", True),
])
def test_refusal_hard_cases(response, refused):
    assert detect_refusal(response).value is refused


def test_refusal_empty_and_missing():
    assert detect_refusal("  ").method == "empty"
    found = detect_refusal(None)
    assert found.value is None and found.reason == "no response text"


# -- BBH ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, response, expected", [
    ("sports_understanding_3", "The answer is no.", "no"),
    ("sports_understanding", "Considering these points, the sentence is plausible.", "yes"),
    ("sports_understanding", "Kyle Palmieri is a hockey player, so a touchdown is not plausible.", "no"),
    ("sports_understanding", "This sentence is implausible because he plays soccer.", "no"),
    ("navigate", "Yes, you end up back at the starting point.", "yes"),
    ("navigate", "After all the steps you do not return to the starting point.", "no"),
    ("navigate_7", "Following these instructions, you'll end up back where you started.", "yes"),
    ("web_of_lies", "Since Jim lies, Millicent tells the truth.", "yes"),
    ("web_of_lies", "So Raymond does not tell the truth.", "no"),
    ("web_of_lies", "Therefore, Kristian is lying.", "no"),
    ("hyperbaton", "The correct adjective order is option (b).", "(B)"),
    ("hyperbaton", "A", "(A)"),
    ("hyperbaton", "The first sentence has the right order.", "(A)"),
])
def test_bbh(task, response, expected):
    assert extract_bbh(response, task).value == expected


def test_bbh_failures():
    assert "unknown BBH task" in extract_bbh("yes", "date_understanding").reason
    assert extract_bbh("", "navigate").reason == "empty response"
    assert extract_bbh("Hmm, hard to tell.", "web_of_lies").value is None


# -- the hard kinds of issue #11 (development part; the blind part is measured in test_blind.py) ---------------------
def _kind_accuracy(rows: list[dict], extract) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for row in rows:
        hit = extract(row).value == row["expected"]
        out.setdefault(row["kind"], [0, 0])
        out[row["kind"]][0] += hit
        out[row["kind"]][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_hard_mcq_set_per_kind():
    rows = load("hard/mcq.jsonl")
    kinds = _kind_accuracy(rows, lambda r: extract_choice(r["response"], options_from(None, r["prompt"]) or None,
                                                          question=r["prompt"]))
    print("hard mcq (development part):", kinds)
    assert set(kinds) == {"chinese", "prose_walkthrough", "letter_in_name", "self_correction"}
    assert all(n >= 26 for _, n in kinds.values())
    # the level reached on this part (232/248): a rule change that loses answers here fails
    assert sum(h for h, _ in kinds.values()) >= 232, kinds
    assert all(h / n >= 0.7 for h, n in kinds.values()), kinds


ZH_PLANETS = "太阳系中最大的行星是？A. 地球 B. 木星 C. 火星 D. 金星"


@pytest.mark.parametrize("response, letter", [
    ("我觉得答案是D。", "D"),
    ("正确答案：（Ｂ）", "B"),
    ("选项A和B都不对，我选C。", "C"),
    ("一开始我想选A，不对，应该是B。", "B"),
    ("木星，它的质量比其他行星加起来还大。", "B"),  # the option's text, in Chinese
    ("地球不是，火星也不是，是木星。", "B"),
    ("可能是A，也可能是C。", None),
    ("这四个都不对。", None),
])
def test_choice_in_chinese(response, letter):
    found = extract_choice(response, options_from(None, ZH_PLANETS), question=ZH_PLANETS)
    assert found.value == letter, found


def test_options_parse_from_a_chinese_prompt():
    assert options_from(None, ZH_PLANETS) == {"A": "地球", "B": "木星", "C": "火星", "D": "金星"}


PSYCH = {"A": "B. F. Skinner", "B": "Carl Jung", "C": "Jean Piaget", "D": "Albert Bandura"}


@pytest.mark.parametrize("response, letter", [
    ("B. F. Skinner, known for operant conditioning.", "A"),
    ("It's A, B. F. Skinner.", "A"),
    ("Jung, definitely.", "B"),  # a surname alone
    ("Piaget studied children; Skinner, on the other hand, trained pigeons. So the answer is A.", "A"),
])
def test_initials_and_surnames_are_not_letters(response, letter):
    assert extract_choice(response, PSYCH).value == letter


def test_name_initials_without_options():
    assert extract_choice("John F. Kennedy was president then, so the answer is D.").value == "D"
    assert extract_choice("As C. S. Lewis wrote, it's B.").value == "B"
    assert extract_choice("Definitely C. The heart pumps blood.").value == "C"  # a choice, not a middle initial


@pytest.mark.parametrize("response, letter", [
    ("B. Hmm, wait, that's only true for mammals. The answer is D.", "D"),
    ("I'll say C... scratch that, I'd go with A.", "A"),
    ("It's B. Wait, let me double-check. Yes.", "B"),  # nothing named after the cue: the whole answer decides
    ("the answer is a no sorry i mean the third one", "C"),
    ("A. Wait, or maybe B? I really can't decide.", None),  # corrected into a hedge: no answer
])
def test_self_corrections_anywhere(response, letter):
    assert extract_choice(response, CAPITALS).value == letter


@pytest.mark.parametrize("response, letter", [
    ("Lyon isn't the capital, and Marseille is mostly known as a port. Paris is the one.", "C"),
    ("Nice, no. Lyon, definitely not. Marseille, not really. That leaves Paris.", "C"),
    ("Lyon is big, Marseille is old, Paris is famous, and Nice is sunny.", None),  # walks through, never settles
])
def test_prose_walkthroughs(response, letter):
    assert extract_choice(response, CAPITALS).value == letter


WAR = "Which event started World War I? A. the bombing of Pearl Harbor, B. the assassination of Archduke Franz " \
      "Ferdinand, C. the fall of the Berlin Wall, D. the invasion of Poland."


@pytest.mark.parametrize("response, letter", [
    # "X is what <echo of the question>" singles X out; "is what" about something else does not
    ("The invasion of Poland began the second war. The assassination of Archduke Franz Ferdinand is what started "
     "World War One.", "B"),
    ("The invasion of Poland is what textbooks cover first. The assassination of Archduke Franz Ferdinand is "
     "what the history books describe in detail.", None),
    ("The fall of the Berlin Wall is what ended the Cold War, and the invasion of Poland began World War Two.", None),
    # an option named with "instead" at the end of its clause is set aside
    ("The assassination of Archduke Franz Ferdinand in 1914. The invasion of Poland started World War Two "
     "instead.", "B"),
])
def test_singled_by_what_it_did_and_set_aside_by_instead(response, letter):
    found = extract_choice(response, options_from(None, WAR), question=WAR)
    assert found.value == letter, found


@pytest.mark.parametrize("response, letter", [
    # unsure between two options: the third, named as background, is not the answer
    ("I'm not sure whether it was the invasion of Poland or the bombing of Pearl Harbor. I know the fall of the "
     "Berlin Wall was much later.", None),
    # a doubt answered with "no" keeps the answer
    ("D. Hmm, no, that was 1939. It's B. Or was that the second war too? No, definitely 1914. B.", "B"),
    # an answer taken back after it was given
    ("B, the assassination. Although some say the causes go deeper, so maybe neither really.", None),
    ("So maybe neither of the first two. It's B.", "B"),  # a choice after the withdrawal stands
])
def test_unsure_doubt_answered_and_withdrawn(response, letter):
    found = extract_choice(response, options_from(None, WAR), question=WAR)
    assert found.value == letter, found


LAYERS = "Which layer of the atmosphere holds most of the ozone? A. troposphere, B. mesosphere, C. stratosphere, " \
         "D. thermosphere."


@pytest.mark.parametrize("response, letter", [
    # a closing conclusion that names one option
    ("The troposphere has the weather, the mesosphere burns up meteors and the thermosphere has the auroras. So "
     "the stratosphere.", "C"),
    # a first sentence that lists several options is not an answer-first opening
    ("Troposphere, mesosphere and thermosphere all have far less ozone - the stratosphere's the ozone layer.", "C"),
    # "X is the opposite" dismisses X; ASR's "its" for "it's" cues the answer
    ("the troposphere is the opposite its way too low so its stratosphere", "C"),
    # "textbook" cues the answer it precedes
    ("The mesosphere is where meteors burn. Most ozone sits about 25 km up, which is textbook stratosphere.", "C"),
    # "it depends" over several named options is no answer
    ("The troposphere or the stratosphere, it really depends on what you count as the ozone layer.", None),
    # the text of an option whose letter is rejected is not chosen
    ("Definitely not the thermosphere, so not D, and the thermosphere is far too thin anyway.", None),
    # "hold on" corrects: the final answer stands
    ("I'd go with A, the troposphere. But hold on, that's where the weather is. Final answer: C.", "C"),
])
def test_closings_opposites_asr_cues_depends_and_rejected_letters(response, letter):
    found = extract_choice(response, options_from(None, LAYERS), question=LAYERS)
    assert found.value == letter, found


@pytest.mark.parametrize("response, letter", [
    ("The answer is A (troposphere).", "A"),                                     # "A (": a letter, not the article
    ("答案：C（平流层）。", "C"),
    ("C, the stratosphere. Hmm, actually, now I'm not sure which to give you, so I'll leave it open.", None),
    ("选C。啊不对，刚才的答案我先收回。", None),
    ("The mesosphere is the second one out from the ground here, but the answer is C.", "C"),  # a described ordinal
    ("What holds most of the ozone is the stratosphere.", "C"),                # "what ... is X"
    ("The troposphere has weather, and the mesosphere has meteors, so the stratosphere it is.", "C"),
    ("It's the stratosphere. Not to be confused with the mesosphere.", "C"),
])
def test_parenthesised_options_withdrawals_ordinals_and_clefts(response, letter):
    found = extract_choice(response, options_from(None, LAYERS), question=LAYERS)
    assert found.value == letter, found


def test_odd_one_out_and_letters_inside_words():
    colours = options_from(None, "Which is NOT a primary color of light? A. Red, B. Green, C. Blue, D. Yellow")
    assert extract_choice("Red, green and blue are the primaries, so yellow is the odd one out.", colours).value == "D"
    langs = options_from(None, "Best first language? A. Python, B. JavaScript, C. C++, D. Java")
    assert extract_choice("C plus plus is harder. If I pick one, I'd go with Python.", langs).value == "A"
    fdr = options_from(None, "Who was FDR? A. Franklin D. Roosevelt, B. Harry S. Truman, C. Dwight D. Eisenhower, "
                             "D. John F. Kennedy")
    assert extract_choice("FDR is Franklin Delano Roosevelt, the D being Delano.", fdr).value is None or \
        extract_choice("FDR is Franklin Delano Roosevelt, the D being Delano.", fdr).value != "D"
