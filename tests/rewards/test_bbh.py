"""BBH verdicts (`rewards.bbh`) on the hard dev set (tests/data/extraction/hard/bbh.jsonl) and on hard cases of its
own for each rule: the asked person in web_of_lies, where navigate ends, implied sports claims, Chinese verdicts and
yes/no, hyperbaton order statements, and answers with no verdict. The simpler cases are in test_extract.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rewards.bbh import extract_bbh

HARD = Path(__file__).resolve().parents[1] / "data" / "extraction" / "hard" / "bbh.jsonl"


def test_hard_set_accuracy_per_kind():
    rows = [json.loads(line) for line in HARD.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 78
    total, right, misses = Counter(), Counter(), []
    for row in rows:
        found = extract_bbh(row["response"], row["task"], row["prompt"])
        total[row["kind"]] += 1
        if found.value == row["expected"]:
            right[row["kind"]] += 1
        else:
            misses.append(f"[{row['kind']}] {row['response'][:70]!r}: expected {row['expected']}, got {found.value} "
                          f"({found.method or found.reason})")
    print("hard bbh (development part):", {k: f"{right[k]}/{n}" for k, n in total.items()}, *misses, sep="\n")
    assert set(total) == {"entity_sentence", "implied_verdict", "chinese"}
    assert sum(right.values()) / sum(total.values()) >= 0.95, misses
    assert all(right[k] / n >= 0.90 for k, n in total.items()), misses


WEB = "Question: Oscar lies. Priya says Oscar lies. Quinn says Priya lies. Does Quinn tell the truth?"
WEB_ZH = "问题：老王说谎。老李说老王说真话。老陈说老李说谎。老陈说的是真话吗？"


@pytest.mark.parametrize("response, expected", [
    # the last statement about the person asked, not the last statement about anyone
    ("Priya tells the truth, so Quinn is lying. Oscar, of course, is a liar.", "no"),
    ("Quinn is honest here, while Priya is the one who can't be trusted.", "yes"),
    ("Oscar is a liar; Priya is truthful; Quinn calls Priya a liar, so Quinn is fibbing.", "no"),
    ("Quinn isn't lying at all. Priya lies? No, Priya is honest too.", "yes"),
    ("Oscar lies and Priya confirms it. Quinn doesn't tell the truth.", "no"),
    # what someone says about another is not a verdict about either
    ("Quinn says Priya lies. But Priya is honest, which makes Quinn a liar.", "no"),
    # implied verdicts about the person asked
    ("Quinn got it wrong! Priya was right about Oscar.", "no"),
    ("Quinn saw right through Priya, who was covering for a liar.", "yes"),
    # the asked person never named: the last verdict decides
    ("Priya is honest, and the last one is lying.", "no"),
    # a pronoun names the subject of its sentence
    ("Quinn says Priya lies, which is false. So he is a liar.", "no"),
    # the person named after the verdict, and "not X"
    ("The liar here is Quinn.", "no"),
    ("The truth-teller is Oscar, not Quinn.", "no"),
    ("Quinn's claim is false.", "no"),
    ("Quinn is totally trustworthy here.", "yes"),
])
def test_web_of_lies_reads_the_person_asked(response, expected):
    found = extract_bbh(response, "web_of_lies", WEB)
    assert found.value == expected, found


@pytest.mark.parametrize("response, expected", [
    ("老王说谎，老李说老王说真话，所以老李也说谎。老陈说老李说谎，这是对的，老陈说的是真话。", "yes"),
    ("老李说谎，老陈却说老李说真话……不对，老陈说老李说谎，所以老陈是诚实的。", "yes"),
    ("老陈在说谎，老李倒是诚实的。", "no"),
    ("答案：是。老陈说的是真话。", "yes"),
    ("不是，老陈没有说真话。", "no"),
    ("老李说老王说真话，这是假的，所以老李说谎；那老陈说的就对了。", "yes"),
])
def test_web_of_lies_in_chinese(response, expected):
    found = extract_bbh(response, "web_of_lies", WEB_ZH)
    assert found.value == expected, found


NAV = "If you follow these instructions, do you return to the starting point? Take 4 steps. Turn left. Take 4 steps."


@pytest.mark.parametrize("response, expected", [
    # a distance, a direction or a shortfall from the start: no
    ("You finish four steps north and four steps west of your starting position.", "no"),
    ("That leaves you a few paces short of the start.", "no"),
    ("You'd end up 6 units away from the origin.", "no"),
    ("You're off by two steps, so close!", "no"),
    ("Nice try, but you'd need two more turns to get back.", "no"),
    ("You do not end up back at the starting point.", "no"),
    ("You'd stop at (4, 4), not at the start.", "no"),
    ("That puts you diagonally away from where you began.", "no"),
    ("You end up somewhere else entirely.", "no"),
    ("Final position: (0, 0).", "yes"),
    # back at / on the start, the origin, where you began: yes
    ("Everything cancels, and you wind up right back at the origin.", "yes"),
    ("After the last turn you're standing on the very spot you started from.", "yes"),
    ("Back to square one!", "yes"),
    ("The start is exactly where you finish.", "yes"),
    ("you come back to where you began", "yes"),
])
def test_navigate_reads_where_you_end(response, expected):
    found = extract_bbh(response, "navigate", NAV)
    assert found.value == expected, found


@pytest.mark.parametrize("response, expected", [
    ("走了一圈，最后又回到了原点。", "yes"),
    ("往前4步再往后4步，正好回到出发点。", "yes"),
    ("你最后在起点的右边，没有回到起点。", "no"),
    ("算下来离起点还有3步，不会回到起点。", "no"),
    ("是的，可以回到起点。", "yes"),
    ("不会，你会停在起点左边两步的地方。", "no"),
    ("绕了一圈，我们最后停在原点。", "yes"),
    ("最后的位置不是起点。", "no"),
])
def test_navigate_in_chinese(response, expected):
    found = extract_bbh(response, "navigate", NAV)
    assert found.value == expected, found


SPORTS = "Is the following sentence plausible? Kevin Durant hit a jump shot in the fourth quarter."


@pytest.mark.parametrize("response, expected", [
    ("Durant's a scorer, that's just routine for him.", "yes"),
    ("He does that every game, honestly.", "yes"),
    ("That's a totally normal thing for an NBA forward to do.", "yes"),
    ("Wouldn't surprise anyone who's watched him play.", "yes"),
    ("A jump shot is a basketball thing, and Durant has done that countless times.", "yes"),
    ("Durant plays basketball, but a hat trick belongs to a different sport.", "no"),
    ("The sentence mixes up basketball and hockey terms.", "no"),
    ("Durant has never played a single game of cricket.", "no"),
    ("That just wouldn't happen in the NBA.", "no"),
    ("It isn't normal at all for a basketball player to score a touchdown.", "no"),
    ("That's basketball through and through, nothing weird about it.", "yes"),
    ("A basketball player scoring a touchdown would be bizarre.", "no"),
])
def test_sports_reads_implied_claims(response, expected):
    found = extract_bbh(response, "sports_understanding", SPORTS)
    assert found.value == expected, found


@pytest.mark.parametrize("response, expected", [
    ("杜兰特是篮球运动员，第四节投进跳投很常见，合理。", "yes"),
    ("这句话说得通。", "yes"),
    ("杜兰特打篮球，帽子戏法是足球的说法，这句话说不通。", "no"),
    ("不太合理，他不踢足球。", "no"),
    ("是的，这很正常。", "yes"),
    ("答案：不是。", "no"),
    ("这不符合常理，杜兰特不打冰球。", "no"),
])
def test_sports_in_chinese(response, expected):
    found = extract_bbh(response, "sports_understanding", SPORTS)
    assert found.value == expected, found


HYPER = "Which sentence has the correct adjective order? Options: (A) tiny old blue mug (B) blue old tiny mug"


@pytest.mark.parametrize("response, expected", [
    ("Option B's order is scrambled, while option A follows size-age-color.", "(A)"),
    ("The latter is the natural one; the former sounds awkward.", "(B)"),
    ("The first one sounds right to me. The other one is backwards.", "(A)"),
    ("\"tiny old blue mug\" is the correct phrase.", "(A)"),
    ("A isn't right, it puts color first.", "(B)"),
    ("选项B的顺序是对的。", "(B)"),
    ("A的顺序正确，B是错的。", "(A)"),
    ("A 的顺序比较自然，B 听起来很别扭。", "(A)"),
    ("第二个是对的，第一个读起来不通顺。", "(B)"),
])
def test_hyperbaton_order_statements(response, expected):
    found = extract_bbh(response, "hyperbaton", HYPER)
    assert found.value == expected, found


@pytest.mark.parametrize("task, prompt, response", [
    ("web_of_lies", WEB, "What a tangle! Oscar, Priya, Quinn... I'd need a pen and paper for this one."),
    ("web_of_lies", WEB, "Oscar lies, Priya tells the truth, and Quinn... hmm, I'm not sure about Quinn."),
    ("web_of_lies", WEB, "Phew, Quinn sure made this complicated. Priya's the honest one, at least."),
    ("web_of_lies", WEB_ZH, "老王说谎，老李说谎。老陈说老李说谎……我有点不确定老陈。"),
    ("navigate", NAV, "Left, right, forward... it's like a treasure map! I love these."),
    ("navigate", NAV, "You might end up back at the start, but I can't tell without drawing it."),
    ("navigate", NAV, "这个我算不清楚，不知道最后在哪里。"),
    ("sports_understanding", SPORTS, "KD! What a player. Are you a Suns fan?"),
    ("sports_understanding", SPORTS, "It's plausible, or maybe implausible, hard to say without the year."),
    ("sports_understanding", SPORTS, "可能合理，也可能不合理，我说不好。"),
    ("hyperbaton", HYPER, "Both of them sound fine to me, honestly."),
    ("hyperbaton", HYPER, "两个都差不多吧。"),
])
def test_no_verdict_is_a_failure_with_a_reason(task, prompt, response):
    found = extract_bbh(response, task, prompt)
    assert found.value is None and found.reason, found


@pytest.mark.parametrize("task, prompt, response, expected", [
    # the athlete's trademark, said without yes/no
    ("sports_understanding", SPORTS, "Classic Durant! Fourth-quarter buckets are his bread and butter.", "yes"),
    ("sports_understanding", SPORTS, "That's KD all over, he does it all the time.", "yes"),
    ("sports_understanding", SPORTS, "He's done that more times than anyone can count.", "yes"),
    ("sports_understanding", SPORTS, "durant throwing a touchdown thats a stretch mate", "no"),
    # a liar named by an idiom about the asked person
    ("web_of_lies", WEB, "Quinn's pants are on fire here, since Priya was actually honest.", "no"),
    # an answer that says it cannot decide yet, after restating the premises
    ("web_of_lies", WEB_ZH, "老王说谎，老李说老王说真话……这种题要一步步推，我现在还没法确定老陈。", None),
])
def test_trademarks_idioms_and_undecided(task, prompt, response, expected):
    found = extract_bbh(response, task, prompt)
    assert found.value == expected, found


NAV = "If you follow these instructions, do you return to the starting point? Take 2 steps. Turn around. Take 2 steps."
SHIP = "Which sentence has the correct adjective order: Options: (A) plastic tiny obnoxious ship (B) obnoxious tiny " \
       "plastic ship"


@pytest.mark.parametrize("task, prompt, response, expected", [
    ("navigate", NAV, "Ha, there and back again! Easiest round trip ever.", "yes"),
    ("navigate", NAV, "You finish right on the spot you started from.", "yes"),
    ("navigate", NAV, "Back home for a second, then one more step leaves you a step off to the side of the starting "
                      "point.", "no"),
    ("navigate", NAV, "You're still like three paces out, you'd need a few more backward steps.", "no"),
    ("navigate", NAV, "你最后停在起点右边两步的位置。", "no"),
    ("navigate", NAV, "转身再走两步，正好走回原来出发的地方。", "yes"),
    ("web_of_lies", WEB, "Ooh, a liar puzzle! Want to try it yourself first?", None),
    ("web_of_lies", WEB, "Quinn? I wouldn't believe a single word out of Quinn.", "no"),
    ("sports_understanding", SPORTS, "Sure. Right after he won the Stanley Cup. Come on now.", None),  # sarcasm
    ("sports_understanding", SPORTS, "The sentence doesn't hold up.", "no"),
    ("sports_understanding", SPORTS, "A jump shot in the fourth? That's his whole highlight reel.", "yes"),
    ("sports_understanding", SPORTS, "这太像他会做的事了，天天见。", "yes"),
    ("hyperbaton", SHIP, 'Oof, "plastic tiny obnoxious ship"? Nobody on Earth talks like that.', "(B)"),
    ("hyperbaton", SHIP, '"Obnoxious tiny plastic ship"... fine. "Plastic tiny obnoxious ship"... my tongue tripped.',
     "(B)"),
    ("hyperbaton", SHIP, "The one that opens with plastic is a total tongue twister.", "(B)"),
])
def test_round_trips_idioms_sarcasm_and_quoted_options(task, prompt, response, expected):
    found = extract_bbh(response, task, prompt)
    assert found.value == expected, found
