"""BBH verdicts: the answer to one of VoiceBench's four BBH tasks, in the form of its reference.

``sports_understanding``, ``navigate`` and ``web_of_lies`` are yes/no questions (is the sentence plausible? do you
return to the starting point? does X tell the truth?). How the verdict is decided:

1. An explicit answer (``the answer is no``, ``答案：不是``) or a leading yes/no (``Nope, ...``, ``是的，...``).
2. Else the task's own conclusions, English and Chinese, each read as yes or no; the last one decides:
   - sports: a claim about the sentence (``plausible``, ``completely normal``, ``happens all the time``, ``wrong
     sport``, ``never played baseball``, ``合理`` / ``不合理``);
   - navigate: where you end relative to the start (``back at the origin``, ``home sweet home``, ``回到起点`` → yes;
     ``two steps left of where you began``, ``one step shy of home``, ``还差一步`` → no);
   - web_of_lies: a statement about the person the prompt asks about (``So Vina is lying``, ``Fletcher nailed
     it``, ``小刚说的是真话``); what someone *says* about another (``Jerry says Fidel lies``) is reported, not a
     verdict. When the asked person is never named in a verdict, the last verdict decides, unless it names
     someone else.
3. Else the weaker yes/no signals of `extract_yes_no` (answer phrases, a lone yes/no word).

A response that hedges after its last verdict, or hedges and gives verdicts both ways, has no verdict. ``hyperbaton``
is (A)/(B): statements of which option's order is right or wrong (``option A's order is the standard one, B
scrambles it``, ``the other one sounds like word salad``, ``B 听起来很别扭``) when they agree, else `extract_choice`. No
verdict is a failure with its reason, never a guess.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from rewards.extract import BBH_TASKS, Extraction, _clean, _fail, extract_choice, extract_yes_no, options_from

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_NUM = (r"(?:\d+(?:\.\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a\s+few|a\s+couple(?:\s+of)?|"
        r"several|a|an|some|many)")
_UNIT = r"(?:steps?|units?|paces?|squares?|spaces?|blocks?|meters?|metres?|feet|foot)"
# "not" / "n't" / "never" up to two words before a word reverses it ("isn't completely normal")
_NEGATED = re.compile(r"(?:\bnot|n't|\bnever|\bhardly|\bno\s+longer|\bfail(?:s|ed)?\s+to)\s+(?:\w+\s+){0,2}$", re.I)


@dataclass(frozen=True)
class _Verdict:
    start: int
    end: int
    value: str  # "yes" / "no"
    phrase: str


def _verdicts(text: str, rules: list[tuple[re.Pattern[str], str | None]]) -> list[_Verdict]:
    """Every conclusion the rules find, in order. A rule's value is ``yes`` / ``no``, or None when the pattern's
    ``neg`` group (or a negation just before it) says no and its absence says yes."""
    found: list[_Verdict] = []
    for pattern, value in rules:
        for m in pattern.finditer(text):
            if value is None:
                said = "no" if m.groupdict().get("neg") else "yes"
            else:
                said = value
            if _NEGATED.search(text[max(0, m.start() - 40):m.start()]) and m.groupdict().get("flip") is not None:
                said = "yes" if said == "no" else "no"
            found.append(_Verdict(m.start(), m.end(), said, m.group(0)))
    found.sort(key=lambda v: v.start)
    # a match inside an earlier, longer one ("vouching for a known liar" holds "liar") is part of it
    kept: list[_Verdict] = []
    for v in found:
        if kept and v.start < kept[-1].end:
            if v.end - v.start > kept[-1].end - kept[-1].start:
                kept[-1] = v
            continue
        kept.append(v)
    return kept


def _in_question(text: str, v: _Verdict) -> bool:
    """Is the verdict phrase part of a question (the prompt restated: ``Does Vina tell the truth?``)?"""
    rest = text[v.end:]
    m = re.search(r"[.!?。！？\n]", rest)
    return bool(m and m.group(0) in "?？") or rest.lstrip().startswith("吗")


# -- sports_understanding -----------------------------------------------------------------------------------------
_SPORTS: list[tuple[re.Pattern[str], str | None]] = [(re.compile(p, re.I), v) for p, v in [
    (r"\b(?P<neg>not\s+(?:very\s+|entirely\s+|particularly\s+|really\s+|quite\s+|at\s+all\s+|)|n't\s+(?:very\s+|"
     r"entirely\s+|really\s+|)|im|un)?(?:plausible|possible|likely|realistic|believable|reasonable)\b", None),
    (r"\b(?P<flip>)(?:(?:completely|perfectly|totally|pretty|entirely|very)\s+)?(?:normal|routine|standard|"
     r"common(?:place)?|typical|ordinary)\b(?!\s+(?:part|for\s+(?:a|an)\s))", "yes"),
    (r"\b(?:happens|happened|does\s+(?:it|that|this)|did\s+(?:it|that|this)|done\s+(?:it|that|this)?)\s*"
     r"(?:all\s+the\s+time|every\s+(?:\w+\s+)?(?:day|week|game|season|sunday|night|year)|(?:so\s+|very\s+)?often|"
     r"(?:many|countless|plenty\s+of|lots\s+of|so\s+many|hundreds\s+of|thousands\s+of)\s+times)", "yes"),
    (r"\b(?:totally|definitely|absolutely)\s+happens\b|\bnothing\s+(?:weird|strange|unusual|odd|crazy|wrong)\b",
     "yes"),
    (r"(?P<flip>)\b(?:unusual|strange|weird|bizarre|absurd|ridiculous|impossible)\b", "no"),
    (r"\bclassic\s+(?:\w+\s+){0,2}(?:move|play|moment|thing|stuff)\b", "yes"),
    # the athlete's trademark: "that's Ohtani all over", "right in his wheelhouse", "more times than anyone can count"
    (r"\b(?:that'?s|that\s+is|this\s+is)\s+(?:\w+\s+){1,2}all\s+over\b|\bright\s+in\s+(?:his|her|their)\s+wheelhouse\b|"
     r"\b(?:his|her|their)\s+(?:bread\s+and\s+butter|signature\s+move|trademark)\b|"
     r"\bmore\s+times\s+than\s+(?:anyone|i|you|we|most\s+people)\s+can\s+count\b|"
     r"\b(?:does|do|did)\s+(?:\w+\s+)?all\s+the\s+time\b", "yes"),
    (r"\b(?:that'?s|that\s+is|this\s+is|bit\s+of|quite|kind\s+of|a\s+real)\s+(?:a\s+)?(?:bit\s+of\s+a\s+)?"
     r"stretch\b|\b(?:does\s*n't|does\s+not|won't|wouldn't)\s+hold\s+up\b"
     r"|\ba\s+\w+\s+thing,?\s+not\s+(?:a\s+)?\w+\b"
     r"|(?:\bnever|n't|\bnot)\s+(?:[\w']+\s+){0,2}?(?:thrown|kicked|swung|skated|dunked|pitched|served)\s+(?:a|an|the)\s+"
     r"(?:\w+\s+){0,2}in\s+(?:his|her|their)\s+life\b", "no"),
    (r"\b(?:highlight\s+reel|what\s+(?:he|she|they)\s+does\s+best|(?:his|her)\s+specialty)\b"
     r"|\bhappens?\s+(?:to\s+(?:him|her|them)\s+)?(?:regularly|routinely|constantly)\b", "yes"),
    (r"\b(?:exactly|just|precisely)\s+(?:the\s+)?(?:kind|sort|type)\s+of\s+thing\s+(?:\w+\s+){0,2}"
     r"(?:does|did|do|would\s+do)\b", "yes"),
    (r"\b(?:would\s*n't|would\s+not|does\s*n't|does\s+not|wouldn't)\s+surprise\b|\bno\s+surprise\b|"
     r"\bnot\s+surprising\b|\bmakes?\s+(?:total\s+|perfect\s+)?sense\b(?P<flip>)", "yes"),
    (r"\b(?:does\s*n't|does\s+not|do\s*n't|do\s+not)\s+(?:really\s+)?fit\b|\b(?:wrong|different|another)\s+sport|"
     r"\b(?:mix(?:es|ed|ing)?|confus(?:es|ed|ing))\s+(?:up\s+)?(?:(?:\w+\s+){0,3}sports\b|\w+\s+(?:and|with)\s+\w+)|\bincorrect\s+sport\b|\bmismatch|\bcontradiction|"
     r"\bnonsensical\b|\bmakes\s+no\s+sense\b|\bdoes\s*n't\s+make\s+sense\b|\bdoes\s+not\s+make\s+sense\b", "no"),
    (r"\bnot\s+something\s+that\s+(?:would|could|will|ever)\s+happens?\b|\b(?:would|could|will)\s*(?:n't|\s+not|"
     r"\s+never)\s+happen\b|\b(?:does|do)(?:\s*n't|\s+not)\s+happen\b|\bnever\s+happens?\b", "no"),
    (r"(?:\bnever|n't|\bnot)\s+(?:[\w']+\s+){0,3}?(?:ever\s+)?(?:played|plays|held|touched|picked\s+up|competed|"
     r"laced\s+up|did\s+professionally)\b", "no"),
]] + [(re.compile(p), v) for p, v in [
    (r"\b[Cc]lassic\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?\s*[!.]", "yes"),  # "Classic Messi!": the player's trademark
    (r"不(?:太|大|是很|怎么|够)?(?:合理|现实|可信|正常|常见)|说不通|讲不通|不可能|不搭|不会发生|不会出现|从来?没(?:有)?[^，,。.]{0,12}(?:打过|踢过|参加过|玩过)|"
     r"(?:张冠李戴|风马牛)", "no"),
    (r"不符合(?:常理|常识|逻辑|事实|实际)|不合常理|违背常理|违反常理|(?:这个|这句话?)不太?对", "no"),
    (r"(?:太|很|非常)像(?:他|她|他们)(?:会)?|天天见|家常便饭|拿手好戏", "yes"),
    (r"(?<![不没])(?:合理|符合常理|说得通|讲得通|很正常|正常|很常见|常见|完全可能|很可能|现实|可信)", "yes"),
]]

# -- navigate -----------------------------------------------------------------------------------------------------
_START = re.compile(
    r"\b(?:start(?:ing)?(?:\s+(?:point|position|place|spot|location|square))?|"
    r"origin(?:al\s+(?:position|point|spot|place|location))?|initial\s+(?:position|point|spot|place|location)|"
    r"(?:exact|same|very)\s+(?:spot|place|point|position|location)(?:\s+(?:you|we|i)\s+(?:started|began|were)"
    r"(?:\s+(?:from|at|in))?)?|where\s+(?:you|we|i|they)\s+(?:first\s+)?(?:started|began|begun|set\s+off)|"
    r"home(?:\s+base)?|square\s+one)\b", re.I)
_ARTICLE = re.compile(r"(?:\b(?:the|your|my|our)\s+)$", re.I)
_FROM_START = re.compile(
    rf"(?:\b{_NUM}\s+(?:more\s+)?{_UNIT}\b[\w\s,'-]{{0,30}}?|\b(?:away|short|shy|far|off|distance|diagonal(?:ly)?|"
    r"apart))\s*(?:of|from|off|past|beyond|behind)\s+$|\bnot\s+(?:back\s+)?(?:at|to|on|in)\s+$|"
    r"\b(?:near|nearby|close\s+to|next\s+to|beside|nowhere\s+near)\s+$", re.I)
_AT_START = re.compile(
    r"(?:\bback|\breturn\w*|\bend\w*(?:\s+up)?|\bfinish\w*|\barriv\w*|\bare|\bis|\bam|\bbe|'re|'s|\bland\w*|"
    r"\bstop\w*|\bbrings?\s+(?:you|us|me)|\bright|\bexactly|\bprecisely|\bget\w*|\bcome\w*|\bcame|\breach\w*|"
    r"\bwind\s+up|\bwound\s+up|\bstand\w*)\s+(?:(?:right|back|exactly|precisely|again)\s+)?"
    r"(?:(?:at|to|on|in|into|where)\s+)?(?:(?:right|exactly|precisely)\s+)?$", re.I)
_START_IS_END = re.compile(r"^\s*(?:is|was)\s+(?:exactly\s+|precisely\s+|just\s+)?where\s+(?:you|we|i)\s+"
                           r"(?:finish|end|stop|land|wind\s+up)", re.I)
_NAVIGATE: list[tuple[re.Pattern[str], str | None]] = [(re.compile(p, re.I), v) for p, v in [
    (r"\bhome\s+sweet\s+home\b|\bfull\s+circle\b|\b(?<!to\s)closes?\s+(?:the|that|this)\s+loop\b"
     r"|\bthere\s+and\s+back(?:\s+again)?\b|\bround\s+trip\b"
     r"|\b(?:finish|end\s+up|land|stand|wind\s+up)\w*\s+(?:\w+\s+){0,2}on\s+the\s+(?:same\s+|very\s+)?spot\s+"
     r"(?:where\s+)?you\s+(?:started|began)", "yes"),
    (r"\b(?:off|away)\s+(?:to\s+the\s+side\s+)?(?:of|from)\s+the\s+start(?:ing)?(?:\s+(?:point|spot|position))?"
     r"|\bstill\s+(?:like\s+|about\s+|roughly\s+)?" + _NUM + r"\s+(?:paces|steps|units)\s+(?:out|away|off)\b"
     r"|\bneed\s+(?:a\s+few\s+|some\s+|a\s+couple\s+)?more\s+(?:\w+\s+)?steps\b", "no"),
    (r"\b(?:need|needs|needed|take|takes|require|requires)\s+(?:\w+\s+){0,2}more\s+(?:\w+\s+){0,2}to\s+"
     r"(?:close|get\s+back|return|make\s+it\s+back|finish)\b|\boff\s+by\s+" + _NUM + r"\b|"
     r"\b(?:way\s+)?off\s+course\b|\bthree\s+sides\s+of\s+a\s+square\b|\bsomewhere\s+else\b|\belsewhere\b|"
     r"\ba\s+different\s+(?:spot|place|position|location|point)\b", "no"),
    # "final position: (0, 0)" / "you end at (-4, 4)"
    (r"\b(?:final|ending|end|last)\s+(?:position|point|location|spot|coordinates?)\s*(?:is|was|:|=|of)?\s*"
     r"(?:at\s+)?\(\s*0\s*,\s*0\s*\)|\b(?:end|finish|land|wind)\w*(?:\s+up)?\s+(?:back\s+)?at\s+\(\s*0\s*,\s*0\s*\)",
     "yes"),
    (r"\b(?:final|ending|end|last)\s+(?:position|point|location|spot|coordinates?)\s*(?:is|was|:|=|of)?\s*"
     r"(?:at\s+)?\((?!\s*0\s*,\s*0\s*\))\s*-?\d+\s*,\s*-?\d+\s*\)|"
     r"\b(?:end|finish|land|wind)\w*(?:\s+up)?\s+at\s+\((?!\s*0\s*,\s*0\s*\))\s*-?\d+\s*,\s*-?\d+\s*\)", "no"),
]] + [(re.compile(p), v) for p, v in [
    (r"(?:没有|没|不会|不能|无法|不)\s*(?:能\s*)?(?:回到|走回|返回|回)|(?:不是|不在|并非)\s*(?:起点|原点|出发点)|还差|"
     r"离(?:起点|原点|出发点)|在(?:起点|原点|出发点)的?(?:左|右|前|后|东|西|南|北)", "no"),
    (r"(?:回到|走回|返回|回|停在|位于|就在|又在)(?:了)?\s*(?:起点|原点|出发(?:的)?(?:地方|点|位置)|原来的?(?:位置|地方)|"
     r"原地|原处|起始(?:点|位置))", "yes"),
]]


def _navigate_verdicts(text: str) -> list[_Verdict]:
    found = _verdicts(text, _NAVIGATE)
    taken = [(v.start, v.end) for v in found]
    for m in _START.finditer(text):
        if any(s <= m.start() < e for s, e in taken):
            continue
        clause_start = max(text.rfind(c, 0, m.start()) for c in ".!?;\n") + 1
        before = text[clause_start:m.start()]
        if m.group(0).lower() == "start" and not _ARTICLE.search(before):
            continue  # "Let's start", "Start facing north": the verb
        before = _ARTICLE.sub("", before)
        if re.fullmatch(r"\s*", before) and re.match(r"home\s+base", m.group(0), re.I):
            found.append(_Verdict(m.start(), m.end(), "yes", m.group(0)))  # "Home base, baby!"
            continue
        if _FROM_START.search(before):
            found.append(_Verdict(m.start(), m.end(), "no", m.group(0)))
            continue
        at = _AT_START.search(before)
        if at and at.group(0).strip():
            said = "no" if _NEGATED.search(before[:at.start()]) else "yes"
            found.append(_Verdict(m.start(), m.end(), said, m.group(0)))
        elif _START_IS_END.match(text[m.end():]):
            found.append(_Verdict(m.start(), m.end(), "yes", m.group(0)))
    return sorted(found, key=lambda v: v.start)


_NAVIGATE += [(re.compile(p), v) for p, v in [
    (r"起点(?:的)?(?:左边|右边|前面|后面|左侧|右侧|前方|后方)[^。，,]{0,6}?(?:步|米|格)", "no"),
    (r"走回(?:到)?(?:了)?(?:原来|最初|最开始)?(?:的)?(?:出发|起始|开始)(?:的)?(?:地方|点|位置)|"
     r"回到(?:了)?(?:原来|最初|最开始)(?:的)?(?:出发|起始)?(?:的)?(?:地方|点|位置)", "yes"),
]]


# -- web_of_lies --------------------------------------------------------------------------------------------------
_WEB: list[tuple[re.Pattern[str], str | None]] = [(re.compile(p, re.I), v) for p, v in [
    # implied verdicts first: a longer phrase holds the plain word it contains ("covering for a liar")
    (r"\b(?:got\s+it\s+backwards|got\s+it\s+wrong|backing\s+the\s+wrong\s+horse|(?:vouching|vouches|vouched|"
     r"covering|covers|covered)\s+for\s+(?:a|the)\s+(?:\w+\s+)?liar|word\s+(?:is\s*n't|is\s+not|isn't)\s+worth|"
     r"can'?t\s+be\s+trusted|cannot\s+be\s+trusted|is\s*n't\s+trustworthy|untrustworthy|dishonest|untruthful)\b",
     "no"),
    (r"'s\s+(?:statement|claim|words?|testimony)\s+(?:is|was)\s+(?:false|untrue|wrong|a\s+lie|incorrect)\b", "no"),
    (r"'s\s+pants\s+(?:are|were)\s+on\s+fire\b|\bpants\s+on\s+fire\b", "no"),
    (r"'s\s+(?:statement|claim|words?|testimony)\s+(?:is|was)\s+(?:true|correct|accurate|right)\b", "yes"),
    (r"\b(?:nailed\s+it|calling\s+it\s+like\s+it\s+is|calls\s+it\s+like\s+it\s+is|called\s+(?:her|him|them|it)\s+out|"
     r"calls\s+(?:her|him|them|it)\s+out|saw\s+(?:right\s+)?through|sees\s+(?:right\s+)?through|got\s+\w+'s\s+number|"
     r"got\s+it\s+right|spot\s+on|telling\s+it\s+straight)\b", "yes"),
    (r"(?P<flip>)(?:\b(?:tells?|telling|told|speaks?|speaking|spoke)\s+the\s+truth\b|\b(?:is|was|are|'s)\s+"
     r"(?:being\s+)?(?:truthful|honest)\b|\b(?:a\s+)?truth-?teller\b|\bhonest\b|\btruthful\b|\btrustworthy\b|"
     r"\breliable\b)", "yes"),
    (r"\b(?:wouldn'?t|would\s+not|don'?t|do\s+not|can'?t|couldn'?t)\s+believe\s+(?:a\s+(?:single\s+)?word|"
     r"anything)\b", "no"),
    (r"(?P<flip>)\b(?:lies|is\s+lying|'s\s+lying|are\s+lying|was\s+lying|lying|lied|tells\s+(?:a\s+)?lies?|"
     r"(?:a|the)\s+liar|liar|fibbing|fibber|fibs|fibbed)\b(?!\s+(?:puzzles?|problems?|questions?|riddles?|games?))",
     "no"),
]] + [(re.compile(p), v) for p, v in [
    (r"(?:说的?不是(?:真话|实话)|不说真话|不诚实|没有?说真话|在?说\s*(?:的是|的都是)?\s*(?:谎话?|假话)(?!者)|"
     r"撒谎(?!者)|是骗子|骗人)", "no"),
    (r"说的\s*(?:就|也|都)?\s*(?:是)?\s*(?:错的?|不对|假的|假话)", "no"),
    (r"说的\s*(?:就|也|都)?\s*(?:是)?\s*(?:对的?|没错|真的)(?!话)", "yes"),
    (r"(?:没有?说谎|没有?撒谎|在?说\s*(?:的是|的都是)?\s*(?:真话|实话)|(?:是)?诚实(?:的)?)", "yes"),
]]
_REPORTS = re.compile(
    r"\b(?:says?|said|saying|claims?|claimed|claiming|calls?|called|calling|thinks?|thought|believes?|believed|"
    r"insists?|insisted|states?|stated|asserts?|asserted|accuses?|accused|suggests?|suggested|vouch\w*|agrees?|"
    r"agreed|whether|if)\b|说(?!\s*(?:谎|真话|实话|假话|的是|的都是|的不是))|认为|声称|称|指出", re.I)
_CLAUSE = re.compile(r"[.;!?,:\n→()。；！？，：、]|\s-+\s|—|\b(?:so|because|since|which|who|and|but|while|whereas|"
                     r"therefore|thus|hence|then|meaning|means)\b|所以|因为|因此|那么|那|但是|却|而且|可是", re.I)
_PRONOUN = re.compile(r"\b(?:he|she|they|him|her)\b|[他她]", re.I)


def _people(prompt: str | None) -> tuple[list[str], str | None]:
    """The people of a web_of_lies prompt (each is the subject of one statement) and the one the question asks
    about (``Does Vina tell the truth?``, ``小刚说的是真话吗？``)."""
    if not prompt:
        return [], None
    text = re.sub(r"^\s*(?:question|问题)\s*[:：]\s*", "", prompt.strip(), flags=re.I)
    people: list[str] = []
    for sentence in re.split(r"[.?!。？！；;\n]", text):
        sentence = re.sub(r"^\s*(?:question|问题)\s*[:：]\s*", "", sentence.strip(), flags=re.I)
        m = (re.match(r"(?:(?:does|do|is|did)\s+)?([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)\s+(?:lies|lie|tells?|says?|said|"
                      r"is|always|never|speaks?)\b", sentence)
             or re.match(rf"([{_CJK}A-Za-z]{{1,12}}?)\s*(?:在|也)?(?:说|撒谎|诚实|是)", sentence))
        if m and m.group(1) not in people:
            people.append(m.group(1))
    asked = (re.search(r"\b(?:does|do|is|did)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)\s+(?:tell|telling|speak|lie|"
                       r"lying|a\s+liar|honest|truthful)", text, re.I)
             or re.search(rf"([{_CJK}A-Za-z]{{1,12}}?)\s*(?:在)?(?:说的是真话|说的是实话|说真话|说实话|诚实|说谎|"
                          r"撒谎)(?:吗|么)", text))
    return people, (asked.group(1) if asked else None)


def _mentions(text: str, people: list[str]) -> list[tuple[int, int, str]]:
    found = []
    for name in people:
        bounded = re.escape(name) if re.search(f"[{_CJK}]", name) else rf"\b{re.escape(name)}\b"
        found += [(m.start(), m.end(), name) for m in re.finditer(bounded, text, re.I)]
    return sorted(found)


def _web_verdicts(text: str, people: list[str]) -> list[tuple[_Verdict, str | None, bool, bool, set[str]]]:
    """Each verdict with whom it is about (None when unknown), whether its clause names that person (rather than a
    pronoun or an earlier clause), whether it is reported speech (``Jerry says Fidel lies``) and the people named
    in its clause."""
    names = _mentions(text, people)
    sentence_starts = [0] + [m.end() for m in re.finditer(r"[.!?。！？\n]", text)]
    out = []
    for v in _verdicts(text, _WEB):
        if _in_question(text, v):
            continue
        clause_start = max([0] + [m.end() for m in _CLAUSE.finditer(text, 0, v.start)])
        prefix = text[clause_start:v.start]
        reported = bool(_REPORTS.search(prefix))
        in_clause = [n for s, e, n in names if clause_start <= s and e <= v.start]
        sentence_start = max(s for s in sentence_starts if s <= v.start)
        in_sentence = [n for s, e, n in names if sentence_start <= s < v.start]
        after = _NAMED_AFTER.match(text, v.end)
        named_after = next((n for s, e, n in names if after and s == after.end()), None)
        subject: str | None
        if in_clause:
            subject = in_clause[-1]
        elif named_after:  # "The liar is Quinn", "The truth-teller here is Priya, not Quinn"
            subject = named_after
            end = next(e for s, e, n in names if s == after.end())
            other = re.match(r"\s*,?\s*(?:and\s+|but\s+)?not\s+", text[end:])
            if other:
                for s, _e, n in names:
                    if s == end + other.end():
                        out.append((_Verdict(s, s, "no" if v.value == "yes" else "yes", f"not {n}"), n, False,
                                    True, {n}))
        elif _PRONOUN.search(prefix):
            earlier = [s for s in sentence_starts if s < sentence_start]
            previous = [n for s, e, n in names if earlier and earlier[-1] <= s < sentence_start]
            subject = (in_sentence or previous or [None])[0]
        else:
            subject = in_sentence[-1] if in_sentence else None
        clause_names = {n for s, e, n in names if clause_start <= s < v.end}
        out.append((v, subject, reported, bool(in_clause or named_after), clause_names))
    return sorted(out, key=lambda r: r[0].start)


_NAMED_AFTER = re.compile(r"\s*(?:here\s+|in\s+this\s+\w+\s+)?(?:is|was|must\s+be|has\s+to\s+be|would\s+be)\s+",
                          re.I)


# -- hedges -------------------------------------------------------------------------------------------------------
_HEDGE = re.compile(
    r"\b(?:not\s+(?:entirely\s+|really\s+|quite\s+|totally\s+|100%\s+)?(?:sure|certain)(?!\s+(?:why|how))|unsure|uncertain|"
    r"can'?t\s+(?:tell|say|decide|be\s+sure)|cannot\s+(?:tell|say|decide)|hard\s+to\s+(?:say|tell)|"
    r"(?:could|might|can)\s+go\s+either\s+way|i\s+don'?t\s+know|no\s+idea|it\s+depends|"
    r"lost\s+track|confused)\b"
    r"|不太?确定|不知道|说不准|说不好|不好说|不太?好判断|难以判断|很难说|绕晕|可能[^。.]{0,12}也可能|要看具体"
    r"|(?:没法|无法|不能|没办法)(?:确定|判断|下结论)|判断不了|确定不了", re.I)


def _decide(verdicts: list[_Verdict], text: str) -> tuple[_Verdict | None, str | None]:
    """The last verdict, unless the response hedges after it or hedges and says both (then the reason)."""
    if not verdicts:
        return None, None
    last = verdicts[-1]
    hedge = _HEDGE.search(text, last.end)
    if hedge:
        return None, f"the response hedges after its last verdict ({hedge.group(0)!r})"
    hedge = _HEDGE.search(text)
    if hedge and len({v.value for v in verdicts}) > 1:
        return None, f"the response hedges ({hedge.group(0)!r}) and gives verdicts both ways"
    return last, None


_SARCASM = re.compile(r"\b(?:come\s+on(?:\s+now)?\s*[.!]|yeah,?\s+right\b|as\s+if\b|in\s+your\s+dreams\b)"
                      r"|^\W*oh\s+sure\b", re.I)


# -- Chinese yes/no -----------------------------------------------------------------------------------------------
# "答案：不是" anywhere; "是的，..." / "不对，..." opening the response
_ZH_CUE = re.compile(r"答案\s*(?:应该|就)?\s*(?:是|为|:|：)\s*(不是|不会|不对|否|不|是的|是|对|会)"
                     r"(?=\s*[。.,，!！;；]|\s*$)")
_ZH_LEADING = re.compile(r"^\W*(?:嗯|哦|好的?)?\s*[，,]?\s*"
                         r"(不是|不对|不会|不能|没有|不|否|是的|是|对的|对|没错|会的|会|可以)\s*[，,。.!！;；]")


def _zh_yes_no(text: str) -> Extraction | None:
    m = _ZH_CUE.search(text)
    method = "cue"
    if not m:
        m, method = _ZH_LEADING.match(text), "leading"
    if not m:
        return None
    word = m.group(1)
    return Extraction("no" if word[0] in "不否没" else "yes", method, details={"phrase": m.group(0)})


# -- hyperbaton ---------------------------------------------------------------------------------------------------
_GOOD_ORDER = re.compile(
    r"\b(?:standard|natural(?:ly)?|natural-sounding|correct(?:ly)?|right|proper(?:ly)?|spot\s+on|follows|"
    r"rolls\s+off\s+the\s+tongue|sounds\s+(?:right|good|better|fine|natural|correct)|all\s+the\s+way|makes\s+sense|"
    r"well-ordered|in\s+order)\b|(?<![不没])(?:正确|对(?![于比应])|自然|通顺|顺口|标准|符合)", re.I)
_BAD_ORDER = re.compile(
    r"\b(?:scrambles?|scrambled|jumbled?|jumbles|backwards?|(?:sounds|is|looks|reads)\s+(?:\w+\s+)?off|wrong|"
    r"incorrect(?:ly)?|word\s+salad|yoda|awkward|unnatural|weird|breaks|violates|out\s+of\s+order|clunky|odd|"
    r"tongue[-\s]+twister|tripped|nobody\s+(?:\w+\s+){0,3}talks\s+like\s+that)\b|"
    r"不对|错|不正确|别扭|不自然|不通顺|奇怪|乱|颠倒|反了", re.I)
_REFERENT = re.compile(
    r"\b(?:option|sentence|choice|answer|phrase)\s+\(?(?P<l>[AB])\)?(?![\w])|\((?P<p>[AB])\)|"
    r"\b(?P<b>[AB])(?:'s\b|\b(?=\s+(?:sounds|is|isn't|has|follows|uses|puts|gets|reads|scrambles|looks|seems|"
    r"feels|does|doesn't|all|just)\b))|\b(?:the\s+)?(?P<o>first|second|former|latter)\b(?:\s+(?:one|sentence|option|phrase|choice)\b)?|"
    r"\bthe\s+other(?:\s+(?:one|sentence|option|phrase|choice))?\b|"
    r"(?<![A-Za-z])(?P<z>[AB])(?![A-Za-z])(?=\s*(?:的|是|听|读|更|比较|顺序|选项|句|这个|那个))|"
    r"(?P<zo>第一个|第一句|第一种|前者|第二个|第二句|第二种|后者)|另一个|另外一个", re.I)


def _order_verdict(text: str, options: dict[str, str]) -> str | None:
    """(A)/(B) from statements that one option's order is right or wrong; None unless they all agree."""
    lowered = text.lower()
    events: list[tuple[int, int, str, str]] = []  # (start, end, kind, letter or polarity)
    for m in _REFERENT.finditer(text):
        letter = m.group("l") or m.group("p") or m.group("b") or m.group("z")
        if letter:
            letter = letter.upper()
        elif m.group("o"):
            letter = "A" if m.group("o").lower() in ("first", "former") else "B"
        elif m.group("zo"):
            letter = "A" if m.group("zo") in ("第一个", "第一句", "第一种", "前者") else "B"
        else:
            letter = "other"
        events.append((m.start(), m.end(), "ref", letter))
    for letter, option in options.items():
        phrase = " ".join(option.lower().split())
        for m in re.finditer(re.escape(phrase), lowered):
            events.append((m.start(), m.end(), "ref", letter))
    normed = {k: " ".join(v.lower().split()) for k, v in options.items()}
    fragments = [(m.start(), m.end(), m.group(1)) for m in re.finditer(r"[\"“]([^\"”]{3,80})[\"”]", text)]
    fragments += [(m.start(), m.end(), m.group(1)) for m in re.finditer(
        r"\b(?:one|sentence|option)\s+(?:that|which)\s+(?:opens|starts|begins|kicks\s+off|leads)\s+with\s+[\"“]?"
        r"([\w-]+(?:\s+[\w-]+){0,3})", text, re.I)]
    for start, end, fragment in fragments:
        words = " ".join(fragment.lower().split()).strip(" .,!?")
        owners = [k for k, v in normed.items() if v.startswith(words) or (len(words.split()) >= 2 and words in v)]
        cut = words.split()
        while not owners and len(cut) > 1:  # "opens with plastic is a ...": the longest prefix that opens an option
            cut = cut[:-1]
            owners = [k for k, v in normed.items() if v.startswith(" ".join(cut) + " ")]
        if len(owners) == 1 and not any(s <= start < e for s, e, kind, _ in events if kind == "ref"):
            events.append((start, end, "ref", owners[0]))
    for pattern, polarity in ((_GOOD_ORDER, "good"), (_BAD_ORDER, "bad")):
        for m in pattern.finditer(text):
            events.append((m.start(), m.end(), "pol", polarity))
    events.sort()
    # sentence ends, but not an ellipsis ("bed"... ugh) nor the ? or ! closing a quoted option ("... ship"? Nobody)
    boundaries = [m.start() for m in re.finditer(r"(?<![.\"”])[.!?\n。！？](?![.\"”])", text)]
    votes: set[str] = set()
    current: tuple[str, int] | None = None  # the option last referred to, and its sentence
    last_named: str | None = None
    for start, _end, kind, what in events:
        sentence = bisect.bisect(boundaries, start)
        if kind == "ref":
            if what == "other":
                what = "" if last_named is None else ("B" if last_named == "A" else "A")
            else:
                last_named = what
            current = (what, sentence) if what else None
            continue
        if current is None or current[1] != sentence:
            continue
        polarity = what
        if _NEGATED.search(text[max(0, start - 30):start]):
            polarity = "bad" if polarity == "good" else "good"
        votes.add(current[0] if polarity == "good" else ("B" if current[0] == "A" else "A"))
    return votes.pop() if len(votes) == 1 else None


def extract_bbh(response: str | None, task: str, prompt: str | None = None) -> Extraction:
    """The answer to one of VoiceBench's BBH items, in the form of its reference: ``yes`` / ``no``, or ``(A)`` /
    ``(B)`` for hyperbaton.

    ``task`` names the BBH task (or contains it, like VoiceBench's item ids): ``sports_understanding``,
    ``navigate``, ``web_of_lies`` (yes/no) or ``hyperbaton`` (the option letter); the module docstring says how
    the verdict is decided. ``prompt`` (the question) names the person a web_of_lies item asks about and the
    options of a hyperbaton item.
    """
    kind = next((t for t in BBH_TASKS if t in (task or "")), None)
    if kind is None:
        return _fail(f"unknown BBH task {task!r} (known: {', '.join(BBH_TASKS)})")
    if response is None or not response.strip():
        return _fail("empty response")
    text = _clean(response)
    if kind == "hyperbaton":
        options = options_from(None, prompt) or {}
        options = {k: v for k, v in options.items() if k in "AB"}
        said = _order_verdict(text, options)
        if said:
            return Extraction(f"({said})", "order_statement")
        found = extract_choice(response, options or None, letters="AB")
        if found.ok:
            return Extraction(f"({found.value})", found.method, details=found.details)
        return found
    explicit = extract_yes_no(text)
    if explicit.ok and explicit.method == "leading" and _SARCASM.search(text):
        # "Sure. Right after she won Wimbledon with a bat. Come on now.": a sarcastic "sure" is not a yes
        explicit = _fail(f"a sarcastic {explicit.value!r} ({_SARCASM.search(text).group(0)!r})")
    if explicit.ok and explicit.method in ("cue", "leading"):
        return explicit
    chinese = _zh_yes_no(text)
    if chinese:
        return chinese
    details: dict[str, object] = {}
    if kind == "web_of_lies":
        people, asked = _people(prompt)
        read = _web_verdicts(text, people)
        stated = [(v, who, explicit) for v, who, reported, explicit, _ in read if not reported]
        about = [v for v, who, _ in stated if asked and who == asked]
        named = asked is not None and any(asked in names or who == asked for _, who, _, _, names in read)
        if about:
            verdicts = about
            details["about"] = asked
        elif not named:
            # the asked person is never named in a verdict (no prompt, or a name the transcript spells otherwise):
            # the last verdict that does not name someone else
            verdicts = [v for v, who, explicit in stated if not (explicit and asked and who != asked)]
            if not verdicts and stated:
                return _fail(f"no verdict about {asked}, only about others", others=[v.phrase for v, _, _ in stated])
        else:
            return _fail(f"no verdict about {asked} (only about others, or reported)",
                         others=[v.phrase for v, _, _ in stated])
    elif kind == "sports_understanding":
        verdicts = [v for v in _verdicts(text, _SPORTS) if not _in_question(text, v)]
    else:
        verdicts = [v for v in _navigate_verdicts(text) if not _in_question(text, v)]
    verdict, hedged = _decide(verdicts, text)
    if hedged:
        return _fail(hedged)
    if verdict is not None:
        return Extraction(verdict.value, "task_phrase", details={**details, "phrase": verdict.phrase})
    if explicit.ok:
        return explicit
    return _fail(explicit.reason or "no answer found")


__all__ = ["extract_bbh"]
